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
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
from workflow_runner import copy_project, trajectory_files

from reluflow.files.trajectories import open_trajectory_dataset

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
_RULE = re.compile(r"^(?:local)?rule (\w+):", re.M)
# the plugin's SLURM log path names the rule: .snakemake/slurm_logs/rule_simulate/...
_SIMULATE_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: [^)]*rule_simulate")


def _cancel_one_running_simulate_job(cluster, proc, log_path, deadline):
    """scancel the first simulate job seen RUNNING in SLURM; returns its job id."""
    tried = set()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"snakemake ended before a simulate job could be cancelled:\n{log_path.read_text()[-4000:]}"
        for job_id in _SIMULATE_SUBMITTED.findall(log_path.read_text()):
            if job_id in tried:
                continue
            state = cluster.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
            if state == "RUNNING":
                cluster.run("scancel", job_id)
                return job_id
            if state not in ("PENDING", "CONFIGURING", ""):
                tried.add(job_id)  # finished before we got to it: try the next one
        time.sleep(0.2)
    raise AssertionError("no simulate job was seen running in SLURM")


def test_test_configuration_on_slurm_matches_the_local_run(slurm_cluster, completed_workflow, tmp_path):  # noqa: F811
    """The whole test configuration through the SLURM profile, with one simulate job killed by ``scancel``
    while it runs: Snakemake resubmits it (``retries: 1`` in the profile) and every number is still the
    local run's."""
    local_dir, _ = completed_workflow
    workdir = copy_project(tmp_path / "slurm_run")
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm",
           "--configfile", "config/test.yaml"]
    log_path = tmp_path / "snakemake.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **slurm_cluster.env})
    try:
        cancelled = _cancel_one_running_simulate_job(slurm_cluster, proc, log_path, time.monotonic() + 900)
        returncode = proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # let Snakemake cancel its jobs before giving up on it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log = log_path.read_text()
    assert returncode == 0, log[-6000:]
    # Snakemake saw the cancelled job fail and submitted it again
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in log, log[-4000:]
    assert slurm_cluster.wait_for_completion_records([cancelled])[cancelled].state == "CANCELLED"

    submitted = sorted(set(_SUBMITTED.findall(log)), key=int)
    local_rules = {"aggregate", "figure", "verdicts", "all"}
    remote_jobs = [r for r in _RULE.findall(log) if r not in local_rules]
    assert remote_jobs and set(remote_jobs) == {"init", "simulate"}
    assert cancelled in submitted and len(submitted) >= len(remote_jobs), (submitted, remote_jobs)
    records = slurm_cluster.wait_for_completion_records(submitted)
    completed = {job for job, rec in records.items() if rec.state == "COMPLETED"}
    # every simulate and init job (the cancelled one in its second attempt) has a COMPLETED record
    # written by slurmctld itself
    n_jobs = len(list((workdir / "results").glob("*/init/*/batch*.nc"))) + len(trajectory_files(workdir))
    assert len(completed) == n_jobs and cancelled not in completed, (records, n_jobs)

    local_files = trajectory_files(local_dir)
    slurm_files = trajectory_files(workdir)
    assert [p.relative_to(local_dir) for p in local_files] == [p.relative_to(workdir) for p in slurm_files]
    for a, b in zip(local_files, slurm_files):
        da, db = open_trajectory_dataset(a), open_trajectory_dataset(b)
        for name in da.data_vars:
            assert np.array_equal(da[name].values, db[name].values, equal_nan=da[name].dtype.kind == "f"), (a, name)
        assert da.attrs["config_json"] == db.attrs["config_json"]
    assert (workdir / "results" / "verdicts.csv").read_text() == (local_dir / "results" / "verdicts.csv").read_text()
