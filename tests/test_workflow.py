"""The Snakemake pipeline end to end on the test configuration (issue 5)."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image as mpimg
import pandas as pd
import pytest
import xarray as xr
from workflow_runner import (
    ROOT,
    copy_project,
    load_config,
    run_snakemake,
    snakemake_command,
    trajectory_files,
    write_config,
)

from reluflow.experiments.config import resolve_scenarios
from reluflow.experiments.kinds import get_kind
from reluflow.files.trajectories import open_trajectories

pytestmark = pytest.mark.slow

SCENARIOS = ["jr_bounded_critical", "jr_affine_small_risk", "jr_single_neuron", "ejrw_normalized_bounded", "gd_vs_gf"]


def expected_trajectories():
    out = []
    for name, cases in resolve_scenarios(load_config()).items():
        for case in cases:
            for flow in case.flows:
                for b in range(case.n_batches):
                    out.append(f"results/{name}/trajectories/{case.name}/{flow.label}/batch{b:03d}.nc")
    return sorted(out)


def test_every_expected_output_exists_and_is_valid(completed_workflow):
    workdir, _ = completed_workflow
    found = sorted(str(p.relative_to(workdir)) for p in trajectory_files(workdir))
    assert found == expected_trajectories()
    for name in SCENARIOS:
        files = sorted((workdir / "results" / name / "trajectories").glob("*/*/batch*.nc"))
        groups = {}
        for f in files:
            groups.setdefault((f.parent.parent.name, f.parent.name), []).append(f)
        for group in groups.values():
            ds = open_trajectories(group)  # validates the schema and the batches' consistency
            assert ds.sizes["run"] >= 1
        # plain xarray opens them, with units and long names
        plain = xr.open_dataset(files[0])
        for var in plain.data_vars:
            assert "units" in plain[var].attrs and "long_name" in plain[var].attrs
        plain.close()
        summary = pd.read_csv(workdir / "results" / name / "summary.csv")
        verdict = pd.read_csv(workdir / "results" / name / "verdict.csv")
        assert len(summary) > 0 and {"scenario", "check", "value", "passed", "detail"} <= set(verdict.columns)
        pdf = (workdir / "results" / "figures" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 5000
        png = mpimg.imread(workdir / "results" / "figures" / f"{name}.png")
        assert png.ndim == 3 and png.shape[0] > 300 and png.shape[1] > 600
    verdicts = pd.read_csv(workdir / "results" / "verdicts.csv")
    assert set(verdicts["scenario"]) == set(SCENARIOS)
    # every rule left a log
    assert (workdir / "results" / "logs" / "simulate").is_dir()
    assert list((workdir / "results" / "benchmarks" / "simulate").rglob("*.tsv"))


def test_rerunning_an_unchanged_workflow_does_nothing(completed_workflow):
    workdir, _ = completed_workflow
    proc = run_snakemake(workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_scenario_reruns_only_that_scenario(completed_workflow):
    workdir, _ = completed_workflow
    config = load_config()
    config["scenarios"][2]["flows"][0]["rtol"] = 1e-9  # jr_single_neuron
    write_config(workdir, config, "changed.yaml")
    dry = run_snakemake(workdir, "-n", configfile="config/changed.yaml").stdout
    outputs = [line.split("output:")[1].strip() for line in dry.splitlines() if "output:" in line]
    sim = [o for o in outputs if "/trajectories/" in o]
    assert sim, dry[-3000:]
    assert all(o.startswith("results/jr_single_neuron/") for o in sim), sim
    assert not any("/init/" in o for o in outputs), "init depends on the problem only, not on the flow's rtol"


def test_snakemake_lint_and_snakefmt_are_clean():
    lint = subprocess.run(snakemake_command() + ["--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr or "no lints" in (lint.stdout + lint.stderr).lower()
    snakefmt = shutil.which("snakefmt")
    assert snakefmt, "snakefmt is a test dependency"
    fmt = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_html_report_has_the_figures_and_captions(completed_workflow, tmp_path):
    workdir, _ = completed_workflow
    report = workdir / "results" / "report.html"
    proc = run_snakemake(workdir, "--report", str(report))
    # docutils reports broken reStructuredText in a caption (e.g. |x| read as a substitution) as
    # "(ERROR/3)" or "(WARNING/2)" and renders the caption with an error box
    assert "ERROR/" not in proc.stdout + proc.stderr and "WARNING/" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    html = report.read_text(errors="replace")
    # every scenario's caption, from its kind, is in the report (its bold title, rendered as <strong>)
    for name, cases in resolve_scenarios(load_config()).items():
        spec = {"scenario": name, "kind": cases[0].kind, "cases": [c.to_dict() for c in cases]}
        title = re.search(r"\*\*(.+?)\*\*", get_kind(cases[0].kind).caption(spec)).group(1)
        assert f"<strong>{title}</strong>" in html.replace("\\u003c", "<").replace("\\u003e", ">"), (name, title)
    assert html.count("figures") > 0
    del tmp_path


def test_default_configuration_plans_every_scenario(tmp_path):
    workdir = copy_project(tmp_path)
    proc = run_snakemake(workdir, "-n", configfile="")
    for name in SCENARIOS:
        assert f"results/figures/{name}.png" in proc.stdout
