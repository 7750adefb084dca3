"""The public Problem API on the issue's example configuration: attributes, normalized config and its
round trip, realization and target, closed-form risks and gradients (d = 1 kernel, both backends),
risk against scipy.quad and G against finite differences, d > 1, and the modules built on Problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate

import reluflow
from reluflow.model.network import pack, unpack
from reluflow.model.validation import ConfigError
from reluflow.problem import Problem

EXAMPLE = {
    "network": {"input_dim": 1, "width": 8, "output_dim": 1},
    "domain": [0.0, 1.0],
    "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
    "measure": {"kind": "uniform"},
}
PIECEWISE = dict(EXAMPLE, target={"kind": "piecewise_linear", "knots": [0.0, 0.3, 1.0], "values": [0.0, 1.0, 0.0]})
BACKENDS = ["numba", "numpy"]

# Closed-form values below are rationals of O(1) numbers evaluated by a kernel that sums a handful of
# Gauss-Legendre terms per piece: agreement to a few ulps is expected; 1e-14 relative (absolute for
# values that are exactly zero, relative to the O(1) scale of the problem) leaves room for ~50 roundings.
CLOSED_FORM_TOL = 1e-14


def test_example_attributes_and_normalized_config():
    problem = reluflow.Problem.from_config(EXAMPLE)
    assert reluflow.Problem is Problem
    assert (problem.input_dim, problem.width, problem.output_dim) == (1, 8, 1)
    assert problem.n_params == 3 * 8 + 1 == 25
    assert problem.domain == (0.0, 1.0)
    assert problem.backend == "numba"
    assert problem.config == EXAMPLE
    assert json.loads(json.dumps(problem.config)) == problem.config
    # the defaults are filled in
    minimal = Problem.from_config({"network": {"width": 3}, "target": {"kind": "sine", "frequency": 2}})
    assert minimal.config == {
        "network": {"input_dim": 1, "width": 3, "output_dim": 1},
        "domain": [0.0, 1.0],
        "target": {"kind": "sine", "amplitude": 1.0, "frequency": 2.0, "phase": 0.0},
        "measure": {"kind": "uniform"},
    }
    # the config is a copy: changing it does not change the problem
    config = problem.config
    config["network"]["width"] = 99
    assert problem.config["network"]["width"] == 8


ROUND_TRIP = [
    EXAMPLE,
    PIECEWISE,
    {"network": {"width": 4, "output_dim": 2}, "domain": [-1, 2],
     "target": {"kind": "stack", "components": [{"kind": "sawtooth", "period": 0.5},
                                                {"kind": "sum", "terms": [{"kind": "hat", "center": 0, "half_width": 1},
                                                                          {"kind": "polynomial", "coefficients": [1, 0, 2]}]}]},
     "measure": {"kind": "piecewise_polynomial", "knots": [-1, 1, 2], "coefficients": [[0.25, 0.125], [0.125, 0.25]]}},
    {"network": {"input_dim": 3, "width": 2, "output_dim": 2}, "domain": [0, 1],
     "target": {"kind": "affine", "slope": [[1, 2, 3], [0, 0, 1]], "intercept": 1},
     "measure": {"kind": "gauss_legendre", "n_per_dim": 3}},
    {"network": {"input_dim": 2, "width": 2}, "target": {"kind": "sine", "frequency": [1, 1]},
     "measure": {"kind": "data", "points": [[0, 0], [0.5, 1]], "weights": [0.5, 0.5]}},
]


@pytest.mark.parametrize("config", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_from_config_of_config_gives_an_identical_problem(config):
    first = Problem.from_config(config, backend="numpy")
    second = Problem.from_config(json.loads(json.dumps(first.config)), backend="numpy")
    assert second.config == first.config
    assert json.loads(json.dumps(second.config)) == second.config
    if first.table is not None:
        for field in ("knots", "target_poly", "sines", "density_poly"):
            assert np.array_equal(getattr(first.table, field), getattr(second.table, field))
        assert first.table.quad_nodes == second.table.quad_nodes
    else:
        assert np.array_equal(first.discrete_measure.points, second.discrete_measure.points)
        assert np.array_equal(first.discrete_measure.weights, second.discrete_measure.weights)
    theta = np.random.default_rng(0).standard_normal((3, first.n_params))
    r1, g1 = first.risk_and_gradient(theta)
    r2, g2 = second.risk_and_gradient(theta)
    assert np.array_equal(r1, r2) and np.array_equal(g1, g2)


def test_target_and_realization_of_the_example():
    problem = Problem.from_config(EXAMPLE)
    x = np.linspace(0, 1, 11)
    assert np.array_equal(problem.target(x), 2 * x - 1)
    assert np.array_equal(problem.target(x[:, None]), 2 * x - 1)
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((4, problem.n_params))
    values = problem.realization(theta, x)
    assert values.shape == (4, 11)
    for m in range(4):
        w, b, v, c = theta[m, :8], theta[m, 8:16], theta[m, 16:24], theta[m, 24]
        for p, xp in enumerate(x):
            expected = c + sum(v[i] * max(w[i] * xp + b[i], 0.0) for i in range(8))
            assert values[m, p] == pytest.approx(expected, rel=1e-14, abs=1e-14)


def test_vector_valued_shapes():
    problem = Problem.from_config({"network": {"width": 3, "output_dim": 2},
                                   "target": {"kind": "affine", "slope": [1.0, 2.0], "intercept": [0.0, -1.0]}})
    x = np.linspace(0, 1, 5)
    assert problem.target(x).shape == (5, 2)
    np.testing.assert_array_equal(problem.target(x), np.stack([x, 2 * x - 1], axis=1))
    theta = np.zeros((2, 3, problem.n_params))
    assert problem.realization(theta, x).shape == (2, 3, 5, 2)
    W, b, V, c = unpack(theta[0, 0], 1, 3, 2)
    assert W.shape == (3, 1) and b.shape == (3,) and V.shape == (2, 3) and c.shape == (2,)


def test_pack_unpack_layout():
    # MATH.md section 1: W row-major (H x d), b, V row-major (k x H), c
    d, H, k = 2, 3, 2
    theta = np.arange(d * H + H + k * H + k, dtype=float)
    W, b, V, c = unpack(theta, d, H, k)
    assert W.tolist() == [[0, 1], [2, 3], [4, 5]] and b.tolist() == [6, 7, 8]
    assert V.tolist() == [[9, 10, 11], [12, 13, 14]] and c.tolist() == [15, 16]
    assert np.array_equal(pack(W, b, V, c), theta)
    batch = np.arange(4 * theta.size, dtype=float).reshape(2, 2, theta.size)
    assert np.array_equal(pack(*unpack(batch, d, H, k)), batch)


def neurons(H, rows):
    """theta for d = k = 1 from a list of (w, b, v) (the rest dead: w = 0, b = -1, v = 0) and c."""
    rows, c = rows
    w = np.zeros(H)
    b = -np.ones(H)
    v = np.zeros(H)
    for i, (wi, bi, vi) in enumerate(rows):
        w[i], b[i], v[i] = wi, bi, vi
    return pack(w[:, None], b, v[None, :], np.array([c]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_form_risks_and_gradients_of_the_example(backend):
    problem = Problem.from_config(EXAMPLE, backend=backend)
    H = problem.width

    # an exact representation: N(x) = -3 + 2 relu(x + 1) = 2x - 1 on [0, 1]
    risk, grad = problem.risk_and_gradient(neurons(H, ([(1.0, 1.0, 2.0)], -3.0)))
    assert risk == 0.0 and np.all(np.abs(grad) <= CLOSED_FORM_TOL)

    # only the outer bias: N = c, L = c^2 + 1/3, G_c = 2c, all else 0 (every neuron inactive: w = 0, b <= 0)
    for c in (0.0, 0.7, -2.5):
        theta = np.zeros(problem.n_params)
        theta[-1] = c
        risk, grad = problem.risk_and_gradient(theta)
        assert risk == pytest.approx(c * c + 1 / 3, rel=CLOSED_FORM_TOL)
        assert grad[-1] == pytest.approx(2 * c, rel=CLOSED_FORM_TOL, abs=CLOSED_FORM_TOL)
        assert np.all(grad[:-1] == 0.0)

    # one neuron w = 1, b = 0 (active on (0, 1]): r = alpha x + beta with alpha = v - 2, beta = c + 1;
    # L = beta^2 + alpha beta + alpha^2 / 3, G_c = alpha + 2 beta, G_v = 2 alpha / 3 + beta,
    # G_b = v G_c, G_w = v G_v
    v, c = 0.75, -0.4
    alpha, beta = v - 2.0, c + 1.0
    theta = neurons(H, ([(1.0, 0.0, v)], c))
    risk, grad = problem.risk_and_gradient(theta)
    g_w, g_b, g_v, g_c = unpack(grad, 1, H, 1)
    assert risk == pytest.approx(beta**2 + alpha * beta + alpha**2 / 3, rel=CLOSED_FORM_TOL)
    assert g_c[0] == pytest.approx(alpha + 2 * beta, rel=CLOSED_FORM_TOL)
    assert g_v[0, 0] == pytest.approx(2 * alpha / 3 + beta, rel=CLOSED_FORM_TOL)
    assert g_b[0] == pytest.approx(v * (alpha + 2 * beta), rel=CLOSED_FORM_TOL)
    assert g_w[0, 0] == pytest.approx(v * (2 * alpha / 3 + beta), rel=CLOSED_FORM_TOL)
    assert np.all(grad[np.r_[1:H, H + 1 : 2 * H, 2 * H + 1 : 3 * H]] == 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jr_critical_point_with_positive_risk(backend):
    """MATH.md section 5: for H = 2 on [0, 1] and f = alpha x + beta, neurons (-1, 2/3, -2/3 alpha) and
    (1, -1/3, 2/3 alpha) with c = beta + alpha / 2 give G = 0 and L = alpha^2 / 972."""
    alpha, beta = 2.0, -1.0
    problem = Problem.from_config(dict(EXAMPLE, network={"width": 2}), backend=backend)
    theta = pack(np.array([[-1.0], [1.0]]), np.array([2 / 3, -1 / 3]), np.array([[-2 / 3 * alpha, 2 / 3 * alpha]]),
                 np.array([beta + alpha / 2]))
    risk, grad = problem.risk_and_gradient(theta)
    assert risk == pytest.approx(alpha**2 / 972, rel=1e-13)
    assert np.max(np.abs(grad)) <= CLOSED_FORM_TOL


def quad_risk(problem, theta):
    """L by scipy.quad on the exact target and density, split at the target knots and the network kinks."""
    H = problem.width
    w, b = theta[:H], theta[H : 2 * H]
    kinks = [-bi / wi for wi, bi in zip(w, b) if wi != 0 and 0 < -bi / wi < 1]
    cuts = np.unique([0.0, 0.3, 1.0] + kinks)

    def integrand(x):
        return float((problem.realization(theta, [x])[0] - problem.target([x])[0]) ** 2)

    return sum(integrate.quad(integrand, lo, hi, epsabs=1e-15, epsrel=1e-13)[0] for lo, hi in zip(cuts[:-1], cuts[1:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_piecewise_example_against_quad_and_finite_differences(backend):
    problem = Problem.from_config(PIECEWISE, backend=backend)
    rng = np.random.default_rng(4)
    theta = rng.standard_normal((3, problem.n_params))
    risk, grad = problem.risk_and_gradient(theta)
    h = 1e-6
    for row in range(3):
        # the integrand is a polynomial on each piece: quad is exact to ~1e-15 relative; 1e-12 allows for it
        assert risk[row] == pytest.approx(quad_risk(problem, theta[row]), rel=1e-12)
        # central differences: truncation ~h^2 |L'''| ~ 1e-12, rounding ~eps L / h ~ 1e-10; the kinks move
        # with theta but L is C^1 for a law with a density, so 1e-6 of max(1, |G|) is a safe bound
        steps = np.eye(problem.n_params) * h
        fd = (problem.risk(theta[row] + steps) - problem.risk(theta[row] - steps)) / (2 * h)
        np.testing.assert_allclose(grad[row], fd, rtol=0, atol=1e-6 * max(1.0, np.max(np.abs(grad[row]))))


def test_backends_agree():
    numba_problem = Problem.from_config(PIECEWISE)
    numpy_problem = Problem.from_config(PIECEWISE, backend="numpy")
    theta = np.random.default_rng(8).standard_normal((6, numba_problem.n_params))
    r1, g1 = numba_problem.risk_and_gradient(theta)
    r2, g2 = numpy_problem.risk_and_gradient(theta)
    # two implementations of the same sums in different orders: a few ulps of the natural scale
    np.testing.assert_allclose(r1, r2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-12 * np.max(np.abs(g2)))
    numba_problem.backend = "numpy"
    r3, g3 = numba_problem.risk_and_gradient(theta)
    assert np.array_equal(r3, r2) and np.array_equal(g3, g2)


def test_higher_dimension_risk_is_the_weighted_sum_of_public_pointwise_values():
    problem = Problem.from_config({
        "network": {"input_dim": 2, "width": 6, "output_dim": 2},
        "domain": [-1.0, 1.0],
        "target": {"kind": "stack", "components": [{"kind": "sine", "frequency": [1.0, 2.0]},
                                                   {"kind": "affine", "slope": [0.5, -0.5], "intercept": 1.0}]},
        "measure": {"kind": "qmc", "n_points": 128, "seed": 5},
    })
    measure = problem.discrete_measure
    theta = np.random.default_rng(2).standard_normal((4, problem.n_params))
    residual = problem.realization(theta, measure.points) - problem.target(measure.points)
    expected = np.sum(measure.weights * np.sum(residual**2, axis=-1), axis=-1)
    # same sums, different grouping: relative 1e-13
    np.testing.assert_allclose(problem.risk(theta), expected, rtol=1e-13)


def test_modules_built_on_problem():
    from reluflow.dynamics.flows import NormalizedFlow, StandardFlow, project_to_manifold
    from reluflow.experiments.config import resolve_scenarios
    from reluflow.experiments.initialization import exact_affine_representation, validate_init

    problem = Problem.from_config(EXAMPLE)
    theta = np.random.default_rng(3).standard_normal((5, problem.n_params))
    evaluation = StandardFlow(problem).evaluate(theta)
    assert np.array_equal(evaluation.velocity, -problem.generalized_gradient(theta))
    on_manifold = project_to_manifold(problem, theta)
    np.testing.assert_allclose(problem.risk(on_manifold), problem.risk(theta), rtol=1e-12)
    assert NormalizedFlow(problem).rhs(on_manifold).shape == theta.shape
    # near_exact starts from an exact representation of the affine target: risk at rounding level
    init = validate_init("init", {"scheme": "near_exact", "n_runs": 2}, problem)
    exact = exact_affine_representation(np.random.default_rng(0), problem)
    assert init["scheme"] == "near_exact" and problem.risk(exact) < 1e-28
    # a scenario names our keys under its own path
    scenario = {"name": "s", "kind": "jr_affine_small_risk", "init": {"scheme": "gaussian", "n_runs": 1},
                "flows": [{"flow": "standard", "t_max": 1.0}],
                "problem": dict(EXAMPLE, network={"width": 0})}
    with pytest.raises(ConfigError, match=r"^scenarios\[0\]\.problem\.network\.width: "):
        resolve_scenarios({"scenarios": [scenario]})
