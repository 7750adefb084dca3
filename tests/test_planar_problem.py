"""Inputs in two dimensions with a density, through the public API: the measures' configuration (normalization,
non-negativity), the targets evaluated exactly, and a stiff flow with the exact Jacobian (the kernels are tested in
test_exact2d.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import reluflow
from reluflow.model.measures import planar_density_is_nonnegative
from reluflow.model.validation import ConfigError

BASE = {
    "network": {"input_dim": 2, "width": 3, "output_dim": 1},
    "domain": [0.0, 1.0],
    "target": {"kind": "sum", "terms": [
        {"kind": "polynomial", "terms": [{"powers": [1, 1], "coefficient": 2.0}, {"powers": [0, 1], "coefficient": -1.0}]},
        {"kind": "relu_network", "inner_weights": [[1.0, -1.0]], "inner_biases": [0.1], "outer_weights": [1.0],
         "outer_bias": [0.0]},
    ]},
    "measure": {"kind": "polynomial_density", "coefficients": [[0.5, 0.0], [1.0, 0.0]]},  # p = 1/2 + x
}


def with_value(path, value):
    config = copy.deepcopy(BASE)
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return config


BAD = [
    (("measure", "coefficients"), [[1.0, 0.0], [1.0, 0.0]], "measure.coefficients", "integrate to one"),
    (("measure", "coefficients"), [[2.5, 0.0], [-3.0, 0.0]], "measure.coefficients", "negative"),  # 2.5 - 3x
    (("measure", "coefficients"), [[1.0]], None, None),  # the uniform density, valid
    (("measure", "kind"), "triangular", "measure.kind", "not available for input_dim = 2"),
    (("target",), {"kind": "abs"}, "target.kind", "only defined for input_dim = 1"),
]


@pytest.mark.parametrize("path,value,key,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_planar_configurations(path, value, key, text):
    config = with_value(path, value)
    if key is None:
        assert reluflow.Problem.from_config(config).planar is not None
        return
    with pytest.raises(ConfigError) as err:
        reluflow.Problem.from_config(config)
    assert str(err.value).startswith(key + ":") and text in str(err.value), str(err.value)


def test_the_nonnegativity_certificate_decides_touching_and_negative_densities():
    touching = np.array([[0.25, -1.0, 1.0]])  # (y - 1/2)^2: zero on a whole line inside the square
    assert planar_density_is_nonnegative(touching, 0.0, 1.0, 1e-12)
    dipping = touching.copy()
    dipping[0, 0] -= 1e-6  # negative on a band around y = 1/2, positive at every corner
    assert not planar_density_is_nonnegative(dipping, 0.0, 1.0, 1e-12)


def test_the_exact_risk_is_the_limit_of_fine_discrete_measures():
    """The uniform law on the square: the exact risk against a tensor Gauss-Legendre rule with more and more
    points (piecewise-smooth integrand: the error falls with n but not spectrally); at 400 x 400 points within
    a relative 1e-4."""
    problem = reluflow.Problem.from_config(with_value(("measure",), {"kind": "uniform"}))
    theta = np.random.default_rng(2).standard_normal((3, problem.n_params))
    exact = problem.risk(theta)
    errors = []
    for n in (25, 100, 400):
        rule = reluflow.Problem.from_config(with_value(("measure",), {"kind": "gauss_legendre", "n_per_dim": n}))
        errors.append(np.max(np.abs(rule.risk(theta) - exact) / exact))
    assert errors[2] < errors[0] and errors[2] < 1e-4, errors


def test_a_stiff_flow_in_two_dimensions_certifies_its_end_points():
    problem = reluflow.Problem.from_config(BASE)
    theta0 = np.random.default_rng(7).standard_normal((2, problem.n_params))
    ds = reluflow.simulate(problem, theta0, t_max=1e3, solver="rodas4")
    assert ds["status"].values.tolist() == [0, 0]
    assert np.all(np.abs(ds["energy_residual"].values) <= 1e-6 * np.maximum(1.0, ds["initial_risk"].values[:, None]))
    finite = np.isfinite(ds["critical_grad_norm"].values)
    assert finite.all() and set(ds["end_point"].values.tolist()) <= {
        "global_minimum", "local_minimum", "saddle", "nonsmooth", "not_converged"}
