"""explore: any problem reluflow can evaluate, any cases, initializations and flows; no claim is made.

The kind for a researcher's own question (a teacher network and a wider student, a small initialization, a
flow at a width no theorem covers). Its verdict only reports, per case and flow, how the runs ended (status,
classified end point, final risk, boundedness), next to the checks every scenario has (solver failures and
the energy identity).

Figure, one block of six panels per case (the case's label above it):
(a) the risk ``L(Theta_t)`` of every run against flow time (colour = flow; risks below ``RISK_FLOOR`` at the
floor); (b) ``|G(Theta_t)|``; (c) the parameter norm ``|Theta_t|``; (d) for d = 1 the realization
``N_Theta(x)`` of the case's example run at four flow times against the target, for d = 2 the error
``N_Theta(x) - f(x)`` of its final state over the square (first output), for d > 2 the final risk of every
run against its initial risk; (e) for d = 1 the kinks ``-b_i / w_i`` of the example run over time (the
domain shaded), otherwise each neuron's ``|u_i| = |(w_i, b_i)|``; (f) each neuron's path in the plane of the
direction angle of ``u_i = (w_i, b_i)`` (d = 1: ``atan2(b_i, w_i)``; d > 1: the angle of ``(|w_i|, b_i)``) and
``|V[:, i]|``, from a circle (start) to a dot (end). The example run is the run of the case's first flow
that ends at the lowest risk (of those, the lowest run id).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from reluflow.experiments.checks import ZERO_RISK, common_rows, fmt, fraction, status_name, verdict_row
from reluflow.experiments.kinds import ScenarioKind
from reluflow.experiments.plotting import (
    DOUBLE_COLUMN,
    RISK_FLOOR,
    floor_risk,
    format_number,
    last_finite,
    log_axis,
    panel_title,
    stopped_run_points,
)
from reluflow.problem import Problem

#: flow times at which panel (d) draws the example run's realization (indices into its save times)
REALIZATION_SNAPSHOTS = 4
#: grid points per side of the d = 2 error panel
ERROR_GRID = 61


def check_case(case, key: str) -> None:
    """No precondition: any problem that resolves (network, target, measure) and any flows."""


def judge(spec, datasets, table):
    """Observations only: per case and flow, how the runs ended."""
    s = spec["scenario"]
    rows = common_rows(s, table)
    labels = {c["case"]: c.get("label", c["case"]) for c in spec["cases"]}
    for (case, flow), group in table.groupby(["case", "flow"], sort=False):
        statuses = group["status"].value_counts()
        outcome = ", ".join(f"{int(n)} {name}" for name, n in statuses.items())
        if "end_point" in group.columns:
            ends = group["end_point"].astype(str).value_counts()
            outcome += "; end points: " + ", ".join(f"{int(n)} {name}" for name, n in ends.items())
        final = group["final_risk"]
        zero = int(group["reached_zero"].sum())
        rows.append(
            verdict_row(
                s,
                f"{case}/{flow}: outcome",
                fraction(zero, len(group)),
                None,
                f"{labels.get(case, case)}, flow {flow}: {len(group)} runs: {outcome}; final risk median "
                f"{fmt(final.median())} (min {fmt(final.min())}, max {fmt(final.max())}), {zero} below "
                f"{ZERO_RISK:g}; {int(group['bounded'].sum())} bounded (norm grew <= 1% over the last decade)",
            )
        )
    return table, rows


def example_run(summary, case: str, flow: str) -> int:
    """The run of ``(case, flow)`` that ends at the lowest risk (ties and NaN: the lowest run id)."""
    rows = summary[(summary["case"].astype(str) == case) & (summary["flow"].astype(str) == flow)]
    final = rows["final_risk"].to_numpy(dtype=float)
    final = np.where(np.isfinite(final), final, np.inf)
    order = np.lexsort((rows["run"].to_numpy(), final))
    return int(rows["run"].to_numpy()[order[0]])


def _flow_colors(spec):
    labels = []
    for case in spec["cases"]:
        labels += [f for f in case["flows"] if f not in labels]
    palette = sns.color_palette("colorblind", n_colors=max(len(labels), 3))
    return {label: palette[i] for i, label in enumerate(labels)}


def neuron_blocks(ds, run):
    """``u (T, H, d + 1)`` and ``V (T, H, k)`` of one run, from the parameter coordinates of the file."""
    theta = ds["theta"].sel(run=run).values
    block = ds["param_block"].values
    neuron = ds["param_neuron"].values
    h = ds.sizes["neuron"]
    u = np.stack([theta[:, ((block == 0) | (block == 1)) & (neuron == i)] for i in range(h)], axis=1)
    v = np.stack([theta[:, (block == 2) & (neuron == i)] for i in range(h)], axis=1)
    return u, v


def direction_angle(u: np.ndarray) -> np.ndarray:
    """Direction angle of ``u_i = (w_i, b_i)``: ``atan2(b, w)`` for d = 1, ``atan2(b, |w|)`` for d > 1."""
    w, b = u[..., :-1], u[..., -1]
    w = w[..., 0] if w.shape[-1] == 1 else np.sqrt(np.sum(w * w, axis=-1))
    return np.arctan2(b, w)


def _time_panels(axes, case, datasets, summary, colors):
    ax_r, ax_g, ax_n = axes
    ends_t, ends_risk, ends_status = [], [], []
    for flow in case["flows"]:
        ds = datasets[(case["case"], flow)]
        t = ds["time"].values
        pos = t > 0
        for run, status in zip(ds["run"].values, ds["status"].values):
            sel = ds.sel(run=run)
            kw = dict(color=colors[flow], lw=0.7, alpha=0.6)
            ax_r.plot(t[pos], floor_risk(sel["risk"].values[pos]), **kw)
            ax_g.plot(t[pos], np.maximum(sel["grad_norm"].values[pos], RISK_FLOOR), **kw)
            ax_n.plot(t[pos], sel["param_norm"].values[pos], **kw)
            x, y = last_finite(t, sel["risk"].values)
            ends_t.append(x), ends_risk.append(floor_risk([y])[0]), ends_status.append(status_name(status))
        ax_r.plot([], [], color=colors[flow], lw=1.2, label=f"{flow} ({ds.sizes['run']} runs)")
    # runs that stopped early: a red cross (diverged) or a plus (solver gave up) at their last finite risk
    stopped_run_points(ax_r, ends_status, ends_t, ends_risk)
    for ax, which in ((ax_r, "xy"), (ax_g, "xy"), (ax_n, "x")):
        log_axis(ax, which)
        ax.set_xlabel("flow time t")
    ax_r.set_ylabel(rf"risk $\mathcal{{L}}(\Theta_t)$ (floor {format_number(RISK_FLOOR)})")
    ax_g.set_ylabel(r"$|G(\Theta_t)|$")
    ax_n.set_ylabel(r"$|\Theta_t|$")
    ax_r.legend(loc="lower left", fontsize=5.6)
    panel_title(ax_r, "a", "risk")
    panel_title(ax_g, "b", "generalized gradient")
    panel_title(ax_n, "c", "parameter norm")


def _realization_panel(ax, fig, case, problem, ds, run, summary):
    a, b = problem.domain
    d = problem.input_dim
    theta = ds["theta"].sel(run=run).values
    finite = np.flatnonzero(np.all(np.isfinite(theta), axis=-1))
    t = ds["time"].values
    if d == 1:
        x = np.linspace(a, b, 401)
        target = problem.target(x)
        target = target if target.ndim == 1 else target[:, 0]
        ax.plot(x, target, color="k", lw=1.4, label="target f")
        picks = finite[np.unique(np.linspace(0, finite.size - 1, REALIZATION_SNAPSHOTS).round().astype(int))]
        shades = sns.color_palette("rocket_r", n_colors=len(picks) + 1)[1:]
        for color, j in zip(shades, picks):
            values = problem.realization(theta[j], x)
            values = values if values.ndim == 1 else values[:, 0]
            ax.plot(x, values, color=color, lw=0.9, label=f"t = {format_number(t[j])}")
        ax.set_xlabel("x")
        ax.set_ylabel("N(x)" + ("" if problem.output_dim == 1 else " (output 0)"))
        ax.legend(fontsize=5.4, loc="best")
        panel_title(ax, "d", f"realization of run {run}")
    elif d == 2:
        grid = np.linspace(a, b, ERROR_GRID)
        xx, yy = np.meshgrid(grid, grid)
        points = np.stack([xx.ravel(), yy.ravel()], axis=1)
        error = problem.realization(theta[finite[-1]], points) - problem.target(points)
        error = (error if error.ndim == 1 else error[:, 0]).reshape(xx.shape)
        bound = float(np.max(np.abs(error))) or 1.0
        image = ax.imshow(error, origin="lower", extent=(a, b, a, b), cmap="RdBu_r", vmin=-bound, vmax=bound)
        fig.colorbar(image, ax=ax, shrink=0.8, label="N - f")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.grid(False)
        panel_title(ax, "d", f"final error, run {run}")
    else:
        sub = summary[summary["case"] == case["case"]]
        init, final = floor_risk(sub["initial_risk"]), floor_risk(sub["final_risk"])
        ax.scatter(init, final, s=10, color="0.3")
        stopped_run_points(ax, sub["status"], init, final)
        log_axis(ax, "xy")
        ax.set_xlabel(r"initial risk $\mathcal{L}(\Theta_0)$")
        ax.set_ylabel(r"final risk $\mathcal{L}(\Theta_T)$")
        panel_title(ax, "d", f"final vs initial risk (d = {d})")


def _neuron_panels(ax_k, ax_p, problem, ds, run):
    u, v = neuron_blocks(ds, run)
    t = ds["time"].values
    finite = np.all(np.isfinite(u), axis=(1, 2)) & np.all(np.isfinite(v), axis=(1, 2))
    pos = (t > 0) & finite
    h = u.shape[1]
    palette = sns.color_palette("husl", n_colors=max(h, 3))
    d = u.shape[2] - 1
    if d == 1:
        a, b = problem.domain
        with np.errstate(divide="ignore", invalid="ignore"):
            kinks = np.where(u[..., 0] != 0, -u[..., 1] / u[..., 0], np.nan)
        for i in range(h):
            ax_k.plot(t[pos], kinks[pos, i], color=palette[i], lw=0.8)
        ax_k.axhspan(a, b, color="0.9", zorder=0)  # the domain, or the +-4 sigma window of a gaussian law
        margin = 0.5 * (b - a)
        ax_k.set_ylim(a - margin, b + margin)
        ax_k.set_ylabel(r"kink $-b_i / w_i$")
        panel_title(ax_k, "e", "kinks (domain shaded)")
    else:
        norms = np.sqrt(np.sum(u * u, axis=-1))
        for i in range(h):
            ax_k.plot(t[pos], norms[pos, i], color=palette[i], lw=0.8)
        ax_k.set_ylabel(r"$|u_i| = |(w_i, b_i)|$")
        panel_title(ax_k, "e", "inner norms")
    log_axis(ax_k, "x")
    ax_k.set_xlabel("flow time t")
    angle = direction_angle(u)
    outer = np.sqrt(np.sum(v * v, axis=-1))
    for i in range(h):
        ax_p.plot(angle[finite, i], outer[finite, i], color=palette[i], lw=0.8)
        first, last = np.flatnonzero(finite)[[0, -1]]
        ax_p.plot(angle[first, i], outer[first, i], "o", mfc="none", color=palette[i], ms=3.5)
        ax_p.plot(angle[last, i], outer[last, i], "o", color=palette[i], ms=3.0)
    ax_p.set_xlim(-np.pi, np.pi)
    ax_p.set_xticks([-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], [r"$-\pi$", r"$-\pi/2$", "0", r"$\pi/2$", r"$\pi$"])
    ax_p.set_xlabel(r"direction angle of $(w_i, b_i)$" if d == 1 else r"angle of $(|w_i|, b_i)$")
    ax_p.set_ylabel(r"$|V[:, i]|$")
    panel_title(ax_p, "f", f"neuron paths, run {run}")


def draw(spec, datasets, summary, verdict):
    cases = spec["cases"]
    fig = plt.figure(figsize=(DOUBLE_COLUMN, 4.3 * len(cases)), layout="constrained")
    blocks = np.atleast_1d(fig.subfigures(len(cases), 1))
    colors = _flow_colors(spec)
    for block, case in zip(blocks, cases):
        block.suptitle(case.get("label", case["case"]), fontsize=8, fontweight="bold", x=0.01, ha="left")
        axes = block.subplots(2, 3)
        _time_panels(axes[0], case, datasets, summary, colors)
        flow = next(iter(case["flows"]))
        first = datasets[(case["case"], flow)]
        run = example_run(summary, case["case"], flow)
        problem = Problem.from_config(case["problem"])
        _realization_panel(axes[1, 0], block, case, problem, first, run, summary)
        _neuron_panels(axes[1, 1], axes[1, 2], problem, first, run)
    return fig


CAPTION = """**Exploration (no theorem is claimed).** For each case: (a) the risk, (b) the generalized gradient norm
``|G|`` and (c) the parameter norm of every run against flow time, coloured by flow; (d) the realization of
the case's example run (the run of its first flow that ends at the lowest risk) at four flow times against the target (d = 1), or
the error of its final state over the square (d = 2); (e) that run's kinks ``-b_i/w_i`` over time, the domain
shaded (d = 1), or its inner norms ``|(w_i, b_i)|``; (f) each neuron's path in the plane of the direction
angle of ``(w_i, b_i)`` and the outer weight ``|V[:, i]|``, open circle at the start, dot at the end. The
verdict table reports per case and flow how the runs ended (status, classified end point, final risk)."""


KIND = ScenarioKind(
    name="explore",
    summary="your own experiment: any problem, cases and flows; reports how runs ended, no claim",
    check_case=check_case,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION,
)
