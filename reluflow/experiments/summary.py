"""Per-run summary tables and quantitative verdicts of the theorem scenarios (docs/MATH.md section 5).

:func:`summarize` turns a scenario's trajectories into two tables:

* the **summary**: one row per (case, flow, run) with the run's status, initial and final risk, final
  ``|G|``, norms, certificate, integration fidelity and the scenario's own columns;
* the **verdict**: one row per check with ``scenario, check, value, passed, detail``. ``passed`` is True or
  False for a check that can fail and empty (NA) for a row that only reports an observation (for instance
  how many random initializations reached zero risk, which no theorem predicts). A failed check is reported
  as failed; nothing is hidden or dropped.

Nothing here recomputes a trajectory: every number is read from the trajectory datasets
(:mod:`reluflow.files.trajectories`) or derived from them by the definitions below.

Definitions used throughout (``t_end`` = the last save time at which the run's risk is finite):

* ``final_risk = L(Theta_{t_end})``: the last finite saved risk (after a divergence the saves hold NaN);
* ``reached_zero``: ``final_risk < ZERO_RISK = 1e-10``;
* ``norm_growth``: ``max_{t in [t_end/10, t_end]} |Theta_t| / |Theta_{t_0}| - 1`` with ``t_0`` the first save
  time ``>= t_end/10``: the relative growth of the parameter norm over the last decade of flow time;
* ``risk_ratio_last_decade``: ``L(Theta_{t_end}) / L(Theta_{t_0})``, how much the risk still fell over the last
  decade (a run that has not reached a verdict's level by ``T`` but is still falling fast needs a longer horizon);
* ``bounded`` (operational, a finite computation cannot prove boundedness): the run finished or converged
  and ``norm_growth <= BOUNDED_GROWTH = 1e-2``;
* ``max_relative_energy_residual``: ``max_t |L(Theta_0) - L(Theta_t) - int_0^t |F(Theta_s)|^2 ds| / L(Theta_0)``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from reluflow.dynamics.solvers.result import Status
from reluflow.experiments.config import SCENARIO_KINDS

#: a run "reached zero risk" when its final risk is below this. The risk is evaluated exactly (closed-form
#: integrals, rounding error ~1e-16 relative to the squared scale of N and f, here O(1)), so 1e-10 is six
#: orders above rounding and far below every positive critical value in the scenarios (alpha^2/972 ~ 4e-3).
ZERO_RISK = 1e-10

#: operational boundedness: the norm grew by at most 1 % over the last decade of flow time. A trajectory
#: converging to a limit changes its norm by ever smaller amounts; escaping ones in these networks grow
#: slowly (like log t, i.e. ~ 20 % per decade at t = 1e6), so 1 % separates the two with room on both sides.
BOUNDED_GROWTH = 1e-2

#: JR Thm 1.1 check: |L(Theta_T) - L(theta*)| <= LIMIT_RISK_RTOL * max(1, L(theta*)). Both risks are exact up
#: to rounding (~1e-15), so the gap measures how far the flow still is from its limit at t = T; 1e-8 asks the
#: finite-time risk to agree with the critical value to eight digits (relative to the O(1) risk scale).
LIMIT_RISK_RTOL = 1e-8

#: a certificate theta* counts as critical when |G(theta*)| <= this. Levenberg-Marquardt on the exact G stops
#: at rounding level (|G| ~ 1e-14 .. 1e-12 for O(1) parameters); a non-critical point near the end of a flow
#: has |G| >= ~1e-6 at the horizons used; 1e-8 lies between the two.
CRITICAL_GRAD_TOL = 1e-8

#: JR Thm 1.1: |G(Theta_t)| should tend to zero; the check asks |G(Theta_T)| <= GRAD_DECAY * max_t |G(Theta_t)|,
#: a decrease by three orders of magnitude, which a run that has stalled away from a critical point cannot show.
GRAD_DECAY = 1e-3

#: energy identity L(Theta_0) - L(Theta_t) = int_0^t |F|^2 ds (F the velocity) holds for the exact flow. The
#: check asks max_t |residual| <= ENERGY_RTOL * max(1, L(Theta_0)): the solvers run with rtol <= 1e-8 and
#: atol <= 1e-10 and integrate the energy as an extra ODE component, so its global error stays a modest multiple
#: of the tolerances times the O(1) risk scale of these problems (targets and networks of size O(1)); the scale
#: is max(1, L_0), not L_0, because a run starting near zero risk still carries the absolute error floor
#: (atol accumulated over ~1e3 steps). A residual above 1e-6 of that scale means the computed trajectory is not
#: the flow to the accuracy the other checks rely on.
ENERGY_RTOL = 1e-6

#: the normalized flow stays on M = {|w_i|^2 + b_i^2 = 1}: the solvers integrate -P G, which is tangent to the
#: spheres, so the drift is accumulated rounding error and local truncation error of size rtol * |u_i| per
#: step projected onto the normal direction, a second-order effect; 1e-10 (the brief's expectation) tests it.
CONSTRAINT_TOL = 1e-10

#: "same realizations": the standard and normalized flows start from theta_0 and its image on M, which has
#: the same realization; their initial risks agree up to rounding (~1e-15 relative), checked with 1e-10.
SAME_REALIZATION_RTOL = 1e-10

#: GD vs GF: explicit Euler's global error is C eta + O(eta^2): the log-log slope of the distance is expected
#: to be 1; over the two to three decades of eta used, the O(eta^2) term at the largest steps bends the fitted
#: slope by a few percent, so |slope - 1| <= 0.1 is the pass criterion.
GD_ORDER_TOL = 0.1

#: the observation row "gd_order_small_steps" fits the order over this many smallest usable step sizes
SMALL_STEP_COUNT = 3

#: two save times are "the same" when they differ by at most this times max(1, T): GD saves at k * eta, GF at
#: linspace(0, T, n + 1); both are computed in float64 (rounding ~1e-15 relative).
TIME_MATCH_RTOL = 1e-9

#: |L(T) - threshold| <= this * max(1, threshold): a single-neuron run "ended at the dead-neuron value"
DEAD_NEURON_RTOL = 1e-8


def status_name(code: int) -> str:
    """The lower-case name of a :class:`~reluflow.dynamics.solvers.result.Status` code (``"finished"``, ...)."""
    return Status(int(code)).name.lower()


# ----------------------------------------------------------------------------------------------------------
# spec checking


def _spec_error(key: str, message: str) -> ValueError:
    return ValueError(f"{key}: {message}")


def check_spec(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> None:
    """Check the scenario slice and that ``datasets`` holds exactly its (case, flow) pairs.

    Raises ``ValueError`` naming the offending key (``spec.kind``, ``spec.cases[1].flows``, ``datasets``).
    Each dataset's ``config_json["problem"]`` (when present) must equal the case's problem: a file left over
    from another configuration would otherwise be summarized under the wrong label.
    """
    if not isinstance(spec, Mapping):
        raise _spec_error("spec", f"must be a mapping, got {type(spec).__name__}")
    for key in ("scenario", "kind", "cases"):
        if key not in spec:
            raise _spec_error(f"spec.{key}", "is required")
    if spec["kind"] not in SCENARIO_KINDS:
        raise _spec_error(
            "spec.kind", f"unknown scenario kind {spec['kind']!r}; expected one of {list(SCENARIO_KINDS)}"
        )
    cases = spec["cases"]
    if not isinstance(cases, list) or not cases:
        raise _spec_error("spec.cases", "must be a non-empty list of cases")
    expected: set[tuple[str, str]] = set()
    for i, case in enumerate(cases):
        key = f"spec.cases[{i}]"
        if not isinstance(case, Mapping):
            raise _spec_error(key, f"must be a mapping, got {type(case).__name__}")
        for required in ("case", "problem", "flows"):
            if required not in case:
                raise _spec_error(f"{key}.{required}", "is required")
        flows = case["flows"]
        if not isinstance(flows, Mapping) or not flows:
            raise _spec_error(f"{key}.flows", "must be a non-empty mapping {label: settings}")
        for label, settings in flows.items():
            if not isinstance(settings, Mapping) or "flow" not in settings:
                raise _spec_error(f"{key}.flows.{label}", "must be a mapping with a 'flow' key")
            if settings["flow"] == "gd" and settings.get("eta") is None:
                raise _spec_error(f"{key}.flows.{label}.eta", "is required for a gd flow")
            expected.add((case["case"], label))
    if not isinstance(datasets, Mapping):
        raise _spec_error("datasets", f"must be a mapping {{(case, flow): Dataset}}, got {type(datasets).__name__}")
    missing = sorted(expected - set(datasets))
    if missing:
        raise _spec_error(
            "datasets", f"no trajectories for (case, flow) {missing[0]!r} of scenario {spec['scenario']!r}"
        )
    extra = sorted(set(datasets) - expected)
    if extra:
        raise _spec_error(
            "datasets", f"trajectories for (case, flow) {extra[0]!r}, which scenario {spec['scenario']!r} does not have"
        )
    for i, case in enumerate(cases):
        for label in case["flows"]:
            ds = datasets[(case["case"], label)]
            if not isinstance(ds, xr.Dataset):
                raise _spec_error(
                    "datasets", f"({case['case']!r}, {label!r}) is a {type(ds).__name__}, not an xarray.Dataset"
                )
            for var in (
                "theta",
                "risk",
                "grad_norm",
                "param_norm",
                "energy_residual",
                "status",
                "t_final",
                "critical_risk",
                "critical_grad_norm",
            ):
                if var not in ds.variables:
                    raise _spec_error("datasets", f"({case['case']!r}, {label!r}) has no variable {var!r}")
            stored = _dataset_config(ds).get("problem")
            if stored is not None and _canonical(stored) != _canonical(case["problem"]):
                raise _spec_error(
                    f"spec.cases[{i}].problem",
                    f"differs from the problem stored in the trajectories of ({case['case']!r}, {label!r}); "
                    f"the trajectory files are from another configuration: rerun the workflow",
                )


def _dataset_config(ds: xr.Dataset) -> dict:
    try:
        value = json.loads(ds.attrs.get("config_json", "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------------------
# per-run quantities


def last_finite_index(values: np.ndarray) -> np.ndarray:
    """For each row of ``values (M, T)``: the index of its last finite entry, -1 if none."""
    finite = np.isfinite(values)
    idx = values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    return np.where(finite.any(axis=1), idx, -1)


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    ok = idx >= 0
    out[ok] = values[np.flatnonzero(ok), idx[ok]]
    return out


def norm_growth_last_decade(time: np.ndarray, param_norm: np.ndarray, use_max: bool = True) -> np.ndarray:
    """``max_{t in [t_end/10, t_end]} |Theta_t| / |Theta_{t_0}| - 1`` per run (module docstring); NaN when
    ``t_end <= 0`` or the run has no finite norm. With ``use_max=False`` the value at ``t_end`` replaces the
    max (used with the risk: ``L(t_end) / L(t_0) - 1``, how much the risk still fell over the last decade)."""
    m = param_norm.shape[0]
    out = np.full(m, np.nan)
    end = last_finite_index(param_norm)
    for r in range(m):
        if end[r] < 0 or time[end[r]] <= 0:
            continue
        t_end = time[end[r]]
        start = int(np.searchsorted(time, t_end / 10.0, side="left"))
        window = param_norm[r, start : end[r] + 1]
        window = window[np.isfinite(window)]
        if window.size == 0 or not window[0] > 0:
            continue
        out[r] = float((np.max(window) if use_max else window[-1]) / window[0] - 1.0)
    return out


def run_table(case: Mapping[str, Any], label: str, ds: xr.Dataset) -> pd.DataFrame:
    """The common summary columns of one (case, flow): one row per run (module docstring definitions)."""
    settings = case["flows"][label]
    time = ds["time"].values
    risk = ds["risk"].values
    grad = ds["grad_norm"].values
    norm = ds["param_norm"].values
    residual = ds["energy_residual"].values
    m = ds.sizes["run"]
    end = last_finite_index(risk)
    if "initial_risk" in ds.coords or "initial_risk" in ds.variables:
        initial = np.asarray(ds["initial_risk"].values, dtype=float)
    else:
        initial = risk[:, 0].astype(float)
    abs_res_max = _nanmax_rows(np.abs(residual))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_res_max = abs_res_max / np.where(initial > 0, initial, np.nan)
    if "constraint_drift" in ds.variables:
        drift = _nanmax_rows(np.abs(ds["constraint_drift"].values))
    else:
        drift = np.full(m, np.nan)
    status = ds["status"].values.astype(int)
    growth = norm_growth_last_decade(time, norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk_ratio = norm_growth_last_decade(time, risk, use_max=False) + 1.0
    final_risk = _take(risk, end)
    evaluable = np.isin(status, [int(Status.FINISHED), int(Status.CONVERGED)])
    problem = case["problem"]
    table = pd.DataFrame(
        {
            "case": case["case"],
            "case_label": case.get("label", case["case"]),
            "flow": label,
            "flow_kind": settings["flow"],
            "eta": float(settings["eta"]) if settings.get("eta") is not None else np.nan,
            "width": int(problem.get("network", {}).get("width", ds.attrs.get("width", -1))),
            "run": ds["run"].values.astype(int),
            "init_scheme": _coord_or(ds, "init_scheme", ""),
            "init_scale": _coord_or(ds, "init_scale", np.nan),
            "status": [status_name(s) for s in status],
            "initial_risk": initial,
            "final_risk": final_risk,
            "t_end": np.where(end >= 0, time[np.maximum(end, 0)], np.nan),
            "t_final": ds["t_final"].values.astype(float),
            "final_grad_norm": _take(grad, end),
            "max_grad_norm": _nanmax_rows(grad),
            "final_param_norm": _take(norm, end),
            "max_param_norm": _nanmax_rows(norm),
            "norm_growth": growth,
            "risk_ratio_last_decade": risk_ratio,
            "bounded": evaluable & (growth <= BOUNDED_GROWTH),
            "reached_zero": final_risk < ZERO_RISK,
            "critical_risk": ds["critical_risk"].values.astype(float),
            "critical_grad_norm": ds["critical_grad_norm"].values.astype(float),
            "critical_distance": (
                ds["critical_distance"].values.astype(float) if "critical_distance" in ds.variables else np.nan
            ),
            "max_relative_energy_residual": rel_res_max,
            "max_abs_energy_residual": abs_res_max,
            "max_constraint_drift": drift,
            # the fitted tail of L(t) - L_inf over the last two decades (reluflow.dynamics.asymptotics)
            "decay_kind": (
                ds["decay_kind"].values.astype(str) if "decay_kind" in ds.variables else "undetermined"
            ),
            "decay_exponent": (
                ds["decay_exponent"].values.astype(float) if "decay_exponent" in ds.variables else np.nan
            ),
            "decay_rate": ds["decay_rate"].values.astype(float) if "decay_rate" in ds.variables else np.nan,
        }
    )
    return table


def _coord_or(ds: xr.Dataset, name: str, default):
    if name in ds.variables:
        values = ds[name].values
        return values.astype(str) if values.dtype.kind in "OUS" else values.astype(float)
    return default


def _nanmax_rows(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values, -np.inf)
    out = np.max(values, axis=1) if values.shape[1] else np.full(values.shape[0], -np.inf)
    return np.where(np.isfinite(out), out, np.nan)


# ----------------------------------------------------------------------------------------------------------
# verdict rows


def _row(scenario: str, check: str, value: float, passed: bool | None, detail: str) -> dict:
    return {
        "scenario": scenario,
        "check": check,
        "value": float(value) if value is not None else np.nan,
        "passed": pd.NA if passed is None else bool(passed),
        "detail": detail,
    }


def _frac(k: int, n: int) -> float:
    return k / n if n else np.nan


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _list(values, limit: int = 8) -> str:
    """The first ``limit`` numbers, formatted and comma-separated."""
    return ", ".join(_fmt(x) for x in list(values)[:limit])


def _runs(df: pd.DataFrame, limit: int = 8, with_flow: bool | None = None) -> str:
    """``case/run`` (``case/flow/run`` when ``with_flow``, by default when several flows are in ``df``), at
    most ``limit`` of them."""
    if with_flow is None:
        with_flow = df["flow"].nunique() > 1
    if with_flow:
        items = [f"{c}/{f}/{r}" for c, f, r in zip(df["case"], df["flow"], df["run"])]
    else:
        items = [f"{c}/{r}" for c, r in zip(df["case"], df["run"])]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


NOTHING_TESTED = "; no such run: nothing was tested, so the check does not pass"


def _common_rows(scenario: str, table: pd.DataFrame) -> list[dict]:
    """Rows every scenario gets: diverged runs (observation), solver failures and the energy identity."""
    rows = []
    several = table["flow"].nunique() > 1  # name the flow in run lists when the scenario has several
    diverged = table[table["status"] == "diverged"]
    rows.append(
        _row(
            scenario,
            "runs_diverged",
            len(diverged),
            None,
            f"{len(diverged)}/{len(table)} runs diverged (norm passed the divergence bound or the state "
            f"became non-finite)" + (f": {_runs(diverged, with_flow=several)}" if len(diverged) else ""),
        )
    )
    failed = table[table["status"] == "failed"]
    rows.append(
        _row(
            scenario,
            "solver_failures",
            len(failed),
            len(failed) == 0,
            f"{len(failed)}/{len(table)} runs where the solver gave up (step-size underflow or step "
            f"budget) before the final time" + (f": {_runs(failed, with_flow=several)}" if len(failed) else ""),
        )
    )
    flowing = table[(table["flow_kind"] != "gd") & table["status"].isin(["finished", "converged"])]
    if len(flowing):
        scaled = flowing["max_abs_energy_residual"] / np.maximum(1.0, flowing["initial_risk"])
        worst = float(scaled.max()) if scaled.notna().any() else np.nan
        bad = flowing[~(scaled <= ENERGY_RTOL)]
        rows.append(
            _row(
                scenario,
                "energy_identity",
                worst,
                len(bad) == 0,
                f"{len(flowing) - len(bad)}/{len(flowing)} gradient-flow runs satisfy the energy identity "
                f"to max_t |residual| <= {ENERGY_RTOL:g} max(1, L(Theta_0)) (worst {_fmt(worst)})"
                + (f"; violated by {_runs(bad, with_flow=several)}" if len(bad) else ""),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------------------
# affine-target helpers


def affine_target(case: Mapping[str, Any], key: str) -> tuple[float, float, float, float]:
    """``(alpha, beta, a, b)`` of a d = k = 1 affine target under the uniform law on ``[a, b]``.

    The reference values alpha^2 (b-a)^2/972 and alpha^2 (b-a)^2/12 are derived for the uniform law, so any
    other case raises ``ValueError`` naming ``key``.
    """
    problem = case["problem"]
    target = problem.get("target", {})
    if target.get("kind") != "affine":
        raise _spec_error(
            f"{key}.problem.target.kind", f"this scenario needs an affine target, got {target.get('kind')!r}"
        )
    net = problem.get("network", {})
    if net.get("input_dim", 1) != 1 or net.get("output_dim", 1) != 1:
        raise _spec_error(f"{key}.problem.network", "the affine-target thresholds are derived for d = k = 1")
    if problem.get("measure", {}).get("kind") != "uniform":
        raise _spec_error(
            f"{key}.problem.measure.kind",
            f"the thresholds are derived for the uniform law, got {problem.get('measure', {}).get('kind')!r}",
        )
    slope = np.asarray(target["slope"], dtype=float).reshape(-1)
    intercept = np.asarray(target.get("intercept", 0.0), dtype=float).reshape(-1)
    if slope.size != 1 or intercept.size != 1:
        raise _spec_error(f"{key}.problem.target", "slope and intercept must be single numbers (k = 1)")
    a, b = (float(v) for v in problem.get("domain", [0.0, 1.0]))
    return float(slope[0]), float(intercept[0]), a, b


def affine_critical_value(alpha: float, a: float, b: float) -> float:
    """``alpha^2 (b - a)^2 / 972``: the risk of the H = 2 critical point of docs/MATH.md section 5.

    On ``[0, 1]`` the neurons ``(-1, 2/3, -2/3 alpha)``, ``(1, -1/3, 2/3 alpha)`` and ``c = beta + alpha/2`` give
    ``G = 0`` and ``L = alpha^2/972``. For ``[a, b]`` substitute ``x = a + (b - a) u``: the uniform law on
    ``[a, b]`` becomes the uniform law on ``[0, 1]``, the target becomes ``alpha (b - a) u + (alpha a + beta)``
    and a network in ``x`` is a network in ``u`` (affine inner maps compose), so the critical value becomes
    ``(alpha (b - a))^2 / 972``. For ``H > 2``, the same point padded with dead neurons (kinks outside
    ``[a, b]``, outer weight 0) is critical with the same risk, so the value bounds the threshold of JR
    Theorem 1.2 for every ``H >= 2``.
    """
    return alpha**2 * (b - a) ** 2 / 972.0


def single_neuron_threshold(alpha: float, a: float, b: float) -> float:
    """``alpha^2 (b - a)^2 / 12 = Var(alpha X)``, ``X ~ U[a, b]``: a dead neuron plus the best constant."""
    return alpha**2 * (b - a) ** 2 / 12.0


# ----------------------------------------------------------------------------------------------------------
# the five scenario kinds


def _summarize_jr_bounded_critical(spec, datasets, table):
    """JR Thm 1.1: bounded runs' limit risk equals the risk of a certified critical point, |G| -> 0."""
    s = spec["scenario"]
    gap = (table["final_risk"] - table["critical_risk"]).abs()
    gap_tol = LIMIT_RISK_RTOL * np.maximum(1.0, table["critical_risk"].abs())
    table["limit_risk_gap"] = gap
    table["limit_matches_critical"] = gap <= gap_tol
    table["certified_critical"] = table["critical_grad_norm"] <= CRITICAL_GRAD_TOL
    with np.errstate(invalid="ignore", divide="ignore"):
        table["grad_decay"] = table["final_grad_norm"] / table["max_grad_norm"]
    rows = _common_rows(s, table)
    n_all = len(table)
    bounded = table[table["bounded"]]
    n = len(bounded)
    unbounded = table[~table["bounded"] & table["status"].isin(["finished", "converged"])]
    rows.append(
        _row(
            s,
            "bounded_runs",
            _frac(n, n_all),
            n > 0,
            f"{n}/{n_all} runs stayed bounded (finished, norm grew <= {BOUNDED_GROWTH:g} over the last decade "
            f"of flow time); the theorem assumes bounded trajectories, the checks below use these runs"
            + (f"; not bounded: {_runs(unbounded)}" if len(unbounded) else ""),
        )
    )
    ok = bounded["limit_matches_critical"] & bounded["certified_critical"]
    worst_gap = float(bounded["limit_risk_gap"].max()) if n else np.nan
    rows.append(
        _row(
            s,
            "limit_risk_equals_certified_critical_value",
            _frac(int(ok.sum()), n),
            n > 0 and bool(ok.all()),
            f"{int(ok.sum())}/{n} bounded runs: limit risk equals a certified critical value "
            f"(|L(Theta_T) - L(theta*)| <= {LIMIT_RISK_RTOL:g} max(1, L(theta*)) and |G(theta*)| <= "
            f"{CRITICAL_GRAD_TOL:g}); largest gap {_fmt(worst_gap)}"
            + (
                f"; failing: {_runs(bounded[~ok])} (risk still falling by the factor L(T)/L(T/10) = "
                f"{_list(bounded.loc[~ok, 'risk_ratio_last_decade'])})"
                if (~ok).any()
                else ""
            )
            + (NOTHING_TESTED if n == 0 else ""),
        )
    )
    cert = bounded["certified_critical"]
    rows.append(
        _row(
            s,
            "critical_gradient_small",
            float(bounded["critical_grad_norm"].max()) if n else np.nan,
            n > 0 and bool(cert.all()),
            f"{int(cert.sum())}/{n} bounded runs have a certificate with |G(theta*)| <= {CRITICAL_GRAD_TOL:g} "
            f"(largest {_fmt(bounded['critical_grad_norm'].max() if n else np.nan)}; distance |theta* - "
            f"Theta_T| median {_fmt(bounded['critical_distance'].median() if n else np.nan)}, max "
            f"{_fmt(bounded['critical_distance'].max() if n else np.nan)})",
        )
    )
    far = bounded[~(bounded["critical_distance"] <= bounded["final_param_norm"])]
    rows.append(
        _row(
            s,
            "certificate_distance",
            float(bounded["critical_distance"].max()) if n else np.nan,
            None,
            f"{len(far)}/{n} certificates lie farther from Theta_T than |Theta_T| (the polishing followed a "
            f"flat direction of the risk; theta* is still critical with the stated risk, but it is not the "
            f"flow's nearby limit)" + (f": {_runs(far)}" if len(far) else ""),
        )
    )
    decay = bounded["grad_decay"] <= GRAD_DECAY
    rows.append(
        _row(
            s,
            "gradient_norm_decreases",
            float(bounded["grad_decay"].median()) if n else np.nan,
            n > 0 and bool(decay.all()),
            f"{int(decay.sum())}/{n} bounded runs: |G(Theta_T)| <= {GRAD_DECAY:g} max_t |G(Theta_t)| "
            f"(median ratio {_fmt(bounded['grad_decay'].median() if n else np.nan)}, median |G(Theta_T)| "
            f"{_fmt(bounded['final_grad_norm'].median() if n else np.nan)})",
        )
    )
    return table, rows


def _summarize_jr_affine_small_risk(spec, datasets, table):
    """JR Thm 1.2: bounded runs with initial risk below alpha^2 (b-a)^2/972 reach zero risk."""
    s = spec["scenario"]
    values = {}
    for i, case in enumerate(spec["cases"]):
        alpha, beta, a, b = affine_target(case, f"spec.cases[{i}]")
        values[case["case"]] = (alpha, beta, affine_critical_value(alpha, a, b))
    table["alpha"] = table["case"].map(lambda c: values[c][0])
    table["beta"] = table["case"].map(lambda c: values[c][1])
    table["threshold"] = table["case"].map(lambda c: values[c][2])
    table["below_threshold"] = table["initial_risk"] < table["threshold"]
    rows = _common_rows(s, table)
    thresholds = sorted({v[2] for v in values.values()})
    thr_text = ", ".join(_fmt(t) for t in thresholds)
    below = table[table["below_threshold"]]
    for width, group in [(w, below[below["width"] == w]) for w in sorted(table["width"].unique())] + [("all", below)]:
        tested = group[group["bounded"]]
        k = int(tested["reached_zero"].sum())
        n = len(tested)
        excluded = group[~group["bounded"]]
        name = f"H={width}" if width != "all" else "overall"
        failing = tested[~tested["reached_zero"]]
        rows.append(
            _row(
                s,
                f"below_reference_reach_zero_{'H' + str(width) if width != 'all' else 'all'}",
                _frac(k, n),
                n > 0 and k == n,
                f"{name}: {k}/{n} bounded runs with initial risk below alpha^2 (b-a)^2/972 = {thr_text} reached risk "
                f"< {ZERO_RISK:g}"
                + (NOTHING_TESTED if n == 0 else "")
                + (
                    f"; not reached: {_runs(failing)} (final risks {_list(failing['final_risk'])}; "
                    f"L(T)/L(T/10) = {_list(failing['risk_ratio_last_decade'])})"
                    if len(failing)
                    else ""
                )
                + (
                    f"; {len(excluded)} below-reference run(s) excluded as not bounded/not finished: {_runs(excluded)}"
                    if len(excluded)
                    else ""
                ),
            )
        )
    above = table[~table["below_threshold"] & table["status"].isin(["finished", "converged"])]
    rows.append(
        _row(
            s,
            "above_reference_outcome",
            _frac(int(above["reached_zero"].sum()), len(above)),
            None,
            f"{int(above['reached_zero'].sum())}/{len(above)} runs starting at or above the reference value "
            f"reached zero risk; the others ended at positive risk (median "
            f"{_fmt(above.loc[~above['reached_zero'], 'final_risk'].median())}; their certified critical risks: "
            f"median {_fmt(above.loc[~above['reached_zero'], 'critical_risk'].median())})",
        )
    )
    for scheme in sorted(table["init_scheme"].astype(str).unique()):
        group = table[table["init_scheme"].astype(str) == scheme]
        k = int(group["reached_zero"].sum())
        rows.append(
            _row(
                s,
                f"reached_zero_{scheme or 'unknown'}_init",
                _frac(k, len(group)),
                None,
                f"{k}/{len(group)} runs with {scheme or 'unknown'} initialization reached risk < {ZERO_RISK:g} "
                f"(regardless of initial risk)",
            )
        )
    return table, rows


def _summarize_jr_single_neuron(spec, datasets, table):
    """JR Thm 1.3: H = 1, initial risk below alpha^2 (b-a)^2/12 gives L -> 0, bounded or not."""
    s = spec["scenario"]
    values = {}
    for i, case in enumerate(spec["cases"]):
        alpha, beta, a, b = affine_target(case, f"spec.cases[{i}]")
        width = case["problem"].get("network", {}).get("width")
        if width != 1:
            raise _spec_error(
                f"spec.cases[{i}].problem.network.width", f"must be 1 for jr_single_neuron, got {width!r}"
            )
        values[case["case"]] = (alpha, beta, single_neuron_threshold(alpha, a, b))
    table["alpha"] = table["case"].map(lambda c: values[c][0])
    table["beta"] = table["case"].map(lambda c: values[c][1])
    table["threshold"] = table["case"].map(lambda c: values[c][2])
    table["below_threshold"] = table["initial_risk"] < table["threshold"]
    table["norm_grew"] = ~(table["norm_growth"] <= BOUNDED_GROWTH) | (table["status"] == "diverged")
    table["at_dead_neuron_value"] = (table["final_risk"] - table["threshold"]).abs() <= DEAD_NEURON_RTOL * np.maximum(
        1.0, table["threshold"]
    )
    rows = _common_rows(s, table)
    thr_text = ", ".join(_fmt(t) for t in sorted({v[2] for v in values.values()}))
    below = table[table["below_threshold"] & (table["status"] != "failed")]
    k = int(below["reached_zero"].sum())
    still = below[~below["reached_zero"]]
    rows.append(
        _row(
            s,
            "below_threshold_reach_zero",
            _frac(k, len(below)),
            len(below) > 0 and k == len(below),
            f"{k}/{len(below)} runs with initial risk below alpha^2 (b-a)^2/12 = {thr_text} reached risk "
            f"< {ZERO_RISK:g}"
            + (
                f"; not reached: {_runs(still)} (final risks {_list(still['final_risk'])}, "
                f"L(T)/L(T/10) = {_list(still['risk_ratio_last_decade'])}, "
                f"statuses {', '.join(still['status'][:8])})"
                if len(still)
                else ""
            )
            + (NOTHING_TESTED if len(below) == 0 else ""),
        )
    )
    grew = below[below["norm_grew"]]
    rows.append(
        _row(
            s,
            "below_threshold_unbounded",
            len(grew),
            None,
            f"{len(grew)}/{len(below)} below-threshold runs have a growing norm (> {BOUNDED_GROWTH:g} over the "
            f"last decade, or diverged); {int(grew['reached_zero'].sum())} of them reached risk < {ZERO_RISK:g}",
        )
    )
    above = table[~table["below_threshold"] & (table["status"] != "failed")]
    zero = int(above["reached_zero"].sum())
    dead = int((above["at_dead_neuron_value"] & ~above["reached_zero"]).sum())
    other = above[~above["reached_zero"] & ~above["at_dead_neuron_value"]]
    rows.append(
        _row(
            s,
            "above_threshold_outcome",
            _frac(zero, len(above)),
            None,
            f"{len(above)} runs started at or above the threshold: {zero} reached zero risk, {dead} ended at the "
            f"dead-neuron value alpha^2 (b-a)^2/12 (within {DEAD_NEURON_RTOL:g}), {len(other)} elsewhere"
            + (f" (final risks {_list(other['final_risk'])})" if len(other) else ""),
        )
    )
    all_grew = table[table["norm_grew"]]
    rows.append(
        _row(
            s,
            "runs_with_growing_norm",
            len(all_grew),
            None,
            f"{len(all_grew)}/{len(table)} runs have a growing norm; {int(all_grew['reached_zero'].sum())} "
            f"of them reached risk < {ZERO_RISK:g}",
        )
    )
    return table, rows


def _summarize_ejrw_normalized_bounded(spec, datasets, table):
    """EJRW: normalized-GF runs stay bounded and on M; comparison with the standard flow."""
    s = spec["scenario"]
    rows = _common_rows(s, table)
    all_bounded = True
    any_normalized = False
    for i, case in enumerate(spec["cases"]):
        name = case["case"]
        sub = table[table["case"] == name]
        norm = sub[sub["flow_kind"] == "normalized"]
        std = sub[sub["flow_kind"] == "standard"]
        if norm.empty:
            continue
        any_normalized = True
        # a run the solver gave up on never reached T: its boundedness cannot be judged (it is counted in
        # solver_failures, which fails); a diverged normalized run counts as unbounded
        judged = norm[norm["status"] != "failed"]
        ok = judged["bounded"]
        n_failed = len(norm) - len(judged)
        all_bounded &= bool(ok.all())
        rows.append(
            _row(
                s,
                f"{name}: normalized_bounded",
                float(norm["max_param_norm"].max()),
                len(judged) > 0 and bool(ok.all()),
                f"{case.get('label', name)}: {int(ok.sum())}/{len(judged)} normalized runs bounded (norm grew <= "
                f"{BOUNDED_GROWTH:g} over the last decade)"
                + (f" ({n_failed} more not judged: the solver gave up before T)" if n_failed else "")
                + (
                    f"; growing: {_runs(judged[~ok])} (growth {_list(judged.loc[~ok, 'norm_growth'])})"
                    if (~ok).any()
                    else ""
                )
                + f"; sup_t |Theta_t| normalized max {_fmt(norm['max_param_norm'].max())}, "
                f"median {_fmt(norm['max_param_norm'].median())}"
                + (
                    f"; standard max {_fmt(std['max_param_norm'].max())}, "
                    f"median {_fmt(std['max_param_norm'].median())}, "
                    f"{int((~std['bounded']).sum())}/{len(std)} standard runs not bounded"
                    if len(std)
                    else ""
                ),
            )
        )
        drift = float(norm["max_constraint_drift"].max())
        drift_ok = norm["max_constraint_drift"] <= CONSTRAINT_TOL
        rows.append(
            _row(
                s,
                f"{name}: constraint_drift",
                drift,
                bool(drift_ok.all()),
                f"{case.get('label', name)}: max_t max_i | |w_i|^2 + b_i^2 - 1 | of the normalized flow: "
                f"{_fmt(drift)} (<= {CONSTRAINT_TOL:g} expected; {int(drift_ok.sum())}/{len(norm)} runs)",
            )
        )
        if len(std):
            paired = norm.merge(std, on="run", suffixes=("_n", "_s"))
            diff = (paired["initial_risk_n"] - paired["initial_risk_s"]).abs()
            same = diff <= SAME_REALIZATION_RTOL * np.maximum(1.0, paired["initial_risk_s"].abs())
            rows.append(
                _row(
                    s,
                    f"{name}: same_initial_realizations",
                    float(diff.max()) if len(diff) else np.nan,
                    len(paired) == len(norm) and bool(same.all()),
                    f"{case.get('label', name)}: {int(same.sum())}/{len(norm)} normalized runs start at the "
                    f"standard run's initial risk (|difference| <= {SAME_REALIZATION_RTOL:g} max(1, L))",
                )
            )
            rows.append(
                _row(
                    s,
                    f"{name}: risks_reached",
                    float(norm["final_risk"].median()),
                    None,
                    f"{case.get('label', name)}: final risk median normalized {_fmt(norm['final_risk'].median())} "
                    f"vs standard {_fmt(std['final_risk'].median())}; min {_fmt(norm['final_risk'].min())} vs "
                    f"{_fmt(std['final_risk'].min())}",
                )
            )
    if not any_normalized:
        raise _spec_error("spec.cases", "ejrw_normalized_bounded needs at least one flow with flow == 'normalized'")
    return table, rows


# ----------------------------------------------------------------------------------------------------------
# GD vs GF


def matching_save_times(t_ref: np.ndarray, t_other: np.ndarray, t_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` with ``t_ref[i] == t_other[j]`` up to ``TIME_MATCH_RTOL * max(1, t_max)`` and
    ``t_ref[i] <= t_max`` (both grids strictly increasing)."""
    tol = TIME_MATCH_RTOL * max(1.0, t_max)
    j = np.clip(np.searchsorted(t_other, t_ref), 0, len(t_other) - 1)
    i = np.arange(len(t_ref))
    # the nearest of the two neighbours
    left = np.clip(j - 1, 0, len(t_other) - 1)
    j = np.where(np.abs(t_other[left] - t_ref) < np.abs(t_other[j] - t_ref), left, j)
    ok = (np.abs(t_other[j] - t_ref) <= tol) & (t_ref <= t_max + tol)
    return i[ok], j[ok]


def trajectory_distance(gf: xr.Dataset, gd: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``|theta_GD(t) - theta_GF(t)|`` at the common save times in ``[0, T]``, ``T = min`` of the final times.

    Returns ``(runs, times, distance (R, S))`` for the run ids present in both datasets (in increasing order);
    entries are NaN where either state is non-finite (a diverged run).
    """
    runs = np.intersect1d(gf["run"].values, gd["run"].values)
    t_gf, t_gd = gf["time"].values, gd["time"].values
    t_max = min(float(t_gf[-1]), float(t_gd[-1]))
    i, j = matching_save_times(t_gf, t_gd, t_max)
    a = gf["theta"].sel(run=runs).values[:, i, :]
    b = gd["theta"].sel(run=runs).values[:, j, :]
    dist = np.sqrt(np.sum((a - b) ** 2, axis=-1))
    return runs, t_gf[i], dist


def fit_order(eta: np.ndarray, distance: np.ndarray) -> tuple[float, float]:
    """Least-squares fit ``log distance = p log eta + log C``; returns ``(p, C)`` (NaN with < 2 points)."""
    eta, distance = np.asarray(eta, float), np.asarray(distance, float)
    if eta.size < 2 or np.unique(eta).size < 2:
        return np.nan, np.nan
    p, logc = np.polyfit(np.log(eta), np.log(distance), 1)
    return float(p), float(np.exp(logc))


def gd_reference_flow(case: Mapping[str, Any], key: str) -> str:
    """The label of the case's one gradient-flow reference (the flow with ``flow == "standard"``)."""
    labels = [label for label, st in case["flows"].items() if st["flow"] == "standard"]
    if len(labels) != 1:
        raise _spec_error(f"{key}.flows", f"gd_vs_gf needs exactly one flow with flow == 'standard', got {labels}")
    if not any(st["flow"] == "gd" for st in case["flows"].values()):
        raise _spec_error(f"{key}.flows", "gd_vs_gf needs at least one flow with flow == 'gd'")
    return labels[0]


def gd_eta_table(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """One row per (case, gd flow): eta, number of runs, diverged runs, median distance, ``in_fit``.

    The distance of a run is ``max_t |theta_GD(t) - theta_GF(t)|`` over the common save times in ``[0, T]``.
    A run counts as diverged when its GD status is ``diverged`` or a GD state in the window is non-finite;
    runs whose GF reference is not finite are excluded (``gf_unusable``). An eta enters the fit when none of
    its runs diverged, it shares a save time ``t > 0`` with the GF flow (``n_common_times``) and its median
    distance is positive and finite.
    """
    rows = []
    for i, case in enumerate(spec["cases"]):
        ref = gd_reference_flow(case, f"spec.cases[{i}]")
        gf = datasets[(case["case"], ref)]
        for label, st in case["flows"].items():
            if st["flow"] != "gd":
                continue
            gd = datasets[(case["case"], label)]
            runs, common, dist = trajectory_distance(gf, gd)
            n_common = int(np.sum(common > 0))  # t = 0 compares the shared initial states only
            gd_status = gd["status"].sel(run=runs).values
            gf_ok = np.all(np.isfinite(gf["theta"].sel(run=runs).values), axis=(1, 2))
            diverged = (gd_status == int(Status.DIVERGED)) | (gf_ok & ~np.all(np.isfinite(dist), axis=1))
            usable = gf_ok & ~diverged
            per_run = np.where(usable, np.max(np.where(np.isfinite(dist), dist, -np.inf), axis=1), np.nan)
            if n_common == 0:  # only the shared initial state is compared: no distance to report
                per_run[:] = np.nan
            measured = usable & np.isfinite(per_run)
            median = float(np.median(per_run[measured])) if measured.any() else np.nan
            rows.append(
                {
                    "case": case["case"],
                    "flow": label,
                    "eta": float(st["eta"]),
                    "n_runs": len(runs),
                    "n_diverged": int(diverged.sum()),
                    "gf_unusable": int((~gf_ok).sum()),
                    "median_distance": median,
                    "max_distance": float(np.max(per_run[measured])) if measured.any() else np.nan,
                    "n_common_times": n_common,
                    "in_fit": bool(
                        diverged.sum() == 0 and n_common > 0 and usable.any() and np.isfinite(median) and median > 0
                    ),
                    "runs": runs,
                    "distance": per_run,
                }
            )
    return pd.DataFrame(rows)


def _summarize_gd_vs_gf(spec, datasets, table):
    """GD with step eta vs GF from the same initial states: distance on [0, T] ~ C eta."""
    s = spec["scenario"]
    etas = gd_eta_table(spec, datasets)
    table["distance_to_gf"] = np.nan
    for _, e in etas.iterrows():
        for run, d in zip(e["runs"], e["distance"]):
            table.loc[
                (table["case"] == e["case"]) & (table["flow"] == e["flow"]) & (table["run"] == run), "distance_to_gf"
            ] = d
    rows = _common_rows(s, table)
    for case_name, group in etas.groupby("case", sort=False):
        group = group.sort_values("eta")
        prefix = f"{case_name}: " if len(spec["cases"]) > 1 else ""
        for _, e in group.iterrows():
            rows.append(
                _row(
                    s,
                    f"{prefix}distance_eta={e['eta']:g}",
                    e["median_distance"],
                    None,
                    f"{prefix}eta = {e['eta']:g}: median over "
                    f"{e['n_runs'] - e['n_diverged'] - e['gf_unusable']} runs of "
                    f"max_t |theta_GD - theta_GF| = {_fmt(e['median_distance'])} (max {_fmt(e['max_distance'])}); "
                    f"{e['n_diverged']} diverged"
                    + ("; no common save time t > 0 with the GF flow" if e["n_common_times"] == 0 else "")
                    + (", not in the fit" if not e["in_fit"] else ""),
                )
            )
        fit = group[group["in_fit"]]
        p, c = fit_order(fit["eta"].to_numpy(), fit["median_distance"].to_numpy())
        excluded = group[~group["in_fit"]]
        local = ""
        if len(fit) >= 2:
            le, ld = np.log(fit["eta"].to_numpy()), np.log(fit["median_distance"].to_numpy())
            local = "; local slopes " + ", ".join(_fmt(x) for x in np.diff(ld) / np.diff(le))
        rows.append(
            _row(
                s,
                f"{prefix}gd_order",
                p,
                bool(np.isfinite(p) and abs(p - 1.0) <= GD_ORDER_TOL),
                f"{prefix}order {p:.2f} (expected 1, tolerance {GD_ORDER_TOL:g}): least-squares slope of log median "
                f"distance vs log eta over {len(fit)} step sizes {', '.join(f'{x:g}' for x in fit['eta'])}, "
                f"constant C = {_fmt(c)}{local}"
                + (
                    "; excluded (diverged runs, no usable run or no common save time): eta = "
                    + ", ".join(f"{x:g}" for x in excluded["eta"])
                    if len(excluded)
                    else ""
                )
                + ("" if len(fit) >= 2 else "; fewer than two usable step sizes: no order can be fitted"),
            )
        )
        small = fit.nsmallest(SMALL_STEP_COUNT, "eta")
        p_small, c_small = fit_order(small["eta"].to_numpy(), small["median_distance"].to_numpy())
        rows.append(
            _row(
                s,
                f"{prefix}gd_order_small_steps",
                p_small,
                None,
                f"{prefix}order {p_small:.2f} from the {len(small)} smallest usable step sizes "
                f"{', '.join(f'{x:g}' for x in small['eta'])} (C = {_fmt(c_small)}): the asymptotic order as eta -> 0, "
                f"shown next to the fit over all step sizes, whose largest steps may be outside the asymptotic regime",
            )
        )
        n_div = int(group["n_diverged"].sum())
        rows.append(
            _row(
                s,
                f"{prefix}gd_runs_diverged",
                n_div,
                None,
                f"{prefix}{n_div} GD runs diverged: "
                + (
                    ", ".join(
                        f"eta = {e['eta']:g}: {e['n_diverged']}/{e['n_runs']}"
                        for _, e in group.iterrows()
                        if e["n_diverged"]
                    )
                    or "none"
                ),
            )
        )
    return table, rows


_KIND_FUNCTIONS: dict[str, Callable] = {
    "jr_bounded_critical": _summarize_jr_bounded_critical,
    "jr_affine_small_risk": _summarize_jr_affine_small_risk,
    "jr_single_neuron": _summarize_jr_single_neuron,
    "ejrw_normalized_bounded": _summarize_ejrw_normalized_bounded,
    "gd_vs_gf": _summarize_gd_vs_gf,
}

SUMMARY_LEADING_COLUMNS = ["scenario", "case", "case_label", "flow", "run", "status"]
VERDICT_COLUMNS = ["scenario", "check", "value", "passed", "detail"]


def summary_table(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """The common per-run columns of every (case, flow) of the scenario, in spec order."""
    parts = [
        run_table(case, label, datasets[(case["case"], label)]) for case in spec["cases"] for label in case["flows"]
    ]
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "scenario", spec["scenario"])
    return table


def summarize(
    spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, verdict)`` of one scenario (see the module docstring).

    ``spec``: the scenario slice ``{"scenario", "kind", "cases": [Case.to_dict(), ...]}``; ``datasets``:
    ``{(case name, flow label): trajectory Dataset}`` with batches concatenated along ``run``.
    Raises ``ValueError`` naming the key for a bad spec or missing/extra datasets, before any work.
    """
    check_spec(spec, datasets)
    table = summary_table(spec, datasets)
    table, rows = _KIND_FUNCTIONS[spec["kind"]](spec, datasets, table)
    leading = [c for c in SUMMARY_LEADING_COLUMNS if c in table.columns]
    table = table[leading + [c for c in table.columns if c not in leading]]
    verdict = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    verdict["passed"] = verdict["passed"].astype("boolean")
    return table, verdict


__all__ = [
    "BOUNDED_GROWTH",
    "CONSTRAINT_TOL",
    "CRITICAL_GRAD_TOL",
    "ENERGY_RTOL",
    "GD_ORDER_TOL",
    "GRAD_DECAY",
    "LIMIT_RISK_RTOL",
    "SCENARIO_KINDS",
    "ZERO_RISK",
    "affine_critical_value",
    "check_spec",
    "fit_order",
    "gd_eta_table",
    "last_finite_index",
    "matching_save_times",
    "norm_growth_last_decade",
    "run_table",
    "single_neuron_threshold",
    "summarize",
    "trajectory_distance",
]
