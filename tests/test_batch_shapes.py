"""Any leading batch shape of ``theta`` (including ``()`` and empty ones) is kept by every Problem method,
and each entry equals, bitwise, the result of evaluating that parameter vector alone: a run's numbers
do not depend on the batch it is computed in."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reluflow.problem import Problem

CONFIGS = {
    # d = 1 with a density: the exact kernel (numba by default, numpy selectable)
    "d1_density_numba": ({"network": {"input_dim": 1, "width": 5, "output_dim": 1}, "domain": [0.0, 1.0],
                          "target": {"kind": "piecewise_linear", "knots": [0.0, 0.3, 1.0], "values": [0.0, 1.0, 0.0]},
                          "measure": {"kind": "triangular", "mode": 0.4}}, "numba"),
    "d1_density_numpy": ({"network": {"input_dim": 1, "width": 5, "output_dim": 2}, "domain": [-1.0, 1.0],
                          "target": {"kind": "stack", "components": [{"kind": "sine", "frequency": 4.0},
                                                                     {"kind": "abs", "center": 0.25}]},
                          "measure": {"kind": "uniform"}}, "numpy"),
    # discrete measures
    "d2_qmc": ({"network": {"input_dim": 2, "width": 4, "output_dim": 1}, "domain": [0.0, 1.0],
                "target": {"kind": "sine", "frequency": [2.0, -1.0]},
                "measure": {"kind": "qmc", "n_points": 32, "seed": 2}}, "numba"),
    "d1_data_k2": ({"network": {"input_dim": 1, "width": 3, "output_dim": 2}, "domain": [0.0, 1.0],
                    "target": {"kind": "affine", "slope": [1.0, -1.0], "intercept": [0.0, 0.5]},
                    "measure": {"kind": "data", "points": [0.0, 0.25, 0.5, 1.0], "weights": [0.25, 0.25, 0.25, 0.25]}},
                   "numba"),
}


@functools.cache
def problem(name):
    config, backend = CONFIGS[name]
    return Problem.from_config(config, backend=backend)


def draw_theta(prob, shape, seed):
    """Gaussian parameters, with some inner weights set to 0 and some neurons dead, to vary the paths."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(shape + (prob.n_params,))
    d, H = prob.input_dim, prob.width
    mask = rng.random(shape + (d * H,)) < 0.2
    theta[..., : d * H] = np.where(mask, 0.0, theta[..., : d * H])
    return theta


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_results_keep_the_batch_shape_and_equal_rowwise_results(name, shape, seed):
    prob = problem(name)
    theta = draw_theta(prob, shape, seed)
    risk, grad = prob.risk_and_gradient(theta)
    assert risk.shape == shape and grad.shape == shape + (prob.n_params,)
    assert np.array_equal(prob.risk(theta), risk) and np.array_equal(prob.generalized_gradient(theta), grad)
    x = np.linspace(*prob.domain, 7)
    if prob.input_dim > 1:
        x = np.stack([x, x[::-1]], axis=1)
    values = prob.realization(theta, x)
    point_shape = (7,) if prob.output_dim == 1 else (7, prob.output_dim)
    assert values.shape == shape + point_shape
    for index in np.ndindex(*shape):
        r1, g1 = prob.risk_and_gradient(theta[index])
        assert r1.shape == () and g1.shape == (prob.n_params,)
        assert r1 == risk[index] and np.array_equal(g1, grad[index])
        assert np.array_equal(prob.realization(theta[index], x), values[index])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_row_does_not_depend_on_its_neighbours(name):
    """The same row inside batches of different sizes and positions gives the same bits."""
    prob = problem(name)
    rng = np.random.default_rng(3)
    row = draw_theta(prob, (), 99)
    alone_risk, alone_grad = prob.risk_and_gradient(row[None])
    for size in (2, 7, 64):
        batch = draw_theta(prob, (size,), int(rng.integers(1 << 30)))
        position = int(rng.integers(size))
        batch[position] = row
        risk, grad = prob.risk_and_gradient(batch)
        assert risk[position] == alone_risk[0] and np.array_equal(grad[position], alone_grad[0])
