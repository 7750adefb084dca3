"""Targets and measures against formulas written independently here, the d = 1 PiecewiseTable built
from a configuration, and exactness of its quadrature rule against scipy.integrate.quad."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from reluflow.model.measures import discrete_measure, parse_measure
from reluflow.model.network import realization
from reluflow.problem import Problem

A, B = -1.0, 2.0  # a domain with a != 0, so that global-coordinate coefficients are exercised
RNG = np.random.default_rng(20240611)

# Tolerance of pointwise comparisons: both sides evaluate the same real function with a handful of
# roundings each (at most ~10 operations on numbers of size <= ~50 here), so they agree to ~1e-14;
# 1e-12 relative to (1 + max |f|) leaves margin and still catches any wrong coefficient or branch.
POINT_RTOL = 1e-12


# ----------------------------------------------------------------------------------------------------
# direct formulas (scalar, plain Python)


def saw(x, period, amplitude, offset):
    s = x / period - math.floor(x / period)  # phase in [0, 1)
    return offset + amplitude * ((-1.0 + 4.0 * s) if s < 0.5 else (3.0 - 4.0 * s))


def interp(x, knots, values):
    for j in range(len(knots) - 1):
        if knots[j] <= x <= knots[j + 1]:
            t = (x - knots[j]) / (knots[j + 1] - knots[j])
            return (1 - t) * values[j] + t * values[j + 1]
    raise AssertionError("outside the knots")


def hat(x, c, w, h):
    return h * max(0.0, 1.0 - abs(x - c) / w)


# (name, d, k, target config, formula(x: tuple of d floats) -> list of k floats, breakpoints in (A, B))
TARGETS = [
    ("affine", 1, 1, {"kind": "affine", "slope": 2.0, "intercept": -1.0}, lambda x: [2 * x[0] - 1], []),
    ("affine_k2", 1, 2, {"kind": "affine", "slope": [1.5, -0.5], "intercept": [0.25, 3.0]},
     lambda x: [1.5 * x[0] + 0.25, -0.5 * x[0] + 3.0], []),
    ("affine_broadcast_slope", 1, 2, {"kind": "affine", "slope": 3.0, "intercept": [1.0, -1.0]},
     lambda x: [3 * x[0] + 1, 3 * x[0] - 1], []),
    ("affine_matrix_k1", 1, 1, {"kind": "affine", "slope": [[-0.75]]}, lambda x: [-0.75 * x[0]], []),
    ("piecewise_linear", 1, 1, {"kind": "piecewise_linear", "knots": [-1.0, 0.3, 1.1, 2.0], "values": [0.0, 1.0, -2.0, 0.5]},
     lambda x: [interp(x[0], [-1.0, 0.3, 1.1, 2.0], [0.0, 1.0, -2.0, 0.5])], [0.3, 1.1]),
    ("piecewise_linear_k2_wide", 1, 2,
     {"kind": "piecewise_linear", "knots": [-3.0, 0.5, 4.0], "values": [[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]]},
     lambda x: [interp(x[0], [-3.0, 0.5, 4.0], [0.0, 2.0, 1.0]), interp(x[0], [-3.0, 0.5, 4.0], [1.0, -1.0, 1.0])], [0.5]),
    ("polynomial", 1, 1, {"kind": "polynomial", "coefficients": [1.0, -2.0, 0.5, 0.25]},
     lambda x: [1 - 2 * x[0] + 0.5 * x[0] ** 2 + 0.25 * x[0] ** 3], []),
    ("polynomial_k2_ragged", 1, 2, {"kind": "polynomial", "coefficients": [[1.0, 2.0], [0.0, 0.0, 3.0]]},
     lambda x: [1 + 2 * x[0], 3 * x[0] ** 2], []),
    ("abs", 1, 1, {"kind": "abs", "scale": -1.5, "center": 0.3}, lambda x: [-1.5 * abs(x[0] - 0.3)], [0.3]),
    ("abs_defaults", 1, 1, {"kind": "abs"}, lambda x: [abs(x[0])], [0.0]),
    ("hat", 1, 1, {"kind": "hat", "center": 0.5, "half_width": 0.25, "height": 2.0},
     lambda x: [hat(x[0], 0.5, 0.25, 2.0)], [0.25, 0.5, 0.75]),
    ("hat_clipped", 1, 1, {"kind": "hat", "center": -1.1, "half_width": 0.6},
     lambda x: [hat(x[0], -1.1, 0.6, 1.0)], [-1.1 + 0.6]),
    ("sine", 1, 1, {"kind": "sine", "amplitude": 0.7, "frequency": 5.0, "phase": 0.3},
     lambda x: [0.7 * math.sin(5 * x[0] + 0.3)], []),
    ("sawtooth", 1, 1, {"kind": "sawtooth", "period": 0.4, "amplitude": 1.5, "offset": 0.2},
     lambda x: [saw(x[0], 0.4, 1.5, 0.2)], [j * 0.2 for j in range(-4, 10)]),
    ("sum", 1, 1, {"kind": "sum", "terms": [{"kind": "abs", "center": 0.5}, {"kind": "sine", "frequency": 3.0},
                                             {"kind": "polynomial", "coefficients": [0.0, 0.0, 1.0]}]},
     lambda x: [abs(x[0] - 0.5) + math.sin(3 * x[0]) + x[0] ** 2], [0.5]),
    ("stack", 1, 3, {"kind": "stack", "components": [
        {"kind": "hat", "center": 0.0, "half_width": 1.0},
        {"kind": "sine", "amplitude": 2.0, "frequency": 11.0, "phase": -1.0},
        {"kind": "sawtooth", "period": 1.0}]},
     lambda x: [hat(x[0], 0.0, 1.0, 1.0), 2 * math.sin(11 * x[0] - 1), saw(x[0], 1.0, 1.0, 0.0)],
     [0.0, 1.0, -0.5, 0.5, 1.5]),
    ("sum_of_stacks", 1, 2, {"kind": "sum", "terms": [
        {"kind": "stack", "components": [{"kind": "sine", "frequency": 2.0}, {"kind": "abs"}]},
        {"kind": "affine", "slope": [1.0, 2.0], "intercept": 0.5}]},
     lambda x: [math.sin(2 * x[0]) + x[0] + 0.5, abs(x[0]) + 2 * x[0] + 0.5], [0.0]),
    # teachers: kinks -b/w = 0.4, 0.6, 1.75 inside (A, B), -2.5 outside; the w = 0 neuron is the constant relu(0.5)
    ("relu_network", 1, 1, {"kind": "relu_network", "inner_weights": [1.0, -2.0, 0.0, 4.0, 0.8],
                            "inner_biases": [-0.4, 1.2, 0.5, -7.0, 2.0], "outer_weights": [1.5, -0.7, 2.0, 0.4, -1.0],
                            "outer_bias": [0.1]},
     lambda x: [0.1 + 1.5 * max(x[0] - 0.4, 0) - 0.7 * max(1.2 - 2 * x[0], 0) + 2.0 * 0.5 + 0.4 * max(4 * x[0] - 7, 0)
                - max(0.8 * x[0] + 2, 0)], [0.4, 0.6, 1.75]),
    ("relu_network_k2", 1, 2, {"kind": "relu_network", "inner_weights": [[2.0], [-1.0]], "inner_biases": [-1.0, 0.5],
                               "outer_weights": [[1.0, 3.0], [-2.0, 0.5]], "outer_bias": [0.0, 1.0]},
     lambda x: [max(2 * x[0] - 1, 0) + 3 * max(0.5 - x[0], 0), 1 - 2 * max(2 * x[0] - 1, 0) + 0.5 * max(0.5 - x[0], 0)],
     [0.5]),
    ("sum_with_relu_network", 1, 1, {"kind": "sum", "terms": [
        {"kind": "relu_network", "inner_weights": [-1.0], "inner_biases": [0.25], "outer_weights": [2.0], "outer_bias": [0.0]},
        {"kind": "sine", "frequency": 3.0}]},
     lambda x: [2 * max(0.25 - x[0], 0) + math.sin(3 * x[0])], [0.25]),
    # d > 1
    ("relu_network_d2_k2", 2, 2, {"kind": "relu_network", "inner_weights": [[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]],
                                  "inner_biases": [0.2, -1.0, 0.3], "outer_weights": [[1.0, -2.0, 1.0], [0.0, 0.5, 3.0]],
                                  "outer_bias": [0.5, -0.5]},
     lambda x: [0.5 + max(x[0] - x[1] + 0.2, 0) - 2 * max(0.5 * x[0] + 2 * x[1] - 1, 0) + 0.3,
                -0.5 + 0.5 * max(0.5 * x[0] + 2 * x[1] - 1, 0) + 0.9], None),
    ("stack_relu_network_d2", 2, 2, {"kind": "stack", "components": [
        {"kind": "relu_network", "inner_weights": [[1.0, 1.0]], "inner_biases": [0.0], "outer_weights": [1.0], "outer_bias": [0.0]},
        {"kind": "affine", "slope": [0.0, 1.0]}]},
     lambda x: [max(x[0] + x[1], 0), x[1]], None),
    ("affine_d2", 2, 1, {"kind": "affine", "slope": [1.0, -2.0], "intercept": 0.5},
     lambda x: [x[0] - 2 * x[1] + 0.5], None),
    ("affine_d3_k2", 3, 2, {"kind": "affine", "slope": [[1.0, 0.0, 2.0], [-1.0, 3.0, 0.5]], "intercept": [0.0, 1.0]},
     lambda x: [x[0] + 2 * x[2], -x[0] + 3 * x[1] + 0.5 * x[2] + 1], None),
    ("sine_d2", 2, 1, {"kind": "sine", "amplitude": 1.5, "frequency": [2.0, -3.0], "phase": 0.25},
     lambda x: [1.5 * math.sin(2 * x[0] - 3 * x[1] + 0.25)], None),
    ("stack_sum_d2", 2, 2, {"kind": "stack", "components": [
        {"kind": "sum", "terms": [{"kind": "sine", "frequency": [1.0, 1.0]}, {"kind": "affine", "slope": [0.5, 0.0]}]},
        {"kind": "affine", "slope": [0.0, 1.0], "intercept": -2.0}]},
     lambda x: [math.sin(x[0] + x[1]) + 0.5 * x[0], x[1] - 2], None),
]
TARGETS_1D = [t for t in TARGETS if t[1] == 1]


def make_problem(d, k, target, measure=None, width=3):
    config = {"network": {"input_dim": d, "width": width, "output_dim": k}, "domain": [A, B], "target": target}
    if measure is not None:
        config["measure"] = measure
    elif d > 1:
        config["measure"] = {"kind": "qmc", "n_points": 16}
    return Problem.from_config(config, backend="numpy")


def formula_values(formula, x):
    return np.array([formula(tuple(row)) for row in x], dtype=float)


@pytest.mark.parametrize("name, d, k, target, formula, breaks", TARGETS, ids=[t[0] for t in TARGETS])
def test_target_pointwise_against_formula(name, d, k, target, formula, breaks):
    problem = make_problem(d, k, target)
    x = A + (B - A) * RNG.random((200, d))
    if breaks:
        x = np.concatenate([x, np.array(breaks)[:, None], [[A], [B]]])
    expected = formula_values(formula, x)
    got = problem.target(x if d > 1 else x[:, 0])
    assert got.shape == ((x.shape[0],) if k == 1 else (x.shape[0], k))
    scale = 1.0 + np.max(np.abs(expected))
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=0, atol=POINT_RTOL * scale)


def test_sawtooth_shape():
    period, amplitude, offset = 0.4, 1.5, 0.2
    problem = make_problem(1, 1, {"kind": "sawtooth", "period": period, "amplitude": amplitude, "offset": offset})
    troughs = np.arange(-2, 6) * period
    peaks = troughs + period / 2
    np.testing.assert_allclose(problem.target(troughs), offset - amplitude, rtol=0, atol=1e-14 * 10)
    np.testing.assert_allclose(problem.target(peaks), offset + amplitude, rtol=0, atol=1e-14 * 10)
    # Lipschitz with constant 4 |A| / P, attained inside a linear piece
    x, y = A + (B - A) * RNG.random((2, 2000))
    slope = np.abs(problem.target(x) - problem.target(y)) / np.abs(x - y)
    assert np.max(slope) <= 4 * amplitude / period * (1 + 1e-9)
    inside = np.abs(np.diff(problem.target([0.05, 0.1]))[0] / 0.05)
    assert inside == pytest.approx(4 * amplitude / period, rel=1e-12)


# ----------------------------------------------------------------------------------------------------
# densities


def triangular_density(x, a, b, m):
    if x < m:
        return 2 * (x - a) / ((b - a) * (m - a))
    if x > m:
        return 2 * (b - x) / ((b - a) * (b - m))
    return 2 / (b - a)


# (name, domain, measure config, density formula)
DENSITIES = [
    ("uniform", (A, B), {"kind": "uniform"}, lambda x: 1 / (B - A)),
    ("triangular_mid", (A, B), {"kind": "triangular"}, lambda x: triangular_density(x, A, B, 0.5)),
    ("triangular_0.2", (A, B), {"kind": "triangular", "mode": 0.2}, lambda x: triangular_density(x, A, B, 0.2)),
    ("triangular_at_a", (A, B), {"kind": "triangular", "mode": A}, lambda x: 2 * (B - x) / (B - A) ** 2),
    ("triangular_at_b", (A, B), {"kind": "triangular", "mode": B}, lambda x: 2 * (x - A) / (B - A) ** 2),
    # 12 (x - 1/2)^2 = 3 - 12 x + 12 x^2 on [0, 1]: touches zero at 1/2 (the negativity check must accept it)
    ("quadratic_touching_zero", (0.0, 1.0), {"kind": "piecewise_polynomial", "knots": [0.0, 1.0],
                                              "coefficients": [[3.0, -12.0, 12.0]]}, lambda x: 12 * (x - 0.5) ** 2),
    # 1/4 on [0, 1], then x/2 on [1, 2] (mass 1/4 + 3/4), discontinuous at 1
    ("two_pieces", (0.0, 2.0), {"kind": "piecewise_polynomial", "knots": [0.0, 1.0, 2.0],
                                 "coefficients": [[0.25], [0.0, 0.5]]},
     lambda x: 0.25 if x < 1 else 0.5 * x),
    # mass off by 1e-14 (rounding of written coefficients): inside the 1e-12 tolerance, accepted
    ("uniform_rounded", (0.0, 1.0), {"kind": "piecewise_polynomial", "knots": [0.0, 1.0],
                                      "coefficients": [[1.0 + 1e-14]]}, lambda x: 1.0 + 1e-14),
]


@pytest.mark.parametrize("name, domain, config, formula", DENSITIES, ids=[t[0] for t in DENSITIES])
def test_density_integrates_to_one_and_matches_formula(name, domain, config, formula):
    _, density = parse_measure(config, "measure", 1, domain)
    a, b = domain
    # scipy's adaptive quadrature on each polynomial piece is exact to ~1e-15; 1e-12 is the mass tolerance
    mass = sum(integrate.quad(formula, lo, hi, epsabs=1e-14, epsrel=1e-13)[0]
               for lo, hi in zip(density.knots[:-1], density.knots[1:]))
    assert mass == pytest.approx(1.0, rel=0, abs=1e-12)
    mass_ours = sum(integrate.quad(lambda x: float(density.density(x)), lo, hi, epsabs=1e-14, epsrel=1e-13)[0]
                    for lo, hi in zip(density.knots[:-1], density.knots[1:]))
    assert mass_ours == pytest.approx(1.0, rel=0, abs=1e-12)
    x = a + (b - a) * RNG.random(300)
    np.testing.assert_allclose(density.density(x), [formula(t) for t in x], rtol=1e-13, atol=1e-14)
    assert np.all(density.density(np.array([a - 0.1, b + 0.1])) == 0)


# ----------------------------------------------------------------------------------------------------
# the d = 1 table


MEASURES_1D = [{"kind": "uniform"}, {"kind": "triangular", "mode": 0.2},
               {"kind": "piecewise_polynomial", "knots": [A, 1.0, B], "coefficients": [[0.25, 0.125], [0.125, 0.25]]}]


def table_density_formula(measure, x):
    if measure["kind"] == "uniform":
        return 1 / (B - A)
    if measure["kind"] == "triangular":
        return triangular_density(x, A, B, measure["mode"])
    return 0.25 + 0.125 * x if x < 1.0 else 0.125 + 0.25 * x


def test_piecewise_polynomial_example_is_a_density():
    # the third measure above: int_{-1}^{1} (1/4 + x/8) dx + int_1^2 (1/8 + x/4) dx = 1/2 + (1/8 + 3/8) = 1
    assert 0.25 * 2 + 0.125 * 0.0 + 0.125 + 0.25 * 1.5 == 1.0


@pytest.mark.parametrize("measure", MEASURES_1D, ids=[m["kind"] for m in MEASURES_1D])
@pytest.mark.parametrize("name, d, k, target, formula, breaks", TARGETS_1D, ids=[t[0] for t in TARGETS_1D])
def test_table_reproduces_target_and_density(name, d, k, target, formula, breaks, measure):
    problem = make_problem(1, k, target, measure)
    table = problem.table
    knots = table.knots
    assert knots[0] == A and knots[-1] == B and np.all(np.diff(knots) > 0)
    assert table.target_poly.shape[:2] == (len(knots) - 1, k) and table.density_poly.shape[0] == len(knots) - 1
    # every kink of the target and every knot of the density is a knot of the table
    expected_knots = [t for t in breaks if A < t < B]
    if measure["kind"] == "triangular":
        expected_knots.append(measure["mode"])
    if measure["kind"] == "piecewise_polynomial":
        expected_knots.append(1.0)
    assert np.all(np.isin(expected_knots, knots)), (expected_knots, knots)
    # sine terms: every interval short enough for the 16-point rule
    sines = table.sines
    if sines.shape[0]:
        omega = np.max(np.abs(sines[..., 1]))
        assert np.max(np.diff(knots)) * omega <= 1 + 1e-12
        assert table.quad_nodes >= 16
    x = np.concatenate([A + (B - A) * RNG.random(400), knots])
    expected = formula_values(formula, x[:, None])
    scale = 1.0 + np.max(np.abs(expected))
    np.testing.assert_allclose(table.target(x), expected, rtol=0, atol=POINT_RTOL * scale)
    np.testing.assert_allclose(table.density(x), [table_density_formula(measure, t) for t in x], rtol=0, atol=1e-13)


def gl_risk(table, theta, width, nodes):
    """``L`` by Gauss-Legendre with ``nodes`` points on each piece of (table knots U network kinks)."""
    w, b = theta[:width], theta[width:2 * width]
    kinks = [-bi / wi for wi, bi in zip(w, b) if wi != 0 and A < -bi / wi < B]
    cuts = np.unique(np.concatenate([table.knots, kinks]))
    t, weights = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * t
        r = realization(theta, x[:, None], 1, width, table.output_dim) - table.target(x)
        total += 0.5 * (hi - lo) * np.sum(weights * np.sum(r * r, axis=-1) * table.density(x))
    return total


def quad_risk(problem, theta, breaks):
    """``L`` by scipy's adaptive quadrature on the exact target and density, split at all kinks."""
    width = problem.width
    w, b = theta[:width], theta[width:2 * width]
    kinks = [-bi / wi for wi, bi in zip(w, b) if wi != 0]
    cuts = np.unique([t for t in list(problem.table.knots) + kinks if A <= t <= B])

    def integrand(x):
        r = problem.realization(theta, np.array([x])) - problem.target(np.array([x]))
        return float(np.sum(r * r)) * float(problem.table.density(x))

    values = [integrate.quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200) for lo, hi in zip(cuts[:-1], cuts[1:])]
    return sum(v for v, _ in values), sum(e for _, e in values)


@pytest.mark.parametrize(
    "name, target, measure",
    [
        ("cubic_triangular", {"kind": "polynomial", "coefficients": [1.0, -2.0, 0.5, 0.25]}, {"kind": "triangular", "mode": 0.2}),
        ("quartic_quadratic_density", {"kind": "polynomial", "coefficients": [0.0, 1.0, 0.0, 0.0, -0.5]},
         {"kind": "piecewise_polynomial", "knots": [A, B], "coefficients": [[0.0, 0.0, 1 / 3]]}),  # x^2 / 3 on [-1, 2]
        ("sawtooth_uniform", {"kind": "sawtooth", "period": 0.4}, {"kind": "uniform"}),
        ("sine_sum_triangular", {"kind": "sum", "terms": [{"kind": "sine", "frequency": 9.0, "amplitude": 0.5},
                                                           {"kind": "hat", "center": 0.3, "half_width": 0.5}]},
         {"kind": "triangular", "mode": 1.0}),
    ],
)
def test_quad_nodes_integrate_the_risk_exactly(name, target, measure):
    """The risk by Gauss-Legendre with ``quad_nodes`` per piece equals scipy.quad on the true functions.

    On each smooth piece scipy's estimate of its error is ~1e-14 relative (asserted <= 1e-12), and the
    Gauss-Legendre sum over <= ~100 pieces rounds at ~1e-15; 1e-12 relative to L allows for both and is
    far below the error of one node too few (checked below, > 1e-9).
    """
    width = 4
    problem = make_problem(1, 1, target, measure, width=width)
    table = problem.table
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = rng.standard_normal(problem.n_params)
        expected, abserr = quad_risk(problem, theta, [])
        got = gl_risk(table, theta, width, table.quad_nodes)
        assert abserr <= 1e-12 * expected  # scipy's own error estimate leaves room for the check below
        assert abs(got - expected) <= 1e-12 * expected, (got, expected)
        if not table.sines.shape[0] and table.quad_nodes > 2:
            # one node fewer is not exact: the comparison above is able to fail
            fewer = gl_risk(table, theta, width, table.quad_nodes - 1)
            assert abs(fewer - expected) > 1e-9 * expected


def test_quad_nodes_formula():
    # D = 2 max(1, Dt) + Dp: affine + uniform -> D = 2 -> 2 nodes; cubic + triangular -> 7 -> 4; quartic + quadratic -> 10 -> 6
    assert make_problem(1, 1, {"kind": "affine", "slope": 1.0}).table.quad_nodes == 2
    cubic = make_problem(1, 1, {"kind": "polynomial", "coefficients": [1, 2, 3, 4]}, {"kind": "triangular"})
    assert cubic.table.quad_nodes == 4
    quartic = make_problem(1, 1, {"kind": "polynomial", "coefficients": [0, 0, 0, 0, 1.0]},
                           {"kind": "piecewise_polynomial", "knots": [A, B], "coefficients": [[0.0, 0.0, 1 / 3]]})
    assert quartic.table.quad_nodes == 6
    assert make_problem(1, 1, {"kind": "sine", "frequency": 1.0}).table.quad_nodes == 16


# ----------------------------------------------------------------------------------------------------
# discrete measures


def test_qmc_points_weights_and_seeds():
    from scipy.stats import qmc

    config = {"kind": "qmc", "method": "sobol", "n_points": 64, "seed": 3, "scrambled": True}
    normalized, density = parse_measure(config, "measure", 2, (A, B))
    assert density is None and normalized == config
    m1 = discrete_measure(normalized, 2, (A, B))
    m2 = discrete_measure(normalized, 2, (A, B))
    assert m1.points.shape == (64, 2) and np.array_equal(m1.points, m2.points)
    assert np.all((m1.points >= A) & (m1.points < B))
    assert np.all(m1.weights == 1 / 64)
    other = discrete_measure(dict(normalized, seed=4), 2, (A, B))
    assert not np.array_equal(m1.points, other.points)
    reference = qmc.Sobol(2, scramble=True, rng=np.random.default_rng(3)).random(64)
    np.testing.assert_array_equal(m1.points, A + (B - A) * reference)
    # an unscrambled Sobol sequence starts at the corner a
    plain = discrete_measure({"kind": "qmc", "method": "sobol", "n_points": 8, "seed": 0, "scrambled": False}, 3, (A, B))
    assert np.all(plain.points[0] == A)
    halton = discrete_measure(parse_measure({"kind": "qmc", "method": "halton", "n_points": 50}, "measure", 2, (A, B))[0], 2, (A, B))
    assert halton.points.shape == (50, 2) and np.all((halton.points >= A) & (halton.points < B))
    # low discrepancy: the mean of x0 x1 over 1024 Sobol points is within 1e-2 of its integral
    many = discrete_measure({"kind": "qmc", "method": "sobol", "n_points": 1024, "seed": 1, "scrambled": True}, 2, (A, B))
    exact = ((A + B) / 2) ** 2
    assert abs(np.sum(many.weights * many.points[:, 0] * many.points[:, 1]) - exact) < 1e-2


def test_gauss_legendre_tensor_rule_is_exact_to_its_degree():
    n = 3
    measure = discrete_measure({"kind": "gauss_legendre", "n_per_dim": n}, 2, (A, B))
    assert measure.points.shape == (n * n, 2)
    assert math.fsum(measure.weights) == pytest.approx(1.0, abs=1e-15)

    def moment(e):  # int_a^b x^e dx / (b - a)
        return (B ** (e + 1) - A ** (e + 1)) / ((e + 1) * (B - A))

    for e0, e1 in [(0, 0), (5, 4), (2 * n - 1, 2 * n - 1), (3, 0)]:
        got = np.sum(measure.weights * measure.points[:, 0] ** e0 * measure.points[:, 1] ** e1)
        assert got == pytest.approx(moment(e0) * moment(e1), rel=1e-13)
    # degree 2n is not integrated exactly: the check above can fail
    got = np.sum(measure.weights * measure.points[:, 0] ** (2 * n))
    assert abs(got - moment(2 * n)) > 1e-3


def test_data_measure():
    normalized, _ = parse_measure({"kind": "data", "points": [0.0, 0.5, 2.0]}, "measure", 1, (A, B))
    assert normalized == {"kind": "data", "points": [[0.0], [0.5], [2.0]], "weights": None}
    measure = discrete_measure(normalized, 1, (A, B))
    assert measure.points.shape == (3, 1) and np.all(measure.weights == 1 / 3)
    weighted, _ = parse_measure({"kind": "data", "points": [[0, 1], [1, 1]], "weights": [0.25, 0.75]}, "measure", 2, (A, B))
    measure = discrete_measure(weighted, 2, (A, B))
    assert np.array_equal(measure.weights, [0.25, 0.75]) and np.array_equal(measure.points, [[0.0, 1.0], [1.0, 1.0]])
