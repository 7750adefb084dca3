"""EJRW: the normalized gradient flow stays bounded (Lipschitz targets), compared with the standard flow.

Figure: Figure for EJRW: normalized gradient flow stays bounded; comparison with standard GF from the same
realizations.

One row per target (cases with the same target share a row, one line style per width H). Columns:
(1) the running sup-norm ``sup_{s <= t} |Theta_s|`` of standard and normalized runs (median over runs, band
from the smallest to the largest run); (2) the risk (median and band); (3) the normalized flow's constraint
drift ``max_i | |w_i|^2 + b_i^2 - 1 |`` of the worst run at each time, with the tolerance ``CONSTRAINT_TOL`` of the verdict.
Diverged runs are red crosses at their last finite point.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np

from reluflow.experiments.checks import (
    BOUNDED_GROWTH,
    common_rows,
    fmt,
    number_list,
    run_list,
    verdict_row,
)
from reluflow.experiments.kinds import ScenarioKind
from reluflow.experiments.plotting import (
    DIVERGED,
    DOUBLE_COLUMN,
    FAILED,
    floor_risk,
    format_number,
    last_finite,
    log_axis,
    panel_title,
)
from reluflow.model.validation import fail

FLOW_COLORS = {"standard": "#4c72b0", "normalized": "#dd8452"}
CASE_STYLES = ["-", "--", ":", "-."]
#: drifts below this (including exact zeros at t = 0) are drawn at it on the log axis
DRIFT_FLOOR = 1e-18


def _rows(spec):
    """[(row title, [case, ...])]: cases grouped by their target, in spec order."""
    groups: dict[str, list] = {}
    for case in spec["cases"]:
        key = json.dumps(case["problem"].get("target"), sort_keys=True)
        groups.setdefault(key, []).append(case)
    rows = []
    for cases in groups.values():
        label = str(cases[0].get("label", cases[0]["case"]))
        title = label.split(",")[0].strip() if "," in label else cases[0]["problem"]["target"].get("kind", label)
        rows.append((title, cases))
    return rows


def _band(ax, t, values, color, style, label=None):
    """Median line and min-max band over runs (rows of ``values``), ignoring non-finite entries."""
    finite = np.isfinite(values)
    with np.errstate(all="ignore"):
        masked = np.where(finite, values, np.nan)
        any_finite = finite.any(axis=0)
        med = np.full(values.shape[1], np.nan)
        lo = np.full(values.shape[1], np.nan)
        hi = np.full(values.shape[1], np.nan)
        med[any_finite] = np.nanmedian(masked[:, any_finite], axis=0)
        lo[any_finite] = np.nanmin(masked[:, any_finite], axis=0)
        hi[any_finite] = np.nanmax(masked[:, any_finite], axis=0)
    ax.fill_between(t, lo, hi, color=color, alpha=0.13, lw=0)
    ax.plot(t, med, color=color, ls=style, lw=1.0, label=label)


def _width_label(case) -> str:
    """``H = 1 (theorem)`` for the theorem's own setting (d = H = k = 1), ``H = 4 (beyond)`` otherwise."""
    width = case["problem"]["network"]["width"]
    return f"H = {width} " + ("(theorem)" if width == 1 else "(beyond)")


def _running_max(values):
    """``sup_{s <= t}`` along each row, NaN (diverged) entries skipped (they keep the last finite sup)."""
    filled = np.where(np.isfinite(values), values, -np.inf)
    out = np.maximum.accumulate(filled, axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def draw(spec, datasets, summary, verdict):
    rows = _rows(spec)
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(DOUBLE_COLUMN, 1.95 * len(rows) + 0.6), layout="constrained", squeeze=False
    )
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    n_div = int((summary["status"].astype(str) == "diverged").sum())
    n_failed = int((summary["status"].astype(str) == "failed").sum())
    for r, (title, cases) in enumerate(rows):
        ax_n, ax_r, ax_d = axes[r]
        for ci, case in enumerate(cases):
            style = CASE_STYLES[ci % len(CASE_STYLES)]
            for label, settings in case["flows"].items():
                kind = settings["flow"]
                color = FLOW_COLORS.get(kind, "0.3")
                ds = datasets[(case["case"], label)]
                t = ds["time"].values
                pos = t > 0
                norms = ds["param_norm"].values
                risk = ds["risk"].values
                _band(ax_n, t[pos], _running_max(norms)[:, pos], color, style)
                _band(ax_r, t[pos], floor_risk(risk[:, pos]), color, style)
                status = ds["status"].values
                for code, marker in ((2, DIVERGED), (3, FAILED)):
                    for i in np.flatnonzero(status == code):
                        x, y = last_finite(t, norms[i])
                        ax_n.scatter([x], [y], **marker)
                        x, y = last_finite(t, risk[i])
                        ax_r.scatter([x], [floor_risk([y])[0]], **marker)
                if "constraint_drift" in ds.variables:
                    # the worst run at each time (per-run lines at rounding level are only noise)
                    drift = np.abs(ds["constraint_drift"].values[:, pos])
                    finite = np.isfinite(drift)
                    if np.any(finite):
                        worst = np.max(np.where(finite, drift, 0.0), axis=0)
                        ax_d.plot(t[pos], np.maximum(worst, DRIFT_FLOOR), color=color, ls=style, lw=1.0)
        ax_d.axhline(CONSTRAINT_TOL, color="k", lw=0.8, ls="--")
        log_axis(ax_n, "x")
        log_axis(ax_r, "xy")
        log_axis(ax_d, "xy")
        lo_d, hi_d = ax_d.get_ylim()
        ax_d.set_ylim(lo_d, max(hi_d, CONSTRAINT_TOL * 10))
        ax_n.set_ylabel(r"$\sup_{s\leq t}|\Theta_s|$")
        ax_r.set_ylabel(r"risk $\mathcal{L}(\Theta_t)$")
        ax_d.set_ylabel(r"$\max_i\,|\,|w_i|^2+b_i^2-1\,|$")
        panel_title(ax_n, next(letters), f"{title}: sup-norm so far")
        panel_title(ax_r, next(letters), f"{title}: risk")
        panel_title(ax_d, next(letters), f"{title}: drift from M")
        # legend per row: flows (colours) and cases (line styles)
        handles = [plt.Line2D([], [], color=FLOW_COLORS[k], lw=1.2) for k in ("standard", "normalized")]
        names = ["standard GF", "normalized GF"]
        for ci, case in enumerate(cases):
            handles.append(plt.Line2D([], [], color="0.3", ls=CASE_STYLES[ci % len(CASE_STYLES)]))
            names.append(_width_label(case))
        ax_n.legend(handles, names, loc="upper left", fontsize=5.4, ncol=2, columnspacing=0.8)
        ax_d.legend(
            [plt.Line2D([], [], color="k", ls="--", lw=0.8),
             plt.Line2D([], [], color=FLOW_COLORS["normalized"], lw=1.0)],
            [f"tolerance {format_number(CONSTRAINT_TOL)}",
             f"worst run (< {format_number(DRIFT_FLOOR)} drawn at it)"],
            loc="center right",
            fontsize=5.4,
        )
    for ax in axes[-1]:
        ax.set_xlabel("flow time t")
    marks, mark_names = [], []
    if n_div:
        marks.append(plt.Line2D([], [], ls="none", marker=DIVERGED["marker"], color=DIVERGED["color"]))
        mark_names.append(f"diverged (n = {n_div} of {len(summary)} runs)")
    if n_failed:
        marks.append(plt.Line2D([], [], ls="none", marker=FAILED["marker"], color=FAILED["color"]))
        mark_names.append(f"solver gave up before T (n = {n_failed} of {len(summary)} runs)")
    if marks:
        fig.legend(
            marks,
            mark_names,
            loc="outside lower center",
            ncol=2,
            fontsize=6,
            title="last finite point of runs that stopped early",
        )
    fig.suptitle(
        r"EJRW: the normalized gradient flow on $M = \{|w_i|^2 + b_i^2 = 1\}$ stays bounded for Lipschitz targets "
        "(proved for d = H = k = 1;\nH > 1 is beyond the theorem, open). Standard GF from the same realizations for "
        "comparison (lines: median over the runs\nstill integrated, bands: smallest to largest run)",
        fontsize=7.5,
    )
    return fig


# ----------------------------------------------------------------------------------------------------------
# preconditions, verdict, caption

#: the normalized flow stays on M = {|w_i|^2 + b_i^2 = 1}: the solvers integrate -P G, which is tangent to the
#: spheres, so the drift is accumulated rounding error and local truncation error of size rtol * |u_i| per
#: step projected onto the normal direction, a second-order effect; 1e-10 (the brief's expectation) tests it.
CONSTRAINT_TOL = 1e-10

#: "same realizations": the standard and normalized flows start from theta_0 and its image on M, which has
#: the same realization; their initial risks agree up to rounding (~1e-15 relative), checked with 1e-10.
SAME_REALIZATION_RTOL = 1e-10

THEOREM = "EJRW's theorem"


def check_case(case, key: str) -> None:
    """One-dimensional input and output (the theorem's layers; widths H > 1 are allowed and beyond it) and
    standard or normalized gradient flows only (the comparison the figure draws)."""
    net = case["problem"].get("network", {})
    if net.get("input_dim", 1) != 1 or net.get("output_dim", 1) != 1:
        fail(f"{key}.problem.network", f"{THEOREM} is stated for one-dimensional layers (d = k = 1), got "
                                       f"input_dim = {net.get('input_dim', 1)}, output_dim = {net.get('output_dim', 1)}")
    for label, settings in case["flows"].items():
        if settings["flow"] not in ("standard", "normalized"):
            fail(f"{key}.flows", f"flow {label!r} is {settings['flow']!r}: this kind compares the standard and "
                                 f"the normalized gradient flow")


def check_scenario(cases, key: str) -> None:
    """At least one normalized flow: the theorem is about it."""
    if not any(settings["flow"] == "normalized" for case in cases for settings in case["flows"].values()):
        fail(f"{key}.flows", "ejrw_normalized_bounded needs at least one flow with flow: normalized")


def _setting(case) -> str:
    width = case["problem"]["network"]["width"]
    return "the theorem's setting d = H = k = 1" if width == 1 else f"H = {width}: beyond the theorem"


def judge(spec, datasets, table):
    """EJRW: normalized-GF runs stay bounded and on M; comparison with the standard flow."""
    s = spec["scenario"]
    rows = common_rows(s, table)
    for case in spec["cases"]:
        name = case["case"]
        sub = table[table["case"] == name]
        norm = sub[sub["flow_kind"] == "normalized"]
        std = sub[sub["flow_kind"] == "standard"]
        if norm.empty:
            continue
        # a run the solver gave up on never reached T: its boundedness cannot be judged (it is counted in
        # solver_failures, which fails); a diverged normalized run counts as unbounded
        judged = norm[norm["status"] != "failed"]
        ok = judged["bounded"]
        n_failed = len(norm) - len(judged)
        rows.append(
            verdict_row(
                s,
                f"{name}: normalized_bounded",
                float(norm["max_param_norm"].max()),
                len(judged) > 0 and bool(ok.all()),
                f"{case.get('label', name)} ({_setting(case)}): {int(ok.sum())}/{len(judged)} normalized runs "
                f"bounded (norm grew <= "
                f"{BOUNDED_GROWTH:g} over the last decade)"
                + (f" ({n_failed} more not judged: the solver gave up before T)" if n_failed else "")
                + (
                    f"; growing: {run_list(judged[~ok])} (growth {number_list(judged.loc[~ok, 'norm_growth'])})"
                    if (~ok).any()
                    else ""
                )
                + f"; sup_t |Theta_t| normalized max {fmt(norm['max_param_norm'].max())}, "
                f"median {fmt(norm['max_param_norm'].median())}"
                + (
                    f"; standard max {fmt(std['max_param_norm'].max())}, "
                    f"median {fmt(std['max_param_norm'].median())}, "
                    f"{int((~std['bounded']).sum())}/{len(std)} standard runs not bounded"
                    if len(std)
                    else ""
                ),
            )
        )
        drift = float(norm["max_constraint_drift"].max())
        drift_ok = norm["max_constraint_drift"] <= CONSTRAINT_TOL
        rows.append(
            verdict_row(
                s,
                f"{name}: constraint_drift",
                drift,
                bool(drift_ok.all()),
                f"{case.get('label', name)}: max_t max_i | |w_i|^2 + b_i^2 - 1 | of the normalized flow: "
                f"{fmt(drift)} (<= {CONSTRAINT_TOL:g} expected; {int(drift_ok.sum())}/{len(norm)} runs)",
            )
        )
        if len(std):
            paired = norm.merge(std, on="run", suffixes=("_n", "_s"))
            diff = (paired["initial_risk_n"] - paired["initial_risk_s"]).abs()
            same = diff <= SAME_REALIZATION_RTOL * np.maximum(1.0, paired["initial_risk_s"].abs())
            rows.append(
                verdict_row(
                    s,
                    f"{name}: same_initial_realizations",
                    float(diff.max()) if len(diff) else np.nan,
                    len(paired) == len(norm) and bool(same.all()),
                    f"{case.get('label', name)}: {int(same.sum())}/{len(norm)} normalized runs start at the "
                    f"standard run's initial risk (|difference| <= {SAME_REALIZATION_RTOL:g} max(1, L))",
                )
            )
            rows.append(
                verdict_row(
                    s,
                    f"{name}: risks_reached",
                    float(norm["final_risk"].median()),
                    None,
                    f"{case.get('label', name)}: final risk median normalized {fmt(norm['final_risk'].median())} "
                    f"vs standard {fmt(std['final_risk'].median())}; min {fmt(norm['final_risk'].min())} vs "
                    f"{fmt(std['final_risk'].min())}",
                )
            )
    return table, rows


CAPTION = """**EJRW (normalized gradient flow).** Standard and normalized gradient flow from the same realizations for
Lipschitz targets (``|x - 1/2|``, a sawtooth, a sine). The theorem is proved for one-dimensional layers,
d = H = k = 1: that case is drawn first and labelled "theorem"; the wider networks (H = 4, 16) are labelled
"beyond", where boundedness is open. Look for: the normalized flow's parameter sup-norm staying bounded, its
constraint drift ``max_i ||u_i| - 1|`` at rounding level, and the risks both flows reach. Boundedness of the
standard flow is an open problem in every case: its norms are shown for comparison."""


KIND = ScenarioKind(
    name="ejrw_normalized_bounded",
    summary="EJRW: the normalized gradient flow stays bounded (Lipschitz targets), compared with the standard flow",
    check_case=check_case,
    check_scenario=check_scenario,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION,
)
