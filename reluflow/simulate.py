"""``reluflow.simulate``: move an ensemble of initial parameters along a flow and record it.

Pieces (each in its own module): the vector field (:mod:`reluflow.dynamics.flows`), the solver
(:mod:`reluflow.dynamics.solvers`), the certificate (:mod:`reluflow.dynamics.certify`) and the trajectory layout
(:mod:`reluflow.files.trajectories`). This module only wires them together and computes the diagnostics at the
save times: risk, ``|G|``, ``|theta|``, the energy-identity residual
``L(Theta_0) - L(Theta_t) - int_0^t |F(Theta_s)|^2 ds`` (``F`` the velocity) and, for the normalized
flow, the constraint drift ``max_i ||u_i| - 1|``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from reluflow.dynamics.flows import constraint_drift, make_flow
from reluflow.dynamics.solvers.result import SolveResult

FLOW_NAMES = ("standard", "normalized", "gd")
SOLVER_NAMES = ("auto", "dopri5", "tsit5", "dop853", "rodas4")

#: beyond this flow time an explicit pair is stability-limited (cost ~ t); "auto" then goes stiff
AUTO_STIFF_T_MAX = 1e3


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return float(value)


def default_save_times(t_max: float, eta: float | None = None, n: int = 60) -> np.ndarray:
    """``0`` plus ``n`` log-spaced times up to ``t_max`` (flows), or ``n + 1`` multiples of ``eta`` (GD)."""
    if eta is not None:
        steps = np.unique(np.round(np.linspace(0.0, t_max / eta, n + 1)))
        return steps * eta
    return np.concatenate([[0.0], np.geomspace(min(1e-3, t_max), t_max, n)])


def choose_solver(solver: str, flow: str, t_max: float, problem) -> str:
    """The solver ``"auto"`` stands for: stiff (Rosenbrock with the exact Jacobian) for long horizons when
    the problem provides a Jacobian, the explicit Dormand-Prince pair otherwise."""
    if solver != "auto":
        return solver
    if flow in ("standard", "normalized") and t_max > AUTO_STIFF_T_MAX and problem.has_jacobian:
        return "rodas4"
    return "dopri5"


def evaluate_rows(problem, theta: np.ndarray):
    """Risk and ``G`` of the finite rows of ``theta (R, n)``; NaN for the others."""
    risk = np.full(theta.shape[0], np.nan)
    grad = np.full(theta.shape, np.nan)
    ok = np.all(np.isfinite(theta), axis=-1)
    if np.any(ok):
        risk[ok], grad[ok] = problem.risk_and_gradient(theta[ok])
    return risk, grad


def _solve(problem, field, flow, solver, y0, times, *, rtol, atol, eta, gtol, divergence_bound, max_steps,
           progress, post_step) -> SolveResult:
    common = dict(gtol=gtol, divergence_bound=divergence_bound, progress=progress)
    if flow == "gd":
        from reluflow.dynamics.solvers.gd import gradient_descent

        return gradient_descent(field.rhs, y0, eta, times, retraction=post_step, **common)
    if solver == "rodas4":
        from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock

        return solve_rosenbrock(field.rhs, field.jac, y0, times, rtol=rtol, atol=atol, max_steps=max_steps,
                                post_step=post_step, **common)
    from reluflow.dynamics.solvers.explicit import solve_explicit

    return solve_explicit(field.rhs, y0, times, tableau=solver, rtol=rtol, atol=atol, max_steps=max_steps,
                          post_step=post_step, **common)


def simulate(
    problem,
    theta0,
    flow: str = "standard",
    t_max: float | None = None,
    save_times=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    eta: float | None = None,
    gtol: float | None = None,
    *,
    solver: str = "auto",
    field: str = "standard",
    divergence_bound: float = 1e8,
    max_steps: int = 200_000,
    certify: bool = True,
    run_ids=None,
    init: Mapping | None = None,
    scenario: str = "adhoc",
    title: str | None = None,
    config: Mapping | None = None,
    progress: Callable[[float], None] | None = None,
):
    """Integrate ``flow`` from every row of ``theta0`` and return the trajectory dataset.

    Parameters
    ----------
    problem : :class:`reluflow.Problem`.
    theta0 : ``(M, n_params)`` initial parameters (a single ``(n_params,)`` vector is one run).
    flow : ``"standard"`` (``Theta' = -G``), ``"normalized"`` (``Theta' = -P G`` on ``M``; initial states
        are first mapped onto ``M`` with the same realization) or ``"gd"`` (gradient descent with step
        ``eta`` on the vector field named by ``field``).
    t_max, save_times : the final flow time and the times to record (default: ``0`` and 60 log-spaced
        times; for GD, multiples of ``eta``). Give either or both (``t_max`` must equal the last save time).
    rtol, atol : local error tolerances of the adaptive solvers.
    gtol : stop a run once ``|F(Theta)| <= gtol`` (status ``converged``).
    solver : ``"auto"``, ``"dopri5"``, ``"tsit5"``, ``"dop853"`` or ``"rodas4"`` (stiff).
    certify : polish each final state to a critical point (:mod:`reluflow.dynamics.certify`).
    run_ids, init : run ids (default ``0..M-1``) and per-run initialization metadata for the file.
    scenario, title, config : provenance recorded in the dataset.
    progress : ``progress(fraction)`` callback for long integrations.

    Returns
    -------
    xarray.Dataset in the layout of :mod:`reluflow.files.trajectories`.
    """
    if flow not in FLOW_NAMES:
        raise ValueError(f"flow: unknown flow {flow!r}; expected one of {list(FLOW_NAMES)}")
    if solver not in SOLVER_NAMES:
        raise ValueError(f"solver: unknown solver {solver!r}; expected one of {list(SOLVER_NAMES)}")
    theta0 = np.asarray(theta0, dtype=float)
    if theta0.ndim == 1:
        theta0 = theta0[None, :]
    if theta0.ndim != 2 or theta0.shape[1] != problem.n_params:
        raise ValueError(f"theta0: must have shape (M, n_params = {problem.n_params}), got {theta0.shape}")
    if not np.all(np.isfinite(theta0)):
        raise ValueError("theta0: contains non-finite entries")
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol)
    if gtol is not None:
        gtol = _check_positive("gtol", gtol)
    divergence_bound = _check_positive("divergence_bound", divergence_bound)
    if flow == "gd":
        if eta is None:
            raise ValueError("eta: gradient descent needs a step size eta")
        eta = _check_positive("eta", eta)
    elif eta is not None:
        raise ValueError(f"eta: only applies to flow 'gd', not {flow!r}")
    if save_times is None:
        if t_max is None:
            raise ValueError("t_max: give t_max or save_times")
        save_times = default_save_times(_check_positive("t_max", t_max), eta)
    save_times = np.asarray(save_times, dtype=float)
    if save_times.ndim != 1 or save_times.size == 0 or not np.all(np.isfinite(save_times)):
        raise ValueError("save_times: must be a non-empty 1-d array of finite times")
    if np.any(save_times < 0) or np.any(np.diff(save_times) <= 0):
        raise ValueError("save_times: must be non-negative and strictly increasing")
    if t_max is not None and not np.isclose(save_times[-1], t_max, rtol=1e-12, atol=0):
        raise ValueError(f"t_max: {t_max!r} differs from the last save time {save_times[-1]!r}")
    t_max = float(save_times[-1])
    m = theta0.shape[0]
    run_ids = np.arange(m) if run_ids is None else np.asarray(run_ids)
    if run_ids.shape != (m,) or len(np.unique(run_ids)) != m:
        raise ValueError(f"run_ids: must be {m} distinct integers")

    field_name = field if flow == "gd" else flow
    vector_field = make_flow(field_name, problem)
    y0 = vector_field.prepare(theta0)
    normalized = field_name == "normalized"
    # every solver leaves M by its local error (a GD step by O(eta^2); RK and Rosenbrock methods conserve
    # linear invariants only, |u_i| = 1 is quadratic): all retract after each accepted step with the
    # realization-preserving map, which keeps the risk and hence the energy identity
    post_step = vector_field.retract if normalized else None
    solver_used = "euler" if flow == "gd" else choose_solver(solver, flow, t_max, problem)
    result = _solve(problem, vector_field, flow, solver_used, y0, save_times, rtol=rtol, atol=atol, eta=eta,
                    gtol=gtol, divergence_bound=divergence_bound, max_steps=max_steps, progress=progress,
                    post_step=post_step)

    theta = result.y
    n_t = theta.shape[1]
    risk, grad = evaluate_rows(problem, theta.reshape(m * n_t, -1))
    risk = risk.reshape(m, n_t)
    grad_norm = np.linalg.norm(grad.reshape(m, n_t, -1), axis=-1)
    param_norm = np.linalg.norm(theta, axis=-1)
    initial_risk = evaluate_rows(problem, y0)[0]
    drift = constraint_drift(problem, theta) if normalized else None

    last = np.full((m, problem.n_params), np.nan)
    for i in range(m):  # the last finite saved state of each run
        finite = np.flatnonzero(np.all(np.isfinite(theta[i]), axis=-1))
        if finite.size:
            last[i] = theta[i, finite[-1]]
    if certify:
        from reluflow.dynamics.certify import polish_critical_points

        cert = polish_critical_points(problem, last)
        crit = dict(critical_risk=cert.risk, critical_grad_norm=cert.grad_norm, critical_distance=cert.distance)
    else:
        nan = np.full(m, np.nan)
        crit = dict(critical_risk=nan, critical_grad_norm=nan, critical_distance=nan.copy())

    from reluflow.dynamics.asymptotics import fit_decays

    # rounding level of a risk that has reached zero: (64 eps)^2 E|f|^2, E|f|^2 = L(0) (asymptotics docstring)
    noise_floor = (64 * np.finfo(float).eps) ** 2 * float(problem.risk(np.zeros(problem.n_params)))
    decay_kind, decay_exponent, decay_rate = fit_decays(result.t, risk, crit["critical_risk"], noise_floor=noise_floor)

    settings = {
        "flow": flow, "field": field_name, "solver": solver_used, "rtol": rtol, "atol": atol, "eta": eta,
        "gtol": gtol, "divergence_bound": divergence_bound, "max_steps": max_steps, "t_max": t_max,
    }
    from reluflow.files.trajectories import build_from_solve_result

    # one place computes the energy-identity residual and stores the solver's info and step counts
    return build_from_solve_result(
        result,
        risk=risk,
        grad_norm=grad_norm,
        param_norm=param_norm,
        initial_risk=initial_risk,
        run_ids=run_ids,
        critical_risk=crit["critical_risk"],
        critical_grad_norm=crit["critical_grad_norm"],
        constraint_drift=drift,
        init=dict(init or {}),
        extra={
            "critical_distance": crit["critical_distance"],
            "decay_kind": (("run",), decay_kind,
                           {"long_name": "best model of L(t) - L_inf over the last two decades of t: "
                                         "power, exponential, settled (at rounding level) or undetermined",
                            "units": "1"}),
            "decay_exponent": (("run",), decay_exponent,
                               {"long_name": "fitted p in L(t) - L_inf ~ C t^-p over the last two decades",
                                "units": "1"}),
            "decay_rate": (("run",), decay_rate,
                           {"long_name": "fitted lambda in L(t) - L_inf ~ C exp(-lambda t) over the last two decades",
                            "units": "1/time"}),
        },
        scenario=scenario,
        title=title or f"reluflow {flow} flow trajectories",
        config={"problem": problem.config, "integrator": settings, **(dict(config) if config else {})},
        input_dim=problem.input_dim,
        width=problem.width,
        output_dim=problem.output_dim,
    )
