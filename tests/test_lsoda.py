"""LSODA's methods in Nordsieck form (:mod:`reluflow.dynamics.solvers.nordsieck`) and the compiled LSODA loop
on the d = 1 field (:mod:`reluflow.dynamics.compiled_lsoda`): the corrector vectors are the Adams-Moulton and
BDF ones with their error constants, the solves agree with a high-accuracy reference within bounds derived from
the tolerance, every run's numbers are its own whatever the batch, runs stop for every reason, and stiff runs
switch to BDF and keep its Jacobian over many steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics.compiled_lsoda import solve_lsoda
from reluflow.dynamics.flows import StandardFlow
from reluflow.dynamics.solvers.explicit import solve_explicit
from reluflow.dynamics.solvers.nordsieck import BDF_EL, BDF_TESCO, EL, MAX_BDF_ORDER, MAX_ORDER, TESCO, interpolate, predict, rescale
from reluflow.dynamics.solvers.result import Status

AFFINE = {"network": {"width": 1}, "domain": [0.0, 1.0], "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
          "measure": {"kind": "uniform"}}
SINE = {"network": {"width": 4}, "domain": [0.0, 1.0],
        "target": {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.0},
        "measure": {"kind": "triangular", "mode": 0.3}}


@pytest.mark.parametrize("q", range(1, MAX_ORDER + 1))
def test_corrector_vector_is_adams_moulton(q):
    """The correction ``e l`` of an order-q step changes the history polynomial by ``e Lambda((t - t_n) / h)``
    with ``Lambda(x) = sum_j l_j x^j``. Adams-Moulton: the new derivative is set (``Lambda'(0) = l_1 = 1``),
    the value at the previous point stays (``Lambda(-1) = 0``) and so do the derivatives at the ``q - 1``
    previous points (``Lambda'(-k) = 0``, ``k = 1 .. q - 1``): ``q + 1`` conditions fixing ``l``, checked here
    against LSODE's construction (an independent one: an integral of ``(x + 1) ... (x + q - 1)``)."""
    lam = np.polynomial.Polynomial(EL[q - 1, : q + 1])
    d = lam.deriv()
    assert d(0.0) == 1.0
    assert abs(lam(-1.0)) < 1e-14
    for k in range(1, q):
        assert abs(d(-float(k))) < 1e-12 * max(1.0, k ** (q - 1))
    assert np.all(EL[q - 1, q + 1:] == 0.0)


@pytest.mark.parametrize("q", range(1, MAX_BDF_ORDER + 1))
def test_corrector_vector_is_bdf(q):
    """The BDF of order q keeps the values at the q previous points: ``Lambda(-k) = 0``, ``k = 1 .. q``, with
    ``Lambda'(0) = l_1 = 1``: ``q + 1`` conditions fixing ``l``."""
    lam = np.polynomial.Polynomial(BDF_EL[q - 1, : q + 1])
    assert lam.deriv()(0.0) == 1.0
    for k in range(1, q + 1):
        assert abs(lam(-float(k))) < 1e-13 * k**q
    assert np.all(BDF_EL[q - 1, q + 1 :] == 0.0)


def test_bdf_error_test_constants_are_the_bdf_error_constants():
    """``t_2(q) = 1 / |C_(q+1)|`` with the BDF error constants 1/2, 2/9, 3/22, 12/125, 10/137 (Hairer & Wanner
    II, sec. III.1)."""
    constants = [1 / 2, 2 / 9, 3 / 22, 12 / 125, 10 / 137]
    np.testing.assert_allclose(BDF_TESCO[:, 1], 1.0 / np.array(constants), rtol=1e-13)


def test_error_test_constants_are_the_adams_moulton_error_constants():
    """The local error of the order-q Adams-Moulton method is ``|C_(q+1)| h^(q+1) y^(q+1)``; LSODE divides the
    correction by ``t_2(q) = 1 / |C_(q+1)|``. The constants of orders 1 to 8, as tabulated (Hairer, Norsett &
    Wanner I, sec. III.1): 1/2, 1/12, 1/24, 19/720, 3/160, 863/60480, 275/24192, 33953/3628800; ``t_1(q)``
    and ``t_3(q)`` are the neighbouring orders' as seen from order q (``t_3(q) = t_2(q + 1)``)."""
    constants = [1 / 2, 1 / 12, 1 / 24, 19 / 720, 3 / 160, 863 / 60480, 275 / 24192, 33953 / 3628800]
    np.testing.assert_allclose(TESCO[: len(constants), 1], 1.0 / np.array(constants), rtol=1e-13)
    np.testing.assert_allclose(TESCO[:-1, 2], TESCO[1:, 1], rtol=0)


def test_nordsieck_pieces_are_taylor_and_scaling():
    """``predict`` is Taylor's rule and ``interpolate`` evaluates the polynomial: on the Nordsieck array of a
    cubic both are exact; ``rescale`` gives the array of the same polynomial for another step."""
    coeffs = np.array([0.3, -1.2, 0.7, 2.0])  # y(t) = 0.3 - 1.2 t + 0.7 t^2 + 2 t^3
    y = np.polynomial.Polynomial(coeffs)

    def nordsieck(t, h):
        z = np.zeros((MAX_ORDER + 1, 1))
        deriv = y
        fact = 1.0
        for j in range(4):
            z[j, 0] = deriv(t) * h**j / fact
            deriv = deriv.deriv()
            fact *= j + 1
        return z

    z = nordsieck(0.4, 0.25)[None]
    predict(z, 0, 3)
    np.testing.assert_allclose(z[0], nordsieck(0.65, 0.25), rtol=1e-14, atol=1e-15)
    out = np.empty(1)
    interpolate(z, 0, 3, -0.6, out)
    np.testing.assert_allclose(out[0], y(0.65 - 0.6 * 0.25), rtol=1e-14)
    rescale(z, 0, 3, 0.5)
    np.testing.assert_allclose(z[0], nordsieck(0.65, 0.125), rtol=1e-14, atol=1e-15)


def _setup(config, runs=6, seed=3):
    problem = Problem.from_config(config)
    flow = StandardFlow(problem)
    rng = np.random.default_rng(seed)
    return problem, flow, flow.compiled(), rng.standard_normal((runs, problem.n_params))


def _lsoda(flow, field, y0, times, rtol=1e-10, **kw):
    return solve_lsoda(flow.rhs, y0, times, field=field, rtol=rtol, atol=rtol * 1e-2, **kw)


@pytest.mark.parametrize("config", [AFFINE, SINE], ids=["affine H=1", "sine H=4"])
def test_agrees_with_a_high_accuracy_reference(config):
    """States and energies at a log grid of save times (crossed by Adams steps, interpolated; landed on by
    Rodas4 steps) against DOP853 at rtol 1e-13. Bound: the error of a step is held at ``rtol`` times the
    state's scale (weighted RMS over the n + 1 components, so one component up to ``sqrt(n + 1)`` times that),
    and the steps' errors add up at most: ``sqrt(n + 1) * steps * rtol * (1 + |x|)`` for each component ``x``
    (the flow contracts near its critical points, so this is loose but never violated by a correct method;
    a wrong coefficient or history update makes errors of order ``h`` that break it by orders of magnitude)."""
    problem, flow, field, y0 = _setup(config)
    times = np.concatenate([[0.0], np.geomspace(1e-3, 50.0, 25)])
    rtol = 1e-10
    ref = solve_explicit(flow.rhs, y0, times, tableau="dop853", rtol=1e-13, atol=1e-15)
    res = _lsoda(flow, field, y0, times, rtol)
    assert np.all(res.status == Status.FINISHED)
    steps = (res.n_steps + res.n_rejected)[:, :, None]
    grow = np.sqrt(problem.n_params + 2) * steps * rtol
    assert np.all(np.abs(res.y - ref.y) <= grow * (1.0 + np.abs(ref.y)))
    assert np.all(np.abs(res.energy - ref.energy) <= grow[:, :, 0] * (1.0 + np.abs(ref.energy)))
    # in fact much closer (measured: 7e-10 relative at most)
    assert np.max(np.abs(res.y - ref.y) / (1.0 + np.abs(ref.y))) < 100 * rtol


def test_each_run_has_its_own_numbers_whatever_the_batch():
    problem, flow, field, y0 = _setup(SINE, runs=5)
    times = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, 12)])
    batch = _lsoda(flow, field, y0, times, 1e-9)
    assert batch.info["stiff_from_step"], "runs of this flow to t = 1e3 turn stiff"
    for r in (0, 3):
        alone = _lsoda(flow, field, y0[r : r + 1], times, 1e-9)
        for name in ("y", "energy", "n_steps", "n_rejected", "status", "t_final", "n_rhs_run", "n_jac_run"):
            assert np.array_equal(getattr(alone, name)[0], getattr(batch, name)[r], equal_nan=True), name
        assert alone.info["stiff_from_step"].get("0") == batch.info["stiff_from_step"].get(str(r))
    reverse = _lsoda(flow, field, y0[::-1].copy(), times, 1e-9)
    assert np.array_equal(reverse.y[::-1], batch.y, equal_nan=True)
    assert batch.n_rhs == batch.n_rhs_run.sum() and batch.n_jac == batch.n_jac_run.sum()


def test_stiff_runs_switch_to_bdf_and_reach_rodas_accuracy_at_large_times():
    """To t = 1e6 every run of the affine H = 1 flow settles at a critical point and turns stiff: each switches
    to BDF, which keeps its Jacobian over many steps (far fewer Jacobians than steps), and ends where Rodas4
    alone ends, to within the tolerance; the energy identity holds to the tolerance."""
    from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock

    problem, flow, field, y0 = _setup(AFFINE, runs=4)
    res = _lsoda(flow, field, y0, [0.0, 1e3, 1e6], 1e-9)
    assert len(res.info["stiff_from_step"]) == 4 and np.all(res.n_jac_run > 0)
    steps = res.n_steps[:, -1] + res.n_rejected[:, -1]
    assert np.all(res.n_jac_run * 5 < steps)
    ref = solve_rosenbrock(flow.rhs, flow.jac, y0, [0.0, 1e3, 1e6], symmetric_jacobian=True, rtol=1e-12,
                           atol=1e-14)
    assert np.all(res.status == Status.FINISHED)
    np.testing.assert_allclose(problem.risk(res.y[:, -1]), problem.risk(ref.y[:, -1]), rtol=1e-7, atol=1e-12)
    residual = np.abs(problem.risk(y0) - problem.risk(res.y[:, -1]) - res.energy[:, -1]) / problem.risk(y0)
    assert np.all(residual < 1e-6)


def test_runs_stop_for_every_reason():
    problem, flow, field, y0 = _setup(AFFINE, runs=3)
    times = [0.0, 1.0, 1e6]
    converged = _lsoda(flow, field, y0, times, 1e-8, gtol=1e-3)
    assert np.all(converged.status == Status.CONVERGED)
    # a converged run holds its state at the later save times; its gradient is small there
    g = np.linalg.norm(problem.generalized_gradient(converged.y[:, -1]), axis=-1)
    assert np.all(g < 1e-2)
    diverged = _lsoda(flow, field, y0 * 10.0, times, 1e-8, divergence_bound=float(np.linalg.norm(y0 * 10.0,
                                                                                             axis=1).max() * 0.5))
    assert np.all(diverged.status == Status.DIVERGED) and np.all(np.isnan(diverged.y[:, 1:]))
    budget = _lsoda(flow, field, y0, times, 1e-8, max_steps=5)
    assert np.all(budget.status == Status.FAILED) and np.all(budget.n_steps[:, -1] + budget.n_rejected[:, -1] == 5)


def test_unsupported_pieces_are_refused_with_a_clear_error():
    problem, flow, field, y0 = _setup(AFFINE, runs=2)
    with pytest.raises(ValueError, match="compiled field"):
        solve_lsoda(flow.rhs, y0, [0.0, 1.0], field=None)
    with pytest.raises(ValueError, match="lipschitz_every"):
        solve_lsoda(flow.rhs, y0, [0.0, 1.0], field=field, lipschitz_every=0)


def test_chunks_of_the_compiled_loop_change_no_number(monkeypatch):
    """The driver advances the compiled loop in chunks of steps that grow while they are short; a run's numbers
    do not depend on where the chunks end (one step per chunk gives the same bits)."""
    import reluflow.dynamics.solvers.driver as driver

    problem, flow, field, y0 = _setup(SINE, runs=4)
    times = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, 9)])
    default = _lsoda(flow, field, y0, times, 1e-9)
    monkeypatch.setattr(driver, "POOL_CHUNK", 1)
    monkeypatch.setattr(driver, "MAX_POOL_CHUNK", 1)
    single = _lsoda(flow, field, y0, times, 1e-9)
    for name in ("y", "energy", "n_steps", "n_rejected", "status", "t_final", "n_rhs_run", "n_jac_run"):
        assert np.array_equal(getattr(single, name), getattr(default, name), equal_nan=True), name
    assert single.info["stiff_from_step"] == default.info["stiff_from_step"]


def test_configurations_choose_it_and_bad_choices_are_named():
    """``solver: lsoda`` through :func:`reluflow.simulate` gives the solver's own numbers; for a flow, a law or a
    width it does not serve, the error names the key before any integration."""
    from reluflow import simulate

    problem, flow, field, y0 = _setup(AFFINE, runs=3)
    traj = simulate(problem, y0, flow="standard", solver="lsoda", t_max=100.0, rtol=1e-9, atol=1e-11,
                    certify=False)
    direct = solve_lsoda(flow.rhs, y0, traj.time.values, field=field, rtol=1e-9, atol=1e-11, max_steps=200_000,
                         divergence_bound=1e8)
    np.testing.assert_array_equal(traj.theta.values, direct.y)
    np.testing.assert_array_equal(traj.n_rhs.values, direct.n_rhs_run)
    assert json.loads(traj.attrs["solver_info_json"])["solver"] == "lsoda"
    assert json.loads(traj.attrs["config_json"])["integrator"]["solver"] == "lsoda"
    with pytest.raises(ValueError, match="^solver: 'lsoda' integrates the standard flow only"):
        simulate(problem, y0, flow="normalized", solver="lsoda", t_max=1.0)
    wide = Problem.from_config({**AFFINE, "network": {"width": 64}})
    with pytest.raises(ValueError, match="^solver: 'lsoda' factorizes the dense Jacobian"):
        simulate(wide, np.zeros((1, wide.n_params)) + 0.1, flow="standard", solver="lsoda", t_max=1.0)
    gaussian = Problem.from_config({"network": {"width": 2, "input_dim": 3}, "measure": {"kind": "gaussian"},
                                    "target": {"kind": "affine", "slope": [1.0, 0.0, 0.0], "intercept": 0.0}})
    with pytest.raises(ValueError, match="^solver: 'lsoda' needs a d = 1 law"):
        simulate(gaussian, np.zeros((1, gaussian.n_params)) + 0.1, flow="standard", solver="lsoda", t_max=1.0)
