"""JR Theorem 1.2: affine target, uniform law, small initial risk: the risk tends to zero.

Figure: Figure for JR Theorem 1.2: affine target, small initial risk => the risk of a bounded trajectory tends to 0.

(a) final risk against initial risk (log-log), colour = width H, marker = initialization scheme; the
vertical line is the reference value ``alpha^2 (b-a)^2 / 972`` (risk of a critical point with positive risk,
an upper bound for the theorem's unknown threshold), the horizontal line the zero level ``1e-10``; risks
below ``RISK_FLOOR`` are drawn at the floor. (b) risk against t for two runs per case, preferring runs that
start below the reference value. (c) the fitted tail of ``L(t) - L_inf`` over the last two decades of each
run (:mod:`reluflow.dynamics.asymptotics`): the exponent ``p`` of ``C t^-p`` for runs with a power-law tail, and the
number of runs with an exponential tail or already settled at rounding level.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from reluflow.experiments.checks import (
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
    affine_critical_value,
    check_affine_uniform,
    check_standard_flows,
)
from reluflow.experiments.plotting import (
    DIVERGED,
    DOUBLE_COLUMN,
    RISK_FLOOR,
    as_bool,
    floor_risk,
    format_number,
    last_finite,
    log_axis,
    panel_title,
    reference_levels,
    stopped_run_points,
)

SCHEME_MARKERS = {"near_exact": "o", "gaussian": "s"}
RUNS_PER_CASE = 2


def width_colors(widths):
    palette = sns.color_palette("colorblind", n_colors=max(len(widths), 3))
    return {w: palette[i] for i, w in enumerate(sorted(widths))}


def draw(spec, datasets, summary, verdict):
    fig, (ax_s, ax_t, ax_p) = plt.subplots(
        1, 3, figsize=(DOUBLE_COLUMN, 3.4), layout="constrained", gridspec_kw={"width_ratios": [1.15, 1.0, 0.7]}
    )
    widths = sorted(int(w) for w in summary["width"].unique())
    colors = width_colors(widths)
    thresholds = sorted(set(float(x) for x in summary["threshold"]))
    diverged = summary["status"].astype(str) == "diverged"

    init = floor_risk(summary["initial_risk"])
    final = floor_risk(summary["final_risk"])
    schemes = sorted(summary["init_scheme"].astype(str).unique())
    for w in widths:
        for scheme in schemes:
            sel = (
                (summary["width"] == w)
                & (summary["init_scheme"].astype(str) == scheme)
                & ~diverged
                & (summary["status"].astype(str) != "failed")
            ).to_numpy()
            if sel.any():
                ax_s.scatter(
                    init[sel],
                    final[sel],
                    s=13,
                    marker=SCHEME_MARKERS.get(scheme, "^"),
                    color=colors[w],
                    edgecolors="k",
                    linewidths=0.25,
                    alpha=0.85,
                    zorder=4,
                )
    stopped_run_points(ax_s, summary["status"], init, final)
    lo = np.nanmin(init) / 3
    hi = np.nanmax(init) * 3
    ax_s.plot([lo, hi], [lo, hi], color="0.6", lw=0.6, zorder=2)
    ax_s.set_xlim(lo, hi)
    # legend: colours (H), markers (scheme), lines
    for w in widths:
        ax_s.scatter([], [], s=13, color=colors[w], marker="o", label=f"H = {w}")
    for scheme in schemes:
        ax_s.scatter([], [], s=13, color="0.55", marker=SCHEME_MARKERS.get(scheme, "^"), label=f"{scheme} init")
    reference_levels(ax_s, thresholds, r"$\alpha^2(b-a)^2/972$", ZERO_RISK)
    ax_s.plot([], [], color="0.6", lw=0.6, label="final = initial")
    log_axis(ax_s, "xy")
    ax_s.set_xlabel(r"initial risk $\mathcal{L}(\Theta_0)$")
    ax_s.set_ylabel(rf"final risk $\mathcal{{L}}(\Theta_T)$ (values < {format_number(RISK_FLOOR)} at the floor)")
    handles, names = ax_s.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=5.8, columnspacing=1.0, title="panel (a)")
    panel_title(ax_s, "a", "final vs initial risk")

    # (b) risk vs t for a subset
    for case in spec["cases"]:
        for flow in case["flows"]:
            ds = datasets[(case["case"], flow)]
            sub = summary[(summary["case"] == case["case"]) & (summary["flow"] == flow)]
            w = int(case["problem"]["network"]["width"])
            chosen = _subset(sub)
            t = ds["time"].values
            pos = t > 0
            for run in chosen:
                row = sub[sub["run"] == run].iloc[0]
                risk = ds["risk"].sel(run=run).values
                style = "-" if as_bool([row["below_threshold"]])[0] else (0, (3, 1.5))
                ax_t.plot(t[pos], floor_risk(risk[pos]), color=colors[w], lw=0.8, ls=style, alpha=0.9)
                if str(row["status"]) == "diverged":
                    x, y = last_finite(t, risk)
                    ax_t.scatter([x], [floor_risk([y])[0]], **DIVERGED)
    for thr in thresholds:
        ax_t.axhline(thr, color="k", lw=0.9, ls="--")
    ax_t.axhline(ZERO_RISK, color="0.35", lw=0.8, ls=":")
    for w in widths:
        ax_t.plot([], [], color=colors[w], label=f"H = {w}")
    ax_t.plot([], [], color="0.4", ls="-", label="starts below reference")
    ax_t.plot([], [], color="0.4", ls=(0, (3, 1.5)), label="starts above")
    log_axis(ax_t, "xy")
    ax_t.set_xlabel("flow time t")
    ax_t.set_ylabel(r"risk $\mathcal{L}(\Theta_t)$")
    ax_t.legend(loc="lower left", fontsize=5.6, ncol=2, columnspacing=0.8)
    panel_title(ax_t, "b", f"risk along up to {RUNS_PER_CASE} runs per case")
    _draw_decay(ax_p, summary, widths, colors)
    fig.suptitle(
        r"JR Theorem 1.2: affine target $\alpha x + \beta$, uniform law: small initial risk "
        r"$\Rightarrow$ risk $\to 0$ (for bounded trajectories)"
    )
    return fig


def _subset(sub):
    """Up to RUNS_PER_CASE run ids of one case: below-threshold runs first (lowest initial risk first), then
    the others in increasing initial risk."""
    below = sub[as_bool(sub["below_threshold"])].sort_values("initial_risk")
    above = sub[~as_bool(sub["below_threshold"])].sort_values("initial_risk")
    half = RUNS_PER_CASE // 2
    pick = list(below["run"][:half]) + list(above["run"][: RUNS_PER_CASE - min(half, len(below))])
    return [int(r) for r in pick[:RUNS_PER_CASE]]


def _draw_decay(ax, summary, widths, colors):
    """(c): exponents of the power-law tails per width, counts of the other kinds in the labels."""
    kinds = summary["decay_kind"].astype(str) if "decay_kind" in summary else None
    labels = []
    for i, w in enumerate(widths):
        rows = summary[summary["width"] == w]
        if kinds is None:
            continue
        k = kinds[rows.index]
        power = rows[k == "power"]["decay_exponent"].astype(float).to_numpy()
        jitter = (np.arange(power.size) % 7 - 3) * 0.05
        ax.scatter(np.full(power.size, i) + jitter, power, s=10, color=colors[w], edgecolors="k", linewidths=0.25,
                   zorder=3)
        labels.append(f"H = {w}\n{power.size} power\n{int((k == 'exponential').sum())} exp.\n"
                      f"{int((k == 'settled').sum())} settled")
    ax.set_xticks(range(len(labels)), labels, fontsize=5.4)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(r"fitted $p$ in $\mathcal{L}(\Theta_t) - \mathcal{L}_\infty \sim C\,t^{-p}$")
    panel_title(ax, "c", "fitted tails")


# ----------------------------------------------------------------------------------------------------------
# preconditions, verdict, caption

THEOREM = "JR Theorem 1.2"


def check_case(case, key: str) -> None:
    """d = k = 1, an affine target, the uniform law (the setting of the theorem and of the reference value
    alpha^2 (b-a)^2/972) and the standard gradient flow."""
    check_affine_uniform(case["problem"], key, THEOREM)
    check_standard_flows(case["flows"], key, THEOREM)


def judge(spec, datasets, table):
    """JR Thm 1.2: bounded runs with initial risk below alpha^2 (b-a)^2/972 reach zero risk."""
    s = spec["scenario"]
    values = add_threshold_columns(spec, table, affine_critical_value)
    rows = common_rows(s, table)
    thresholds = sorted({v[2] for v in values.values()})
    thr_text = ", ".join(fmt(t) for t in thresholds)
    below = table[table["below_threshold"]]
    for width, group in [(w, below[below["width"] == w]) for w in sorted(table["width"].unique())] + [("all", below)]:
        tested = group[group["bounded"]]
        k = int(tested["reached_zero"].sum())
        n = len(tested)
        excluded = group[~group["bounded"]]
        name = f"H={width}" if width != "all" else "overall"
        failing = tested[~tested["reached_zero"]]
        rows.append(
            verdict_row(
                s,
                f"below_reference_reach_zero_{'H' + str(width) if width != 'all' else 'all'}",
                fraction(k, n),
                n > 0 and k == n,
                f"{name}: {k}/{n} bounded runs with initial risk below alpha^2 (b-a)^2/972 = {thr_text} reached risk "
                f"< {ZERO_RISK:g}"
                + (NOTHING_TESTED if n == 0 else "")
                + (
                    f"; not reached: {run_list(failing)} (final risks {number_list(failing['final_risk'])}; "
                    f"L(T)/L(T/10) = {number_list(failing['risk_ratio_last_decade'])})"
                    if len(failing)
                    else ""
                )
                + (
                    f"; {len(excluded)} below-reference run(s) excluded as not bounded/not finished: {run_list(excluded)}"
                    if len(excluded)
                    else ""
                ),
            )
        )
    above = table[~table["below_threshold"] & table["status"].isin(["finished", "converged"])]
    rows.append(
        verdict_row(
            s,
            "above_reference_outcome",
            fraction(int(above["reached_zero"].sum()), len(above)),
            None,
            f"{int(above['reached_zero'].sum())}/{len(above)} runs starting at or above the reference value "
            f"reached zero risk; the others ended at positive risk (median "
            f"{fmt(above.loc[~above['reached_zero'], 'final_risk'].median())}; their certified critical risks: "
            f"median {fmt(above.loc[~above['reached_zero'], 'critical_risk'].median())})",
        )
    )
    for scheme in sorted(table["init_scheme"].astype(str).unique()):
        group = table[table["init_scheme"].astype(str) == scheme]
        k = int(group["reached_zero"].sum())
        rows.append(
            verdict_row(
                s,
                f"reached_zero_{scheme or 'unknown'}_init",
                fraction(k, len(group)),
                None,
                f"{k}/{len(group)} runs with {scheme or 'unknown'} initialization reached risk < {ZERO_RISK:g} "
                f"(regardless of initial risk)",
            )
        )
    return table, rows


CAPTION = """**JR Theorem 1.2 (affine target, small initial risk).** Standard gradient flow for the affine target
alpha x + beta under the uniform law, widths H = 2, 4, 8, initializations near exact representations (initial
risks over several decades) and random ones. Look for: runs starting below the reference value alpha^2/972 (the
risk of a known critical point with positive risk for H = 2, which bounds the theorem's threshold) reaching
zero risk (plotted at the floor); runs starting higher may stop at critical points with positive risk."""


KIND = ScenarioKind(
    name="jr_affine_small_risk",
    summary="JR Theorem 1.2: affine target, uniform law, small initial risk: the risk tends to zero",
    check_case=check_case,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION,
)
