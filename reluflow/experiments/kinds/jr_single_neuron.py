"""JR Theorem 1.3: one hidden neuron, affine target: small initial risk gives zero risk, bounded or not.

Figure: Figure for JR Theorem 1.3: one hidden neuron, affine target; small initial risk => risk -> 0, bounded or not.

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

from reluflow.experiments.checks import (
    BOUNDED_GROWTH,
    NOTHING_TESTED,
    ZERO_RISK,
    common_rows,
    fmt,
    fraction,
    number_list,
    run_list,
    verdict_row,
)
from reluflow.experiments.kinds import ScenarioKind
from reluflow.experiments.kinds.affine_targets import (
    add_threshold_columns,
    check_affine_uniform,
    check_standard_flows,
    single_neuron_threshold,
)
from reluflow.experiments.plotting import (
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
from reluflow.model.validation import fail

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


# ----------------------------------------------------------------------------------------------------------
# preconditions, verdict, caption

THEOREM = "JR Theorem 1.3"


def check_case(case, key: str) -> None:
    """One hidden neuron, d = k = 1, an affine target, the uniform law (the setting of the theorem and of the
    threshold alpha^2 (b-a)^2/12) and the standard gradient flow."""
    check_affine_uniform(case["problem"], key, THEOREM)
    width = case["problem"].get("network", {}).get("width")
    if width != 1:
        fail(f"{key}.problem.network.width", f"{THEOREM} is about one hidden neuron: width must be 1, got {width!r}")
    check_standard_flows(case["flows"], key, THEOREM)

#: |L(T) - threshold| <= this * max(1, threshold): a single-neuron run "ended at the dead-neuron value"
DEAD_NEURON_RTOL = 1e-8


def judge(spec, datasets, table):
    """JR Thm 1.3: H = 1, initial risk below alpha^2 (b-a)^2/12 gives L -> 0, bounded or not."""
    s = spec["scenario"]
    values = add_threshold_columns(spec, table, single_neuron_threshold)
    table["norm_grew"] = ~(table["norm_growth"] <= BOUNDED_GROWTH) | (table["status"] == "diverged")
    table["at_dead_neuron_value"] = (table["final_risk"] - table["threshold"]).abs() <= DEAD_NEURON_RTOL * np.maximum(
        1.0, table["threshold"]
    )
    rows = common_rows(s, table)
    thr_text = ", ".join(fmt(t) for t in sorted({v[2] for v in values.values()}))
    below = table[table["below_threshold"] & (table["status"] != "failed")]
    k = int(below["reached_zero"].sum())
    still = below[~below["reached_zero"]]
    rows.append(
        verdict_row(
            s,
            "below_threshold_reach_zero",
            fraction(k, len(below)),
            len(below) > 0 and k == len(below),
            f"{k}/{len(below)} runs with initial risk below alpha^2 (b-a)^2/12 = {thr_text} reached risk "
            f"< {ZERO_RISK:g}"
            + (
                f"; not reached: {run_list(still)} (final risks {number_list(still['final_risk'])}, "
                f"L(T)/L(T/10) = {number_list(still['risk_ratio_last_decade'])}, "
                f"statuses {', '.join(still['status'][:8])})"
                if len(still)
                else ""
            )
            + (NOTHING_TESTED if len(below) == 0 else ""),
        )
    )
    grew = below[below["norm_grew"]]
    rows.append(
        verdict_row(
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
        verdict_row(
            s,
            "above_threshold_outcome",
            fraction(zero, len(above)),
            None,
            f"{len(above)} runs started at or above the threshold: {zero} reached zero risk, {dead} ended at the "
            f"dead-neuron value alpha^2 (b-a)^2/12 (within {DEAD_NEURON_RTOL:g}), {len(other)} elsewhere"
            + (f" (final risks {number_list(other['final_risk'])})" if len(other) else ""),
        )
    )
    all_grew = table[table["norm_grew"]]
    rows.append(
        verdict_row(
            s,
            "runs_with_growing_norm",
            len(all_grew),
            None,
            f"{len(all_grew)}/{len(table)} runs have a growing norm; {int(all_grew['reached_zero'].sum())} "
            f"of them reached risk < {ZERO_RISK:g}",
        )
    )
    return table, rows


CAPTION = """**JR Theorem 1.3 (one hidden neuron).** H = 1, affine target, uniform law; boundedness is not assumed. Look
for: every run with initial risk below the threshold alpha^2 (b-a)^2/12 (the risk of a dead neuron plus the
best constant) reaching zero risk, whether or not its parameter norm grows (runs with a growing norm are drawn
as triangles and their norms alone in panel b; the panel title says when none grows); the neuron's kink -b/w
creeping to an end of the interval, with the risk decaying like t^-3 (the fitted tail is in the legend)."""


KIND = ScenarioKind(
    name="jr_single_neuron",
    summary="JR Theorem 1.3: one hidden neuron, affine target: small initial risk gives zero risk, bounded or not",
    check_case=check_case,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION,
)
