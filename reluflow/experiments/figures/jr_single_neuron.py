"""Figure for JR Theorem 1.3: one hidden neuron, affine target; small initial risk => risk -> 0, bounded or not.

(a) final risk against initial risk (log-log) with the threshold ``alpha^2 (b-a)^2 / 12`` (dead neuron plus
the best constant) and the zero level; circles: norm bounded, triangles: norm still growing at T.
(b) ``|Theta_t|`` against t for the runs whose norm grows (all runs, faint, if none does).
(c) the neuron's path in the ``(w, b)`` plane for a few runs, with the lines where its kink ``-b/w`` sits at an
end of ``[a, b]``; (d) the kink ``-b/w`` over time for the same runs, the domain shaded.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from reluflow.experiments.figures import (
    DIVERGED,
    DOUBLE_COLUMN,
    RISK_FLOOR,
    as_bool,
    floor_risk,
    format_number,
    kink_positions,
    last_finite,
    log_axis,
    panel_title,
    reference_levels,
    stopped_run_points,
)
from reluflow.experiments.summary import BOUNDED_GROWTH, ZERO_RISK

N_PATHS = 6


def _tail_note(row) -> str:
    """The run's fitted asymptotic decay of ``L - L_inf`` (issue 8), for the legend."""
    kind = str(row.get("decay_kind", "undetermined"))
    if kind == "power":
        return ", " + r"$\mathcal{L} - \mathcal{L}_\infty \sim t^{-" + f"{row['decay_exponent']:.2f}" + "}$"
    if kind == "exponential":
        return ", " + r"$\mathcal{L} - \mathcal{L}_\infty \sim e^{-" + f"{row['decay_rate']:.2g}" + " t}$"
    return ", settled" if kind == "settled" else ""


def _pick_paths(summary):
    """(case, flow, run) of up to N_PATHS runs: growing-norm runs first, then below-threshold runs, then others,
    each group in increasing initial risk."""
    grew = as_bool(summary["norm_grew"])
    below = as_bool(summary["below_threshold"])
    order = []
    for mask in (grew & below, grew & ~below, ~grew & below, ~grew & ~below):
        group = summary[mask].sort_values("initial_risk")
        order += [(str(r["case"]), str(r["flow"]), int(r["run"])) for _, r in group.iterrows()]
    # spread the picks over the groups: take every k-th so that several groups are represented
    if len(order) > N_PATHS:
        idx = np.unique(np.linspace(0, len(order) - 1, N_PATHS).round().astype(int))
        order = [order[i] for i in idx]
    return order


def draw(spec, datasets, summary, verdict):
    fig, axes = plt.subplots(2, 2, figsize=(DOUBLE_COLUMN, 5.0), layout="constrained")
    (ax_s, ax_n), (ax_p, ax_k) = axes
    cases = [c["case"] for c in spec["cases"]]
    palette = sns.color_palette("colorblind", n_colors=max(len(cases), 3))
    case_color = {c: palette[i] for i, c in enumerate(cases)}
    labels = {c["case"]: c.get("label", c["case"]) for c in spec["cases"]}
    thresholds = sorted(set(float(x) for x in summary["threshold"]))
    diverged = (summary["status"].astype(str) == "diverged").to_numpy()
    grew = as_bool(summary["norm_grew"])

    init = floor_risk(summary["initial_risk"])
    final = floor_risk(summary["final_risk"])
    for c in cases:
        in_case = (summary["case"] == c).to_numpy() & ~diverged & (summary["status"].astype(str) != "failed").to_numpy()
        for mask, marker in ((in_case & ~grew, "o"), (in_case & grew, "^")):
            if mask.any():
                ax_s.scatter(
                    init[mask],
                    final[mask],
                    s=14,
                    marker=marker,
                    color=case_color[c],
                    edgecolors="k",
                    linewidths=0.25,
                    alpha=0.85,
                    zorder=4,
                )
    stopped_run_points(ax_s, summary["status"], init, final)
    for thr in thresholds:
        ax_s.axhline(thr, color="k", ls="--", lw=0.6, alpha=0.5)  # runs ending at the dead-neuron value
    for c in cases:
        ax_s.scatter([], [], s=14, color=case_color[c], label=labels[c])
    ax_s.scatter([], [], s=14, color="0.55", marker="o", label="norm bounded")
    ax_s.scatter([], [], s=14, color="0.55", marker="^", label=f"norm grew > {BOUNDED_GROWTH:g}/decade")
    reference_levels(ax_s, thresholds, r"threshold $\alpha^2(b-a)^2/12$", ZERO_RISK)
    log_axis(ax_s, "xy")
    lo_y, hi_y = ax_s.get_ylim()
    ax_s.set_ylim(lo_y, hi_y * (hi_y / lo_y) ** 0.45)  # room for the legend above the points
    ax_s.set_xlabel(r"initial risk $\mathcal{L}(\Theta_0)$")
    ax_s.set_ylabel(rf"final risk $\mathcal{{L}}(\Theta_T)$ (< {format_number(RISK_FLOOR)} at the floor)")
    ax_s.legend(loc="upper left", fontsize=5.6, ncol=2, columnspacing=0.8)
    panel_title(ax_s, "a", "final vs initial risk")

    # (b) norms of growing runs
    any_grew = bool(grew.any())
    for case in spec["cases"]:
        for flow in case["flows"]:
            ds = datasets[(case["case"], flow)]
            sub = summary[(summary["case"] == case["case"]) & (summary["flow"] == flow)]
            t = ds["time"].values
            pos = t > 0
            for _, row in sub.iterrows():
                row_grew = as_bool([row["norm_grew"]])[0]
                if any_grew and not row_grew:
                    continue
                norm = ds["param_norm"].sel(run=int(row["run"])).values
                ax_n.plot(t[pos], norm[pos], color=case_color[case["case"]], lw=0.8, alpha=0.9 if any_grew else 0.35)
                if str(row["status"]) == "diverged":
                    x, y = last_finite(t, norm)
                    ax_n.scatter([x], [y], **DIVERGED)
    log_axis(ax_n, "x")
    ax_n.set_xlabel("flow time t")
    ax_n.set_ylabel(r"$|\Theta_t|$")
    if any_grew:
        panel_title(ax_n, "b", f"norm of the {int(grew.sum())} runs whose norm grows")
    else:
        panel_title(ax_n, "b", "norm of all runs (none grows)")

    # (c), (d): neuron paths and kinks
    a, b = (float(v) for v in spec["cases"][0]["problem"].get("domain", [0.0, 1.0]))
    picks = _pick_paths(summary)
    colors = plt.get_cmap("tab10")(np.arange(len(picks)) % 10)
    for color, (case_name, flow, run) in zip(colors, picks):
        ds = datasets[(case_name, flow)]
        block = ds["param_block"].values
        theta = ds["theta"].sel(run=run).values
        w, bias = theta[:, block == 0][:, 0], theta[:, block == 1][:, 0]
        ok = np.isfinite(w) & np.isfinite(bias)
        ax_p.plot(w[ok], bias[ok], color=color, lw=0.9)
        ax_p.scatter(w[ok][:1], bias[ok][:1], s=14, facecolors="none", edgecolors=[color], zorder=5)
        ax_p.scatter(w[ok][-1:], bias[ok][-1:], s=14, color=[color], zorder=5)
        t = ds["time"].values
        pos = t > 0
        kink = kink_positions(ds, run)[:, 0]
        row = summary[(summary["case"] == case_name) & (summary["flow"] == flow) & (summary["run"] == run)].iloc[0]
        note = "grows" if as_bool([row["norm_grew"]])[0] else "bounded"
        note += _tail_note(row)
        span = b - a
        ax_k.plot(
            t[pos],
            np.clip(kink[pos], a - span, b + span),
            color=color,
            lw=0.9,
            label=f"{case_name}/{run}: " + r"$\mathcal{L}_0$" + f" = {format_number(row['initial_risk'])}, {note}",
        )
    lim_w = np.array(ax_p.get_xlim())
    wgrid = np.linspace(*lim_w, 2)
    for end, style in ((a, "--"), (b, ":")):
        ax_p.plot(wgrid, -end * wgrid, color="0.3", lw=0.8, ls=style, label=f"kink at x = {format_number(end)}")
    ax_p.set_xlim(*lim_w)
    ax_p.scatter([], [], s=14, facecolors="none", edgecolors="0.3", label="start")
    ax_p.scatter([], [], s=14, color="0.3", label="end (time T)")
    ax_p.set_xlabel("inner weight w")
    ax_p.set_ylabel("inner bias b")
    ax_p.legend(loc="best", fontsize=5.6)
    panel_title(ax_p, "c", f"neuron path in the (w, b) plane, {len(picks)} runs")

    ax_k.axhspan(a, b, color="0.9", zorder=0)
    log_axis(ax_k, "x")
    ax_k.set_ylim(a - (b - a) * 1.05, b + (b - a) * 1.05)
    ax_k.set_xlabel("flow time t")
    ax_k.set_ylabel(r"kink $-b/w$ (clipped; domain shaded)")
    handles, names = ax_k.get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        fontsize=5.6,
        ncol=3,
        columnspacing=1.0,
        title="runs of (c) and (d): case/run, initial risk, norm, fitted tail of the risk",
    )
    panel_title(ax_k, "d", "kink position over time (colours of c)")
    fig.suptitle(
        r"JR Theorem 1.3: one hidden neuron, affine target: initial risk below $\alpha^2(b-a)^2/12$ "
        r"$\Rightarrow$ risk $\to 0$, bounded or not"
    )
    return fig
