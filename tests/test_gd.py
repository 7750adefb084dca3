"""Tests of batched gradient descent (explicit Euler with a fixed step)."""

from __future__ import annotations

import numpy as np
import pytest
from gradient_systems import quartic

from reluflow.dynamics.solvers import Status, gd_save_steps, gradient_descent, solve_explicit


def test_linear_iterates_and_energy_are_exact():
    """y' = -lam y: y_k = (1 - eta lam)^k y0 and E_k = eta lam^2 |y0|^2 sum_{j<k} (1 - eta lam)^{2j}
    (the left Riemann sum). Relative 1e-13: ~k roundings of size 1e-16 for k <= 40."""
    lam, eta = 0.7, 0.05
    y0 = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    calls = []
    res = gradient_descent(lambda y: -lam * y, y0, eta, [0.0, 0.5, 1.0, 2.0], progress=calls.append)
    assert calls and calls[-1] == 1.0 and all(0.0 <= c <= 1.0 for c in calls)
    k = np.array([0, 10, 20, 40])
    assert np.array_equal(res.n_steps, np.tile(k, (2, 1))) and np.all(res.n_rejected == 0)
    q = 1 - eta * lam
    expect_y = q ** k[None, :, None] * y0[:, None, :]
    assert np.allclose(res.y, expect_y, rtol=1e-13, atol=0)
    norms2 = np.sum(y0**2, axis=1)
    expect_e = np.array([[eta * lam**2 * n2 * sum(q ** (2 * j) for j in range(kk)) for kk in k] for n2 in norms2])
    assert np.allclose(res.energy, expect_e, rtol=1e-13, atol=0)
    assert np.all(res.status == Status.FINISHED) and np.allclose(res.t_final, 2.0, rtol=1e-15)
    # f at every iterate, the last one included (the driver checks that f is finite at each accepted state)
    assert res.n_rhs == 2 * 41


def test_save_times_are_rounded_to_whole_steps():
    res = gradient_descent(lambda y: -y, np.ones((1, 2)), 0.1, [0.0, 0.26, 0.34, 0.35, 1.0])
    # nearest step counts (0.35 / 0.1 = 3.4999999999999996 in floating point: 3 steps)
    assert res.n_steps[0].tolist() == [0, 3, 3, 3, 10]
    assert np.array_equal(res.t, np.array([0, 3, 3, 3, 10]) * 0.1)
    assert np.array_equal(res.y[0, 1], res.y[0, 2])
    assert np.allclose(res.y[0, 1], 0.9**3, rtol=1e-15)
    steps, t = gd_save_steps(0.25, [0.1, 0.125, 0.9])  # 0.4 -> 0, 0.5 -> 1 (halves up), 3.6 -> 4
    assert steps.tolist() == [0, 1, 4] and t.tolist() == [0.0, 0.25, 1.0]


def test_per_run_eta():
    F, rhs, rng = quartic()
    y0 = rng.normal(size=(3, 5))
    etas = np.array([0.1, 0.05, 0.025])
    ts = [0.0, 0.5, 1.0, 2.0]
    res = gradient_descent(rhs, y0, etas, ts)
    assert np.array_equal(res.t, ts)
    assert res.n_steps.tolist() == [[0, 5, 10, 20], [0, 10, 20, 40], [0, 20, 40, 80]]
    # each run is bitwise the run with its scalar eta alone
    for r in range(3):
        alone = gradient_descent(rhs, y0[r : r + 1], float(etas[r]), ts)
        assert np.array_equal(res.y[r], alone.y[0]) and np.array_equal(res.energy[r], alone.energy[0])
    with pytest.raises(ValueError, match="save_times"):
        gradient_descent(rhs, y0, np.array([0.1, 0.3, 0.05]), [0.5, 1.0])  # 0.5 / 0.3 is not whole


def test_converges_to_the_flow_with_order_one():
    """max over save times of |y_GD - y_flow| ~ C eta: the log-log slope is 1 within 0.1 (measured 1.00).
    Reference: dop853 at rtol 1e-13 (error ~1e-13, far below the smallest GD error ~8e-4)."""
    F, rhs, rng = quartic(seed=2, n=4)
    y0 = rng.normal(size=(3, 4))
    ts = [0.25, 0.5, 1.0]
    ref = solve_explicit(rhs, y0, ts, tableau="dop853", rtol=1e-13, atol=1e-15)
    etas = 2.0 ** -np.arange(7, 12)
    errs = [np.max(np.abs(gradient_descent(rhs, y0, eta, ts).y - ref.y)) for eta in etas]
    slope = np.polyfit(np.log(etas), np.log(errs), 1)[0]
    assert abs(slope - 1.0) < 0.1, (errs, slope)
    # and the energy identity residual F(y0) - F(y_k) - E_k is O(eta) as well (same slope criterion)
    resid = []
    for eta in etas:
        res = gradient_descent(rhs, y0, eta, ts)
        resid.append(np.max(np.abs(F(y0)[:, None] - F(res.y) - res.energy)))
    slope = np.polyfit(np.log(etas), np.log(resid), 1)[0]
    assert abs(slope - 1.0) < 0.1, (resid, slope)


def test_statuses_and_isolation():
    def rhs(y):
        # row (a, s): s = 0 -> a' = -a ; s = 1 -> a' = +a (grows); s = 2 -> NaN once a < 0.5
        a, s = y[:, 0], y[:, 1]
        da = np.where(s == 0, -a, np.where(s == 1, a, np.where(a < 0.5, np.nan, -a)))
        return np.stack([da, np.zeros_like(a)], axis=-1)

    y0 = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.0], [np.inf, 0.0]])
    eta = np.array([0.1, 0.1, 0.1, 0.01, 0.1])
    ts = [0.0, 1.0, 10.0, 100.0]
    kw = dict(gtol=1e-3, divergence_bound=1e3)
    res = gradient_descent(rhs, y0, eta, ts, **kw)
    assert res.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.DIVERGED, Status.CONVERGED, Status.DIVERGED]
    # converged: 0.9^j <= 1e-3 first at j = 66 (eta = 0.1); later save times hold that iterate
    assert res.t_final[0] == pytest.approx(6.6) and res.n_steps[0, -1] == 66
    assert np.array_equal(res.y[0, 2], res.y[0, 3]) and res.y[0, 3, 0] == pytest.approx(0.9**66, rel=1e-13)
    # diverged: 1.1^j > 1e3 first at j = 73 -> NaN from the first save time after it
    assert res.t_final[1] == pytest.approx(7.3) and np.all(np.isnan(res.y[1, 2:])) and np.isfinite(res.y[1, 1, 0])
    # NaN vector field at 0.9^7 < 0.5: DIVERGED at j = 7
    assert res.t_final[2] == pytest.approx(0.7) and np.all(np.isnan(res.energy[2, 2:]))
    # a non-finite start
    assert res.t_final[4] == 0.0
    for r in range(len(y0)):
        alone = gradient_descent(rhs, y0[r : r + 1], eta[r : r + 1], ts, **kw)
        for field in ("y", "energy", "n_steps", "t_final", "status"):
            assert np.array_equal(getattr(res, field)[r], getattr(alone, field)[0], equal_nan=True), (r, field)


def test_bitwise_independent_of_batch():
    F, rhs, rng = quartic(seed=4)
    y0 = rng.normal(size=(8, 5)) * rng.uniform(0.1, 2.0, size=(8, 1))
    ts = [0.0, 0.5, 3.0, 200.0]
    full = gradient_descent(rhs, y0, 0.05, ts, gtol=1e-4)
    assert len(set(full.t_final)) > 1  # runs stop at different iterations
    for subset in ([5], [7, 1, 2], [3, 3]):
        part = gradient_descent(rhs, y0[subset], 0.05, ts, gtol=1e-4)
        for i, r in enumerate(subset):
            assert np.array_equal(part.y[i], full.y[r]) and np.array_equal(part.energy[i], full.energy[r])
            assert part.t_final[i] == full.t_final[r] and part.status[i] == full.status[r]


def test_retraction_keeps_the_manifold():
    """Projected gradient descent on the unit sphere for F(y) = a.y: the tangent step followed by
    normalization converges to the minimizer -a/|a|."""
    a = np.array([1.0, -2.0, 0.5])

    def tangent_rhs(y):
        g = np.broadcast_to(a, y.shape)
        return -(g - np.sum(g * y, axis=-1, keepdims=True) * y)

    def normalize(y):
        return y / np.sqrt(np.sum(y * y, axis=-1, keepdims=True))

    rng = np.random.default_rng(0)
    y0 = normalize(rng.normal(size=(4, 3)))
    res = gradient_descent(tangent_rhs, y0, 0.05, [0.0, 1.0, 30.0], retraction=normalize)
    assert np.allclose(np.sqrt(np.sum(res.y**2, axis=-1)), 1.0, rtol=0, atol=1e-15)
    assert np.allclose(res.y[:, -1], -a / np.linalg.norm(a), atol=1e-8)  # contraction ~(1 - 0.05 |a|)^600
    with pytest.raises(ValueError, match="retraction"):
        gradient_descent(tangent_rhs, y0, 0.05, [1.0], retraction=lambda y: y[:, :2])


def _never_called(y):
    raise AssertionError("rhs evaluated before argument validation")


@pytest.mark.parametrize(
    "eta, ts, kw, name",
    [
        (0.0, [1.0], {}, "eta"),
        (-0.1, [1.0], {}, "eta"),
        (np.nan, [1.0], {}, "eta"),
        (np.array([0.1, 0.2, 0.3]), [1.0], {}, "eta"),  # wrong length for M = 2
        (0.1, [-1.0], {}, "save_times"),
        (0.1, [1.0, 0.5], {}, "save_times"),
        (0.1, [1.0], {"gtol": -1.0}, "gtol"),
        (0.1, [1.0], {"divergence_bound": -1.0}, "divergence_bound"),
        (0.1, [1.0], {"retraction": 3}, "retraction"),
    ],
)
def test_bad_arguments_name_the_argument(eta, ts, kw, name):
    with pytest.raises(ValueError, match=name):
        gradient_descent(_never_called, np.zeros((2, 3)), eta, ts, **kw)
    with pytest.raises(ValueError, match="y0"):
        gradient_descent(_never_called, np.zeros(3), 0.1, [1.0])
