"""The figures' common style and helpers: every scenario kind draws with these.

A kind's ``figure(spec, datasets, summary, verdict)`` (:mod:`reluflow.experiments.kinds`) builds its figure
from the trajectories and the tables of :func:`reluflow.experiments.summary.summarize` (the summary may come
back from its CSV, so kinds read its boolean columns through :func:`as_bool`); :func:`save_figure` writes it as
a vector PDF and a ``PNG_DPI`` PNG, each through :func:`reluflow.files.atomic.atomic_output` (a reader never
sees a partial file).

Shared style (:func:`paper_style`): seaborn's ``whitegrid`` axes and ``paper`` context with 7-8 pt text, widths
:data:`SINGLE_COLUMN` (3.5 in) and :data:`DOUBLE_COLUMN` (7.2 in); diverged runs are red crosses
(:data:`DIVERGED`) counted in the legend; risks below :data:`RISK_FLOOR` are drawn at the floor (log axes
cannot show 0) and the axis says so.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")  # files only: no display, same output on every machine

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reluflow.files.atomic import atomic_output  # noqa: E402

#: figure widths in inches (two-column paper layout)
SINGLE_COLUMN = 3.5
DOUBLE_COLUMN = 7.2
#: raster resolution of the PNG
PNG_DPI = 200
#: risks below this are drawn at it on log axes (exact zero risk is reachable)
RISK_FLOOR = 1e-20
#: how diverged runs are drawn
DIVERGED = {"marker": "x", "color": "#d62728", "s": 22, "linewidths": 1.2, "zorder": 6}
#: how runs the solver gave up on (status "failed") are drawn at their last finite point
FAILED = {"marker": "P", "color": "0.25", "s": 20, "linewidths": 0.4, "zorder": 6}
#: colour of non-diverged single runs when there is no other colour coding
RUN_COLOR = "#4c72b0"

_RC = {
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.3,
    "legend.title_fontsize": 6.5,
    "figure.titlesize": 8.5,
    "lines.linewidth": 0.9,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "legend.frameon": True,
    "legend.framealpha": 0.85,
    "legend.borderpad": 0.3,
    "legend.handlelength": 1.6,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (searchable, editable)
    # figures use constrained layout and keep their nominal size (no tight bbox): a double-column figure
    # is exactly 7.2 in wide in the PDF and 7.2 * PNG_DPI pixels in the PNG
    "savefig.bbox": None,
}


@contextmanager
def paper_style() -> Iterator[None]:
    """seaborn ``whitegrid`` + ``paper`` context with the sizes above, without touching global state."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), **_RC}
    with plt.rc_context(rc):
        yield


def as_bool(values: Any) -> np.ndarray:
    """A boolean column as a numpy bool array (``True``/``False``, or strings from a CSV); NA counts False."""
    series = pd.Series(values)
    if series.dtype == bool:
        return series.to_numpy()
    mapped = series.map(lambda v: v if isinstance(v, (bool, np.bool_)) else str(v).strip().lower() == "true")
    return mapped.fillna(False).to_numpy(dtype=bool)


def floor_risk(values: Any) -> np.ndarray:
    """Risks for a log axis: values below :data:`RISK_FLOOR` (including exact 0) become the floor."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), np.maximum(values, RISK_FLOOR), np.nan)


def panel_title(ax, letter: str, title: str) -> None:
    """A left-aligned panel title ``(a) title``: the letter in bold, the title after it."""
    ax.set_title(rf"$\bf{{({letter})}}$ {title}", loc="left")


def log_axis(ax, which: str = "y") -> None:
    """Log scale on ``which`` ("x", "y" or "xy"); call after plotting.

    Wide ranges get labelled decades (every other one beyond eight decades) and unlabelled minor ticks.
    A y range of fewer than two decades (an x range of less than one) would carry a single label; it gets
    ticks at 1, 2 and 5 times the powers of ten instead, written as plain numbers.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        ax.autoscale_view()
        lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
        span = np.log10(hi / lo) if lo > 0 else np.inf
        if span < (1.0 if name == "x" else 2.0):
            decades = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
            ticks = np.array([m * 10.0**k for k in decades for m in (1, 2, 5)])
            axis.set_major_locator(FixedLocator(ticks[(ticks >= lo) & (ticks <= hi)]))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_locator(NullLocator())
        else:
            # x labels are wider than tall: at most ~6 decades labelled on x (every other beyond), ~9 on y
            axis.set_major_locator(LogLocator(base=10, numticks=6 if name == "x" else 9))
            axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) * 0.1, numticks=100))
            axis.set_minor_formatter(NullFormatter())


def format_number(value: float) -> str:
    """A short label for a number: ``0.1``, ``30.3``, ``$10^{4}$``, ``$3.2\\times10^{5}$``."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e3:
        return f"{value:.3g}"
    exponent = int(np.floor(np.log10(abs(value))))
    mantissa = value / 10.0**exponent
    if abs(mantissa - round(mantissa)) < 1e-9 and round(mantissa) == 1:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:.2g}\\times10^{{{exponent}}}$"


def positive_time(ds) -> np.ndarray:
    """Mask of save times ``t > 0`` (log time axes cannot show ``t = 0``)."""
    return ds["time"].values > 0


def diverged_points(ax, x, y, n_total: int | None = None, label: str = "diverged") -> None:
    """Red crosses at ``(x, y)`` (e.g. each diverged run's last finite point) with a counted legend entry."""
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    if x.size == 0:
        return
    text = f"{label} (n = {x.size}" + (f" of {n_total})" if n_total is not None else ")")
    ax.scatter(x, y, label=text, **DIVERGED)


def failed_points(ax, x, y, n_total: int | None = None) -> None:
    """Dark plus signs at ``(x, y)`` for runs the solver gave up on, with a counted legend entry."""
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    if x.size == 0:
        return
    text = f"solver gave up (n = {x.size}" + (f" of {n_total})" if n_total is not None else ")")
    ax.scatter(x, y, label=text, **FAILED)


def stopped_run_points(ax, status, x, y) -> None:
    """Diverged runs as red crosses and failed runs as plus signs at ``(x, y)``, each counted in the legend
    out of all runs; ``status`` holds each run's status name (the summary table's ``status`` column)."""
    status = np.asarray(status).astype(str)
    x, y = np.asarray(x, float), np.asarray(y, float)
    for name, draw_points in (("diverged", diverged_points), ("failed", failed_points)):
        mask = status == name
        if mask.any():
            draw_points(ax, x[mask], y[mask], status.size)


def reference_levels(ax, risks, label: str, zero_level: float, zorder: float = 3) -> None:
    """A final-vs-initial-risk panel's references: a dashed vertical line at each reference risk, a dotted
    horizontal line at the zero level, and one legend entry for each (``label`` names the references)."""
    for risk in risks:
        ax.axvline(risk, color="k", lw=0.9, ls="--", zorder=zorder)
    ax.axhline(zero_level, color="0.35", lw=0.8, ls=":", zorder=zorder)
    ax.plot([], [], color="k", ls="--", lw=0.9, label=f"{label} = " + ", ".join(format_number(r) for r in risks))
    ax.plot([], [], color="0.35", ls=":", lw=0.8, label=f"zero level {format_number(zero_level)}")


def last_finite(time: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """The last ``(t, value)`` of a run with a finite value (NaN, NaN if none)."""
    ok = np.flatnonzero(np.isfinite(values))
    if ok.size == 0:
        return np.nan, np.nan
    return float(time[ok[-1]]), float(values[ok[-1]])


def kink_positions(ds, run) -> np.ndarray:
    """``-b_i / w_i`` over time for one run of a d = 1 network: shape ``(T, H)`` (NaN where ``w_i = 0``)."""
    theta = ds["theta"].sel(run=run)
    block = ds["param_block"].values
    w = theta.values[:, block == 0]
    b = theta.values[:, block == 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w != 0, -b / w, np.nan)


def save_figure(fig, pdf_path, png_path) -> None:
    """Write ``fig`` as vector PDF and ``PNG_DPI`` PNG, each atomically; the PDF has no creation date (so
    the same figure gives the same bytes)."""
    with atomic_output(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=PNG_DPI)


__all__ = [
    "DIVERGED",
    "DOUBLE_COLUMN",
    "FAILED",
    "PNG_DPI",
    "RISK_FLOOR",
    "SINGLE_COLUMN",
    "as_bool",
    "diverged_points",
    "failed_points",
    "floor_risk",
    "format_number",
    "kink_positions",
    "log_axis",
    "paper_style",
    "reference_levels",
    "save_figure",
    "stopped_run_points",
]
