"""Tests of :func:`reluflow.kernels.jacobian1d.gradient_jacobian`: the exact Jacobian ``dG/dtheta`` for d = 1.

Independent references:

- central finite differences of ``G`` from :func:`reluflow.kernels.exact1d.risk_and_gradient` (another developer's
  kernel with another algorithm: sorted pieces, residual first), at generic points;
- Richardson-extrapolated second differences of the risk ``L`` alone (``u^T J u`` is the curvature of ``L``);
- ``scipy.integrate.quad`` of the diagonal neuron entries, with the kink term built from pointwise
  evaluations of the network, target and density;
- the exact identity from the rescaling invariance of ``L`` (no differences at all);
- the closed-form critical points of MATH.md section 5.

Tolerances are relative to the scale ``max |J|`` of each row's Jacobian and are justified where used.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from reluflow import Problem
from reluflow.kernels.exact1d import risk_and_gradient
from reluflow.kernels.jacobian1d import BACKENDS, gradient_jacobian
from reluflow.model.piecewise import PiecewiseTable

CONFIGS = {
    # k = 1, affine target, uniform density
    "affine-uniform": {"network": {"width": 4}, "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}},
    # k = 1, piecewise-linear target (knots inside), triangular density, domain not [0, 1]
    "pwlinear-triangular": {
        "network": {"width": 4},
        "domain": [-1.0, 2.0],
        "target": {"kind": "piecewise_linear", "knots": [-1.0, 0.2, 1.0, 2.0], "values": [0.0, 1.0, -0.5, 0.3]},
        "measure": {"kind": "triangular", "mode": 0.7},
    },
    # k = 1, sine target (Gauss-Legendre accurate to rounding, not exact), uniform density
    "sine-uniform": {"network": {"width": 4}, "target": {"kind": "sine", "frequency": 6.0, "amplitude": 0.8, "phase": 0.3}},
    # k = 2, affine, uniform
    "affine2-uniform": {
        "network": {"width": 3, "output_dim": 2},
        "target": {"kind": "affine", "slope": [1.0, -2.0], "intercept": [0.5, 0.0]},
    },
    # k = 2, sine + piecewise linear, triangular
    "sine-pwlinear2-triangular": {
        "network": {"width": 3, "output_dim": 2},
        "target": {
            "kind": "stack",
            "components": [
                {"kind": "sine", "frequency": 3.0},
                {"kind": "piecewise_linear", "knots": [0.0, 0.4, 1.0], "values": [0.0, 1.0, -1.0]},
            ],
        },
        "measure": {"kind": "triangular"},
    },
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def problem(request):
    return Problem.from_config(CONFIGS[request.param])


def generic_theta(rng, problem, M, gap=0.03, p_inside=0.8):
    """``M`` parameter vectors whose kinks inside ``(a, b)`` are ``>= gap (b - a)`` apart from each other, from
    the table's knots and from ``a, b``; other neurons have kinks outside (fully active or dead).
    ``|w_i|`` in ``[0.5, 2]``; ``V, c`` standard normal."""
    H = problem.width
    a, b = problem.domain
    out = np.empty((M, problem.n_params))
    for row in range(M):
        while True:
            inside = rng.random(H) < p_inside
            outside = np.where(rng.random(H) < 0.5, a - rng.uniform(0.1, 1.0, H) * (b - a), b + rng.uniform(0.1, 1.0, H) * (b - a))
            xi = np.where(inside, rng.uniform(a, b, H), outside)
            points = np.sort(np.concatenate([xi[inside], problem.table.knots]))
            if inside.any() and np.all(np.diff(points) >= gap * (b - a)):
                break
        w = rng.choice([-1.0, 1.0], H) * rng.uniform(0.5, 2.0, H)
        out[row, :H] = w
        out[row, H : 2 * H] = -w * xi
        out[row, 2 * H :] = rng.normal(size=problem.n_params - 2 * H)
    return out


def fd_jacobian(theta, problem, h_rel=1e-6):
    """Central differences ``(G(theta + h e_s) - G(theta - h e_s)) / 2h``, ``h = h_rel max(1, |theta_s|)``,
    with ``G`` from the numpy reference kernel :mod:`reluflow.kernels.exact1d`; returns ``J[r, s] = dG_r/dtheta_s``."""
    M, n = theta.shape
    h = h_rel * np.maximum(1.0, np.abs(theta))
    steps = h[:, :, None] * np.eye(n)
    plus = risk_and_gradient((theta[:, None, :] + steps).reshape(-1, n), problem.table, problem.width)[1]
    minus = risk_and_gradient((theta[:, None, :] - steps).reshape(-1, n), problem.table, problem.width)[1]
    return np.swapaxes((plus - minus).reshape(M, n, n) / (2.0 * h[:, :, None]), 1, 2)


def assert_close(actual, expected, bound):
    """``|actual - expected| <= bound`` elementwise (broadcasting); reports the worst error/bound ratio."""
    error = np.abs(np.asarray(actual) - np.asarray(expected))
    ratio = error / np.broadcast_to(bound, error.shape)
    assert np.all(error <= bound), f"worst |error| / bound = {np.max(ratio):.3g} at {np.unravel_index(np.argmax(ratio), ratio.shape)}"


def scale(J):
    """Per-row scale of the Jacobian, ``max |J|``, shaped to broadcast against ``J``."""
    return np.max(np.abs(J), axis=(-2, -1), keepdims=True)


def kink_terms(theta, problem):
    """``rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i|`` for kinks inside ``(a, b)`` (else 0), from pointwise
    evaluations of the network (``Problem.realization``), the target's definition and the density."""
    H, k = problem.width, problem.output_dim
    a, b = problem.domain
    w, bias = theta[:H], theta[H : 2 * H]
    V = theta[2 * H : 2 * H + k * H].reshape(k, H)
    rho = np.zeros(H)
    for i in range(H):
        xi = -bias[i] / w[i]
        if a < xi < b:
            residual = np.atleast_1d(problem.realization(theta, [xi])[0] - problem.target([xi])[0])
            rho[i] = 2.0 * (V[:, i] @ residual) * problem.table.density(xi) / abs(w[i])
    return rho


# ------------------------------------------------------------------------------------------------------
# generic points: finite differences, second differences of L, quadrature, rescaling identity


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_central_differences_of_G(problem, backend):
    rng = np.random.default_rng(11)
    theta = generic_theta(rng, problem, 6)
    J = gradient_jacobian(theta, problem.table, problem.width, backend=backend)
    J_fd = fd_jacobian(theta, problem)
    # Central differences with h = 1e-6 (relative): truncation h^2 |G'''| / 6 ~ 1e-13 and rounding
    # ~ eps |G| / h ~ 1e-10 relative to max |J| (measured: <= 2e-10 on these configurations). No kink crosses
    # another or a knot within +-h (they are >= 0.03 (b - a) apart and move by <= ~1e-5), so G is smooth on
    # the stencil. 1e-7 leaves a 500x margin; a missing or wrong term is O(1e-2) or more (see
    # test_kink_terms_are_material_and_match_quadrature for the smallest one, the kink term).
    assert_close(J, J_fd, 1e-7 * scale(J))


def test_jacobian_is_symmetric_and_so_is_the_fd_jacobian(problem):
    """``J`` is the Hessian of ``L``: exactly symmetric by construction (both triangles are written from the
    same number), and the finite-difference Jacobian of ``G`` -- which knows nothing of that construction --
    is symmetric to its own accuracy, which is what justifies it."""
    rng = np.random.default_rng(12)
    theta = generic_theta(rng, problem, 6)
    for backend in BACKENDS:
        J = gradient_jacobian(theta, problem.table, problem.width, backend=backend)
        assert np.array_equal(J, np.swapaxes(J, 1, 2)), backend
    J_fd = fd_jacobian(theta, problem)
    # each FD entry is within ~2e-10 max|J| of the truth (previous test): 1e-7 as there
    assert_close(J_fd, np.swapaxes(J_fd, 1, 2), 1e-7 * scale(J_fd))


def test_quadratic_form_is_the_curvature_of_the_risk(problem):
    """``u^T J u = d^2/ds^2 L(theta + s u)`` at ``s = 0``: only the risk is used, not ``G``."""
    rng = np.random.default_rng(13)
    theta = generic_theta(rng, problem, 6)
    J = gradient_jacobian(theta, problem.table, problem.width)
    u = rng.normal(size=theta.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    L0 = problem.risk(theta)

    def second_difference(s):
        return (problem.risk(theta + s * u) - 2.0 * L0 + problem.risk(theta - s * u)) / s**2

    s = 2e-3
    # Richardson extrapolation removes the s^2 term; what is left is O(s^4 L^(6)) ~ 1e-11 and rounding
    # ~ 10 eps L / s^2 ~ 3e-10 L (measured <= 5e-10 max|J|). Kinks move by <= s (1 + |xi|) / 0.5 <= 0.012,
    # less than half their separation, so L is smooth along the stencil. Tolerance 1e-7 max|J|: 200x margin.
    curvature = (4.0 * second_difference(s / 2) - second_difference(s)) / 3.0
    quadratic = np.array([u[r] @ J[r] @ u[r] for r in range(len(u))])
    assert_close(curvature, quadratic, 1e-7 * scale(J)[:, 0, 0])


def test_kink_terms_are_material_and_match_quadrature(problem):
    """Diagonal neuron entries against ``scipy.integrate.quad`` plus the kink term from pointwise values:

    ``J[b_i, b_i] = 2 |V_i|^2 int_{I_i} p + rho_i``, ``J[w_i, b_i] = 2 |V_i|^2 int_{I_i} x p + rho_i xi_i``,
    ``J[w_i, w_i] = 2 |V_i|^2 int_{I_i} x^2 p + rho_i xi_i^2``. Also checks that the kink terms are large
    enough at these points for the finite-difference test to notice if they were missing."""
    rng = np.random.default_rng(14)
    theta = generic_theta(rng, problem, 3)
    J = gradient_jacobian(theta, problem.table, problem.width)
    H, k = problem.width, problem.output_dim
    a, b = problem.domain
    largest_kink_term = 0.0
    for r in range(len(theta)):
        w, bias = theta[r, :H], theta[r, H : 2 * H]
        V = theta[r, 2 * H : 2 * H + k * H].reshape(k, H)
        rho = kink_terms(theta[r], problem)
        for i in range(H):
            xi = -bias[i] / w[i]
            lo, hi = (min(max(xi, a), b), b) if w[i] > 0 else (a, min(max(xi, a), b))
            knots = problem.table.knots
            breaks = knots[(knots > lo) & (knots < hi)]
            moments = [
                integrate.quad(lambda x, s=s: x**s * problem.table.density(x), lo, hi, epsabs=1e-14, epsrel=1e-13,
                               points=breaks if breaks.size else None)[0]
                if hi > lo else 0.0
                for s in range(3)
            ]  # fmt: skip
            vv = 2.0 * V[:, i] @ V[:, i]
            xi_in = xi if rho[i] != 0.0 else 0.0
            expected = {(H + i, H + i): vv * moments[0] + rho[i], (i, H + i): vv * moments[1] + rho[i] * xi_in,
                        (i, i): vv * moments[2] + rho[i] * xi_in**2}  # fmt: skip
            for (p, q), value in expected.items():
                # quad is accurate to ~1e-13 here; J to ~1e-15: 1e-10 of the scale is a loose, safe bound
                assert abs(J[r, p, q] - value) <= 1e-10 * np.max(np.abs(J[r])), (r, i, p, q, J[r, p, q], value)
            largest_kink_term = max(largest_kink_term, np.max(np.abs(rho)) / np.max(np.abs(J[r])))
    # Omitting the kink terms would change J by this much, >> the 1e-7 FD tolerance.
    assert largest_kink_term > 1e-2


def test_rescaling_identity(problem):
    """``L`` is invariant under ``(w_i, b_i, V_i) -> (w_i / s, b_i / s, s V_i)``. Differentiating
    ``G(theta) . zeta_i(theta) = 0``, ``zeta_i = (-w_i, -b_i, V_i)`` on neuron i's entries, once more gives
    ``J zeta_i = -(D zeta_i)^T G``: ``(J zeta_i)_{w_i} = G_{w_i}``, ``(J zeta_i)_{b_i} = G_{b_i}``,
    ``(J zeta_i)_{V[m,i]} = -G_{V[m,i]}``, all other components 0. Exact (no differences)."""
    rng = np.random.default_rng(15)
    theta = generic_theta(rng, problem, 5)
    H, k, n = problem.width, problem.output_dim, problem.n_params
    J = gradient_jacobian(theta, problem.table, problem.width)
    G = risk_and_gradient(theta, problem.table, problem.width)[1]
    for i in range(H):
        v_idx = 2 * H + np.arange(k) * H + i
        zeta = np.zeros_like(theta)
        zeta[:, i], zeta[:, H + i], zeta[:, v_idx] = -theta[:, i], -theta[:, H + i], theta[:, v_idx]
        expected = np.zeros_like(theta)
        expected[:, i], expected[:, H + i], expected[:, v_idx] = G[:, i], G[:, H + i], -G[:, v_idx]
        J_zeta = np.array([J[r] @ zeta[r] for r in range(len(theta))])
        # both sides are sums of O(n) terms of size max|J| |theta|, each with ~1 ulp error: 1e-12 is > 100x that
        bound = 1e-12 * scale(J)[:, 0, :] * np.max(np.abs(theta), axis=1, keepdims=True) * n
        assert_close(J_zeta, expected, bound)


def test_backends_agree(problem):
    """The compiled kernel and the numpy reference differ only in summation order: a few ulps of the scale."""
    rng = np.random.default_rng(16)
    theta = np.concatenate([generic_theta(rng, problem, 4), degenerate_rows(problem, rng)])
    J_numba = gradient_jacobian(theta, problem.table, problem.width, backend="numba")
    J_numpy = gradient_jacobian(theta, problem.table, problem.width, backend="numpy")
    # entries are sums of <= ~4 H terms of size <= max|J|: 1e-13 max|J| is ~ 100 ulps of the scale
    assert_close(J_numba, J_numpy, 1e-13 * scale(J_numpy) + 1e-300)


# ------------------------------------------------------------------------------------------------------
# reproducibility and shapes


def degenerate_rows(problem, rng):
    """Rows with a kink at a, at b, at an interior knot, two coinciding kinks, w = 0 with b > 0, b < 0, b = 0."""
    H = problem.width
    a, b = problem.domain
    knots = problem.table.knots
    base = generic_theta(rng, problem, 1)[0]
    special = {0: (1.3, a), 1: (-0.8, b)}
    if knots.size > 2:
        special[2] = (1.1, knots[1])
    rows = []
    for variant in range(4):
        theta = base.copy()
        if variant == 0:
            for i, (w, xi) in special.items():
                if i < H:
                    theta[i], theta[H + i] = w, -w * xi
        elif variant == 1:
            theta[1], theta[H + 1] = -2.0 * theta[0], 2.0 * theta[H + 0]  # same kink as neuron 0
        elif variant == 2:
            theta[0], theta[H + 0], theta[1], theta[H + 1] = 0.0, 0.7, 0.0, -0.4
        else:
            theta[0], theta[H + 0] = 0.0, 0.0
        rows.append(theta)
    return np.array(rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_are_bitwise_independent_of_the_batch(problem, backend):
    rng = np.random.default_rng(17)
    theta = np.concatenate([generic_theta(rng, problem, 5), degenerate_rows(problem, rng)])
    J = gradient_jacobian(theta, problem.table, problem.width, backend=backend)
    n = problem.n_params
    assert J.shape == (len(theta), n, n)
    for r in range(len(theta)):  # alone, unbatched
        assert np.array_equal(gradient_jacobian(theta[r], problem.table, problem.width, backend=backend), J[r])
    perm = rng.permutation(len(theta))
    assert np.array_equal(gradient_jacobian(theta[perm], problem.table, problem.width, backend=backend), J[perm])
    others = generic_theta(np.random.default_rng(99), problem, 7)
    mixed = np.concatenate([others[:3], theta[2:5], others[3:]])  # other companions, other batch size
    assert np.array_equal(gradient_jacobian(mixed, problem.table, problem.width, backend=backend)[3:6], J[2:5])
    batched = gradient_jacobian(theta[:6].reshape(2, 3, n), problem.table, problem.width, backend=backend)
    assert batched.shape == (2, 3, n, n)
    assert np.array_equal(batched.reshape(6, n, n), J[:6])
    assert gradient_jacobian(np.empty((0, n)), problem.table, problem.width, backend=backend).shape == (0, n, n)


# ------------------------------------------------------------------------------------------------------
# critical points of MATH.md section 5


AFFINE_ALPHA, AFFINE_BETA = 1.5, -0.3


def affine_problem(width):
    return Problem.from_config(
        {"network": {"width": width}, "target": {"kind": "affine", "slope": AFFINE_ALPHA, "intercept": AFFINE_BETA}}
    )


def test_h2_critical_point_is_a_saddle():
    """JR's H = 2 critical point on [0, 1] (neurons (-1, 2/3, -2/3 alpha), (1, -1/3, 2/3 alpha), c = beta +
    alpha / 2; G = 0, L = alpha^2 / 972). Found (not assumed): the Hessian is NOT positive semi-definite.
    For alpha = 1.5 its eigenvalues are about -0.0449, -0.00744, 0, 0, 0.0941, 0.925, 4.51: a saddle with two
    descent directions, and the two zero eigenvalues are the rescaling directions of the two neurons."""
    problem = affine_problem(2)
    alpha, beta = AFFINE_ALPHA, AFFINE_BETA
    theta = np.array([-1.0, 1.0, 2 / 3, -1 / 3, -2 / 3 * alpha, 2 / 3 * alpha, beta + alpha / 2])
    risk, G = problem.risk_and_gradient(theta)
    assert risk == pytest.approx(alpha**2 / 972, rel=1e-12)
    assert np.max(np.abs(G)) < 1e-14  # it is the critical point
    J = gradient_jacobian(theta, problem.table, 2)
    assert np.all(np.isfinite(J)) and np.array_equal(J, J.T)
    # kinks 1/3 and 2/3 are inside and apart: the FD reference applies (tolerance as in the generic test)
    assert_close(J, fd_jacobian(theta[None], problem)[0], 1e-7 * np.max(np.abs(J)))
    eigenvalues = np.linalg.eigvalsh(J)  # ascending
    assert eigenvalues[0] < -1e-2 and eigenvalues[1] < -1e-3  # two descent directions
    assert np.all(np.abs(eigenvalues[2:4]) < 1e-14)  # the two rescaling directions
    assert eigenvalues[4] > 1e-2
    # the rescaling directions (-w_i, -b_i, v_i) are exact null vectors at a critical point
    for i in range(2):
        zeta = np.zeros(7)
        zeta[[i, 2 + i, 4 + i]] = -theta[i], -theta[2 + i], theta[4 + i]
        assert np.max(np.abs(J @ zeta)) < 1e-14
    # a negative eigenvalue is a real descent direction of L: second differences of L along it
    direction = np.linalg.eigh(J)[1][:, 0]
    s = 1e-3  # kinks move by ~1e-3 << 1/3; error of the second difference ~ s^2 |L''''| + eps L / s^2 ~ 1e-6
    curvature = (problem.risk(theta + s * direction) - 2 * risk + problem.risk(theta - s * direction)) / s**2
    assert curvature == pytest.approx(eigenvalues[0], abs=1e-5)


def test_h1_dead_neuron_critical_point():
    """H = 1: a dead neuron plus the best constant c = beta + alpha / 2 is critical with L = alpha^2 / 12.
    The only curvature is in c (2 int p = 2): J = diag(0, 0, 0, 2), positive semi-definite."""
    problem = affine_problem(1)
    alpha, beta = AFFINE_ALPHA, AFFINE_BETA
    for w, b in [(1.0, -2.0), (-1.0, -0.5), (1.0, -1.0), (-1.0, 0.0)]:  # kink outside, none, at b, at a
        theta = np.array([w, b, 0.7, beta + alpha / 2])
        risk, G = problem.risk_and_gradient(theta)
        assert risk == pytest.approx(alpha**2 / 12, rel=1e-12) and np.max(np.abs(G)) < 1e-14
        for backend in BACKENDS:
            J = gradient_jacobian(theta, problem.table, 1, backend=backend)
            np.testing.assert_allclose(J, np.diag([0.0, 0.0, 0.0, 2.0]), rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------------------
# non-differentiable points: finite, symmetric, equal to the documented one-sided limit


def one_sided_gap(table, width, theta, i, direction_xi, delta=1e-8):
    """``max |J(theta) - J(theta')| / max |J|`` where ``theta'`` moves neuron ``i``'s kink by
    ``direction_xi * delta`` (changing ``b_i`` only)."""
    moved = theta.copy()
    moved[width + i] -= theta[i] * direction_xi * delta  # xi = -b / w
    J = gradient_jacobian(theta, table, width)
    return np.max(np.abs(gradient_jacobian(moved, table, width) - J)) / np.max(np.abs(J))


# On one side of a non-differentiable point J is Lipschitz with constant ~ max|J| (measured <= 3 max|J| per
# unit move here), so a move by delta = 1e-8 changes J by ~1e-8 max|J|: "same limit" is <= 1e-6. The
# other side jumps by the kink term, >= 1e-2 max|J| at these points: "different limit" is >= 1e-3.
SAME, DIFFERENT = 1e-6, 1e-3


@pytest.mark.parametrize("w", [1.3, -0.8])
@pytest.mark.parametrize("end", ["a", "b"])
def test_kink_at_an_end_is_the_limit_from_outside(w, end):
    problem = Problem.from_config(
        {"network": {"width": 2}, "domain": [-1.0, 2.0], "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}}
    )
    a, b = problem.domain
    xi = a if end == "a" else b
    theta = np.array([w, 0.9, -w * xi, -0.45, 1.2, -0.7, 0.4])  # neuron 1: kink at 0.5, inside
    assert -theta[2] / theta[0] == xi
    J = gradient_jacobian(theta, problem.table, 2)
    assert np.all(np.isfinite(J)) and np.array_equal(J, J.T)
    outward = -1.0 if end == "a" else 1.0
    assert one_sided_gap(problem.table, 2, theta, 0, outward) < SAME
    assert one_sided_gap(problem.table, 2, theta, 0, -outward) > DIFFERENT


def jump_table():
    """[0, 1] with a knot at 0.5 where both the density (0.5 -> 1.5) and the target (x -> x + 1) jump."""
    return PiecewiseTable(
        knots=np.array([0.0, 0.5, 1.0]),
        target_poly=np.array([[[0.0, 1.0]], [[1.0, 1.0]]]),
        sines=np.zeros((0, 1, 3)),
        density_poly=np.array([[0.5], [1.5]]),
        quad_nodes=2,
    )


@pytest.mark.parametrize("w", [2.0, -2.0])
def test_kink_at_a_jump_uses_the_active_side(w):
    """``p`` and ``f`` in the kink term are the limits from inside ``I_i``: ``J`` is the limit as the kink moves
    into its former active set (right for w > 0, left for w < 0), and differs from the other limit."""
    table = jump_table()
    theta = np.array([w, -1.0, -0.5 * w, 0.3, 1.1, 0.8, -0.2])  # neuron 0: kink exactly at the knot 0.5
    assert -theta[2] / theta[0] == 0.5
    J = gradient_jacobian(theta, table, 2)
    assert np.all(np.isfinite(J)) and np.array_equal(J, J.T)
    into_active_set = 1.0 if w > 0 else -1.0
    assert one_sided_gap(table, 2, theta, 0, into_active_set) < SAME
    assert one_sided_gap(table, 2, theta, 0, -into_active_set) > DIFFERENT
    # the value itself: r(0.5) from the right is N(0.5) - 1.5, p = 1.5; from the left N(0.5) - 0.5, p = 0.5
    network = -0.2 + 0.8 * max(-1.0 * 0.5 + 0.3, 0.0)
    residual, density = (network - 1.5, 1.5) if w > 0 else (network - 0.5, 0.5)
    rho = 2.0 * 1.1 * residual * density / abs(w)
    mass = 1.5 * 0.5 if w > 0 else 0.5 * 0.5  # int_{I_0} p: I_0 = (0.5, 1] or [0, 0.5)
    assert J[2, 2] == pytest.approx(2.0 * 1.1**2 * mass + rho, rel=1e-12)  # J[b_0, b_0]


def test_coinciding_interior_kinks_are_differentiable():
    """Two or three kinks at the same interior point: ``J`` is continuous there (``T_s`` and ``r(xi)`` are), so
    ``G`` is differentiable and ``J`` is its derivative."""
    problem = Problem.from_config(
        {"network": {"width": 3}, "target": {"kind": "sine", "frequency": 2.0}, "measure": {"kind": "triangular", "mode": 0.3}}
    )
    w = np.array([1.5, -0.7, 0.9])
    theta = np.concatenate([w, -w * 0.6, [0.8, -1.1, 0.5], [0.2]])
    assert np.all(-theta[3:6] / theta[:3] == 0.6)
    J = gradient_jacobian(theta, problem.table, 3)
    assert np.all(np.isfinite(J)) and np.array_equal(J, J.T)
    rng = np.random.default_rng(18)
    for _ in range(4):  # continuity in random directions (Lipschitz: changes ~ delta max|J|)
        u = rng.normal(size=theta.shape)
        for sign in (1.0, -1.0):
            moved = gradient_jacobian(theta + sign * 1e-8 * u, problem.table, 3)
            assert np.max(np.abs(moved - J)) < SAME * np.max(np.abs(J))
    # The FD stencil now straddles the kinks of J (J is only Lipschitz there), so its error is O(h max|J|)
    # (measured 5e-7) instead of 1e-10: tolerance 1e-5, still far below any O(1e-2) wrong term.
    assert_close(J, fd_jacobian(theta[None], problem)[0], 1e-5 * np.max(np.abs(J)))


def test_zero_inner_weight():
    """``w_i = 0``: for ``b_i != 0`` the neuron is fully active or dead nearby and ``J`` is the true derivative;
    ``w_i = b_i = 0`` gives the limit from ``b_i < 0`` (dead): neuron i's rows and columns vanish."""
    problem = Problem.from_config(CONFIGS["pwlinear-triangular"])
    rng = np.random.default_rng(19)
    H = problem.width
    theta = generic_theta(rng, problem, 1)[0]
    theta[0], theta[H], theta[1], theta[H + 1] = 0.0, 0.6, 0.0, -0.3
    J = gradient_jacobian(theta, problem.table, H)
    J_fd = fd_jacobian(theta[None], problem)[0]  # the steps +-1e-6 in w_i keep the kink outside [a, b]
    assert_close(J, J_fd, 1e-7 * np.max(np.abs(J)))  # as in the generic test
    theta[H] = 0.0
    J = gradient_jacobian(theta, problem.table, H)
    assert np.all(np.isfinite(J)) and np.array_equal(J, J.T)
    neuron0 = [0, H] + [2 * H + m * H for m in range(problem.output_dim)]
    assert np.all(J[neuron0] == 0.0) and np.all(J[:, neuron0] == 0.0)
    below = theta.copy()
    below[H] = -1e-9
    np.testing.assert_array_equal(gradient_jacobian(below, problem.table, H), J)
    # a tiny w with the kink inside: the kink term ~ 1 / |w| is large but finite
    theta[0], theta[H] = 1e-12, -0.5e-12
    assert np.all(np.isfinite(gradient_jacobian(theta, problem.table, H)))


# ------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_naming_the_argument():
    problem = affine_problem(2)
    theta = np.zeros(7)
    with pytest.raises(ValueError, match="theta"):
        gradient_jacobian(np.zeros(6), problem.table, 2)
    with pytest.raises(ValueError, match="theta"):
        gradient_jacobian(np.full(7, np.nan), problem.table, 2)
    with pytest.raises(ValueError, match="width"):
        gradient_jacobian(theta, problem.table, 0)
    with pytest.raises(ValueError, match="backend"):
        gradient_jacobian(theta, problem.table, 2, backend="fortran")
    with pytest.raises(ValueError, match="table"):
        gradient_jacobian(theta, {"knots": [0, 1]}, 2)
