"""The reluflow pipeline on a real SLURM cluster gives the same numbers as a local run (issue 6).

The test configuration runs in a fresh project copy through ``workflow/profiles/slurm`` (executor
``slurm``) against the single-node cluster of ``scripts/slurm-cluster``. Proof that the init and simulate
jobs ran under SLURM: the plugin's "submitted with SLURM jobid N" lines, and slurmctld's own job-completion
log recording each of those ids as COMPLETED. Every trajectory file is then compared with the local run of
the same configuration (``completed_workflow``): the same numbers, bitwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from reluflow.dataset import open_trajectory_dataset
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
from workflow_runner import copy_project, trajectory_files

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
_RULE = re.compile(r"^(?:local)?rule (\w+):", re.M)


def test_test_configuration_on_slurm_matches_the_local_run(slurm_cluster, completed_workflow, tmp_path):  # noqa: F811
    local_dir, _ = completed_workflow
    workdir = copy_project(tmp_path / "slurm_run")
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm",
           "--configfile", "config/test.yaml"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, **slurm_cluster.env})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    submitted = sorted(set(_SUBMITTED.findall(log)), key=int)
    local_rules = {"aggregate", "figure", "verdicts", "all"}
    remote_jobs = [r for r in _RULE.findall(log) if r not in local_rules]
    assert remote_jobs and set(remote_jobs) == {"init", "simulate"}
    assert len(submitted) >= len(remote_jobs), (submitted, remote_jobs)
    records = slurm_cluster.wait_for_completion_records(submitted)
    completed = {job for job, rec in records.items() if rec.state == "COMPLETED"}
    # every simulate and init job has a COMPLETED record written by slurmctld itself
    assert len(completed) >= len(remote_jobs), (records, remote_jobs)

    local_files = trajectory_files(local_dir)
    slurm_files = trajectory_files(workdir)
    assert [p.relative_to(local_dir) for p in local_files] == [p.relative_to(workdir) for p in slurm_files]
    for a, b in zip(local_files, slurm_files):
        da, db = open_trajectory_dataset(a), open_trajectory_dataset(b)
        for name in da.data_vars:
            assert np.array_equal(da[name].values, db[name].values, equal_nan=da[name].dtype.kind == "f"), (a, name)
        assert da.attrs["config_json"] == db.attrs["config_json"]
    assert (workdir / "results" / "verdicts.csv").read_text() == (local_dir / "results" / "verdicts.csv").read_text()
