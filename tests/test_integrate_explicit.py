"""Tests of the Butcher tableaux, the PI controller and the batched explicit RK solver."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
import pytest
from gradient_systems import quartic
from scipy.integrate import solve_ivp

from reluflow.dynamics.solvers import (
    DOP853,
    DOPRI5,
    TABLEAUX,
    TSIT5,
    ButcherTableau,
    PIController,
    Status,
    solve_explicit,
)

METHODS = ["dopri5", "tsit5", "dop853"]


# ---------------------------------------------------------------------------------------------------------
# order conditions in exact rational arithmetic (Butcher's rooted trees)


@lru_cache(None)
def rooted_trees(order: int) -> tuple:
    """All rooted trees with ``order`` nodes; a tree is the sorted tuple of its root's subtrees."""
    if order == 1:
        return ((),)

    def forests(nodes, max_key):
        # multisets of trees with `nodes` nodes in total, generated in non-increasing key order
        if nodes == 0:
            yield ()
            return
        for k in range(1, nodes + 1):
            for tree in rooted_trees(k):
                key = (k, tree)
                if max_key is not None and key > max_key:
                    continue
                for rest in forests(nodes - k, key):
                    yield (tree,) + rest

    return tuple(sorted({tuple(sorted(f)) for f in forests(order - 1, None)}))


def _size(tree) -> int:
    return 1 + sum(_size(t) for t in tree)


def _gamma(tree) -> int:
    """Density ``gamma(t) = |t| * prod gamma(children)``: the exact solution's weight is ``1/gamma``."""
    g = _size(tree)
    for child in tree:
        g *= _gamma(child)
    return g


def _stage_weights(tab, tree, cache) -> list:
    """``Phi_i(t)``: for a root with children ``t_1..t_m``, ``prod_k (A Phi(t_k))_i`` (1 for a leaf)."""
    if tree in cache:
        return cache[tree]
    s, A = tab.stages, tab.a_exact
    v = [Fraction(1)] * s
    for child in tree:
        g = _stage_weights(tab, child, cache)
        Ag = [sum((A[i][j] * g[j] for j in range(i)), Fraction(0)) for i in range(s)]
        v = [v[i] * Ag[i] for i in range(s)]
    cache[tree] = v
    return v


def max_order_residual(tab, weights, order, cache) -> Fraction:
    """``max_t |w . Phi(t) - 1/gamma(t)|`` over all trees with ``order`` nodes."""
    return max(
        abs(sum(w * p for w, p in zip(weights, _stage_weights(tab, t, cache))) - Fraction(1, _gamma(t)))
        for t in rooted_trees(order)
    )


def test_rooted_tree_counts():
    # OEIS A000081: the number of order conditions of each order; proves the tree generator is complete
    assert [len(rooted_trees(k)) for k in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]


# Coefficients are exact rationals for dopri5; tsit5 is given to 40 and dop853 to 30 significant digits, and
# the row sums / order conditions combine a few dozen such numbers of size <= 50, so they hold to
# ~1e-38 resp. ~1e-28 (measured 1e-38 and 5e-28). The tolerances leave a factor ~100 and are still 10+
# orders of magnitude below anything a float64 computation can see.
EXACTNESS = {"dopri5": Fraction(0), "tsit5": Fraction(1, 10**36), "dop853": Fraction(1, 10**25)}
# A condition that is *not* satisfied fails by at least this much (measured >= 2e-4 for every pair here),
# so "fails at order p + 1" is a meaningful statement and not round-off.
VIOLATED = Fraction(1, 10**5)


@pytest.mark.parametrize("name", METHODS)
def test_tableau_structure(name):
    tab = TABLEAUX[name]
    s = tab.stages
    tol = EXACTNESS[name]
    # row sums of A are the stage times c
    for i in range(s):
        assert abs(sum(tab.a_exact[i]) - tab.c_exact[i]) <= tol
    # explicit and FSAL: last row of A is b, c_s = 1, the last stage is not used by the solution
    assert tab.fsal and tab.a_exact[-1] == tab.b_exact and tab.c_exact[-1] == 1 and tab.b_exact[-1] == 0
    assert np.all(np.triu(tab.a) == 0)
    # floats are the correctly rounded rationals
    assert np.array_equal(tab.b, [float(x) for x in tab.b_exact])
    assert np.array_equal(tab.b_error, [float(x) for x in tab.b_error_exact])


@pytest.mark.parametrize("name", METHODS)
def test_order_conditions_of_solution_weights(name):
    """``b`` satisfies every order condition up to ``order`` and fails one of order ``order + 1``."""
    tab = TABLEAUX[name]
    cache = {}
    for k in range(1, tab.order + 1):
        assert max_order_residual(tab, tab.b_exact, k, cache) <= EXACTNESS[name], f"order {k}"
    assert max_order_residual(tab, tab.b_exact, tab.order + 1, cache) > VIOLATED


@pytest.mark.parametrize("name", METHODS)
def test_order_conditions_of_embedded_weights(name):
    """``bhat = b - b_error`` has exactly the stated embedded order(s) (dop853: 5 and 3)."""
    tab = TABLEAUX[name]
    cache = {}
    errors = [tab.b_error_exact] + ([tab.b_error_low_exact] if tab.b_error_low_exact is not None else [])
    assert len(errors) == len(tab.embedded_orders)
    for e, q in zip(errors, tab.embedded_orders):
        bhat = [b - x for b, x in zip(tab.b_exact, e)]
        for k in range(1, q + 1):
            assert max_order_residual(tab, bhat, k, cache) <= EXACTNESS[name], f"order {k}"
        assert max_order_residual(tab, bhat, q + 1, cache) > VIOLATED
    # the controller exponent: the (combined) estimate is O(h^(error_order + 1))
    assert (tab.error_order, tab.order) in {(4, 5), (7, 8)}


def test_low_order_conditions_in_float64():
    # the float arrays themselves: sum b = 1, b.c = 1/2, b.c^2 = 1/3, b.A.c = 1/6, to round-off
    # (16 terms of size <= 5, so 1e-14 is ~10 ulps of the largest term)
    for tab in (DOPRI5, TSIT5, DOP853):
        b, c, A = tab.b, tab.c, tab.a
        assert abs(b.sum() - 1) < 1e-14
        assert abs(b @ c - 1 / 2) < 1e-14
        assert abs(b @ c**2 - 1 / 3) < 1e-14
        assert abs(b @ (A @ c) - 1 / 6) < 1e-14
        assert np.max(np.abs(A.sum(axis=1) - c)) < 1e-14


# ---------------------------------------------------------------------------------------------------------
# controller


def test_error_norm_formula():
    ctrl = PIController(rtol=1e-3, atol=1e-6, error_order=4)
    y0 = np.array([[1.0, -2.0, 0.0]])
    y1 = np.array([[1.5, -1.0, 0.0]])
    e = np.array([[3.0, 1.0, 2.0]])
    sc = 1e-6 + 1e-3 * np.array([1.5, 2.0, 0.0])
    expected = 0.01 * np.sqrt(np.mean((e[0] / sc) ** 2))
    assert np.isclose(ctrl.error_norm(np.array([0.01]), e, y0, y1)[0], expected, rtol=1e-15)
    # combined DOP853 norm: |h| S5 / sqrt(n (S5 + 0.01 S3))
    e3 = np.array([[1.0, 0.0, -4.0]])
    s5, s3 = np.sum((e[0] / sc) ** 2), np.sum((e3[0] / sc) ** 2)
    expected = 0.01 * s5 / np.sqrt(3 * (s5 + 0.01 * s3))
    assert np.isclose(ctrl.error_norm(np.array([0.01]), e, y0, y1, e3)[0], expected, rtol=1e-15)
    # a non-finite estimate rejects
    e[0, 0] = np.nan
    assert ctrl.error_norm(np.array([0.01]), e, y0, y1)[0] == np.inf


def test_next_step_rules():
    ctrl = PIController(rtol=1e-6, atol=1e-9, error_order=4)  # k = 5
    h = np.full(4, 0.1)
    err = np.array([1e-30, 1.0, 2.0, np.inf])
    acc = np.array([True, True, False, False])
    h_new = ctrl.next_step(h, err, np.ones(4), acc)
    assert h_new[0] == pytest.approx(0.1 * ctrl.fmax)  # tiny error: capped growth
    assert h_new[1] == pytest.approx(0.1 * 0.9)  # err = err_prev = 1: the safety factor alone
    assert h_new[2] == pytest.approx(0.1 * 0.9 * 2.0 ** (-1 / 5))  # rejection: I control
    assert h_new[3] == pytest.approx(0.1 * ctrl.fmin)  # non-finite error: maximal shrink
    # PI memory: a smaller previous error damps the growth
    a = ctrl.next_step(h[:1], np.array([0.1]), np.array([1.0]), np.array([True]))
    b = ctrl.next_step(h[:1], np.array([0.1]), np.array([0.01]), np.array([True]))
    assert b[0] < a[0]


def _numpy_error_norm(ctrl, h, e, y0, y1, energy=None):
    """The PI controller's norm in numpy form (the form its compiled pass must reproduce bit for bit)."""
    a0, a1 = np.abs(y0), np.abs(y1)
    scale = ctrl.atol + ctrl.rtol * np.where(a1 > a0, a1, a0)  # the compiled max(a, b): a unless b > a
    s = np.array([sum(q * q for q in row) for row in e / scale])  # sequential sums, as the pass adds them
    n = y0.shape[1]
    if energy is not None:
        e_energy, _, energy0, energy1 = energy
        escale = ctrl.atol + ctrl.rtol * np.maximum(np.abs(energy0), np.abs(energy1))
        s = s + np.square(e_energy / escale)
        n += 1
    err = np.abs(h) * np.sqrt(s / n)
    return np.where(np.isfinite(err), err, np.inf)


def _c_power(x, y):
    """``x ** y`` entry by entry by numpy's scalar power, which is the C library's ``pow``."""
    return np.array([np.float64(v) ** y for v in x])


def _numpy_next_step(ctrl, h, err, err_prev, accepted):
    beta1, beta2 = ctrl.exponents
    e, ep = np.maximum(err, 1e-10), np.maximum(err_prev, 1e-10)
    with np.errstate(all="ignore"):
        acc = np.minimum(np.fmax(ctrl.safety * _c_power(e, -beta1) * _c_power(ep, beta2), ctrl.fmin), ctrl.fmax)
        rej = np.minimum(np.fmax(ctrl.safety * _c_power(e, -1.0 / ctrl.k), ctrl.fmin), 1.0)
    return h * np.where(accepted, acc, rej)


def test_compiled_norm_and_proposal_equal_their_numpy_form_bit_for_bit():
    """The error norm and the step proposal run as compiled passes; they give the bits of the numpy form (with the
    C library's ``pow``, as every CPU computes it), NaN, infinities and zeros included."""
    rng = np.random.default_rng(7)
    ctrl = PIController(rtol=1e-7, atol=1e-9, error_order=4)
    m, n = 200, 5
    y0, y1 = rng.normal(size=(m, n)) * 10.0 ** rng.integers(-12, 4, (m, 1)), rng.normal(size=(m, n))
    e = rng.normal(size=(m, n)) * 10.0 ** rng.integers(-16, 2, (m, 1))
    h = 10.0 ** rng.uniform(-8, 3, m)
    energy = (rng.normal(size=m) * 1e-6, None, np.abs(rng.normal(size=m)), np.abs(rng.normal(size=m)))
    e[3, 1] = np.nan
    e[4, 0] = np.inf
    y1[5, 2] = np.nan
    energy[2][6] = np.nan
    energy[0][7] = np.inf
    e[8] = 0.0
    for en in (None, energy):
        got = ctrl.error_norm(h, e, y0, y1, None, en)
        want = _numpy_error_norm(ctrl, h, e, y0, y1, en)
        assert np.array_equal(got, want), np.flatnonzero(got != want)
    err = np.abs(rng.normal(size=m)) * 10.0 ** rng.uniform(-14, 3, m)
    err[:6] = [np.nan, np.inf, 0.0, 1e-300, 1.0, 1e300]
    err_prev = np.abs(rng.normal(size=m)) * 10.0 ** rng.uniform(-12, 1, m)
    accepted = rng.random(m) < 0.7
    got = ctrl.next_step(h, err, err_prev, accepted)
    assert np.array_equal(got, _numpy_next_step(ctrl, h, err, err_prev, accepted))


# ---------------------------------------------------------------------------------------------------------
# test problems; every rhs treats rows independently (no matmul across the batch)


def quartic_problem(seed=1, n=7):
    """The quartic gradient system of :mod:`gradient_systems` with ``Q``'s shift 0.1."""
    return quartic(seed=seed, n=n, shift=0.1)


def van_der_pol(y):
    """A non-gradient (limit-cycle) system: ``x' = v, v' = (1 - x^2) v - x``."""
    x, v = y[:, 0], y[:, 1]
    return np.stack([v, (1 - x * x) * v - x], axis=-1)


def damped_coupled(y):
    """Nonlinear 3-d system for order measurements."""
    a, b, c = y[:, 0], y[:, 1], y[:, 2]
    return np.stack([b, -np.sin(a) - 0.1 * b + 0.2 * c, -c + a * b], axis=-1)


def scipy_reference(rhs, y0, t_final):
    out = []
    for row in y0:
        sol = solve_ivp(lambda t, z: rhs(z[None])[0], (0, t_final), row, method="DOP853", rtol=1e-12, atol=1e-14)
        assert sol.success
        out.append(sol.y[:, -1])
    return np.array(out)


@pytest.mark.parametrize("name", METHODS)
def test_agrees_with_scipy_dop853(name):
    # Our global error at rtol = 1e-10 is ~1e-11 (measured <= 1.2e-11 for the gradient system), scipy's at
    # rtol = 1e-12 is smaller still; 1e-7 is the brief's bound and leaves room for error growth over t.
    F, rhs, rng = quartic_problem()
    y0 = rng.normal(size=(16, 7))
    res = solve_explicit(rhs, y0, [0.5, 10.0], tableau=name, rtol=1e-10, atol=1e-12)
    assert np.all(res.status == Status.FINISHED)
    assert np.max(np.abs(res.y[:, -1] - scipy_reference(rhs, y0, 10.0))) < 1e-7

    y0 = rng.uniform(-2, 2, size=(16, 2))
    res = solve_explicit(van_der_pol, y0, [20.0], tableau=name, rtol=1e-10, atol=1e-12)
    assert np.all(res.status == Status.FINISHED)
    assert np.max(np.abs(res.y[:, -1] - scipy_reference(van_der_pol, y0, 20.0))) < 1e-7


def fixed_step_solve(rhs, y0, t_final, n_steps, name):
    """Uniform steps ``t_final / n_steps``: every save time is landed on, and with a huge tolerance every
    step is accepted and the controller always proposes more than the grid spacing."""
    grid = np.linspace(0.0, t_final, n_steps + 1)
    res = solve_explicit(rhs, y0, grid, tableau=name, rtol=1e3, atol=1e3, h0=10 * t_final)
    assert np.all(res.n_steps[:, -1] == n_steps) and np.all(res.n_rejected == 0)
    return res


# step counts in the asymptotic range, above round-off (dop853's error at 32 steps is ~3e-16)
ORDER_GRIDS = {"dopri5": [16, 32, 64], "tsit5": [16, 32, 64], "dop853": [4, 8, 16]}


@pytest.mark.parametrize("name", METHODS)
def test_observed_order_at_fixed_step(name):
    """Global error at t = 2 ~ C h^p: the fitted log-log slope is the method's order to within 0.3
    (measured 4.96 dopri5, 5.14 tsit5, 8.06 dop853; a wrong coefficient drops the order by >= 1)."""
    tab = TABLEAUX[name]
    y0 = np.array([[1.0, 0.0, 0.5]])
    ref = solve_explicit(damped_coupled, y0, [2.0], tableau="dop853", rtol=1e-14, atol=1e-16).y[0, -1]
    ns = np.array(ORDER_GRIDS[name])
    errs = [np.linalg.norm(fixed_step_solve(damped_coupled, y0, 2.0, n, name).y[0, -1] - ref) for n in ns]
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - tab.order) < 0.3, (errs, slope)


# step counts where the quartic system below is in the asymptotic range and above round-off
ENERGY_GRIDS = {"dopri5": [16, 32, 64], "tsit5": [16, 32, 64], "dop853": [32, 64, 128]}


@pytest.mark.parametrize("name", METHODS)
def test_energy_has_at_least_the_order_of_the_method(name):
    """The energy is the RK method applied to E' = |f|^2, so the identity residual F(y0) - F(y_T) - E(T)
    is O(h^p) at fixed step: the fitted slope is >= p - 0.5 (a trapezoidal or Riemann-sum energy would
    give 2 or 1). Measured slopes 6.4 (dopri5), 6.4 (tsit5), 7.8 (dop853): on a gradient system the two
    errors partly cancel (F + E is a first integral of the augmented ODE), so slopes above p are expected."""
    tab = TABLEAUX[name]
    F, rhs, rng = quartic_problem(seed=3, n=4)
    y0 = 0.8 * rng.normal(size=(1, 4))
    ns = np.array(ENERGY_GRIDS[name])
    resid = []
    for n in ns:
        res = fixed_step_solve(rhs, y0, 2.0, n, name)
        resid.append(abs(F(y0)[0] - F(res.y[0, -1]) - res.energy[0, -1]))
    slope = -np.polyfit(np.log(ns), np.log(resid), 1)[0]
    assert slope > tab.order - 0.5, (resid, slope)


@pytest.mark.parametrize("name", METHODS)
def test_energy_identity_long_horizon(name):
    """|F(y0) - F(y_t) - E(t)| < 1e-8 F(y0) for all save times in [0, 1e3] at rtol = 1e-10 (measured
    <= 3.2e-11 F(y0): the accumulated local errors of E are ~rtol-sized)."""
    F, rhs, rng = quartic_problem()
    y0 = rng.normal(size=(16, 7))
    ts = np.concatenate([[0.0], np.logspace(-3, 3, 25)])
    res = solve_explicit(rhs, y0, ts, tableau=name, rtol=1e-10, atol=1e-12)
    assert np.all(res.status == Status.FINISHED)
    resid = np.abs(F(y0)[:, None] - F(res.y) - res.energy)
    assert np.all(resid < 1e-8 * F(y0)[:, None])
    # the flow has settled: the minimum is 0 at y = 0 (smallest eigenvalue of Q >= 0.1, e^-100 decay)
    assert np.all(F(res.y[:, -1]) < 1e-20)
    assert np.all(np.diff(res.energy, axis=1) >= 0)


# ---------------------------------------------------------------------------------------------------------
# statuses and isolation of runs


def selector_rhs(y):
    """Row ``(a, s)``: ``s`` is constant and selects the law of ``a``:
    s = 0: a' = -a (converges); s = 1: a' = a^2 (blows up at t = 1/a0); s = 2: a' = -0.01 a (finishes);
    s = 3: a' = 1 while a < 1.5 and NaN beyond (the solver cannot pass a = 1.5: step-size underflow)."""
    a, s = y[:, 0], y[:, 1]
    with np.errstate(invalid="ignore"):
        da = np.select(
            [s == 0, s == 1, s == 2, s == 3],
            [-a, a * a, -0.01 * a, np.where(a < 1.5, 1.0, np.nan)],
            default=np.nan,
        )
    return np.stack([da, np.zeros_like(a)], axis=-1)


def assert_same_result(batch, alone, row):
    for field in ("y", "energy", "n_steps", "n_rejected"):
        assert np.array_equal(getattr(batch, field)[row], getattr(alone, field)[0], equal_nan=True), field
    assert batch.status[row] == alone.status[0]
    assert np.array_equal(batch.t_final[row], alone.t_final[0], equal_nan=True)


@pytest.mark.parametrize("name", METHODS)
def test_mixed_statuses_do_not_disturb_each_other(name):
    y0 = np.array(
        [
            [1.0, 0.0],  # converges (gtol)
            [1.0, 1.0],  # blows up at t = 1, passes the bound 1e6 at t = 1 - 1e-6
            [1.0, 2.0],  # finishes
            [1.0, 3.0],  # fails: the rhs is NaN beyond a = 1.5, reached at t = 0.5
            [np.nan, 2.0],  # non-finite initial state
        ]
    )
    ts = np.array([0.0, 0.25, 2.0, 40.0])
    kw = dict(tableau=name, rtol=1e-8, atol=1e-10, gtol=1e-6, divergence_bound=1e6)
    res = solve_explicit(selector_rhs, y0, ts, **kw)
    assert res.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.FINISHED, Status.FAILED, Status.DIVERGED]

    # converged: e^-t <= 1e-6 from t = ln(1e6) = 13.8 on; the run stops at the first accepted state past it
    # (a step may be long: dop853 takes steps of ~1 here); later save times repeat that state and energy
    assert np.log(1e6) - 1e-3 < res.t_final[0] < 20.0
    t_c = res.t_final[0]
    # for |y| < atol / rtol = 1e-2 the absolute tolerance governs: global error ~ a few atol = 1e-10
    assert abs(res.y[0, -1, 0]) <= 1e-6 and res.y[0, -1, 0] == pytest.approx(np.exp(-t_c), abs=1e-9)
    assert res.energy[0, -1] == pytest.approx((1 - np.exp(-2 * t_c)) / 2, abs=1e-8)  # int_0^t_c e^-2s ds
    assert res.n_steps[0, -1] > res.n_steps[0, 2]  # the counts at t = 40 are those at t_c
    assert np.all(np.isfinite(res.y[0]))
    # diverged: 1/(1-t) > 1e6 just before t = 1; the save times after it are NaN
    assert 1 - 2e-6 < res.t_final[1] < 1.0
    assert np.all(np.isfinite(res.y[1, :2])) and np.all(np.isnan(res.y[1, 2:])) and np.all(np.isnan(res.energy[1, 2:]))
    assert res.y[1, 1, 0] == pytest.approx(1 / 0.75, rel=1e-7)
    # finished: exact solution e^{-0.01 t}
    assert res.t_final[2] == 40.0
    assert res.y[2, -1, 0] == pytest.approx(np.exp(-0.4), rel=1e-7)
    # failed at the wall a = 1.5 (t = 0.5); NaN after
    assert res.t_final[3] == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.isnan(res.y[3, 2:]))
    # non-finite start: its t = 0 record is its (NaN) initial state, nothing else
    assert res.t_final[4] == 0.0 and np.all(res.n_steps[4] == 0)
    # every run is bitwise what it is when solved alone
    for row in range(len(y0)):
        assert_same_result(res, solve_explicit(selector_rhs, y0[row : row + 1], ts, **kw), row)


def test_blow_up_without_bound_fails_at_the_blow_up_time():
    # with divergence_bound = inf the state stays finite and the step size underflows: FAILED near t = 1
    res = solve_explicit(selector_rhs, np.array([[1.0, 1.0]]), [2.0], rtol=1e-8, atol=1e-10)
    assert res.status[0] == Status.FAILED
    assert res.t_final[0] == pytest.approx(1.0, abs=1e-6)


def test_max_steps_fails():
    res = solve_explicit(van_der_pol, np.array([[2.0, 0.0], [1.0, 0.0]]), [50.0], max_steps=20)
    assert np.all(res.status == Status.FAILED)
    assert np.all(res.n_steps[:, -1] + res.n_rejected[:, -1] == 20)
    assert np.all(np.isnan(res.y[:, -1]))


@pytest.mark.parametrize("name", METHODS)
def test_bitwise_independent_of_batch(name):
    F, rhs, rng = quartic_problem(seed=5)
    y0 = rng.normal(size=(12, 7)) * rng.uniform(0.1, 3.0, size=(12, 1))
    ts = np.concatenate([[0.0], np.logspace(-2, 2, 9)])
    kw = dict(tableau=name, rtol=1e-9, atol=1e-12, gtol=1e-7)
    full = solve_explicit(rhs, y0, ts, **kw)
    # the runs stop at different times, so the active set shrinks unevenly during the solve
    assert len(set(np.round(full.t_final, 6))) > 1
    for subset in ([4], [11, 0, 7], list(range(12))[::-1], [3, 3, 9]):
        part = solve_explicit(rhs, y0[subset], ts, **kw)
        for i, row in enumerate(subset):
            for field in ("y", "energy", "n_steps", "n_rejected", "t_final", "status"):
                assert np.array_equal(getattr(part, field)[i], getattr(full, field)[row]), (subset, field)


def test_n_rhs_counts_rows():
    # FSAL s-stage pair: f(y0) and the initial-step probe on every row, then s - 1 rows per attempted step
    F, rhs, rng = quartic_problem()
    y0 = rng.normal(size=(5, 7))
    for tab in (DOPRI5, DOP853):
        res = solve_explicit(rhs, y0, [1.0, 3.0], tableau=tab)
        attempts = int(np.sum(res.n_steps[:, -1] + res.n_rejected[:, -1]))
        assert res.n_rhs == 2 * 5 + (tab.stages - 1) * attempts


HEUN_EULER = ButcherTableau(
    name="heun_euler",
    c_exact=(Fraction(0), Fraction(1)),
    a_exact=((Fraction(0), Fraction(0)), (Fraction(1), Fraction(0))),
    b_exact=(Fraction(1, 2), Fraction(1, 2)),
    b_error_exact=(Fraction(-1, 2), Fraction(1, 2)),  # b - bhat with bhat = (1, 0): explicit Euler
    order=2,
    error_order=1,
    fsal=False,
    embedded_orders=(1,),
)


def test_user_tableau_without_fsal():
    """A non-FSAL pair (Heun-Euler 2(1)) takes the other code path: f(y_{n+1}) is evaluated after each
    accepted step. Order 2 at fixed step (slope within 0.2; measured 2.0), and the rhs accounting."""
    y0 = np.array([[1.0, 0.0, 0.5]])
    ref = solve_explicit(damped_coupled, y0, [2.0], tableau="dop853", rtol=1e-14, atol=1e-16).y[0, -1]
    ns = np.array([64, 128, 256])
    errs = [np.linalg.norm(fixed_step_solve(damped_coupled, y0, 2.0, n, HEUN_EULER).y[0, -1] - ref) for n in ns]
    assert abs(-np.polyfit(np.log(ns), np.log(errs), 1)[0] - 2) < 0.2, errs
    res = solve_explicit(damped_coupled, np.tile(y0, (3, 1)), [1.0, 2.0], tableau=HEUN_EULER, rtol=1e-6)
    assert np.all(res.status == Status.FINISHED)
    # rtol = 1e-6: global error a small multiple of rtol (measured 1.3e-7); 1e-4 leaves room for growth
    assert np.max(np.abs(res.y[:, -1] - ref)) < 1e-4
    attempts = int(np.sum(res.n_steps[:, -1] + res.n_rejected[:, -1]))
    assert res.n_rhs == 2 * 3 + attempts + int(np.sum(res.n_steps[:, -1]))


# ---------------------------------------------------------------------------------------------------------
# save times


def test_save_times_zero_repeated_and_exact_landing():
    y0 = np.array([[1.0], [-2.0], [0.3]])

    def linear(y):
        return -0.5 * y

    ts = np.array([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    res = solve_explicit(linear, y0, ts, rtol=1e-10, atol=1e-12)
    assert np.array_equal(res.t, ts)
    assert np.array_equal(res.y[:, 0], y0) and np.array_equal(res.y[:, 1], y0)
    assert np.all(res.energy[:, :2] == 0) and np.all(res.n_steps[:, :2] == 0)
    assert np.array_equal(res.y[:, 2], res.y[:, 3]) and np.array_equal(res.y[:, 4], res.y[:, 5])
    # the states at the save times are the RK solution there, accurate to the tolerance
    # (global error ~ rtol * |y| for this decaying problem; 1e-8 relative leaves a factor 100)
    exact = y0[:, None, 0] * np.exp(-0.5 * ts[None, :])
    assert np.allclose(res.y[:, :, 0], exact, rtol=1e-8, atol=0)
    assert np.all(res.status == Status.FINISHED) and np.all(res.t_final == 1.0)

    single = solve_explicit(linear, y0, 1.0, rtol=1e-10, atol=1e-12)
    assert single.y.shape == (3, 1, 1)
    assert np.allclose(single.y[:, 0, 0], y0[:, 0] * np.exp(-0.5), rtol=1e-8, atol=0)

    only_zero = solve_explicit(linear, y0, [0.0])
    assert np.array_equal(only_zero.y[:, 0], y0) and np.all(only_zero.status == Status.FINISHED)
    assert only_zero.n_rhs == 3 and np.all(only_zero.t_final == 0)


def test_many_save_times_do_not_shrink_the_steps():
    # landing on a save time must not reset the step sequence: each save time costs at most ~1 extra step
    F, rhs, rng = quartic_problem()
    y0 = rng.normal(size=(4, 7))
    coarse = solve_explicit(rhs, y0, [100.0], rtol=1e-8)
    ts = np.logspace(-3, 2, 200)
    fine = solve_explicit(rhs, y0, ts, rtol=1e-8)
    assert np.all(fine.n_steps[:, -1] <= coarse.n_steps[:, -1] + len(ts))
    assert np.all(fine.n_rejected[:, -1] <= coarse.n_rejected[:, -1] + 10)
    assert np.allclose(fine.y[:, -1], coarse.y[:, -1], rtol=0, atol=1e-6)


def test_progress_callback():
    F, rhs, rng = quartic_problem()
    calls = []
    solve_explicit(rhs, rng.normal(size=(3, 7)), [1.0, 10.0], progress=calls.append)
    assert calls and calls[-1] == 1.0 and all(0.0 <= c <= 1.0 for c in calls)


# ---------------------------------------------------------------------------------------------------------
# argument validation (raised before any evaluation of rhs)


def _never_called(y):
    raise AssertionError("rhs evaluated before argument validation")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(save_times=[-1.0, 1.0]), "save_times"),
        (dict(save_times=[0.0, 2.0, 1.0]), "save_times"),
        (dict(save_times=[]), "save_times"),
        (dict(save_times=[0.0, np.inf]), "save_times"),
        (dict(rtol=0.0), "rtol"),
        (dict(rtol=-1e-6), "rtol"),
        (dict(atol=0.0), "atol"),
        (dict(y0=np.zeros(3)), "y0"),
        (dict(y0=np.zeros((2, 3, 1))), "y0"),
        (dict(y0=np.zeros((0, 3))), "y0"),
        (dict(tableau="rk4"), "tableau"),
        (dict(h0=-0.1), "h0"),
        (dict(h0=np.ones(5)), "h0"),
        (dict(max_steps=0), "max_steps"),
        (dict(gtol=-1.0), "gtol"),
        (dict(divergence_bound=0.0), "divergence_bound"),
        (dict(progress="yes"), "progress"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(y0=np.zeros((2, 3)), save_times=[0.0, 1.0])
    args.update(kwargs)
    y0, ts = args.pop("y0"), args.pop("save_times")
    with pytest.raises(ValueError, match=name):
        solve_explicit(_never_called, y0, ts, **args)


def test_rhs_of_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="rhs"):
        solve_explicit(lambda y: y[:, :1], np.ones((2, 3)), [1.0])
