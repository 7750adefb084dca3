"""The ``reluflow`` console script as the workflow rules call it: help texts, exit codes, error messages,
progress output, and outputs that are either complete or absent.

Exit codes (reluflow.cli): 0 success, 2 bad arguments or configuration (message names the key),
3 missing or unreadable input file (message names the file), 1 anything else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reluflow.files.trajectories import open_trajectory_dataset

PROBLEM = {"network": {"input_dim": 1, "width": 2, "output_dim": 1}, "domain": [0.0, 1.0],
           "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}, "measure": {"kind": "uniform"}}
INIT_SPEC = {"scenario": "cli_test", "case": "main", "problem": PROBLEM,
             "init": {"scheme": "gaussian", "n_runs": 3, "scale": 1.0}, "batch_size": 3}
FLOW_SPEC = {"flow": "standard", "solver": "dopri5", "t_max": 10.0, "rtol": 1e-8, "atol": 1e-11,
             "save": {"spacing": "log", "n": 5, "t_min": 0.1}}


def reluflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("reluflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "reluflow.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def init_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "init.nc"
    proc = reluflow("init", "--spec", json.dumps(INIT_SPEC), "--batch", "0", "--output", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def test_top_level_help_lists_every_command_and_the_exit_codes():
    proc = reluflow("--help")
    assert proc.returncode == 0
    for command in ("check-config", "init", "simulate", "summarize", "figure", "verdicts"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout


@pytest.mark.parametrize("command, options", [
    ("check-config", ["config"]), ("init", ["--spec", "--batch", "--output"]),
    ("simulate", ["--init", "--spec", "--output", "--progress"]),
    ("summarize", ["--spec", "--summary", "--verdict"]), ("figure", ["--pdf", "--png"]), ("verdicts", ["--output"]),
])  # fmt: skip
def test_every_command_explains_its_options(command, options):
    proc = reluflow(command, "--help")
    assert proc.returncode == 0
    for option in options:
        assert option in proc.stdout


def test_version_and_missing_command():
    version = reluflow("--version")
    assert version.returncode == 0 and version.stdout.startswith("reluflow ")
    assert reluflow().returncode == 2


def test_simulate_writes_a_valid_file_and_reports_progress(init_file, tmp_path):
    out = tmp_path / "traj.nc"
    proc = reluflow("simulate", "--init", str(init_file), "--spec", json.dumps(FLOW_SPEC), "--output", str(out),
                    "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "% done" in proc.stderr  # progress lines go to stderr (the rule's log)
    ds = open_trajectory_dataset(out)
    assert ds.sizes["run"] == 3 and ds.sizes["time"] == 6


def test_check_config_lists_the_jobs_of_a_shipped_configuration():
    root = Path(__file__).resolve().parents[1]
    proc = reluflow("check-config", str(root / "config" / "test.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "jr_bounded_critical:" in proc.stdout and "simulate job(s)" in proc.stdout


@pytest.mark.parametrize("change, key", [
    ({"flow": "sideways"}, "flow"), ({"rtol": -1.0}, "rtol"), ({"t_max": "long"}, "t_max"),
])  # fmt: skip
def test_bad_flow_settings_exit_2_naming_the_key(init_file, tmp_path, change, key):
    out = tmp_path / "traj.nc"
    proc = reluflow("simulate", "--init", str(init_file), "--spec", json.dumps({**FLOW_SPEC, **change}),
                    "--output", str(out))
    assert proc.returncode == 2
    assert key in one_line_error(proc)
    assert not out.exists()


def test_spec_that_is_not_json_exits_2(init_file, tmp_path):
    proc = reluflow("simulate", "--init", str(init_file), "--spec", "{flow: standard", "--output", str(tmp_path / "x.nc"))
    assert proc.returncode == 2 and "--spec" in one_line_error(proc)


def test_bad_problem_in_init_spec_exits_2_naming_the_key(tmp_path):
    spec = {**INIT_SPEC, "problem": {**PROBLEM, "network": {"input_dim": 1, "width": 0, "output_dim": 1}}}
    proc = reluflow("init", "--spec", json.dumps(spec), "--batch", "0", "--output", str(tmp_path / "i.nc"))
    assert proc.returncode == 2 and "network.width" in one_line_error(proc)


@pytest.mark.parametrize("damage", ["random", "truncated", "missing"])
def test_unreadable_init_file_exits_3_naming_the_file(init_file, tmp_path, damage):
    bad = tmp_path / "bad_init.nc"
    if damage == "random":
        bad.write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 8)
    elif damage == "truncated":
        data = init_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "traj.nc"
    proc = reluflow("simulate", "--init", str(bad), "--spec", json.dumps(FLOW_SPEC), "--output", str(out))
    assert proc.returncode == 3
    assert str(bad) in one_line_error(proc)
    assert not out.exists()


def test_a_trajectory_file_given_as_init_is_refused(init_file, tmp_path):
    traj = tmp_path / "traj.nc"
    assert reluflow("simulate", "--init", str(init_file), "--spec", json.dumps(FLOW_SPEC), "--output",
                    str(traj)).returncode == 0
    proc = reluflow("simulate", "--init", str(traj), "--spec", json.dumps(FLOW_SPEC), "--output", str(tmp_path / "y.nc"))
    assert proc.returncode == 3 and str(traj) in one_line_error(proc)
