"""``reluflow.simulate``: move an ensemble of initial parameters along a flow and record it.

:func:`simulate` is four steps, each a function of its own:

1. :func:`integrate`: the vector field (:mod:`reluflow.dynamics.flows`) and the solver
   (:mod:`reluflow.dynamics.solvers`) chosen by the :class:`~reluflow.dynamics.settings.FlowSettings`;
2. :func:`diagnose`: risk, ``|G|``, ``|theta|`` at the save times and, for the normalized flow, the constraint
   drift ``max_i ||u_i| - 1|``;
3. :func:`certify_end_points`: each run's last finite state polished to a certified critical point
   (:mod:`reluflow.dynamics.certify`), the type of that point (:mod:`reluflow.dynamics.classify`: global or local
   minimum, saddle, nonsmooth point, not converged) and the fitted decay of its risk
   (:mod:`reluflow.dynamics.asymptotics`);
4. the trajectory dataset (:func:`reluflow.files.trajectories.build_from_solve_result`), which also forms the
   energy-identity residual ``L(Theta_0) - L(Theta_t) - int_0^t |F(Theta_s)|^2 ds`` (``F`` the velocity).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from reluflow.dynamics.asymptotics import fit_decays
from reluflow.dynamics.certify import Certificate, polish_critical_points
from reluflow.dynamics.classify import END_POINT_DTYPE, classify_end_points
from reluflow.dynamics.flows import constraint_drift, make_flow
from reluflow.dynamics.settings import FlowSettings
from reluflow.dynamics.solvers.result import SolveResult
from reluflow.files.trajectories import FileInfo, SavedDiagnostics, build_from_solve_result

__all__ = ["simulate", "flow_settings", "integrate", "diagnose", "certify_end_points", "choose_solver", "evaluate_rows"]

#: end points of networks with more parameters are not classified: the spectrum of the n x n Hessian costs
#: O(n^3) per run (n = 1000: about 1 s), more than the rest of a run's certificate
CLASSIFY_MAX_PARAMS = 1000


def choose_solver(solver: str, flow: str, t_max: float, problem) -> str:
    """The solver ``"auto"`` stands for; the horizon ``t_max`` plays no part. Each run is integrated by a
    non-stiff method while its step is limited by accuracy and by a stiff one once stability limits it:

    - ``"lsoda"`` for the standard flow of a d = 1 law with a density below the structured width (Adams, then
      BDF per run, in one compiled loop: :mod:`reluflow.dynamics.compiled_lsoda`; measured 3 to 4 times faster
      than the Dormand-Prince / Rodas4 pair there, README "Speed at the limit");
    - ``"auto"``, that pair (:mod:`reluflow.dynamics.solvers.switching`), for the other flows and laws with an
      exact Jacobian (the normalized flow, wide d = 1 networks with the structured factorization);
    - ``"dopri5"`` without one (discrete measures).
    """
    if solver == "lsoda":
        refusal = _lsoda_refusal(flow, problem)
        if refusal is not None:
            raise ValueError(refusal)
    if solver != "auto":
        return solver
    if _lsoda_refusal(flow, problem) is None:
        return "lsoda"
    if flow in ("standard", "normalized") and problem.has_jacobian:
        return "auto"
    return "dopri5"


def _lsoda_refusal(flow: str, problem) -> str | None:
    """Why ``solver: lsoda`` cannot integrate this flow of this problem (an error message naming the key), or
    None: it runs in the compiled loop of the standard flow of a d = 1 law with a density, with the dense
    Jacobian."""
    from reluflow.dynamics.flows import StandardFlow

    if flow != "standard":
        return f"solver: 'lsoda' integrates the standard flow only, not {flow!r} (take 'auto')"
    field = StandardFlow(problem)
    if field.compiled() is None:
        return "solver: 'lsoda' needs a d = 1 law with a density on the compiled backend (take 'auto')"
    if field.structured:
        return (f"solver: 'lsoda' factorizes the dense Jacobian, (3H + 1)^2 per run; at width {problem.width} "
                f"take 'auto' or 'rodas4' (the structured factorization)")
    return None


def evaluate_rows(problem, theta: np.ndarray):
    """Risk and ``G`` of the finite rows of ``theta (R, n)``; NaN for the others."""
    risk = np.full(theta.shape[0], np.nan)
    grad = np.full(theta.shape, np.nan)
    ok = np.all(np.isfinite(theta), axis=-1)
    if np.any(ok):
        risk[ok], grad[ok] = problem.risk_and_gradient(theta[ok])
    return risk, grad


def flow_settings(flow=None, t_max=None, save_times=None, **settings) -> tuple[FlowSettings, np.ndarray]:
    """:class:`FlowSettings` from :func:`simulate`'s keyword arguments (``None`` means the default of
    :data:`~reluflow.dynamics.settings.FLOW_DEFAULTS`) and the save times: ``save_times`` when given (then
    ``t_max``, if given too, must be its last entry), else the settings' grid. Errors name the argument."""
    raw = {name: value for name, value in settings.items() if value is not None}
    if flow is not None:
        raw["flow"] = flow
    if save_times is not None:
        save_times = np.asarray(save_times, dtype=float)
        if save_times.ndim != 1 or save_times.size == 0 or not np.all(np.isfinite(save_times)):
            raise ValueError("save_times: must be a non-empty 1-d array of finite times")
        if np.any(save_times < 0) or np.any(np.diff(save_times) <= 0):
            raise ValueError("save_times: must be non-negative and strictly increasing")
        if t_max is not None and not np.isclose(save_times[-1], t_max, rtol=1e-12, atol=0):
            raise ValueError(f"t_max: {t_max!r} differs from the last save time {save_times[-1]!r}")
        t_max = float(save_times[-1])
        if t_max <= 0:
            raise ValueError("save_times: the last save time must be > 0")
    elif t_max is None:
        raise ValueError("t_max: give t_max or save_times")
    raw["t_max"] = t_max
    settings_obj = FlowSettings.from_config(raw, "")
    return settings_obj, (settings_obj.save_times() if save_times is None else save_times)


def integrate(problem, theta0: np.ndarray, settings: FlowSettings, save_times: np.ndarray,
              progress: Callable[[float], None] | None = None) -> tuple[SolveResult, np.ndarray, object]:
    """Integrate the flow of ``settings`` from every row of ``theta0 (M, n)``.

    Returns the :class:`~reluflow.dynamics.solvers.result.SolveResult`, the initial states actually used (the
    normalized flow first maps them onto ``M`` with the same realization) and the vector field. Every solver
    retracts the normalized flow onto ``M`` after each accepted step with the realization-preserving map (it
    leaves ``M`` by its local error: a GD step by ``O(eta^2)``; RK and Rosenbrock methods conserve linear
    invariants only, and ``|u_i| = 1`` is quadratic), which keeps the risk and hence the energy identity.
    """
    field_name = settings.field if settings.flow == "gd" else settings.flow
    field = make_flow(field_name, problem)
    y0 = field.prepare(theta0)
    post_step = field.retract if field_name == "normalized" else None
    common = dict(gtol=settings.gtol, divergence_bound=settings.divergence_bound, progress=progress)
    if settings.flow == "gd":
        from reluflow.dynamics.solvers.gd import gradient_descent

        result = gradient_descent(field.rhs, y0, settings.eta, save_times, retraction=post_step, **common)
        return result, y0, field
    solver = choose_solver(settings.solver, settings.flow, settings.t_max, problem)
    tolerances = dict(rtol=settings.rtol, atol=settings.atol, max_steps=settings.max_steps, post_step=post_step)
    # wide d = 1 networks: sigma I - J factorized in O(H log H) per run, without the dense Jacobian
    factorization = field.shifted_factorization() if solver in ("rodas4", "auto") and field.structured else None
    # the standard flow's Jacobian -Hess L is symmetric: Cholesky where sigma I - J is positive definite
    stiff = dict(factorization=factorization, symmetric_jacobian=field_name == "standard")
    # d = 1 densities: a step's stages with G evaluated in one compiled call (the same numbers, fewer calls)
    compiled = field.compiled() if field_name == "standard" else None
    if solver == "lsoda":
        from reluflow.dynamics.compiled_lsoda import solve_lsoda

        result = solve_lsoda(field.rhs, y0, save_times, field=compiled, rtol=settings.rtol, atol=settings.atol,
                             max_steps=settings.max_steps, **common)
    elif solver == "rodas4":
        from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock

        result = solve_rosenbrock(field.rhs, field.jac, y0, save_times, **stiff, field=compiled, **tolerances,
                                  **common)
    elif solver == "auto":
        from reluflow.dynamics.solvers.switching import solve_switching

        result = solve_switching(field.rhs, field.jac, y0, save_times, **stiff, field=compiled, **tolerances,
                                 **common)
    else:
        from reluflow.dynamics.solvers.explicit import solve_explicit

        result = solve_explicit(field.rhs, y0, save_times, tableau=solver, field=compiled, **tolerances, **common)
    return result, y0, field


def diagnose(problem, result: SolveResult, y0: np.ndarray, normalized: bool) -> SavedDiagnostics:
    """Risk, ``|G|`` and ``|theta|`` at the save times, the initial risks and (normalized flow) the drift."""
    theta = result.y
    m, n_t = theta.shape[:2]
    risk, grad = evaluate_rows(problem, theta.reshape(m * n_t, -1))
    return SavedDiagnostics(
        risk=risk.reshape(m, n_t),
        grad_norm=np.linalg.norm(grad.reshape(m, n_t, -1), axis=-1),
        param_norm=np.linalg.norm(theta, axis=-1),
        initial_risk=evaluate_rows(problem, y0)[0],
        constraint_drift=constraint_drift(problem, theta) if normalized else None,
    )


def _last_finite_states(theta: np.ndarray) -> np.ndarray:
    last = np.full((theta.shape[0], theta.shape[2]), np.nan)
    for i in range(theta.shape[0]):
        finite = np.flatnonzero(np.all(np.isfinite(theta[i]), axis=-1))
        if finite.size:
            last[i] = theta[i, finite[-1]]
    return last


def certify_end_points(problem, result: SolveResult, saved: SavedDiagnostics,
                       polish: bool = True) -> tuple[Certificate, dict]:
    """Each run's certificate (its last finite state polished to a critical point; NaN with ``polish=False``),
    the classified end point and the fitted decay of ``L(t) - L(theta*)``, the last two as trajectory variables.

    ``end_point`` is ``unclassified`` (and ``min_eigenvalue`` NaN) without a certificate or for networks of
    more than :data:`CLASSIFY_MAX_PARAMS` parameters."""
    last = _last_finite_states(result.y)
    if polish:
        cert = polish_critical_points(problem, last)
    else:
        nan = np.full(last.shape[0], np.nan)
        cert = Certificate(theta=np.full_like(last, np.nan), risk=nan, grad_norm=nan.copy(), distance=nan.copy())
    if polish and problem.n_params <= CLASSIFY_MAX_PARAMS:
        end_point, min_eigenvalue = classify_end_points(problem, cert)
    else:
        end_point = np.full(last.shape[0], "unclassified", dtype=END_POINT_DTYPE)
        min_eigenvalue = np.full(last.shape[0], np.nan)
    # rounding level of a risk that has reached zero: (64 eps)^2 E|f|^2, E|f|^2 = L(0) (asymptotics docstring)
    noise_floor = (64 * np.finfo(float).eps) ** 2 * float(problem.risk(np.zeros(problem.n_params)))
    kind, exponent, rate = fit_decays(result.t, saved.risk, cert.risk, noise_floor=noise_floor)
    decay = {
        "decay_kind": (("run",), kind,
                       {"long_name": "best model of L(t) - L_inf over the last two decades of t: "
                                     "power, exponential, settled (at rounding level) or undetermined",
                        "units": "1"}),
        "decay_exponent": (("run",), exponent,
                           {"long_name": "fitted p in L(t) - L_inf ~ C t^-p over the last two decades", "units": "1"}),
        "decay_rate": (("run",), rate,
                       {"long_name": "fitted lambda in L(t) - L_inf ~ C exp(-lambda t) over the last two decades",
                        "units": "1/time"}),
        "end_point": (("run",), end_point,
                      {"long_name": "type of the certified end point theta*: global_minimum, local_minimum, saddle, "
                                    "nonsmooth, not_converged or unclassified", "units": "1"}),
        "min_eigenvalue": (("run",), min_eigenvalue,
                           {"long_name": "smallest eigenvalue of the Hessian of L at theta* on the complement of "
                                         "the rescaling directions", "units": "1"}),
    }
    return cert, decay


def simulate(
    problem,
    theta0,
    flow: str | None = None,
    t_max: float | None = None,
    save_times=None,
    rtol: float | None = None,
    atol: float | None = None,
    eta: float | None = None,
    gtol: float | None = None,
    *,
    solver: str | None = None,
    field: str | None = None,
    divergence_bound: float | None = None,
    max_steps: int | None = None,
    certify: bool | None = None,
    settings: FlowSettings | None = None,
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
    flow : ``"standard"`` (``Theta' = -G``, the default), ``"normalized"`` (``Theta' = -P G`` on ``M``; initial
        states are first mapped onto ``M`` with the same realization) or ``"gd"`` (gradient descent with step
        ``eta`` on the vector field named by ``field``).
    t_max, save_times : the final flow time and the times to record (default: ``0`` and 60 log-spaced times;
        for GD 61 equispaced ones, rounded to whole steps). Give either or both (``t_max`` must equal the last
        save time).
    rtol, atol, gtol, solver, field, divergence_bound, max_steps, certify : the flow settings of
        :class:`~reluflow.dynamics.settings.FlowSettings`; ``None`` means the default of
        :data:`~reluflow.dynamics.settings.FLOW_DEFAULTS` (``rtol = 1e-8``, ``atol = 1e-10``, ``solver = "auto"``,
        ``divergence_bound = 1e8``, ``max_steps = 200000``, ``certify = True``).
    settings : all of these at once, as validated :class:`~reluflow.dynamics.settings.FlowSettings` (then the
        individual flow arguments must be left out; ``save_times`` may still override the settings' grid).
    run_ids, init : run ids (default ``0..M-1``) and per-run initialization metadata for the file.
    scenario, title, config : provenance recorded in the dataset.
    progress : ``progress(fraction)`` callback for long integrations.

    Returns
    -------
    xarray.Dataset in the layout of :mod:`reluflow.files.trajectories`. Bad arguments raise ``ValueError``
    naming the argument, before any integration.
    """
    arguments = dict(rtol=rtol, atol=atol, eta=eta, gtol=gtol, solver=solver, field=field,
                     divergence_bound=divergence_bound, max_steps=max_steps, certify=certify)
    if settings is None:
        settings, times = flow_settings(flow, t_max, save_times, **arguments)
    else:
        given = [name for name, value in {"flow": flow, "t_max": t_max, **arguments}.items() if value is not None]
        if given:
            raise ValueError(f"{given[0]}: give either settings or the individual flow arguments, not both")
        times = settings.save_times() if save_times is None else flow_settings(
            settings.flow, None, save_times, eta=settings.eta)[1]
    theta0 = np.asarray(theta0, dtype=float)
    if theta0.ndim == 1:
        theta0 = theta0[None, :]
    if theta0.ndim != 2 or theta0.shape[1] != problem.n_params:
        raise ValueError(f"theta0: must have shape (M, n_params = {problem.n_params}), got {theta0.shape}")
    if not np.all(np.isfinite(theta0)):
        raise ValueError("theta0: contains non-finite entries")
    m = theta0.shape[0]
    run_ids = np.arange(m) if run_ids is None else np.asarray(run_ids)
    if run_ids.shape != (m,) or len(np.unique(run_ids)) != m:
        raise ValueError(f"run_ids: must be {m} distinct integers")

    result, y0, _ = integrate(problem, theta0, settings, times, progress)
    normalized = (settings.field if settings.flow == "gd" else settings.flow) == "normalized"
    saved = diagnose(problem, result, y0, normalized)
    certificate, decay = certify_end_points(problem, result, saved, polish=settings.certify)

    solver_used = "euler" if settings.flow == "gd" else choose_solver(settings.solver, settings.flow,
                                                                       settings.t_max, problem)
    integrator = {
        "flow": settings.flow, "field": "normalized" if normalized else "standard", "solver": solver_used,
        "rtol": settings.rtol, "atol": settings.atol, "eta": settings.eta, "gtol": settings.gtol,
        "divergence_bound": settings.divergence_bound, "max_steps": settings.max_steps, "t_max": float(times[-1]),
    }
    info = FileInfo(
        scenario=scenario,
        title=title or f"reluflow {settings.flow} flow trajectories",
        config={"problem": problem.config, "integrator": integrator, **(dict(config) if config else {})},
    )
    return build_from_solve_result(result, saved, certificate, run_ids, problem.layout, info,
                                   init=dict(init or {}), extra=decay)
