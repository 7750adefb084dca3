"""Tests of the batched Rosenbrock solver (reluflow.dynamics.solvers.rosenbrock).

Independent checks: order conditions from rooted trees (coefficients), linear stability function (L-stability),
the J = 0 limit against a hand-written explicit RK step, empirical convergence orders against solve_ivp,
Robertson and a stiff gradient system against scipy's Radau/LSODA at rtol 1e-12, exact solutions of power-law
flows, the energy identity, counters recomputed from wrapped callables, and bitwise batch independence.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from reluflow.dynamics.solvers import driver
from reluflow.dynamics.solvers.result import Status
from reluflow.dynamics.solvers.rosenbrock import (
    RODAS4,
    RODAS5P,
    ROSENBROCK_TABLEAUS,
    RosenbrockTableau,
    rosenbrock_step,
    solve_rosenbrock,
)
from reluflow.kernels.dense_lu import lu_factor_shifted, lu_solve_into

TABLEAUS = [RODAS4, RODAS5P]


# ----------------------------------------------------------------------------------------------------------
# Rooted trees and order conditions
# ----------------------------------------------------------------------------------------------------------


def _graft(tree):
    """All trees obtained by adding one leaf to ``tree`` (a tree is the sorted tuple of its subtrees)."""
    yield tuple(sorted(tree + ((),)))
    for i, child in enumerate(tree):
        for grown in _graft(child):
            yield tuple(sorted(tree[:i] + (grown,) + tree[i + 1 :]))


@lru_cache(maxsize=None)
def trees_of_order(order: int) -> tuple:
    if order == 1:
        return ((),)
    return tuple(sorted({g for t in trees_of_order(order - 1) for g in _graft(t)}))


def density(tree) -> int:
    """gamma(t) = |t| prod gamma(children); the exact solution's weight is 1/gamma(t)."""
    out = 1 + sum(_size(c) for c in tree)
    for c in tree:
        out *= density(c)
    return out


def _size(tree) -> int:
    return 1 + sum(_size(c) for c in tree)


def rosenbrock_weight(tree, alpha, beta):
    """Elementary weight per stage: a vertex with one child couples by ``beta = alpha + Gamma`` (the linear
    term ``f'`` collects the ``J`` terms, diagonal included), with several children by ``alpha``
    (Hairer & Wanner II, sec. IV.7)."""
    s = alpha.shape[0]
    if len(tree) == 0:
        return np.ones(s)
    if len(tree) == 1:
        return beta @ rosenbrock_weight(tree[0], alpha, beta)
    out = np.ones(s)
    for c in tree:
        out = out * (alpha @ rosenbrock_weight(c, alpha, beta))
    return out


def classical_weight(tree, alpha):
    """Explicit Runge-Kutta elementary weight (the J = 0 limit)."""
    out = np.ones(alpha.shape[0])
    for c in tree:
        out = out * (alpha @ classical_weight(c, alpha))
    return out


def rosenbrock_residuals(tab: RosenbrockTableau, order: int, embedded: bool = False):
    alpha, big_gamma, b, b_hat = tab.classical()
    weights = b_hat if embedded else b
    beta = alpha + big_gamma
    return [weights @ rosenbrock_weight(t, alpha, beta) - 1.0 / density(t) for t in trees_of_order(order)]


def classical_residuals(tab: RosenbrockTableau, order: int, *, gamma_free_only: bool = False):
    alpha, _, b, _ = tab.classical()
    chosen = [t for t in trees_of_order(order) if not gamma_free_only or _no_single_child_vertex(t)]
    return [b @ classical_weight(t, alpha) - 1.0 / density(t) for t in chosen]


def _no_single_child_vertex(tree) -> bool:
    """True if no vertex has exactly one child: then the Rosenbrock weight has no beta, i.e. no Gamma."""
    return len(tree) != 1 and all(_no_single_child_vertex(c) for c in tree)


# The digits are printed with 16 significant figures and the weights combine terms of size up to ~1e3
# (|c_ij| ~ 1e2, |a_ij| ~ 10): round-off ~1e-13. 1e-10 leaves that margin; a wrong digit in the first ten
# places (a typo) moves some residual by far more (checked by the perturbation test below).
ORDER_TOL = 1e-10


def test_tree_counts():
    # 1, 1, 2, 4, 9, 20 rooted trees of orders 1..6 (OEIS A000081)
    assert [len(trees_of_order(k)) for k in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    assert density(((), ())) == 3 and density((((),),)) == 6


def test_rosenbrock_conditions_reproduce_hairer_wanner_table():
    """The generic tree weights reproduce the hand-written conditions of Table IV.7.1 for order <= 3."""
    tab = RODAS4
    alpha, big_gamma, b, _ = tab.classical()
    g = tab.gamma
    beta_strict = alpha + big_gamma - np.diag(np.diag(big_gamma))
    beta_row = beta_strict.sum(1)
    alpha_row = alpha.sum(1)
    assert abs(b.sum() - 1) < ORDER_TOL
    assert abs(b @ beta_row - (0.5 - g)) < ORDER_TOL
    assert abs(b @ alpha_row**2 - 1 / 3) < ORDER_TOL
    assert abs(b @ beta_strict @ beta_row - (1 / 6 - g + g**2)) < ORDER_TOL


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_order_conditions(tab):
    for order in range(1, tab.order + 1):
        res = rosenbrock_residuals(tab, order)
        assert max(abs(r) for r in res) < ORDER_TOL, (tab.name, order, res)
        # J = 0 limit, the explicit RK (alpha, b): the classical conditions of the trees without single-child
        # vertices are the Rosenbrock conditions of those trees (no Gamma in them) and must hold
        cres = classical_residuals(tab, order, gamma_free_only=True)
        assert all(abs(r) < ORDER_TOL for r in cres), (tab.name, "J=0", order, cres)
    for order in range(1, tab.embedded_order + 1):
        res = rosenbrock_residuals(tab, order, embedded=True)
        assert max(abs(r) for r in res) < ORDER_TOL, (tab.name, "embedded", order, res)
    # the orders are exact: some condition of the next order fails clearly
    assert max(abs(r) for r in rosenbrock_residuals(tab, tab.order + 1)) > 1e-4
    assert max(abs(r) for r in rosenbrock_residuals(tab, tab.embedded_order + 1, embedded=True)) > 1e-4


# Classical order of the J = 0 limit (the explicit RK (alpha, b)). Not the method's order: the explicit RK
# needs sum b alpha 1 = 1/2 where the Rosenbrock condition is sum b (alpha + Gamma) 1 = 1/2, so the two agree at
# order 2 only if b^T Gamma 1 = 0. Rodas4 does not impose it (residual -b^T Gamma 1 = -0.032); Rodas5P does
# (its construction adds conditions for inexact Jacobians) but fails at order 3.
J0_ORDER = {"rodas4": 1, "rodas5p": 2}


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_zero_jacobian_limit_order(tab):
    """With J = 0 a Rosenbrock (not W-) method keeps only a low order: ``jac`` must be the exact Jacobian."""
    _, big_gamma, b, _ = tab.classical()
    q = J0_ORDER[tab.name]
    for order in range(1, q + 1):
        assert max(abs(r) for r in classical_residuals(tab, order)) < ORDER_TOL
    assert max(abs(r) for r in classical_residuals(tab, q + 1)) > 1e-3
    (res2,) = classical_residuals(tab, 2)
    assert abs(res2 + b @ big_gamma @ np.ones(tab.stages)) < ORDER_TOL


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_order_conditions_detect_a_wrong_digit(tab):
    """A change in the 8th significant digit of any one coefficient breaks an order condition."""
    s = tab.stages
    for i, j in [(1, 0), (s - 1, 1), (3, 2)]:
        for field in ("a", "c"):
            arr = getattr(tab, field).copy()
            if arr[i, j] == 0:
                continue
            arr[i, j] *= 1 + 1e-7
            kwargs = {f: getattr(tab, f) for f in ("name", "gamma", "a", "c", "m", "m_hat", "order",
                                                    "embedded_order", "reference")}
            kwargs[field] = arr
            bad = RosenbrockTableau(**kwargs)
            worst = max(max(abs(r) for r in rosenbrock_residuals(bad, k)) for k in range(1, tab.order + 1))
            assert worst > ORDER_TOL, (field, i, j)


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_stiffly_accurate_and_l_stable(tab):
    s = tab.stages
    # stiffly accurate: y_1 = last stage argument + u_s, embedded solution = last stage argument
    assert np.array_equal(tab.m_hat[: s - 1], tab.a[s - 1, : s - 1]) and tab.m_hat[s - 1] == 0
    assert np.array_equal(tab.m[: s - 1], tab.a[s - 1, : s - 1]) and tab.m[s - 1] == 1
    alpha, big_gamma, b, b_hat = tab.classical()
    beta = alpha + big_gamma

    def stability(z, w):
        # y' = lambda y: k = z (1 + beta k)  =>  R(z) = 1 + z w^T (I - z beta)^-1 1
        return 1 + z * w @ np.linalg.solve(np.eye(s) - z * beta, np.ones(s))

    for w in (b, b_hat):
        # A-stability: |R| <= 1 on the imaginary axis (R is analytic in Re z < 0, its poles at 1/gamma > 0)
        for y in np.concatenate([-np.logspace(-3, 6, 200), np.logspace(-3, 6, 200)]):
            assert abs(stability(1j * y, w)) <= 1 + 1e-12
        # and inside the left half plane
        for z in [-1e-2, -1.0, -10.0, -1e3, -5 + 20j, -0.1 + 3j]:
            assert abs(stability(z, w)) < 1
        # L-stability: R(-inf) = 0 (|R(z)| = O(1/|z|))
        assert abs(stability(-1e10, w)) < 1e-8


# ----------------------------------------------------------------------------------------------------------
# Linear algebra kernel
# ----------------------------------------------------------------------------------------------------------


def test_lu_kernel_against_numpy_and_singular_rows():
    rng = np.random.default_rng(0)
    m, n = 7, 13
    jac = rng.standard_normal((m, n, n))
    shift = rng.uniform(0.5, 2.0, m)
    jac[3] = np.diag(np.full(n, shift[3]))  # shift I - J = 0: singular
    lu = np.empty((m, n, n))
    piv = np.empty((m, n), dtype=np.int64)
    ok = np.empty(m, dtype=np.bool_)
    lu_factor_shifted(jac, shift, lu, piv, ok)
    assert ok.tolist() == [True, True, True, False, True, True, True]
    b = rng.standard_normal((m, n))
    x = np.empty_like(b)
    lu_solve_into(lu, piv, b, x)  # the singular row gives inf/nan, never a crash
    for r in np.flatnonzero(ok):
        w = np.diag(np.full(n, shift[r])) - jac[r]
        # backward-stable LU: residual ~ eps |W| |x|; 1e-12 is ~100 eps relative to |W||x| ~ 10
        assert np.max(np.abs(w @ x[r] - b[r])) < 1e-12


# ----------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------


def lotka_volterra(y):
    u, v = y[:, 0], y[:, 1]
    return np.stack([u * (1.5 - v), v * (u - 1.0)], axis=-1)


def lotka_volterra_jac(y):
    u, v = y[:, 0], y[:, 1]
    out = np.zeros((len(y), 2, 2))
    out[:, 0, 0] = 1.5 - v
    out[:, 0, 1] = -u
    out[:, 1, 0] = v
    out[:, 1, 1] = u - 1.0
    return out


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_step_with_zero_jacobian_is_the_explicit_rk_step(tab):
    alpha, _, b, _ = tab.classical()
    rng = np.random.default_rng(1)
    y = rng.uniform(0.5, 2.0, (5, 2))
    h = rng.uniform(0.01, 0.2, 5)
    step = rosenbrock_step(tab, lotka_volterra, y, lotka_volterra(y), np.zeros((5, 2, 2)), h)
    k = []
    for i in range(tab.stages):
        arg = y + sum(alpha[i, j] * k[j] for j in range(i)) if i else y
        k.append(h[:, None] * lotka_volterra(arg))
    expected = y + sum(b[i] * k[i] for i in range(tab.stages))
    # same method through different arithmetic (u = Gamma k): agreement to a few hundred eps of |y| ~ 1
    assert np.max(np.abs(step.y_new - expected)) < 1e-13
    assert step.nonsingular.all() and step.n_rhs == 5 * (tab.stages - 1)


def _fixed_step_integrate(tab, y0, t_end, n_steps):
    y = np.array(y0, dtype=float)[None]
    energy = 0.0
    h = np.array([t_end / n_steps])
    for _ in range(n_steps):
        step = rosenbrock_step(tab, lotka_volterra, y, lotka_volterra(y), lotka_volterra_jac(y), h)
        y, energy = step.y_new, energy + step.energy_increment[0]
    return y[0], energy


@pytest.mark.parametrize("tab", TABLEAUS, ids=lambda t: t.name)
def test_empirical_convergence_order_of_state_and_energy(tab):
    """Fixed steps on a nonlinear non-symmetric system: global errors of y and of E = int |f|^2 fall like h^p."""
    y0, t_end = [1.0, 0.7], 2.0

    def augmented(t, z):
        f = lotka_volterra(z[None, :2])[0]
        return np.append(f, f @ f)

    ref = solve_ivp(augmented, (0, t_end), [*y0, 0.0], method="DOP853", rtol=1e-13, atol=1e-15).y[:, -1]
    errs_y, errs_e = [], []
    ns = [20, 40, 80]
    for n in ns:
        y, e = _fixed_step_integrate(tab, y0, t_end, n)
        errs_y.append(np.max(np.abs(y - ref[:2])))
        errs_e.append(abs(e - ref[2]))
    # errors stay far above the reference's ~1e-12 (checked), so the observed orders are clean
    assert min(errs_y + errs_e) > 1e-11
    for errs in (errs_y, errs_e):
        orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
        # asymptotic regime: observed order within 0.35 of p (one order lower would be far outside)
        assert np.all(np.abs(orders - tab.order) < 0.35), (tab.name, errs, orders)


def test_singular_step_rows_are_reported_and_others_unaffected():
    tab = RODAS4
    y = np.array([[1.0, 0.5], [0.8, 1.2], [1.1, 0.9]])
    h = np.array([0.1, 0.1, 0.1])
    jac_y = lotka_volterra_jac(y)
    jac_bad = jac_y.copy()
    jac_bad[1] = np.eye(2) / (h[1] * tab.gamma)  # W = I/(h gamma) - J = 0
    good = rosenbrock_step(tab, lotka_volterra, y, lotka_volterra(y), jac_y, h)
    bad = rosenbrock_step(tab, lotka_volterra, y, lotka_volterra(y), jac_bad, h)
    assert bad.nonsingular.tolist() == [True, False, True]
    assert np.all(np.isnan(bad.y_new[1]))
    assert np.array_equal(bad.y_new[[0, 2]], good.y_new[[0, 2]])
    assert np.array_equal(bad.energy_increment[[0, 2]], good.energy_increment[[0, 2]])


# ----------------------------------------------------------------------------------------------------------
# Robertson
# ----------------------------------------------------------------------------------------------------------


def robertson(y):
    y1, y2, y3 = y[:, 0], y[:, 1], y[:, 2]
    return np.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2], -1)


def robertson_jac(y):
    y2, y3 = y[:, 1], y[:, 2]
    out = np.zeros((len(y), 3, 3))
    out[:, 0, 0] = -0.04
    out[:, 0, 1] = 1e4 * y3
    out[:, 0, 2] = 1e4 * y2
    out[:, 1, 0] = 0.04
    out[:, 1, 1] = -1e4 * y3 - 6e7 * y2
    out[:, 1, 2] = -1e4 * y2
    out[:, 2, 1] = 6e7 * y2
    return out


@pytest.fixture(scope="module")
def robertson_reference():
    times = np.logspace(-4, 8, 13)
    # LSODA at rtol 1e-12: agrees with Radau and BDF at the same setting to 1e-10 relative on every component
    # (measured 7e-11 and 1e-10), i.e. 100x below the errors tested here.
    ref = solve_ivp(lambda t, y: robertson(y[None])[0], (0, times[-1]), [1.0, 0.0, 0.0], method="LSODA",
                    rtol=1e-12, atol=1e-20, t_eval=times, jac=lambda t, y: robertson_jac(y[None])[0])
    assert ref.success
    return times, ref.y.T


@pytest.mark.parametrize("method", sorted(ROSENBROCK_TABLEAUS))
def test_robertson_to_1e8(method, robertson_reference):
    times, ref = robertson_reference
    rtol, atol = 1e-8, 1e-14
    res = solve_rosenbrock(robertson, robertson_jac, [[1.0, 0.0, 0.0]], times, method=method, rtol=rtol, atol=atol)
    assert res.status.tolist() == [Status.FINISHED]
    assert res.t_final[0] == times[-1]
    # error in units of the local tolerance, every component and save time. Robertson is contractive, so local
    # errors do not accumulate: measured max 0.20 (rodas4) and 0.84 (rodas5p); a lower-order method or a
    # wrong coefficient gives >> 1 (the 1e-4..1e-1 transient alone would).
    weighted = np.abs(res.y[0] - ref) / (atol + rtol * np.abs(ref))
    assert weighted.max() < 3.0
    # a Rosenbrock method conserves the linear invariant y1 + y2 + y3 exactly up to round-off (measured 3e-15)
    assert np.max(np.abs(res.y[0].sum(-1) - 1.0)) < 1e-13
    # stiff solver: ~100 steps per decade at rtol 1e-8 (an explicit method needs ~1e8/1e-3 steps)
    assert res.n_steps[0, -1] < 2000


# ----------------------------------------------------------------------------------------------------------
# Stiff gradient system and the energy identity
# ----------------------------------------------------------------------------------------------------------

N_GRAD = 10
_rng = np.random.default_rng(1)
_Q, _ = np.linalg.qr(_rng.standard_normal((N_GRAD, N_GRAD)))
A_GRAD = (_Q * np.logspace(-6, 3, N_GRAD)) @ _Q.T
A_GRAD = 0.5 * (A_GRAD + A_GRAD.T)
QUARTIC = 0.1


def _matvec_rows(y):
    # per-row product summed over the row only: bitwise independent of the batch
    return np.sum(A_GRAD[None] * y[:, None, :], axis=-1)


def grad_rhs(y):
    return -(_matvec_rows(y) + QUARTIC * y**3)


def grad_jac(y):
    return -(A_GRAD[None] + 3 * QUARTIC * y[:, None, :] ** 2 * np.eye(N_GRAD)[None])


def grad_potential(y):
    return 0.5 * np.sum(y * _matvec_rows(y), axis=-1) + 0.25 * QUARTIC * np.sum(y**4, axis=-1)


Y0_GRAD = np.random.default_rng(2).standard_normal((8, N_GRAD))


@pytest.mark.parametrize("method", sorted(ROSENBROCK_TABLEAUS))
def test_stiff_gradient_system_against_lsoda_and_energy_identity(method):
    times = np.array([1.0, 1e2, 1e4])
    res = solve_rosenbrock(grad_rhs, grad_jac, Y0_GRAD, times, method=method, rtol=1e-10, atol=1e-12)
    assert np.all(res.status == Status.FINISHED)
    for r in range(len(Y0_GRAD)):
        ref = solve_ivp(lambda t, y: grad_rhs(y[None])[0], (0, times[-1]), Y0_GRAD[r], method="LSODA",
                        rtol=1e-12, atol=1e-14, t_eval=times, jac=lambda t, y: grad_jac(y[None])[0])
        # measured max 5e-12 (rodas4) and 7e-12 (rodas5p) relative to |y0|; 1e-9 leaves room for the
        # reference's own error (~1e-11) and still fails for any order or coefficient defect (errors ~1e-6+)
        assert np.max(np.abs(res.y[r] - ref.y.T)) < 1e-9 * np.max(np.abs(Y0_GRAD[r]))
    f0 = grad_potential(Y0_GRAD)
    residual = f0[:, None] - grad_potential(res.y.reshape(-1, N_GRAD)).reshape(res.y.shape[:2]) - res.energy
    # energy identity F(y0) - F(y_t) = int |f|^2: measured 8e-11 (rodas4), 1.2e-9 (rodas5p) of F(y0)
    assert np.max(np.abs(residual) / f0[:, None]) < 1e-8


def test_energy_of_a_run_stopping_at_a_critical_point():
    """A linear gradient flow y' = -y: E(t) = |y0|^2 (1 - e^{-2t}) / 2, checked against the closed form."""
    y0 = np.array([[1.0, -2.0], [0.5, 0.25]])
    times = np.array([0.5, 1.0, 3.0])
    res = solve_rosenbrock(lambda y: -y, lambda y: np.broadcast_to(-np.eye(2), (len(y), 2, 2)), y0, times,
                           rtol=1e-10, atol=1e-14)
    exact_e = 0.5 * np.sum(y0**2, -1)[:, None] * (1 - np.exp(-2 * times))[None]
    exact_y = y0[:, None, :] * np.exp(-times)[None, :, None]
    # tolerance-proportional: 1e-8 is 100x rtol relative to |y0|^2; measured ~1e-11
    assert np.max(np.abs(res.energy - exact_e)) < 1e-8
    assert np.max(np.abs(res.y - exact_y)) < 1e-8


# ----------------------------------------------------------------------------------------------------------
# Cost grows like log t on a power-law tail
# ----------------------------------------------------------------------------------------------------------

LAMBDA_FAST = np.array([1e2, 1e3])


def quartic_rhs(y):
    """Gradient flow of |x|^4 + sum lambda_k z_k^2 / 2 with x in R^2 (x ~ t^-1/2), z stiff (lambda up to 1e3)."""
    x, z = y[:, :2], y[:, 2:]
    r2 = np.sum(x * x, axis=-1, keepdims=True)
    return np.concatenate([-4 * r2 * x, -LAMBDA_FAST * z], axis=-1)


def quartic_jac(y):
    x = y[:, :2]
    r2 = np.sum(x * x, axis=-1)
    out = np.zeros((len(y), 4, 4))
    out[:, :2, :2] = -4 * (r2[:, None, None] * np.eye(2) + 2 * x[:, :, None] * x[:, None, :])
    out[:, 2, 2], out[:, 3, 3] = -LAMBDA_FAST
    return out


def quartic_exact_x(x0, t):
    """|x|' = -4|x|^3  =>  x(t) = x0 / sqrt(1 + 8 |x0|^2 t)."""
    return x0 / np.sqrt(1 + 8 * np.sum(x0**2, -1, keepdims=True) * t)


Y0_QUARTIC = np.array([[0.6, -0.8, 1.0, 1.0], [1.0, 0.5, -2.0, 0.3]])


@pytest.mark.parametrize("method", sorted(ROSENBROCK_TABLEAUS))
def test_cost_grows_like_log_t(method):
    costs = {}
    for t_end in (1e3, 1e6):
        calls = {"rhs": 0, "jac": 0}

        def rhs(y):
            calls["rhs"] += len(y)
            return quartic_rhs(y)

        def jac(y):
            calls["jac"] += len(y)
            return quartic_jac(y)

        # atol far below |x| ~ 1e-3 at t = 1e6: relative control throughout, the honest power-law regime
        res = solve_rosenbrock(rhs, jac, Y0_QUARTIC, [t_end], method=method, rtol=1e-8, atol=1e-14)
        assert np.all(res.status == Status.FINISHED)
        assert (res.n_rhs, res.n_jac) == (calls["rhs"], calls["jac"])
        costs[t_end] = calls["rhs"] + calls["jac"]
        exact = quartic_exact_x(Y0_QUARTIC[:, :2], t_end)
        # relative error of the power-law component: measured 1.6e-10 (rodas4), 3.4e-9 (rodas5p)
        assert np.max(np.abs(res.y[:, 0, :2] / exact - 1)) < 1e-7
    # measured 15830 -> 20100 (rodas4) and 7079 -> 9743 (rodas5p): ratio 1.3-1.4 for 1000x longer;
    # cost ~ t (explicit RK: stability-limited by lambda = 1e3) would give 1000
    assert costs[1e6] <= 3 * costs[1e3], costs


def test_save_times_are_hit_exactly_and_accurately():
    times = np.concatenate([[0.0], np.logspace(-3, 4, 15)])
    res = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, times, rtol=1e-9, atol=1e-14)
    assert np.array_equal(res.t, times)
    assert np.array_equal(res.y[:, 0], Y0_QUARTIC) and np.all(res.energy[:, 0] == 0)
    exact = quartic_exact_x(Y0_QUARTIC[:, None, :2], times[None, :, None])
    # every save time, not only the last: relative error 1e-7 = 100 rtol (measured ~2e-11)
    assert np.max(np.abs(res.y[..., :2] / exact - 1)) < 1e-7
    fast = Y0_QUARTIC[:, None, 2:] * np.exp(-LAMBDA_FAST[None, None, :] * times[None, :, None])
    assert np.max(np.abs(res.y[..., 2:] - fast)) < 1e-8
    # counters are cumulative
    assert np.all(np.diff(res.n_steps, axis=1) >= 0) and np.all(np.diff(res.n_rejected, axis=1) >= 0)
    assert np.all(res.n_steps[:, 0] == 0)


# ----------------------------------------------------------------------------------------------------------
# Statuses, independence, counters
# ----------------------------------------------------------------------------------------------------------


def mixed_rhs(y):
    """State (x, p, q) with p, q constant: x' = p x^2 - q x."""
    x, p, q = y[:, 0], y[:, 1], y[:, 2]
    out = np.zeros_like(y)
    out[:, 0] = p * x**2 - q * x
    return out


def mixed_jac(y):
    x, p, q = y[:, 0], y[:, 1], y[:, 2]
    out = np.zeros((len(y), 3, 3))
    out[:, 0, 0] = 2 * p * x - q
    out[:, 0, 1] = x**2
    out[:, 0, 2] = -x
    return out


MIXED_Y0 = np.array([
    [1.0, 0.0, 1.0],   # x = e^-t: |f| = x reaches gtol = 1e-6 at t = ln 1e6  -> CONVERGED
    [1.0, 1.0, 0.0],   # x = 1/(1 - t): passes the bound 1e6 just before t = 1  -> DIVERGED
    [1.0, -1.0, 0.0],  # x = 1/(1 + t), |f| = x^2 >= 1/441 > gtol             -> FINISHED
    [1.0, 0.0, 0.0],   # f = 0 at t = 0                                      -> CONVERGED at t = 0
])
MIXED_TIMES = np.array([0.5, 5.0, 20.0])


def _row(res, r):
    return (res.y[r], res.energy[r], res.status[r], res.t_final[r], res.n_steps[r], res.n_rejected[r])


def _assert_rows_equal(a, ra, b, rb_):
    for u, v in zip(_row(a, ra), _row(b, rb_)):
        assert np.array_equal(u, v, equal_nan=True)


def test_mixed_batch_statuses():
    res = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0, MIXED_TIMES, rtol=1e-9, atol=1e-12, gtol=1e-6,
                           divergence_bound=1e6)
    assert res.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.FINISHED, Status.CONVERGED]
    # converged where |f| = e^-t first drops below 1e-6 (within one step of ln 1e6, steps there ~0.1-1)
    assert np.log(1e6) <= res.t_final[0] < np.log(1e6) + 1.5
    # save times before t_final hold the solution, the later one (20) the last state x(t_final) <= gtol
    assert np.max(np.abs(res.y[0, :2, 0] - np.exp(-MIXED_TIMES[:2]))) < 1e-8
    assert abs(res.y[0, 2, 0] - np.exp(-res.t_final[0])) < 1e-12 and res.y[0, 2, 0] <= 1e-6
    assert abs(res.energy[0, 2] - (1 - np.exp(-2 * res.t_final[0])) / 2) < 1e-8
    # diverged: |(x, 1)| > 1e6 needs x > 1e6, i.e. t > 1 - 1e-6; NaN after the first save time
    assert 1 - 1e-6 < res.t_final[1] < 1
    assert abs(res.y[1, 0, 0] - 2.0) < 1e-8 and np.all(np.isnan(res.y[1, 1:])) and np.all(np.isnan(res.energy[1, 1:]))
    # finished: exact solution, energy = int x^4 = (1 - (1+t)^-3)/3
    exact = 1 / (1 + MIXED_TIMES)
    assert np.max(np.abs(res.y[2, :, 0] - exact)) < 1e-8
    assert np.max(np.abs(res.energy[2] - (1 - (1 + MIXED_TIMES) ** -3) / 3)) < 1e-8
    assert res.t_final[2] == MIXED_TIMES[-1]
    # converged at t = 0 with no step taken: every save time holds y0
    assert res.t_final[3] == 0 and np.all(res.y[3] == MIXED_Y0[3]) and np.all(res.n_steps[3] == 0)
    # each run alone gives bitwise the same numbers: no run perturbs another
    for r in range(len(MIXED_Y0)):
        alone = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0[r:r + 1], MIXED_TIMES, rtol=1e-9, atol=1e-12,
                                 gtol=1e-6, divergence_bound=1e6)
        _assert_rows_equal(res, r, alone, 0)


def test_converged_run_keeps_its_last_state():
    res = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0[:1], [1.0, 30.0, 40.0], rtol=1e-9, atol=1e-12,
                           gtol=1e-6)
    assert res.status[0] == Status.CONVERGED and res.t_final[0] < 30
    assert np.array_equal(res.y[0, 1], res.y[0, 2]) and res.energy[0, 1] == res.energy[0, 2]
    assert 0 < res.y[0, 1, 0] <= 1e-6
    assert res.n_steps[0, 1] == res.n_steps[0, 2] > res.n_steps[0, 0]


def test_failures_do_not_affect_other_runs():
    # without a divergence bound the blow-up x = 1/(1 - t) drives h below 1e-14 max(1, t): FAILED before t = 1
    res = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0, MIXED_TIMES, rtol=1e-9, atol=1e-12)
    # (a linearly implicit step can hop just past the pole before h underflows: t_final is 1 to ~1e-10)
    assert res.status[1] == Status.FAILED and abs(res.t_final[1] - 1) < 1e-8
    assert abs(res.y[1, 0, 0] - 2.0) < 1e-8
    assert np.all(np.isnan(res.y[1, 1:]))
    assert res.status[[0, 2, 3]].tolist() == [Status.FINISHED] * 3
    for r in (0, 2, 3):
        alone = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0[r:r + 1], MIXED_TIMES, rtol=1e-9, atol=1e-12)
        _assert_rows_equal(res, r, alone, 0)
    # step budget: every run fails after exactly max_steps attempts, NaN at the save times not reached
    res = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0[:3], MIXED_TIMES, max_steps=5)
    assert np.all(res.status == Status.FAILED)
    assert np.all(res.n_steps[:, -1] + res.n_rejected[:, -1] == 5)
    assert np.all(np.isnan(res.y[:, -1]))


def test_non_finite_jacobian_fails_only_that_run():
    def jac(y):
        out = mixed_jac(y)
        out[y[:, 1] == -1.0] = np.nan
        return out

    # (the bound only shortens the blow-up row 1 to a quick DIVERGED)
    res = solve_rosenbrock(mixed_rhs, jac, MIXED_Y0, MIXED_TIMES, rtol=1e-9, atol=1e-12, divergence_bound=1e6)
    assert res.status[2] == Status.FAILED and res.t_final[2] == 0 and np.all(np.isnan(res.y[2]))
    assert res.status[[0, 1, 3]].tolist() == [Status.FINISHED, Status.DIVERGED, Status.FINISHED]
    alone = solve_rosenbrock(mixed_rhs, mixed_jac, MIXED_Y0[:1], MIXED_TIMES, rtol=1e-9, atol=1e-12,
                             divergence_bound=1e6)
    _assert_rows_equal(res, 0, alone, 0)


def test_bitwise_independent_of_batch_composition():
    times = np.array([1.0, 1e2, 1e4])
    full = solve_rosenbrock(grad_rhs, grad_jac, Y0_GRAD, times, rtol=1e-8, atol=1e-10)
    for subset in ([3], [1, 6], [7, 0, 5]):
        part = solve_rosenbrock(grad_rhs, grad_jac, Y0_GRAD[subset], times, rtol=1e-8, atol=1e-10)
        for i, r in enumerate(subset):
            _assert_rows_equal(full, r, part, i)
    # and the runs do differ from one another (the comparison is not vacuous)
    assert not np.array_equal(full.n_steps[0], full.n_steps[1]) or not np.array_equal(full.y[0], full.y[1])


def test_counters_match_the_calls():
    calls = {"rhs": 0, "jac": 0}

    def rhs(y):
        calls["rhs"] += len(y)
        return robertson(y)

    def jac(y):
        calls["jac"] += len(y)
        return robertson_jac(y)

    y0 = np.array([[1.0, 0.0, 0.0], [0.5, 1e-5, 0.5]])
    res = solve_rosenbrock(rhs, jac, y0, [1.0, 1e3], rtol=1e-6, atol=1e-12)
    assert (res.n_rhs, res.n_jac) == (calls["rhs"], calls["jac"])
    accepted, rejected = res.n_steps[:, -1], res.n_rejected[:, -1]
    # f(y0) and the initial-step probe, then (s - 1) stages per attempt and f(y_new) per accepted step
    s = RODAS4.stages
    assert res.n_rhs == 2 * len(y0) + np.sum((s - 1) * (accepted + rejected) + accepted)
    # one Jacobian per accepted step (at its starting point); rejections reuse it
    assert res.n_jac == np.sum(accepted)
    assert res.info["method"] == "rodas4" and res.info["rtol"] == 1e-6


def test_progress_is_throttled(monkeypatch):
    clock = {"now": 0.0, "tick": 0.0}

    def fake_monotonic():
        clock["now"] += clock["tick"]
        return clock["now"]

    monkeypatch.setattr(driver.time, "monotonic", fake_monotonic)
    seen = []
    clock["tick"] = 0.0  # time stands still: only the final report
    solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [10.0], progress=seen.append)
    assert seen == [1.0]
    seen.clear()
    clock["tick"] = 0.3  # 0.6 s between iterations' checks: a report at every iteration after the first
    res = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [10.0], progress=seen.append)
    assert len(seen) > 10 and seen[-1] == 1.0
    assert all(0 <= a <= b <= 1 for a, b in itertools.pairwise(seen))
    assert len(seen) <= res.n_steps.max() + res.n_rejected.max() + 1


# ----------------------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------------------

GOOD = dict(rhs=quartic_rhs, jac=quartic_jac, y0=Y0_QUARTIC, save_times=[1.0, 2.0])


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(rhs=None), "rhs"),
        (dict(jac=3), "jac"),
        (dict(y0=np.zeros(4)), "y0"),
        (dict(y0=np.zeros((0, 4))), "y0"),
        (dict(y0=[["a", "b"]]), "y0"),
        (dict(save_times=[]), "save_times"),
        (dict(save_times=[2.0, 1.0]), "save_times"),
        (dict(save_times=[-1.0, 1.0]), "save_times"),
        (dict(save_times=[1.0, np.inf]), "save_times"),
        (dict(save_times=[[1.0]]), "save_times"),
        (dict(method="rk45"), "method"),
        (dict(rtol=0.0), "rtol"),
        (dict(rtol=1e-17), "rtol"),
        (dict(rtol=np.nan), "rtol"),
        (dict(rtol="1e-8"), "rtol"),
        (dict(atol=0.0), "atol"),
        (dict(atol=[1e-10, 1e-10]), "atol"),
        (dict(atol=-1.0), "atol"),
        (dict(h0=0.0), "h0"),
        (dict(h0=np.inf), "h0"),
        (dict(h0=[1e-3, 1e-3, 1e-3]), "h0"),
        (dict(h0=[1e-3, -1.0]), "h0"),
        (dict(max_steps=0), "max_steps"),
        (dict(max_steps=2.5), "max_steps"),
        (dict(max_steps=True), "max_steps"),
        (dict(gtol=-1.0), "gtol"),
        (dict(divergence_bound=0.0), "divergence_bound"),
        (dict(divergence_bound=np.nan), "divergence_bound"),
        (dict(progress="yes"), "progress"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(change, name):
    kwargs = {**GOOD, **change}
    positional = [kwargs.pop(k) for k in ("rhs", "jac", "y0", "save_times")]
    with pytest.raises(ValueError, match=rf"^{name}:"):
        solve_rosenbrock(*positional, **kwargs)


def test_wrong_callable_output_shapes_raise():
    with pytest.raises(ValueError, match=r"^rhs:"):
        solve_rosenbrock(lambda y: y[:, :2], quartic_jac, Y0_QUARTIC, [1.0])
    with pytest.raises(ValueError, match=r"^jac:"):
        solve_rosenbrock(quartic_rhs, lambda y: np.zeros((len(y), 4)), Y0_QUARTIC, [1.0])


def test_non_finite_initial_state_diverges_at_zero_alone():
    y0 = Y0_QUARTIC.copy()
    y0[0, 1] = np.nan
    res = solve_rosenbrock(quartic_rhs, quartic_jac, y0, [0.0, 1.0])
    assert res.status.tolist() == [Status.DIVERGED, Status.FINISHED] and res.t_final[0] == 0
    assert np.isnan(res.y[0, 1]).all() and res.n_steps[0, -1] == 0
    alone = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC[1:], [0.0, 1.0])
    _assert_rows_equal(res, 1, alone, 0)


def test_repeated_and_scalar_save_times():
    res = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [0.0, 0.0, 0.5, 0.5, 2.0])
    assert np.array_equal(res.y[:, 0], Y0_QUARTIC) and np.array_equal(res.y[:, 1], Y0_QUARTIC)
    assert np.array_equal(res.y[:, 2], res.y[:, 3]) and np.array_equal(res.n_steps[:, 2], res.n_steps[:, 3])
    scalar = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, 2.0)
    listed = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [2.0])
    assert scalar.y.shape == (2, 1, 4) and np.array_equal(scalar.y, listed.y)
    only_zero = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [0.0])
    assert np.all(only_zero.status == Status.FINISHED) and np.array_equal(only_zero.y[:, 0], Y0_QUARTIC)
    assert only_zero.n_jac == 0


def test_per_component_atol_and_h0_are_used():
    res_a = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [1.0], atol=np.full(4, 1e-10), h0=1e-4)
    res_b = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [1.0], atol=1e-10, h0=1e-4)
    # the same tolerance given two ways is the same computation
    for r in range(2):
        _assert_rows_equal(res_a, r, res_b, r)
    # h0 is the first attempted step: a too large one is rejected (then h/10, rodas.f) until it fits
    res_c = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [1.0], atol=1e-10, h0=1e-2, max_steps=1)
    res_d = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [1.0], atol=1e-10, h0=1e-6, max_steps=1)
    assert res_c.n_rejected[:, -1].tolist() == [1, 1] and res_d.n_steps[:, -1].tolist() == [1, 1]
    per_run = solve_rosenbrock(quartic_rhs, quartic_jac, Y0_QUARTIC, [1.0], atol=1e-10, h0=[1e-2, 1e-6],
                               max_steps=1)
    assert per_run.n_rejected[:, -1].tolist() == [1, 0] and per_run.n_steps[:, -1].tolist() == [0, 1]
