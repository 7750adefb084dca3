"""Figure: gradient descent with step eta against gradient flow from the same initial states.

(a) ``max_{t <= T} |theta_GD(t) - theta_GF(t)|`` against eta (log-log): every run (small dots), the median
over runs per eta (connected), a slope-1 reference line and the least-squares fits of the medians over all
usable step sizes (the verdict's check) and over the smallest ones (the asymptotic order), slopes in the legend;
step sizes with diverged runs are red crosses on the top edge, counted in the legend.
(b) risk against t for GF and for GD at every eta, one run. (c) ``|theta_GD(t) - theta_GF(t)|`` against t for
the same run: the distance grows along the trajectory and shrinks with eta.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import seaborn as sns

from reluflow.experiments.figures import DIVERGED, as_bool, DOUBLE_COLUMN, floor_risk, log_axis, panel_title
from reluflow.experiments.summary import SMALL_STEP_COUNT, fit_order, gd_eta_table, gd_reference_flow, trajectory_distance


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
    ref = gd_reference_flow(case, "spec.cases[0]")
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
