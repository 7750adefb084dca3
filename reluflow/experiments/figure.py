"""Draw a scenario's figure with its kind (:mod:`reluflow.experiments.kinds`) and write it as PDF and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import pandas as pd

from reluflow.experiments.kinds import get_kind
from reluflow.experiments.plotting import paper_style, save_figure
from reluflow.experiments.summary import check_spec

__all__ = ["make_figure"]


def make_figure(
    spec: Mapping[str, Any],
    datasets: Mapping[tuple[str, str], Any],
    summary_df: pd.DataFrame,
    verdict_df: pd.DataFrame,
    pdf_path: str | Path,
    png_path: str | Path,
) -> None:
    """Draw the figure of ``spec["kind"]`` and write it to ``pdf_path`` and ``png_path``.

    ``spec`` and ``datasets`` are those of :func:`reluflow.experiments.summary.summarize`; ``summary_df`` and
    ``verdict_df`` its tables (as returned, or read back from their CSV files). Raises ``ValueError`` naming
    ``spec.kind`` for an unknown kind, and the errors of :func:`reluflow.experiments.summary.check_spec`, before
    drawing. Both files are written atomically: a failure leaves the previous files.
    """
    kind = get_kind(spec.get("kind") if isinstance(spec, Mapping) else None, "spec.kind")
    check_spec(spec, datasets)
    for name, table in (("summary_df", summary_df), ("verdict_df", verdict_df)):
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"{name}: must be a pandas DataFrame, got {type(table).__name__}")
    missing = {"case", "flow", "run", "status"} - set(summary_df.columns)
    if missing:
        raise ValueError(f"summary_df: missing column(s) {sorted(missing)}")
    with paper_style():
        fig = kind.figure(spec, datasets, summary_df, verdict_df)
        try:
            save_figure(fig, pdf_path, png_path)
        finally:
            plt.close(fig)
