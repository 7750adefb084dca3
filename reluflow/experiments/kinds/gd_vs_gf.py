"""Gradient descent as explicit Euler on gradient flow: distance of order eta.

Figure: Figure: gradient descent with step eta against gradient flow from the same initial states.

(a) ``max_{t <= T} |theta_GD(t) - theta_GF(t)|`` against eta (log-log): every run (small dots), the median
over runs per eta (connected), a slope-1 reference line and the least-squares fits of the medians over all
usable step sizes (the verdict's check) and over the smallest ones (the asymptotic order), slopes in the legend;
step sizes with diverged runs are red crosses on the top edge, counted in the legend.
(b) risk against t for GF and for GD at every eta, one run. (c) ``|theta_GD(t) - theta_GF(t)|`` against t for
the same run: the distance grows along the trajectory and shrinks with eta.
"""

from __future__ import annotations

from typing import Any, Mapping

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from reluflow.dynamics.solvers.result import Status
from reluflow.experiments.checks import common_rows, fmt, verdict_row
from reluflow.experiments.kinds import ScenarioKind
from reluflow.experiments.plotting import DIVERGED, DOUBLE_COLUMN, as_bool, floor_risk, log_axis, panel_title
from reluflow.model.validation import fail


def _eta_colors(etas):
    palette = sns.color_palette("flare", n_colors=max(len(etas), 2))
    return {eta: palette[i] for i, eta in enumerate(sorted(etas, reverse=True))}


def _order_outcome(verdict, case_name) -> str:
    """``"; check passed"`` / ``"; check failed"`` from the verdict row of the order fit, if present."""
    check = f"{case_name}: gd_order" if case_name else "gd_order"
    rows = verdict[verdict["check"] == check] if "check" in verdict.columns else verdict.iloc[:0]
    if rows.empty:
        return ""
    return " (check passed)" if as_bool(rows["passed"])[0] else " (check failed)"


def _example_run(gf, gd_sets):
    """The first run id that is finite in GF and every GD flow (else the first run)."""
    for run in gf["run"].values:
        if all(
            run in ds["run"].values and np.all(np.isfinite(ds["theta"].sel(run=run).values)) for ds in [gf, *gd_sets]
        ):
            return int(run)
    return int(gf["run"].values[0])


def draw(spec, datasets, summary, verdict):
    etas = gd_eta_table(spec, datasets)
    fig, axes = plt.subplots(1, 3, figsize=(DOUBLE_COLUMN, 3.4), layout="constrained")
    ax = axes[0]
    case_markers = ["o", "s", "D", "^", "v"]
    for ci, (case_name, group) in enumerate(etas.groupby("case", sort=False)):
        group = group.sort_values("eta")
        marker = case_markers[ci % len(case_markers)]
        suffix = f" ({case_name})" if etas["case"].nunique() > 1 else ""
        for _, e in group.iterrows():
            ok = np.isfinite(e["distance"])
            ax.scatter(
                np.full(ok.sum(), e["eta"]),
                e["distance"][ok],
                s=6,
                color="0.6",
                alpha=0.7,
                lw=0,
                zorder=2,
                label="single runs" if (ci == 0 and _ == group.index[0]) else None,
            )
        fit = group[group["in_fit"]]
        ax.plot(
            fit["eta"],
            fit["median_distance"],
            marker=marker,
            color="#4c72b0",
            ms=4,
            zorder=4,
            label=f"median over runs{suffix}",
        )
        outside = group[~group["in_fit"] & np.isfinite(group["median_distance"])]
        if len(outside):  # e.g. step sizes with some diverged runs: median of the others, hollow
            ax.scatter(
                outside["eta"],
                outside["median_distance"],
                marker=marker,
                s=18,
                facecolors="none",
                edgecolors="#4c72b0",
                zorder=4,
                label=f"median, not in the fit{suffix}",
            )
        p, c = fit_order(fit["eta"].to_numpy(), fit["median_distance"].to_numpy())
        if np.isfinite(p):
            grid = np.geomspace(fit["eta"].min(), fit["eta"].max(), 50)
            outcome = _order_outcome(verdict, case_name if etas["case"].nunique() > 1 else None)
            ax.plot(
                grid,
                c * grid**p,
                color="#dd8452",
                lw=1.3,
                zorder=3,
                label=f"fit, all steps: slope {p:.2f}{suffix}{outcome}",
            )
            small = fit.nsmallest(SMALL_STEP_COUNT, "eta")
            p_small, c_small = fit_order(small["eta"].to_numpy(), small["median_distance"].to_numpy())
            if np.isfinite(p_small) and len(small) < len(fit):
                grid_small = np.geomspace(small["eta"].min(), small["eta"].max(), 20)
                ax.plot(
                    grid_small,
                    c_small * grid_small**p_small,
                    color="#55a868",
                    lw=1.1,
                    ls=":",
                    zorder=5,
                    label=f"fit, {len(small)} smallest steps: slope {p_small:.2f}{suffix}",
                )
            ref_eta = fit["eta"].min()
            ref_d = float(fit.loc[fit["eta"] == ref_eta, "median_distance"].iloc[0])
            grid = np.geomspace(fit["eta"].min(), fit["eta"].max(), 50)
            ax.plot(
                grid,
                ref_d * grid / ref_eta,
                ls="--",
                color="0.25",
                lw=0.8,
                zorder=3,
                label="slope 1 reference" if ci == 0 else None,
            )
        bad = group[group["n_diverged"] > 0]
        if len(bad):
            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            n_div = int(bad["n_diverged"].sum())
            ax.scatter(
                bad["eta"], np.full(len(bad), 0.95), transform=trans, label=f"diverged (n = {n_div} runs)", **DIVERGED
            )
    log_axis(ax, "xy")
    all_etas = etas["eta"].to_numpy(dtype=float)  # include step sizes drawn only as diverged crosses
    ax.set_xlim(min(ax.get_xlim()[0], all_etas.min() / 1.6), max(ax.get_xlim()[1], all_etas.max() * 1.6))
    log_axis(ax, "x")
    lo_y, hi_y = ax.get_ylim()
    ax.set_ylim(lo_y, hi_y * (hi_y / lo_y) ** 0.15)  # headroom: diverged crosses sit on the top edge
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$\max_{t\leq T}\,|\theta^{\mathrm{GD}}_t-\theta^{\mathrm{GF}}_t|$ (expected $\propto\eta$)")
    panel_title(ax, "a", "distance GD - GF on [0, T]")

    case = spec["cases"][0]
    ref = gd_reference_flow(case)
    gf = datasets[(case["case"], ref)]
    gd_labels = sorted(
        (label for label, st in case["flows"].items() if st["flow"] == "gd"),
        key=lambda label: -float(case["flows"][label]["eta"]),
    )
    gd_sets = [datasets[(case["case"], label)] for label in gd_labels]
    run = _example_run(gf, gd_sets)
    colors = _eta_colors([float(case["flows"][label]["eta"]) for label in gd_labels])

    ax = axes[1]
    t_gf = float(gf["time"].values[-1])
    for label, ds in zip(gd_labels, gd_sets):
        eta = float(case["flows"][label]["eta"])
        if run not in ds["run"].values:
            continue
        # only GF's horizon [0, T] is compared (a GD flow may run longer): the y range follows what is shown
        window = ds["time"].values <= t_gf * (1 + 1e-9)
        t_gd = ds["time"].values[window]
        risk = ds["risk"].sel(run=run).values[window]
        ax.plot(t_gd, floor_risk(risk), color=colors[eta], label=rf"GD $\eta$ = {eta:g}")
        if int(ds["status"].sel(run=run)) == 2:
            ok = np.flatnonzero(np.isfinite(risk))
            if ok.size and ok[-1] < len(risk) - 1:  # diverged inside the window
                ax.scatter([t_gd[ok[-1]]], [floor_risk(risk[ok[-1] : ok[-1] + 1])[0]], **DIVERGED)
    ax.plot(
        gf["time"].values, floor_risk(gf["risk"].sel(run=run).values), color="k", ls="--", lw=1.1, label="GF", zorder=5
    )
    ax.set_xlim(-0.02 * t_gf, 1.02 * t_gf)
    log_axis(ax, "y")
    ax.set_xlabel("flow time t (GD: t = k $\\eta$)")
    ax.set_ylabel(r"risk $\mathcal{L}(\theta_t)$")
    panel_title(ax, "b", f"risk of GF and GD, run {run}")

    ax = axes[2]
    for label, ds in zip(gd_labels, gd_sets):
        eta = float(case["flows"][label]["eta"])
        runs, times, dist = trajectory_distance(gf, ds)
        if run not in runs:
            continue
        d = dist[list(runs).index(run)]
        keep = times > 0
        ax.plot(times[keep], d[keep], color=colors[eta], label=rf"$\eta$ = {eta:g}")
    log_axis(ax, "y")
    ax.set_xlabel("flow time t")
    ax.set_ylabel(r"$|\theta^{\mathrm{GD}}_t-\theta^{\mathrm{GF}}_t|$")
    panel_title(ax, "c", f"distance along run {run}")
    handles_a, names_a = axes[0].get_legend_handles_labels()
    handles_b, names_b = axes[1].get_legend_handles_labels()
    fig.legend(
        handles_a + handles_b,
        names_a + names_b,
        loc="outside lower center",
        ncol=4,
        fontsize=5.8,
        columnspacing=1.0,
        title="(a): runs, medians and fits;  (b), (c): step sizes (same colours)",
    )
    fig.suptitle(r"Gradient descent as explicit Euler on gradient flow: the distance should shrink like $\eta$")
    return fig


# ----------------------------------------------------------------------------------------------------------
# preconditions, verdict, caption

#: GD vs GF: explicit Euler's global error is C eta + O(eta^2): the log-log slope of the distance is expected
#: to be 1; over the two to three decades of eta used, the O(eta^2) term at the largest steps bends the fitted
#: slope by a few percent, so |slope - 1| <= 0.1 is the pass criterion.
GD_ORDER_TOL = 0.1

#: the observation row "gd_order_small_steps" fits the order over this many smallest usable step sizes
SMALL_STEP_COUNT = 3

#: two save times are "the same" when they differ by at most this times max(1, T): GD saves at k * eta, GF at
#: linspace(0, T, n + 1); both are computed in float64 (rounding ~1e-15 relative).
TIME_MATCH_RTOL = 1e-9


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


def check_case(case, key: str) -> None:
    """Exactly one gradient-flow reference (``flow: standard``) and at least one gradient descent on the same
    (standard) vector field."""
    labels = [label for label, st in case["flows"].items() if st["flow"] == "standard"]
    if len(labels) != 1:
        fail(f"{key}.flows", f"gd_vs_gf needs exactly one flow with flow: standard (the reference), got {labels}")
    gd = [(label, st) for label, st in case["flows"].items() if st["flow"] == "gd"]
    if not gd:
        fail(f"{key}.flows", "gd_vs_gf needs at least one flow with flow: gd")
    for label, st in gd:
        if st.get("field", "standard") != "standard":
            fail(f"{key}.flows", f"gd flow {label!r} descends the {st['field']!r} field; the reference is the "
                                 f"standard gradient flow, so gd_vs_gf needs field: standard")
    for label, st in case["flows"].items():
        if st["flow"] == "normalized":
            fail(f"{key}.flows", f"flow {label!r} is normalized: gd_vs_gf compares gradient descent with the "
                                 f"standard gradient flow")


def gd_reference_flow(case: Mapping[str, Any]) -> str:
    """The label of the case's one gradient-flow reference (the flow with ``flow == "standard"``)."""
    return next(label for label, st in case["flows"].items() if st["flow"] == "standard")


def gd_eta_table(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """One row per (case, gd flow): eta, number of runs, diverged runs, median distance, ``in_fit``.

    The distance of a run is ``max_t |theta_GD(t) - theta_GF(t)|`` over the common save times in ``[0, T]``.
    A run counts as diverged when its GD status is ``diverged`` or a GD state in the window is non-finite;
    runs whose GF reference is not finite are excluded (``gf_unusable``). An eta enters the fit when none of
    its runs diverged, it shares a save time ``t > 0`` with the GF flow (``n_common_times``) and its median
    distance is positive and finite.
    """
    rows = []
    for case in spec["cases"]:
        ref = gd_reference_flow(case)
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


def judge(spec, datasets, table):
    """GD with step eta vs GF from the same initial states: distance on [0, T] ~ C eta."""
    s = spec["scenario"]
    etas = gd_eta_table(spec, datasets)
    table["distance_to_gf"] = np.nan
    for _, e in etas.iterrows():
        for run, d in zip(e["runs"], e["distance"]):
            table.loc[
                (table["case"] == e["case"]) & (table["flow"] == e["flow"]) & (table["run"] == run), "distance_to_gf"
            ] = d
    rows = common_rows(s, table)
    for case_name, group in etas.groupby("case", sort=False):
        group = group.sort_values("eta")
        prefix = f"{case_name}: " if len(spec["cases"]) > 1 else ""
        for _, e in group.iterrows():
            rows.append(
                verdict_row(
                    s,
                    f"{prefix}distance_eta={e['eta']:g}",
                    e["median_distance"],
                    None,
                    f"{prefix}eta = {e['eta']:g}: median over "
                    f"{e['n_runs'] - e['n_diverged'] - e['gf_unusable']} runs of "
                    f"max_t |theta_GD - theta_GF| = {fmt(e['median_distance'])} (max {fmt(e['max_distance'])}); "
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
            local = "; local slopes " + ", ".join(fmt(x) for x in np.diff(ld) / np.diff(le))
        rows.append(
            verdict_row(
                s,
                f"{prefix}gd_order",
                p,
                bool(np.isfinite(p) and abs(p - 1.0) <= GD_ORDER_TOL),
                f"{prefix}order {p:.2f} (expected 1, tolerance {GD_ORDER_TOL:g}): least-squares slope of log median "
                f"distance vs log eta over {len(fit)} step sizes {', '.join(f'{x:g}' for x in fit['eta'])}, "
                f"constant C = {fmt(c)}{local}"
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
            verdict_row(
                s,
                f"{prefix}gd_order_small_steps",
                p_small,
                None,
                f"{prefix}order {p_small:.2f} from the {len(small)} smallest usable step sizes "
                f"{', '.join(f'{x:g}' for x in small['eta'])} (C = {fmt(c_small)}): the asymptotic order as eta -> 0, "
                f"shown next to the fit over all step sizes, whose largest steps may be outside the asymptotic regime",
            )
        )
        n_div = int(group["n_diverged"].sum())
        rows.append(
            verdict_row(
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


CAPTION = """**Gradient descent as a discretization of gradient flow.** GD with step eta is explicit Euler on GF. Look for:
the maximal distance between GD and GF trajectories on [0, T] shrinking like eta (slope 1 on the log-log
panel; the fitted slope is in the legend), and the risks of GD approaching the GF risk curve as eta decreases.
Runs that diverge (too large a step) are counted and marked."""


KIND = ScenarioKind(
    name="gd_vs_gf",
    summary="Gradient descent as explicit Euler on gradient flow: distance of order eta",
    check_case=check_case,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION,
)
