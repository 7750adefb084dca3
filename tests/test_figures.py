"""Paper figures (reluflow.experiments.figures): every scenario kind draws from synthetic trajectories that include a
diverged run, writes a vector PDF and a PNG of the documented size atomically, and counts the diverged runs
in a legend.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_summary import (
    AFFINE_01,
    DIVERGED,
    FINISHED,
    decaying,
    flow_settings,
    gd_fixture,
    problem_config,
    spec_of,
    trajectory,
    with_width,
)

from reluflow.experiments.figure import make_figure
from reluflow.experiments.plotting import DOUBLE_COLUMN, PNG_DPI, paper_style
from reluflow.experiments.summary import summarize

N_TIMES = 14


def with_divergence(risk: np.ndarray, run: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """``risk`` with NaN from save ``after`` on for ``run``, and the matching status codes."""
    risk = risk.copy()
    risk[run, after:] = np.nan
    status = np.full(risk.shape[0], FINISHED)
    status[run] = DIVERGED
    return risk, status


def growing_norm(m: int, run: int) -> np.ndarray:
    norm = np.full((m, N_TIMES), 2.0)
    norm[run, 8:] = np.linspace(2.0, 4.0, N_TIMES - 8)
    return norm


def bounded_critical_case(with_failed: bool = False):
    problem = problem_config(
        {
            "network": {"input_dim": 1, "width": 3, "output_dim": 2},
            "domain": [0.0, 1.0],
            "target": {
                "kind": "stack",
                "components": [
                    {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.0},
                    {"kind": "abs", "center": 0.4, "scale": 1.5},
                ],
            },
            "measure": {"kind": "triangular", "mode": 0.3},
        }
    )
    risk = np.array([decaying(5.0, 0.2), decaying(3.0, 0.05), decaying(8.0, 0.5), decaying(2.0, 0.1)])
    risk, status = with_divergence(risk, 2, 9)
    norm = growing_norm(4, 3)
    norm[2, 9:] = np.nan
    if with_failed:  # run 0: the solver gave up after save 11
        risk[0, 11:] = np.nan
        norm[0, 11:] = np.nan
        status[0] = 3
    ds = trajectory(
        problem,
        risk,
        status=status,
        param_norm=norm,
        grad_norm=np.sqrt(risk) * 1e-3,
        critical_risk=np.array([0.2, 0.05 + 1e-6, np.nan, 0.1]),
    )
    spec = spec_of("jr_bounded_critical", [{"case": "main", "problem": problem, "flows": {"gf": flow_settings()}}])
    return spec, {("main", "gf"): ds}, 1


def affine_case():
    cases, datasets = [], {}
    for width, scheme in ((2, "near_exact"), (4, "gaussian")):
        problem = problem_config(with_width(AFFINE_01, width))
        risk = np.array([decaying(1e-3, 1e-20), decaying(0.5, 1e-3), decaying(3.0, 0.0 + 1e-30), decaying(2.0, 0.3)])
        risk, status = with_divergence(risk, 3, 7) if width == 4 else (risk, np.full(4, FINISHED))
        name = f"h{width}_{scheme}"
        datasets[(name, "gf")] = trajectory(problem, risk, status=status, init_scheme=scheme, seed=width)
        cases.append({"case": name, "label": f"H = {width}", "problem": problem, "flows": {"gf": flow_settings()}})
    return spec_of("jr_affine_small_risk", cases), datasets, 1


def single_neuron_case():
    problem = problem_config(AFFINE_01)
    cases, datasets = [], {}
    for name, seed in (("near", 0), ("cloud", 1)):
        risk = np.array([decaying(0.01, 1e-15), decaying(0.2, 1e-12), decaying(0.6, 1 / 3), decaying(0.9, 0.2)])
        status = np.full(4, FINISHED)
        norm = growing_norm(4, 1)
        if name == "cloud":
            risk, status = with_divergence(risk, 3, 10)
            norm[3, 10:] = np.nan
        datasets[(name, "gf")] = trajectory(problem, risk, status=status, param_norm=norm, seed=seed)
        cases.append({"case": name, "problem": problem, "flows": {"gf": flow_settings()}})
    return spec_of("jr_single_neuron", cases), datasets, 1


def ejrw_case():
    cases, datasets = [], {}
    flows = {
        "standard": flow_settings("standard", label="standard"),
        "normalized": flow_settings("normalized", label="normalized"),
    }
    targets = {
        "abs": {"kind": "abs", "center": 0.5, "scale": 1.0},
        "sine": {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.0},
    }
    for target_name, target in targets.items():
        for width in (2, 3):
            problem = problem_config({**with_width(AFFINE_01, width), "target": target})
            name = f"{target_name}_h{width}"
            risk = np.array([decaying(2.0, 0.05), decaying(1.0, 0.01), decaying(4.0, 0.2)])
            std_risk, std_status = with_divergence(risk, 1, 11) if name == "abs_h2" else (risk, np.full(3, FINISHED))
            datasets[(name, "standard")] = trajectory(problem, std_risk, status=std_status, seed=width)
            drift = np.concatenate([[0.0], np.geomspace(1e-16, 3e-11, N_TIMES - 1)])
            datasets[(name, "normalized")] = trajectory(
                problem, risk, constraint_drift=np.tile(drift, (3, 1)), seed=width + 10
            )
            cases.append({"case": name, "label": f"{target_name}, H = {width}", "problem": problem, "flows": flows})
    return spec_of("ejrw_normalized_bounded", cases), datasets, 1


def gd_case():
    spec, datasets = gd_fixture([0.1, 0.05, 0.02, 0.01], diverged_eta=0.1, long_eta=50.0)
    return spec, datasets, 1


def explore_case():
    """Two cases of the explore kind: d = 1 (realization and kinks) and d = 2 (error map, inner norms)."""
    cases, datasets = [], {}
    one = problem_config(with_width(AFFINE_01, 3))
    two = problem_config({"network": {"input_dim": 2, "width": 3, "output_dim": 1}, "domain": [0.0, 1.0],
                          "target": {"kind": "sine", "frequency": [3.0, 1.0]},
                          "measure": {"kind": "qmc", "n_points": 64}})
    for name, problem in (("line", one), ("plane", two)):
        risk = np.array([decaying(2.0, 0.05), decaying(1.0, 1e-12), decaying(4.0, 0.2)])
        risk, status = with_divergence(risk, 2, 9) if name == "line" else (risk, np.full(3, FINISHED))
        datasets[(name, "gf")] = trajectory(problem, risk, status=status, seed=len(name))
        cases.append({"case": name, "label": name, "problem": problem, "flows": {"gf": flow_settings()}})
    return spec_of("explore", cases), datasets, 1


CASES = {
    "jr_bounded_critical": bounded_critical_case,
    "jr_affine_small_risk": affine_case,
    "jr_single_neuron": single_neuron_case,
    "ejrw_normalized_bounded": ejrw_case,
    "gd_vs_gf": gd_case,
    "explore": explore_case,
}


def tables_via_csv(spec, datasets, tmp_path):
    """The summary and verdict as the workflow hands them to the figure step: written to CSV and read back."""
    summary, verdict = summarize(spec, datasets)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    verdict.to_csv(tmp_path / "verdict.csv", index=False)
    return pd.read_csv(tmp_path / "summary.csv"), pd.read_csv(tmp_path / "verdict.csv")


def pdf_page_size(path) -> tuple[float, float]:
    """Width and height in points of the PDF's (single) page, from its MediaBox."""
    match = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([0-9.]+)\s+([0-9.]+)\s*\]", path.read_bytes())
    assert match, "no MediaBox in the PDF"
    return float(match.group(1)), float(match.group(2))


@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_writes_pdf_and_png_of_the_paper_size(kind, tmp_path):
    spec, datasets, _ = CASES[kind]()
    summary, verdict = tables_via_csv(spec, datasets, tmp_path)
    out = tmp_path / "figures"
    pdf, png = out / f"{kind}.pdf", out / f"{kind}.png"
    make_figure(spec, datasets, summary, verdict, pdf, png)
    # exactly the two outputs: no temporary file left behind
    assert sorted(p.name for p in out.iterdir()) == sorted([pdf.name, png.name])
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and len(data) > 10_000
    width_pt, height_pt = pdf_page_size(pdf)
    assert width_pt == pytest.approx(DOUBLE_COLUMN * 72, abs=0.01)  # double column, 72 pt per inch
    with Image.open(png) as image:
        image.load()  # decodes the whole image
        assert image.format == "PNG"
        assert image.size[0] == round(DOUBLE_COLUMN * PNG_DPI)
        # the same figure in both files: the aspect ratios agree to a pixel
        assert image.size[1] == pytest.approx(height_pt / 72 * PNG_DPI, abs=1.0)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # not a blank canvas


@pytest.mark.parametrize("kind", list(CASES))
def test_diverged_runs_are_counted_in_a_legend(kind, tmp_path):
    spec, datasets, n_diverged = CASES[kind]()
    summary, verdict = tables_via_csv(spec, datasets, tmp_path)
    module = importlib.import_module(f"reluflow.experiments.kinds.{kind}")
    with paper_style():
        fig = module.draw(spec, datasets, summary, verdict)
    try:
        texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        texts += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        counted = [t for t in texts if t.startswith("diverged (n = ")]
        assert counted, f"no 'diverged (n = ...)' legend entry among {texts}"
        assert any(re.match(rf"diverged \(n = {n_diverged}\b", t) for t in counted), counted
        # and drawn as red crosses somewhere
        crosses = [
            c
            for ax in fig.axes
            for c in ax.collections
            if len(c.get_offsets())
            and np.allclose(
                c.get_edgecolors()[:, :3] if len(c.get_edgecolors()) else c.get_facecolors()[:, :3],
                [0.839, 0.153, 0.157],
                atol=0.01,
            )
        ]
        assert crosses, "no red markers in any panel"
    finally:
        plt.close(fig)


def test_a_failed_draw_leaves_previous_files_and_no_temporary_files(tmp_path, monkeypatch):
    spec, datasets, _ = gd_case()
    summary, verdict = summarize(spec, datasets)
    pdf, png = tmp_path / "f.pdf", tmp_path / "f.png"
    pdf.write_bytes(b"old pdf")
    png.write_bytes(b"old png")
    module = importlib.import_module("reluflow.experiments.kinds.gd_vs_gf")

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(module, "KIND", dataclasses.replace(module.KIND, figure=broken))
    with pytest.raises(RuntimeError, match="drawing failed"):
        make_figure(spec, datasets, summary, verdict, pdf, png)
    assert pdf.read_bytes() == b"old pdf" and png.read_bytes() == b"old png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_a_failed_png_write_keeps_the_old_png_and_removes_its_temporary_file(tmp_path, monkeypatch):
    spec, datasets, _ = gd_case()
    summary, verdict = summarize(spec, datasets)
    pdf, png = tmp_path / "f.pdf", tmp_path / "f.png"
    png.write_bytes(b"old png")
    original = plt.Figure.savefig

    def fail_png(self, fname, *args, **kwargs):
        if kwargs.get("format") == "png":
            with open(fname, "wb") as fh:  # a partial file, as a crash mid-write would leave
                fh.write(b"\x89PNG partial")
            raise OSError("disk full")
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", fail_png)
    with pytest.raises(OSError, match="disk full"):
        make_figure(spec, datasets, summary, verdict, pdf, png)
    assert png.read_bytes() == b"old png"
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]
    assert not plt.get_fignums()  # the figure was closed


def test_bad_kind_and_bad_tables_are_rejected_before_drawing(tmp_path):
    spec, datasets, _ = gd_case()
    summary, verdict = summarize(spec, datasets)
    pdf, png = tmp_path / "f.pdf", tmp_path / "f.png"
    with pytest.raises(ValueError, match=r"^spec\.kind"):
        make_figure({**spec, "kind": "unknown"}, datasets, summary, verdict, pdf, png)
    with pytest.raises(ValueError, match=r"^datasets"):
        make_figure(spec, {}, summary, verdict, pdf, png)
    with pytest.raises(ValueError, match=r"^summary_df: missing column"):
        make_figure(spec, datasets, summary.drop(columns=["run"]), verdict, pdf, png)
    assert list(tmp_path.iterdir()) == []


def test_figures_are_reproducible_bytes(tmp_path):
    """Same inputs, same PDF bytes (no creation date in the file), so reruns do not churn outputs."""
    spec, datasets, _ = gd_case()
    summary, verdict = summarize(spec, datasets)
    make_figure(spec, datasets, summary, verdict, tmp_path / "a.pdf", tmp_path / "a.png")
    make_figure(spec, datasets, summary, verdict, tmp_path / "b.pdf", tmp_path / "b.png")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_runs_the_solver_gave_up_on_are_marked_and_counted(tmp_path):
    spec, datasets, _ = bounded_critical_case(with_failed=True)
    summary, verdict = tables_via_csv(spec, datasets, tmp_path)
    module = importlib.import_module("reluflow.experiments.kinds.jr_bounded_critical")
    with paper_style():
        fig = module.draw(spec, datasets, summary, verdict)
    try:
        texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert "solver gave up (n = 1 of 4)" in texts and "diverged (n = 1 of 4)" in texts
    finally:
        plt.close(fig)
