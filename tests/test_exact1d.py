"""The exact d = 1 risk and generalized gradient (issue 2): numpy reference path and numba kernel.

What is checked, and against what:
- adaptive quadrature of the defining formulas (MATH.md section 2, written independently in
  ``quadrature_reference.py``) on every table builder (affine, piecewise linear with an interior knot,
  cubic, sine, two-output targets; uniform, triangular and piecewise-quadratic densities) with
  parameters that contain every degenerate kink configuration (``tables1d.special_theta``);
- numba == numpy to a few ulps of the natural scale; bitwise batch independence;
- the homogeneity identity ``G_{u_i} . u_i = V[:, i] . G_{V[:, i]}`` and central finite differences;
- that tiny risks are resolved (residual first) and that bad input raises ``ValueError``.
The smoothing limit is in ``test_smoothing_limit.py``, the critical points in ``test_critical_points.py``.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest
from quadrature_reference import risk_and_gradient_reference
from scipy.integrate import IntegrationWarning
from tables1d import SPECIAL_H, case, cases, random_theta, special_theta

from reluflow.kernels import exact1d
from reluflow.kernels import exact1d_numba as _kernels1d
from reluflow.model.piecewise import PiecewiseTable

EPS = np.finfo(float).eps
PATHS = {"numpy": exact1d.risk_and_gradient, "numba": _kernels1d.risk_and_gradient}
CASE_NAMES = [c.name for c in cases()]


def natural_scales(c, theta: np.ndarray, H: int):
    """Per row ``Lambda = |c|_1 + sum_i |V_i|_1 (|w_i| X + |b_i|) + max |f|_1`` (``X = max(|a|, |b|)``),
    a bound of ``|N| + |f|`` on ``[a, b]``, and per gradient component the bound ``Lambda`` times the
    factor multiplying ``r`` in its integrand (``2 |V_i|_1 X``, ``2 |V_i|_1``, ``2 (|w_i| X + |b_i|)``, 2);
    the density is a probability density. Rounding errors of any evaluation are multiples of eps times
    these bounds."""
    theta = np.atleast_2d(theta)
    k = c.k
    X = max(abs(c.a), abs(c.b))
    F = max(np.abs(c.target(x)).sum() for x in np.linspace(c.a, c.b, 2001))
    w, b = theta[:, :H], theta[:, H : 2 * H]
    V = theta[:, 2 * H : 2 * H + k * H].reshape(-1, k, H)
    cv = theta[:, 2 * H + k * H :]
    V1 = np.abs(V).sum(axis=1)
    lam = np.abs(cv).sum(axis=1) + np.sum(V1 * (np.abs(w) * X + np.abs(b)), axis=1) + F
    per_neuron_V = np.repeat((2 * (np.abs(w) * X + np.abs(b)))[:, None, :], k, axis=1).reshape(-1, k * H)
    grad_scale = np.concatenate([2 * V1 * X, 2 * V1, per_neuron_V, np.full((theta.shape[0], k), 2.0)], axis=1)
    return lam, grad_scale * lam[:, None]


def quiet_reference(c, theta, H):
    with warnings.catch_warnings():
        # QUADPACK flags "roundoff error" when epsrel = 1.2e-14 is at the level of rounding; on these
        # piecewise-smooth integrands (breakpoints given) the value is still accurate to rounding.
        warnings.simplefilter("ignore", IntegrationWarning)
        return risk_and_gradient_reference(c, theta, H)


# ---- against adaptive quadrature -------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("params", ["special", "random"])
def test_risk_and_gradient_match_adaptive_quadrature(name, params):
    c = case(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{params}".encode()))
    if params == "special":
        H, theta = SPECIAL_H, special_theta(c, rng)
    else:
        H, theta = 6, random_theta(c, 6, rng)
    risk_ref, grad_ref, scale = quiet_reference(c, theta, H)
    assert risk_ref > 0 and np.max(np.abs(grad_ref)) > 0.1  # a non-trivial configuration
    for path, fn in PATHS.items():
        risk, grad = fn(theta, c.table, H)
        # Issue requirement: relative 1e-12. The risk is an integral of a nonnegative function, so its
        # relative error is meaningful as is (here |r| ~ |N|: no cancellation in r).
        assert abs(risk - risk_ref) <= 1e-12 * risk_ref, (path, risk, risk_ref)
        # Each G component relative to the integral of the absolute values of its integrand's terms
        # (``scale``): the accuracy any floating-point evaluation of the formula can have (the
        # reference's rounding is of that size). Dead neurons have scale 0 and must be exactly 0.
        err = np.abs(grad - grad_ref)
        assert np.all(err <= 1e-12 * scale), (path, np.max(err / np.where(scale > 0, scale, 1)))
        # ... and relative to the size of G itself (no component here is small by cancellation).
        assert np.max(err) <= 1e-12 * np.max(np.abs(grad_ref)), path


# ---- numba == numpy, batch independence --------------------------------------------------------------


def _batch(c, rng):
    """Special rows (all degenerate kink configurations) and generic rows, H = SPECIAL_H."""
    special = np.stack([special_theta(c, rng) for _ in range(20)])
    generic = random_theta(c, SPECIAL_H, rng, size=60)
    return np.concatenate([special, generic])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_numba_equals_numpy_to_a_few_ulps_of_the_natural_scale(name):
    c = case(name)
    rng = np.random.default_rng(7)
    theta = _batch(c, rng)
    H = SPECIAL_H
    risk_np, grad_np = exact1d.risk_and_gradient(theta, c.table, H)
    risk_nb, grad_nb = _kernels1d.risk_and_gradient(theta, c.table, H)
    lam, grad_scale = natural_scales(c, theta, H)
    # The two paths differ only in the order of additions (slopes/intercepts, sums over pieces).
    # Both form r with an error of a few eps * Lambda (|r| <= Lambda), so |dL| <= 2 sqrt(L) * (few eps
    # Lambda) and |dG_j| <= few eps * grad_scale_j; measured: below 0.4 eps of these bounds. 8 eps
    # leaves room for unlucky rows while a wrong active set or a missing term (O(1)) is far above.
    assert np.all(np.abs(risk_nb - risk_np) <= 8 * EPS * 2 * lam * np.sqrt(risk_np))
    assert np.all(np.abs(grad_nb - grad_np) <= 8 * EPS * grad_scale)


@pytest.mark.parametrize("path", list(PATHS))
def test_rows_are_bitwise_independent_of_the_batch(path):
    fn = PATHS[path]
    c = case("k2-pl,sine-pwquadratic")
    rng = np.random.default_rng(11)
    theta = _batch(c, rng)
    H = SPECIAL_H
    risk, grad = fn(theta, c.table, H)
    for row in (0, 3, 25, len(theta) - 1):  # alone, as a 1-D vector
        r1, g1 = fn(theta[row], c.table, H)
        assert r1.shape == () and g1.shape == theta[row].shape
        assert r1.tobytes() == risk[row].tobytes() and g1.tobytes() == grad[row].tobytes()
    perm = rng.permutation(len(theta))
    mixed = np.concatenate([theta[perm], theta[:5]])  # other order, other size, duplicates
    r2, g2 = fn(mixed, c.table, H)
    assert r2[: len(theta)].tobytes() == risk[perm].tobytes()
    assert g2[: len(theta)].tobytes() == grad[perm].tobytes()
    r3, g3 = fn(theta.reshape(4, -1, theta.shape[-1]), c.table, H)  # leading batch shape kept
    assert r3.shape == (4, len(theta) // 4) and g3.shape == (4, len(theta) // 4, theta.shape[-1])
    assert r3.ravel().tobytes() == risk.tobytes()


def test_wide_networks_with_shared_kinks_numba_equals_numpy():
    """H = 64 (bucket sort with collisions): many neurons share a handful of kinks."""
    c = case("pl-triangular")
    rng = np.random.default_rng(3)
    H = 64
    theta = random_theta(c, H, rng, size=200)
    shared = rng.choice([0.125, 0.375, 0.5, 0.75], size=(200, H))  # dyadic, one is the knot
    theta[:, H : 2 * H] = np.where(rng.random((200, H)) < 0.5, -theta[:, :H] * shared, theta[:, H : 2 * H])
    risk_np, grad_np = exact1d.risk_and_gradient(theta, c.table, H)
    risk_nb, grad_nb = _kernels1d.risk_and_gradient(theta, c.table, H)
    lam, grad_scale = natural_scales(c, theta, H)
    assert np.all(np.abs(risk_nb - risk_np) <= 8 * EPS * 2 * lam * np.sqrt(risk_np))  # as above
    assert np.all(np.abs(grad_nb - grad_np) <= 8 * EPS * grad_scale)


# ---- identities ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", CASE_NAMES)
def test_homogeneity_identity(path, name):
    """relu is positively homogeneous: ``w_i G_W[i] + b_i G_b[i] = V[:, i] . G_V[:, i]`` (both sides are
    ``2 int_{I_i} (w_i x + b_i) V_i . r p``)."""
    c = case(name)
    rng = np.random.default_rng(5)
    H = SPECIAL_H
    theta = _batch(c, rng)
    risk, grad = PATHS[path](theta, c.table, H)
    k = c.k
    w, b = theta[:, :H], theta[:, H : 2 * H]
    V = theta[:, 2 * H : 2 * H + k * H].reshape(-1, k, H)
    gV = grad[:, 2 * H : 2 * H + k * H].reshape(-1, k, H)
    lhs = w * grad[:, :H] + b * grad[:, H : 2 * H]
    rhs = np.sum(V * gV, axis=1)
    # Each side sums terms 2 V_mi (w_i S1_m + b_i S0_m) with |S0_m|, |S1_m|/X <= sqrt(L) (Cauchy-
    # Schwarz, probability density): rounding is a few eps of 2 |V_i|_1 (|w_i| X + |b_i|) sqrt(L).
    X = max(abs(c.a), abs(c.b))
    bound = 2 * np.abs(V).sum(axis=1) * (np.abs(w) * X + np.abs(b)) * np.sqrt(risk)[:, None]
    assert np.all(np.abs(lhs - rhs) <= 16 * EPS * bound)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["affine-uniform[-1,2]", "pl-triangular", "k2-pl,sine-pwquadratic"])
def test_central_finite_differences_away_from_kinks(path, name):
    """Where no kink sits on a knot, an end or another kink, L is smooth and G = grad L."""
    c = case(name)
    rng = np.random.default_rng(2)
    H = 5
    fn = PATHS[path]
    obstacles = np.concatenate([[c.a, c.b], c.interior_knots])
    while True:  # kinks inside, at least 0.05 (b - a) from knots, ends and each other
        xi = np.sort(rng.uniform(c.a, c.b, H))
        gaps = np.abs(np.concatenate([xi[:, None] - obstacles[None, :], np.diff(xi)[:, None]], axis=None))
        if np.min(gaps) > 0.05 * (c.b - c.a):
            break
    w = rng.choice([-1.0, 1.0], H) * rng.uniform(0.5, 1.5, H)
    theta = np.concatenate([w, -w * xi, rng.normal(size=c.k * H), rng.normal(size=c.k)])
    _, grad = fn(theta, c.table, H)
    h = 1e-5
    steps = h * np.eye(theta.size)
    plus, _ = fn(theta + steps, c.table, H)
    minus, _ = fn(theta - steps, c.table, H)
    fd = (plus - minus) / (2 * h)
    # Central differences: truncation h^2 |L'''| / 6 with |L'''| = O(10) here (1e-9), rounding
    # eps |L| / h (1e-11); a kink moves by h / |w| <= 2e-5, far from any obstacle. 1e-7 has a 100x
    # margin; a wrong active set or factor is O(1e-1) or more.
    assert np.max(np.abs(fd - grad)) <= 1e-7 * max(1.0, np.max(np.abs(grad)))


# ---- tiny risks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("delta", [1e-6, 1e-9])
def test_tiny_risks_are_resolved(path, delta):
    """f = alpha x + beta on [0, 1] (uniform), one neuron w = 1, b = 0 (kink at a, active everywhere),
    V = alpha, c = beta + delta: r = delta exactly, L = delta^2 (down to 1e-18), G_c = 2 delta."""
    alpha, beta = 1.7, -0.4
    table = PiecewiseTable(np.array([0.0, 1.0]), np.array([[[beta, alpha]]]), np.zeros((0, 1, 3)), np.array([[1.0]]), 2)
    theta = np.array([1.0, 0.0, alpha, beta + delta])
    risk, grad = PATHS[path](theta, table, 1)
    # r = (alpha x + beta + delta) - (alpha x + beta) is formed with an error of a few eps |f| <= 1e-15
    # (and beta + delta carries 1e-16): relative error of r <= 1e-15 / delta, of L twice that.
    # Expanding |N|^2 - 2 N f + |f|^2 instead would make errors of 1e-16 absolute: 100 x L at 1e-9.
    assert abs(risk - delta**2) <= 4 * (1e-15 / delta) * delta**2
    assert abs(grad[-1] - 2 * delta) <= 4e-15  # G_c = 2 int r, absolute rounding of r


# ---- input checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(PATHS))
def test_bad_input_raises_value_error_naming_the_argument(path):
    fn = PATHS[path]
    c = case("affine-uniform[-1,2]")
    theta = np.zeros(c.n_params(3))
    with pytest.raises(ValueError, match="^theta"):
        fn(theta[:-1], c.table, 3)
    bad = theta.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="^theta"):
        fn(bad, c.table, 3)
    for width in (0, 2.5, True):
        with pytest.raises(ValueError, match="^width"):
            fn(theta, c.table, width)
    with pytest.raises(ValueError, match="^table"):
        fn(theta, "not a table", 3)
    t = c.table
    with pytest.raises(ValueError, match=r"^table\.quad_nodes"):  # 1 node is not exact for |r|^2
        fn(theta, PiecewiseTable(t.knots, t.target_poly, t.sines, t.density_poly, 1), 3)
    with pytest.raises(ValueError, match=r"^table\.knots"):
        fn(theta, PiecewiseTable(t.knots[::-1], t.target_poly, t.sines, t.density_poly, 2), 3)


def test_quadrature_rule_size():
    """``required_quad_nodes``: 2 Q - 1 >= 2 max(1, Dt) + Dp (ignoring all-zero top coefficients)."""
    assert exact1d.required_quad_nodes(case("affine-uniform[-1,2]").table) == 2  # degree 2
    assert exact1d.required_quad_nodes(case("pl-triangular").table) == 2  # 2 + 1 = 3
    assert exact1d.required_quad_nodes(case("cubic-pwquadratic").table) == 5  # 6 + 2 = 8
    t = case("cubic-uniform").table
    padded = PiecewiseTable(t.knots, np.concatenate([t.target_poly, np.zeros_like(t.target_poly)], axis=2), t.sines, t.density_poly, 4)
    assert exact1d.required_quad_nodes(padded) == 4  # degree 6 (the zero powers do not count)


def test_empty_batch():
    c = case("affine-uniform[-1,2]")
    for fn in PATHS.values():
        risk, grad = fn(np.zeros((0, c.n_params(2))), c.table, 2)
        assert risk.shape == (0,) and grad.shape == (0, c.n_params(2))
