"""What every scenario's summary shares: the per-run table, the thresholds of the checks, verdict rows.

The **summary** of a scenario has one row per (case, flow, run) with the run's status, initial and final risk,
final ``|G|``, norms, certificate, integration fidelity and the scenario kind's own columns; its **verdict**
one row per check with ``scenario, check, value, passed, detail``. ``passed`` is True or False for a check
that can fail and empty (NA) for a row that only reports an observation (for instance how many random
initializations reached zero risk, which no theorem predicts). A failed check is reported as failed;
nothing is hidden or dropped. Nothing here recomputes a trajectory: every number is read from the trajectory
datasets (:mod:`reluflow.files.trajectories`) or derived from them by the definitions below.

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

from typing import Any, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from reluflow.dynamics.classify import CRITICAL_GRAD_TOL, ZERO_RISK
from reluflow.dynamics.solvers.result import Status

# ZERO_RISK (a run "reached zero risk" below it) and CRITICAL_GRAD_TOL (a certificate is critical below it)
# are the classification's own levels (reluflow.dynamics.classify, where they are justified): one owner.
__all__ = ["BOUNDED_GROWTH", "CRITICAL_GRAD_TOL", "ENERGY_RTOL", "NOTHING_TESTED", "ZERO_RISK", "common_rows",
           "coord_or", "fmt", "fraction", "last_finite_index", "nanmax_rows", "norm_growth_last_decade",
           "number_list", "run_list", "run_table", "spec_error", "status_name", "take_at", "verdict_row"]

#: operational boundedness: the norm grew by at most 1 % over the last decade of flow time. A trajectory
#: converging to a limit changes its norm by ever smaller amounts; escaping ones in these networks grow
#: slowly (like log t, i.e. ~ 20 % per decade at t = 1e6), so 1 % separates the two with room on both sides.
BOUNDED_GROWTH = 1e-2



#: energy identity L(Theta_0) - L(Theta_t) = int_0^t |F|^2 ds (F the velocity) holds for the exact flow. The
#: check asks max_t |residual| <= ENERGY_RTOL * max(1, L(Theta_0)): the solvers run with rtol <= 1e-8 and
#: atol <= 1e-10 and integrate the energy as an extra ODE component, so its global error stays a modest multiple
#: of the tolerances times the O(1) risk scale of these problems (targets and networks of size O(1)); the scale
#: is max(1, L_0), not L_0, because a run starting near zero risk still carries the absolute error floor
#: (atol accumulated over ~1e3 steps). A residual above 1e-6 of that scale means the computed trajectory is not
#: the flow to the accuracy the other checks rely on.
ENERGY_RTOL = 1e-6








def status_name(code: int) -> str:
    """The lower-case name of a :class:`~reluflow.dynamics.solvers.result.Status` code (``"finished"``, ...)."""
    return Status(int(code)).name.lower()



def spec_error(key: str, message: str) -> ValueError:
    return ValueError(f"{key}: {message}")


def last_finite_index(values: np.ndarray) -> np.ndarray:
    """For each row of ``values (M, T)``: the index of its last finite entry, -1 if none."""
    finite = np.isfinite(values)
    idx = values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    return np.where(finite.any(axis=1), idx, -1)


def take_at(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
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
    abs_res_max = nanmax_rows(np.abs(residual))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_res_max = abs_res_max / np.where(initial > 0, initial, np.nan)
    if "constraint_drift" in ds.variables:
        drift = nanmax_rows(np.abs(ds["constraint_drift"].values))
    else:
        drift = np.full(m, np.nan)
    status = ds["status"].values.astype(int)
    growth = norm_growth_last_decade(time, norm)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk_ratio = norm_growth_last_decade(time, risk, use_max=False) + 1.0
    final_risk = take_at(risk, end)
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
            "init_scheme": coord_or(ds, "init_scheme", ""),
            "init_scale": coord_or(ds, "init_scale", np.nan),
            "status": [status_name(s) for s in status],
            "initial_risk": initial,
            "final_risk": final_risk,
            "t_end": np.where(end >= 0, time[np.maximum(end, 0)], np.nan),
            "t_final": ds["t_final"].values.astype(float),
            "final_grad_norm": take_at(grad, end),
            "max_grad_norm": nanmax_rows(grad),
            "final_param_norm": take_at(norm, end),
            "max_param_norm": nanmax_rows(norm),
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
            # the certified end point's type (reluflow.dynamics.classify)
            "end_point": ds["end_point"].values.astype(str) if "end_point" in ds.variables else "unclassified",
            "min_eigenvalue": (
                ds["min_eigenvalue"].values.astype(float) if "min_eigenvalue" in ds.variables else np.nan
            ),
        }
    )
    return table


def coord_or(ds: xr.Dataset, name: str, default):
    if name in ds.variables:
        values = ds[name].values
        return values.astype(str) if values.dtype.kind in "OUS" else values.astype(float)
    return default


def nanmax_rows(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values, -np.inf)
    out = np.max(values, axis=1) if values.shape[1] else np.full(values.shape[0], -np.inf)
    return np.where(np.isfinite(out), out, np.nan)



# ----------------------------------------------------------------------------------------------------------
# verdict rows


def verdict_row(scenario: str, check: str, value: float, passed: bool | None, detail: str) -> dict:
    return {
        "scenario": scenario,
        "check": check,
        "value": float(value) if value is not None else np.nan,
        "passed": pd.NA if passed is None else bool(passed),
        "detail": detail,
    }


def fraction(k: int, n: int) -> float:
    return k / n if n else np.nan


def fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def number_list(values, limit: int = 8) -> str:
    """The first ``limit`` numbers, formatted and comma-separated."""
    return ", ".join(fmt(x) for x in list(values)[:limit])


def run_list(df: pd.DataFrame, limit: int = 8, with_flow: bool | None = None) -> str:
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


def common_rows(scenario: str, table: pd.DataFrame) -> list[dict]:
    """Rows every scenario gets: diverged runs (observation), solver failures and the energy identity."""
    rows = []
    several = table["flow"].nunique() > 1  # name the flow in run lists when the scenario has several
    diverged = table[table["status"] == "diverged"]
    rows.append(
        verdict_row(
            scenario,
            "runs_diverged",
            len(diverged),
            None,
            f"{len(diverged)}/{len(table)} runs diverged (norm passed the divergence bound or the state "
            f"became non-finite)" + (f": {run_list(diverged, with_flow=several)}" if len(diverged) else ""),
        )
    )
    failed = table[table["status"] == "failed"]
    rows.append(
        verdict_row(
            scenario,
            "solver_failures",
            len(failed),
            len(failed) == 0,
            f"{len(failed)}/{len(table)} runs where the solver gave up (step-size underflow or step "
            f"budget) before the final time" + (f": {run_list(failed, with_flow=several)}" if len(failed) else ""),
        )
    )
    flowing = table[(table["flow_kind"] != "gd") & table["status"].isin(["finished", "converged"])]
    if len(flowing):
        scaled = flowing["max_abs_energy_residual"] / np.maximum(1.0, flowing["initial_risk"])
        worst = float(scaled.max()) if scaled.notna().any() else np.nan
        bad = flowing[~(scaled <= ENERGY_RTOL)]
        rows.append(
            verdict_row(
                scenario,
                "energy_identity",
                worst,
                len(bad) == 0,
                f"{len(flowing) - len(bad)}/{len(flowing)} gradient-flow runs satisfy the energy identity "
                f"to max_t |residual| <= {ENERGY_RTOL:g} max(1, L(Theta_0)) (worst {fmt(worst)})"
                + (f"; violated by {run_list(bad, with_flow=several)}" if len(bad) else ""),
            )
        )
    return rows


