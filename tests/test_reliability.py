"""Reliability of the pipeline (issue 7): bad input, interruption, reproducibility, divergence, corrupt files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_runner import (
    copy_project,
    load_config,
    mutated_config,
    run_snakemake,
    snakemake_command,
    trajectory_files,
    tree_digest,
    write_config,
)

from reluflow.files.trajectories import open_trajectories

pytestmark = pytest.mark.slow


BAD_CONFIGS = [
    (("scenarios",), [], "scenarios"),
    (("scenarios", 0, "name"), "Bad Name", "scenarios[0].name"),
    (("scenarios", 1, "name"), "jr_bounded_critical", "scenarios[1].name"),
    (("scenarios", 0, "name"), "../../etc", "scenarios[0].name"),
    (("scenarios", 0, "unknown_key"), 1, "unknown_key"),
    (("scenarios", 0, "problem", "network", "width"), 0, "scenarios[0].problem.network.width"),
    (("scenarios", 0, "problem", "network", "width"), "six", "width"),
    (("scenarios", 0, "problem", "domain"), [1.0, 0.0], "scenarios[0].problem.domain"),
    (("scenarios", 0, "problem", "target", "kind"), "cosh", "scenarios[0].problem.target.kind"),
    (("scenarios", 0, "problem", "network", "output_dim"), 1, "scenarios[0].problem.target"),
    (("scenarios", 0, "flows", 0, "flow"), "uphill", "flow"),
    (("scenarios", 0, "flows", 0, "t_max"), -1.0, "t_max"),
    (("scenarios", 0, "flows", 0, "rtol"), 0.0, "rtol"),
    (("scenarios", 0, "flows"), [], "flows"),
    (("scenarios", 0, "batch_size"), 0, "batch_size"),
    (("scenarios", 0, "init", "n_runs"), 0, "n_runs"),
    (("scenarios", 0, "problem", "measure", "mode"), 7.0, "scenarios[0].problem.measure.mode"),
    (("scenarios", 4, "flows", 1, "eta"), KeyError, "scenarios[4].flows[1].eta"),
]


@pytest.mark.parametrize("path,value,key", BAD_CONFIGS, ids=[f"{b[2]}={b[1]!r}"[:40] for b in BAD_CONFIGS])
def test_bad_configuration_stops_before_any_job_and_names_the_key(completed_workflow, path, value, key):
    workdir, _ = completed_workflow
    before = tree_digest(workdir / "results")
    cfg = write_config(workdir, mutated_config(path, value), "bad.yaml")
    proc = run_snakemake(workdir, configfile=str(cfg.relative_to(workdir)), check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert key in out, out[-3000:]
    assert "Select jobs to execute" not in out and "rule simulate" not in out
    assert tree_digest(workdir / "results") == before


def test_yaml_is_loaded_safely(completed_workflow):
    workdir, _ = completed_workflow
    marker = workdir / "pwned"
    cfg = workdir / "config" / "evil.yaml"
    cfg.write_text(f'scenarios: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_snakemake(workdir, "-n", configfile="config/evil.yaml", check=False, timeout=300)
    assert proc.returncode != 0
    assert not marker.exists()


def _trajectory_numbers(workdir: Path, scenario: str):
    """``{(case, flow): dataset}`` with the batches of a scenario concatenated along run."""
    groups = {}
    for f in trajectory_files(workdir):
        if f.parts[-5] == scenario:
            groups.setdefault((f.parent.parent.name, f.parent.name), []).append(f)
    return {k: open_trajectories(v) for k, v in sorted(groups.items())}


def assert_same_numbers(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        for name in ("theta", "risk", "grad_norm", "energy_residual", "status", "critical_risk"):
            assert np.array_equal(a[key][name].values, b[key][name].values, equal_nan=a[key][name].dtype.kind == "f"), \
                (key, name)


def test_same_numbers_with_one_core_and_other_batch_sizes(completed_workflow, tmp_path):
    """--cores 1 with batch_size 1 gives bitwise the trajectories of --cores 2 with the configured batches."""
    local, _ = completed_workflow
    workdir = copy_project(tmp_path / "rebatched")
    config = load_config()
    keep = {"jr_bounded_critical", "gd_vs_gf"}
    config["scenarios"] = [s for s in config["scenarios"] if s["name"] in keep]
    for s in config["scenarios"]:
        s["batch_size"] = 1
    cfg = write_config(workdir, config, "rebatched.yaml")
    targets = [f"results/{name}/summary.csv" for name in sorted(keep)]
    run_snakemake(workdir, *targets, cores=1, configfile=str(cfg.relative_to(workdir)))
    for name in keep:
        assert_same_numbers(_trajectory_numbers(workdir, name), _trajectory_numbers(local, name))


def test_figures_are_regenerated_from_stored_trajectories(completed_workflow, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(completed_workflow[0], workdir, symlinks=True)
    for png in (workdir / "results" / "figures").glob("*.png"):
        png.unlink()
    dry = run_snakemake(workdir, "-n").stdout
    assert "rule figure" in dry or "localrule figure" in dry
    assert "rule simulate" not in dry and "rule init" not in dry
    before = tree_digest(workdir / "results", "*/trajectories/**/*.nc")
    run_snakemake(workdir)
    assert len(list((workdir / "results" / "figures").glob("*.png"))) == 5
    assert tree_digest(workdir / "results", "*/trajectories/**/*.nc") == before


def test_diverging_runs_complete_and_are_flagged(completed_workflow):
    workdir, _ = completed_workflow
    summary = pd.read_csv(workdir / "results" / "gd_vs_gf" / "summary.csv")
    diverged = summary[summary["flow"] == "gd_diverge"]
    assert len(diverged) == 3 and set(diverged["status"]) == {"diverged"}
    others = summary[summary["flow"] != "gd_diverge"]
    assert set(others["status"]) == {"finished"}
    verdict = pd.read_csv(workdir / "results" / "gd_vs_gf" / "verdict.csv")
    assert "diverged" in " ".join(verdict["detail"].astype(str))


def test_truncated_trajectory_file_fails_aggregation_naming_the_file(completed_workflow, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(completed_workflow[0], workdir, symlinks=True)
    victim = sorted((workdir / "results" / "jr_single_neuron" / "trajectories").rglob("batch*.nc"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    proc = run_snakemake(workdir, "results/jr_single_neuron/summary.csv", check=False)
    out = proc.stdout + proc.stderr
    log = (workdir / "results" / "logs" / "aggregate" / "jr_single_neuron.log").read_text()
    assert proc.returncode != 0, out[-2000:]
    assert str(victim.relative_to(workdir)) in log and "delete it and rerun" in log, log
    assert "Traceback" not in log


def test_killed_run_resumes_to_identical_results(completed_workflow, tmp_path):
    """SIGKILL to the whole workflow during simulation, then --rerun-incomplete: same numbers, no partial files."""
    local, _ = completed_workflow
    workdir = copy_project(tmp_path / "killed")
    target = "results/jr_bounded_critical/summary.csv"
    # the target goes first: --configfile takes several values and would swallow it
    cmd = snakemake_command() + [target, "--cores", "2", "--configfile", "config/test.yaml"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    logs = workdir / "results" / "logs" / "simulate"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(logs.rglob("*.log")):
        assert proc.poll() is None, f"snakemake ended ({proc.returncode}) before any simulate job started"
        time.sleep(0.2)
    assert list(logs.rglob("*.log")), "no simulate job started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing readable but incomplete: every trajectory file present is complete (the writer is atomic)
    for f in trajectory_files(workdir):
        open_trajectories([f])
    # a killed Snakemake leaves its lock behind: release it first, as its own message says to
    run_snakemake(workdir, "--unlock")
    run_snakemake(workdir, target, "--rerun-incomplete")
    assert_same_numbers(_trajectory_numbers(workdir, "jr_bounded_critical"),
                        _trajectory_numbers(local, "jr_bounded_critical"))
