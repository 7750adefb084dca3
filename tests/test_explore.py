"""The explore kind end to end: a teacher network in d = 1, classified end points, figure and animation; the
resource guard that refuses configurations which would not fit, before any job."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from workflow_runner import copy_project, load_config, run_snakemake, snakemake_command, write_config

import reluflow
from reluflow.experiments.animation import MAX_FRAMES

TEACHER = {"kind": "relu_network", "inner_weights": [4.0, -3.0], "inner_biases": [-1.0, 2.0],
           "outer_weights": [1.0, 0.5], "outer_bias": [-0.2]}

EXPLORE = {
    "scenarios": [
        {
            "name": "teacher_demo",
            "kind": "explore",
            "animate": True,
            "problem": {"network": {"input_dim": 1, "width": 3, "output_dim": 1}, "domain": [0.0, 1.0],
                        "target": TEACHER, "measure": {"kind": "uniform"}},
            "init": {"scheme": "gaussian", "n_runs": 2, "scale": 1.0},
            "flows": [{"label": "gf", "flow": "standard", "t_max": 100.0, "save": {"n": 12, "t_min": 0.01}}],
            "batch_size": 2,
            "cases": [
                {"name": "random"},
                # the student is the teacher itself (width 2, no perturbation): risk 0 from the start
                {"name": "at_teacher", "problem": {"network": {"width": 2}},
                 "init": {"scheme": "teacher", "n_runs": 2, "scale": 0.01, "perturbation": 0.0}},
            ],
        }
    ]
}


def test_a_run_at_the_h2_critical_point_is_classified_a_saddle():
    """MATH.md section 5: for f = alpha x + beta on [0, 1] (uniform) the neurons (-1, 2/3, -2/3 alpha) and
    (1, -1/3, 2/3 alpha) with c = beta + alpha/2 are critical with risk alpha^2/972; their kinks 1/3, 2/3 lie
    inside (0, 1), the Hessian exists and has a negative eigenvalue: a saddle, so the flow started there stays
    (G = 0) and its end point is classified as such in the trajectory file."""
    alpha, beta = 2.0, -1.0
    problem = reluflow.Problem.from_config({"network": {"width": 2}, "domain": [0.0, 1.0],
                                            "target": {"kind": "affine", "slope": alpha, "intercept": beta}})
    theta = np.array([-1.0, 1.0, 2 / 3, -1 / 3, -2 / 3 * alpha, 2 / 3 * alpha, beta + alpha / 2])
    assert problem.risk(theta) == pytest.approx(alpha**2 / 972, rel=1e-12)
    ds = reluflow.simulate(problem, theta, t_max=10.0)
    assert ds["end_point"].values.tolist() == ["saddle"]
    assert ds["min_eigenvalue"].values[0] < 0
    assert float(ds["critical_risk"].values[0]) == pytest.approx(alpha**2 / 972, rel=1e-10)


@pytest.mark.slow
def test_an_explore_configuration_with_a_teacher_runs_end_to_end(tmp_path):
    workdir = copy_project(tmp_path / "project")
    write_config(workdir, EXPLORE, "explore.yaml")
    run_snakemake(workdir, configfile="config/explore.yaml")
    results = workdir / "results"
    files = sorted((results / "teacher_demo" / "trajectories").rglob("batch*.nc"))
    assert [f.parent.parent.name for f in files] == ["at_teacher", "random"]
    summary = pd.read_csv(results / "teacher_demo" / "summary.csv")
    assert {"end_point", "min_eigenvalue"} <= set(summary.columns)
    at_teacher = summary[summary["case"] == "at_teacher"]
    assert (at_teacher["end_point"] == "global_minimum").all()
    assert (at_teacher["initial_risk"] < 1e-20).all() and (at_teacher["final_risk"] < 1e-20).all()
    assert set(summary["end_point"]) <= {"global_minimum", "local_minimum", "saddle", "nonsmooth", "not_converged"}
    verdict = pd.read_csv(results / "teacher_demo" / "verdict.csv")
    assert any(check.endswith(": outcome") for check in verdict["check"])
    assert (results / "figures" / "teacher_demo.png").stat().st_size > 10_000
    for case in ("random", "at_teacher"):
        gif = results / "figures" / "teacher_demo" / f"{case}.gif"
        assert gif.stat().st_size < 5 * 2**20  # a few MB at most
        with Image.open(gif) as image:
            assert image.format == "GIF" and 2 <= image.n_frames <= MAX_FRAMES


def _huge(path, value) -> dict:
    config = load_config("config.yaml")
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return config


HUGE = [
    (("scenarios", 0, "init", "n_runs"), 1_000_000_000, "scenarios[0].init.n_runs"),
    (("scenarios", 0, "problem", "network", "width"), 200_000, "scenarios[0].problem.network.width"),
]


@pytest.mark.parametrize("path,value,key", HUGE, ids=["n_runs", "width"])
def test_check_config_refuses_jobs_that_would_not_fit(path, value, key, tmp_path):
    config = tmp_path / "huge.yaml"
    config.write_text(yaml.safe_dump(_huge(path, value)))
    exe = Path(sys.executable).with_name("reluflow")
    proc = subprocess.run([str(exe), "check-config", str(config)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.split("error: ", 1)[1].startswith(key + ":"), proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path,value,key", HUGE, ids=["n_runs", "width"])
def test_a_dry_run_refuses_jobs_that_would_not_fit_in_seconds(path, value, key, tmp_path):
    """Before the guard a dry run with n_runs = 1e9 spent minutes building the DAG; now it stops while the
    configuration is read. The bound of 60 s is far above the few seconds this takes even on a loaded machine
    and far below the minutes of the DAG."""
    workdir = copy_project(tmp_path / "project")
    write_config(workdir, _huge(path, value), "huge.yaml")
    started = time.monotonic()
    proc = subprocess.run(snakemake_command() + ["-n", "--configfile", "config/huge.yaml"], cwd=workdir,
                          capture_output=True, text=True, timeout=600)
    assert time.monotonic() - started < 60
    assert proc.returncode != 0 and f"invalid configuration: {key}:" in proc.stdout + proc.stderr
