"""An animation of one case: the realization and the neurons over log-spaced flow time (a GIF).

Frames are the case's save times (at most :data:`MAX_FRAMES`, evenly spread over them; the save grids are
log-spaced, so the frames are too). Left: the realizations of up to :data:`MAX_RUNS` runs of the case's first
flow against the target (d = 1), or the error of the first run over the square (d = 2). Right: every neuron of
those runs as a point in the plane of the direction angle of ``u_i = (w_i, b_i)`` and ``|V[:, i]|`` (the view
of the early-alignment literature: small initializations first align the directions, then grow), with a
short trail. Written through matplotlib's Pillow writer, then moved into place atomically.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.animation import FuncAnimation, PillowWriter

from reluflow.experiments.kinds.explore import ERROR_GRID, direction_angle, neuron_blocks
from reluflow.experiments.plotting import format_number, paper_style
from reluflow.files.atomic import atomic_output
from reluflow.problem import Problem

__all__ = ["animate_case", "MAX_FRAMES", "MAX_RUNS"]

#: frames of an animation (a few MB at most at the size below)
MAX_FRAMES = 60
#: runs drawn in an animation
MAX_RUNS = 4
#: frames per second and the size of a frame (inches at DPI)
FPS = 8
SIZE = (6.4, 2.6)
DPI = 100
#: saves of trail behind each neuron
TRAIL = 6


def animate_case(spec: Mapping[str, Any], case_name: str, datasets: Mapping[tuple[str, str], Any], path) -> Path:
    """Write the animation of case ``case_name`` of ``spec`` (the scenario slice) to ``path`` (a GIF)."""
    case = next((c for c in spec["cases"] if c["case"] == case_name), None)
    if case is None:
        raise ValueError(f"case: scenario {spec['scenario']!r} has no case {case_name!r}")
    flow = next(iter(case["flows"]))
    ds = datasets[(case_name, flow)]
    problem = Problem.from_config(case["problem"])
    runs = [int(r) for r in np.sort(ds["run"].values)[:MAX_RUNS]]
    t = ds["time"].values
    frames = np.unique(np.linspace(0, t.size - 1, min(MAX_FRAMES, t.size)).round().astype(int))
    palette = sns.color_palette("colorblind", n_colors=max(len(runs), 3))
    blocks = {run: neuron_blocks(ds, run) for run in runs}
    theta = {run: ds["theta"].sel(run=run).values for run in runs}
    a, b = problem.domain

    with paper_style():
        fig, (ax_f, ax_n) = plt.subplots(1, 2, figsize=SIZE, dpi=DPI, layout="constrained")
        if problem.input_dim == 1:
            x = np.linspace(a, b, 201)
            target = problem.target(x)
            ax_f.plot(x, target if target.ndim == 1 else target[:, 0], color="k", lw=1.3, label="target")
            lines = {run: ax_f.plot([], [], color=palette[i], lw=0.9, label=f"run {run}")[0]
                     for i, run in enumerate(runs)}
            curves = np.concatenate([problem.realization(theta[r][np.all(np.isfinite(theta[r]), axis=1)], x).ravel()
                                     for r in runs])
            # the whole target, and the realizations but for their extreme percent (early wild states)
            lo, hi = np.nanpercentile(curves, [1, 99])
            lo, hi = min(lo, float(np.min(target))), max(hi, float(np.max(target)))
            pad = 0.15 * (hi - lo or 1.0)
            ax_f.set_ylim(lo - pad, hi + pad)
            ax_f.set_xlim(a, b)
            ax_f.set_xlabel("x")
            ax_f.legend(fontsize=5.5, loc="upper left")
            image = None
        else:
            grid = np.linspace(a, b, ERROR_GRID)
            xx, yy = np.meshgrid(grid, grid)
            points = np.stack([xx.ravel(), yy.ravel()], axis=1)
            first = runs[0]
            image = ax_f.imshow(np.zeros(xx.shape), origin="lower", extent=(a, b, a, b), cmap="RdBu_r")
            fig.colorbar(image, ax=ax_f, shrink=0.8, label="N - f (run %d)" % first)
            ax_f.grid(False)
            lines = {}
        scatters, trails = {}, {}
        for i, run in enumerate(runs):
            u, v = blocks[run]
            scatters[run] = ax_n.scatter([], [], s=10, color=palette[i])
            trails[run] = [ax_n.plot([], [], color=palette[i], lw=0.6, alpha=0.5)[0] for _ in range(u.shape[1])]
        outer = np.concatenate([np.sqrt(np.sum(blocks[r][1] ** 2, axis=-1)).ravel() for r in runs])
        outer = outer[np.isfinite(outer)]
        ax_n.set_xlim(-np.pi, np.pi)
        ax_n.set_ylim(0.0, 1.05 * float(np.max(outer)) if outer.size else 1.0)
        ax_n.set_xticks([-np.pi, 0, np.pi], [r"$-\pi$", "0", r"$\pi$"])
        ax_n.set_xlabel(r"direction angle of $(w_i, b_i)$")
        ax_n.set_ylabel(r"$|V[:, i]|$")
        title = fig.suptitle("")

        def update(j):
            for run in runs:
                state = theta[run][j]
                u, v = blocks[run]
                angle, norm = direction_angle(u[j]), np.sqrt(np.sum(v[j] ** 2, axis=-1))
                scatters[run].set_offsets(np.column_stack([angle, norm]))
                start = max(0, j - TRAIL)
                for i, trail in enumerate(trails[run]):
                    trail.set_data(direction_angle(u[start : j + 1, i]), np.sqrt(np.sum(v[start : j + 1, i] ** 2, axis=-1)))
                if not np.all(np.isfinite(state)):
                    continue
                if image is None:
                    values = problem.realization(state, x)
                    lines[run].set_data(x, values if values.ndim == 1 else values[:, 0])
                elif run == runs[0]:
                    error = problem.realization(state, points) - problem.target(points)
                    error = (error if error.ndim == 1 else error[:, 0]).reshape(xx.shape)
                    bound = float(np.max(np.abs(error))) or 1.0
                    image.set_data(error)
                    image.set_clim(-bound, bound)
            title.set_text(f"{spec['scenario']} / {case.get('label', case_name)} / {flow}: t = {format_number(t[j])}")
            return []

        animation = FuncAnimation(fig, update, frames=frames, blit=False)
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder) / "animation.gif"
            animation.save(scratch, writer=PillowWriter(fps=FPS))
            plt.close(fig)
            with atomic_output(path) as tmp:
                shutil.copyfile(scratch, tmp)
    return Path(path)
