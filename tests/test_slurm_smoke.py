"""Snakemake on a real SLURM cluster through snakemake-executor-plugin-slurm (issue 6).

The workflow ``tests/data/slurm_smoke/Snakefile`` runs in a temporary copy with
``snakemake --executor slurm`` and the repository's profile ``workflow/profiles/slurm``
against the single-node cluster of ``scripts/slurm-cluster`` (see ``slurm_cluster.py``).

What proves that the jobs really ran as SLURM jobs, from three independent sources:
- each job writes the ``$SLURM_JOB_ID`` and ``$SLURMD_NODENAME`` it ran under (set by
  slurmd/slurmstepd, absent in a local run);
- slurmctld's job completion log has a record for each such id, with the job name the
  plugin gives all jobs of one run (the run UUID it prints) and the final state;
- the plugin's own log line "submitted with SLURM jobid N" names the same ids.

The retry test cancels a running job with ``scancel`` and checks that Snakemake
(``retries: 1`` from the profile) submits it again and the workflow completes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import (  # noqa: F401  (slurm_cluster: the session fixture)
    REPO_ROOT,
    SlurmCluster,
    _SessionLease,
    parse_jobcomp_log,
    slurm_cluster,
)

SMOKE_WORKFLOW = Path(__file__).parent / "data" / "slurm_smoke" / "Snakefile"
SLURM_PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm"

# Wall-clock limits, far above the ~30-60 s the runs take here (two Snakemake start-ups per
# job on 2 shared cores plus the plugin's status polling): they only stop a hung run.
WORKFLOW_TIMEOUT_S = 300
# The first attempt of `victim` starts within ~15 s of submission here.
VICTIM_START_TIMEOUT_S = 120

_RUN_UUID = re.compile(r"SLURM run ID: ([0-9a-f-]{36})")
_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")


def snakemake_command(workdir: Path, *targets: str) -> list[str]:
    """``snakemake --workflow-profile workflow/profiles/slurm`` on the copied smoke workflow."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        str(SLURM_PROFILE),
        "--snakefile",
        str(workdir / "Snakefile"),
        "--directory",
        str(workdir),
        *targets,
    ]


def copy_workflow(tmp_path: Path) -> Path:
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    shutil.copy(SMOKE_WORKFLOW, workdir / "Snakefile")
    return workdir


def read_record(path: Path) -> dict[str, str]:
    """The ``key=value`` lines a smoke job wrote."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def run_uuid(log: str) -> str:
    found = set(_RUN_UUID.findall(log))
    assert len(found) == 1, f"expected one 'SLURM run ID' in the Snakemake output, found {found}"
    return found.pop()


def cancel_run_jobs(cluster: SlurmCluster, uuid: str | None) -> None:
    """Cancel any job left by a failed run (its jobs are all named with the run UUID)."""
    if uuid:
        cluster.run("scancel", "--name", uuid, check=False)


# A line as slurmctld 22.05's jobcomp/filetxt wrote it on the test cluster.
JOBCOMP_LINE = (
    "JobId=13 UserId=root(0) GroupId=root(0) Name=e9c258f3-aee0-4cdb-84ed-82e8b02cc580 "
    "JobState=CANCELLED Partition=debug TimeLimit=30 StartTime=2026-11-23T12:10:20 "
    "EndTime=2026-11-23T12:10:28 NodeList=vm NodeCnt=1 ProcCnt=1 WorkDir=/tmp/rf-run "
    "ReservationName= Tres=cpu=1,mem=1000M,node=1,billing=1 Account= QOS= WcKey= "
    "Cluster=unknown SubmitTime=2026-11-23T12:10:19 EligibleTime=2026-11-23T12:10:19 "
    "DerivedExitCode=0:0 ExitCode=0:0 "
)


def test_parse_jobcomp_log() -> None:
    (record,) = parse_jobcomp_log(JOBCOMP_LINE + "\n\n")
    assert (record.job_id, record.name, record.state, record.node_list, record.exit_code) == (
        "13",
        "e9c258f3-aee0-4cdb-84ed-82e8b02cc580",
        "CANCELLED",
        "vm",
        "0:0",
    )
    assert record.fields["ReservationName"] == ""
    assert record.fields["Tres"] == "cpu=1,mem=1000M,node=1,billing=1"
    with pytest.raises(ValueError, match="line 2"):
        parse_jobcomp_log(JOBCOMP_LINE + "\nnot a record\n")


def test_session_lease_last_user_stops_only_what_tests_started(tmp_path: Path) -> None:
    # Two sessions share a cluster: only the last one to leave may stop it, and only when
    # the running controller is the one a test session started.
    state_dir = tmp_path / "slurm"
    (state_dir / "run").mkdir(parents=True)
    pid_file = state_dir / "run" / "slurmctld.pid"
    pid_file.write_text("4242\n")
    first, second = _SessionLease(state_dir), _SessionLease(state_dir)
    assert not first.started_by_tests()  # no marker: started by hand
    first.mark_started()
    first.join()
    second.join()
    assert first.started_by_tests() and second.started_by_tests()
    assert first.leave() is False  # the second session still uses the cluster
    assert second.leave() is True
    pid_file.write_text("4343\n")  # restarted by hand since: not the tests' cluster
    assert not second.started_by_tests()


@pytest.mark.parametrize(
    ("ci", "exit_code", "summary", "message"),
    [
        (None, 0, "1 skipped", "SLURM test cluster unavailable: "),
        ("true", 1, "1 error", "SLURM test cluster unavailable in CI (CI=true): "),
    ],
)
def test_fixture_skips_outside_ci_and_fails_in_ci(
    tmp_path: Path, ci: str | None, exit_code: int, summary: str, message: str
) -> None:
    # A state folder the cluster script refuses makes the cluster unavailable before
    # anything is started: the fixture must skip, or fail under CI=true, with the reason.
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    env["RELUFLOW_SLURM_DIR"] = "not/absolute"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            f"{Path(__file__)}::test_workflow_runs_as_slurm_jobs",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == exit_code, out
    assert summary in out.splitlines()[-1], out
    assert message in out, out
    assert "RELUFLOW_SLURM_DIR must be an absolute path" in out, out


@pytest.mark.slurm
def test_workflow_runs_as_slurm_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    started = time.monotonic()
    proc = subprocess.run(
        snakemake_command(workdir),
        env=dict(slurm_cluster.env),
        capture_output=True,
        text=True,
        timeout=WORKFLOW_TIMEOUT_S,
    )
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake failed after {elapsed:.0f} s:\n{log[-6000:]}"
    uuid = run_uuid(log)

    # The jobs did their work: 2*2, 3*3 and their sum, computed inside the SLURM jobs.
    outputs = {
        "square_2": workdir / "results" / "square_2.txt",
        "square_3": workdir / "results" / "square_3.txt",
        "summary": workdir / "results" / "summary.txt",
    }
    records = {name: read_record(path) for name, path in outputs.items()}
    assert {name: r["value"] for name, r in records.items()} == {
        "square_2": "4",
        "square_3": "9",
        "summary": "13",
    }

    # Each job ran inside its own SLURM job, on the cluster's node.
    (node,) = slurm_cluster.node_names()
    job_ids = {name: r["slurm_job_id"] for name, r in records.items()}
    assert all(j.isdigit() for j in job_ids.values()), f"a job ran outside SLURM: {job_ids}"
    assert len(set(job_ids.values())) == 3, f"jobs share a SLURM job id: {job_ids}"
    assert {r["slurm_node"] for r in records.values()} == {node}

    # The plugin submitted exactly these jobs ...
    assert set(_SUBMITTED.findall(log)) == set(job_ids.values()), log[-4000:]
    # ... and slurmctld recorded each of them as COMPLETED (exit 0) under this run's name;
    # no other job of this run exists (nothing failed and was retried).
    comp = slurm_cluster.wait_for_completion_records(job_ids.values())
    assert comp.keys() == set(job_ids.values()), (
        f"missing completion records for {set(job_ids.values()) - comp.keys()} "
        f"in {slurm_cluster.jobcomp_log}"
    )
    for name, job_id in job_ids.items():
        record = comp[job_id]
        assert (record.state, record.exit_code, record.name, record.node_list) == (
            "COMPLETED",
            "0:0",
            uuid,
            node,
        ), f"{name}: {record.fields}"
    run_jobs = {j for j, r in slurm_cluster.completion_records().items() if r.name == uuid}
    assert run_jobs == set(job_ids.values())


@pytest.mark.slurm
def test_cancelled_job_is_retried(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    log_path = tmp_path / "snakemake.log"
    started_1 = workdir / "retry" / "started_attempt_1"
    uuid = None
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            snakemake_command(workdir, "retry/victim.txt"),
            env=dict(slurm_cluster.env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        # Wait until the first attempt's shell command runs inside its SLURM job.
        deadline = time.monotonic() + VICTIM_START_TIMEOUT_S
        while not (started_1.exists() and started_1.read_text().strip()):
            assert proc.poll() is None, f"snakemake ended early:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "first attempt of `victim` never started"
            time.sleep(0.5)
        uuid = run_uuid(log_path.read_text())
        first_id = started_1.read_text().strip()
        state_and_rule = slurm_cluster.run("squeue", "-h", "-j", first_id, "-o", "%T|%k|%j").stdout
        assert state_and_rule.strip() == f"RUNNING|rule_victim|{uuid}", state_and_rule

        slurm_cluster.run("scancel", first_id)
        rc = proc.wait(timeout=WORKFLOW_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            # Let Snakemake cancel its jobs, as on Ctrl-C, before giving up on it.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cancel_run_jobs(slurm_cluster, uuid)
    log = log_path.read_text()
    assert rc == 0, f"snakemake did not complete after the cancellation:\n{log[-6000:]}"

    # Snakemake saw the cancellation as a failure of the first attempt ...
    assert f"SLURM-job '{first_id}' failed, SLURM status is: 'CANCELLED'" in log, log[-4000:]
    # ... and the output comes from a second attempt in a new SLURM job.
    victim = read_record(workdir / "retry" / "victim.txt")
    second_id = victim["slurm_job_id"]
    assert victim["attempt"] == "2"
    assert second_id.isdigit() and second_id != first_id
    assert (workdir / "retry" / "started_attempt_2").read_text().strip() == second_id

    comp = slurm_cluster.wait_for_completion_records([first_id, second_id])
    assert comp.keys() == {first_id, second_id}, f"records found: {sorted(comp)}"
    assert (comp[first_id].state, comp[first_id].name) == ("CANCELLED", uuid), comp[first_id].fields
    assert (comp[second_id].state, comp[second_id].exit_code, comp[second_id].name) == (
        "COMPLETED",
        "0:0",
        uuid,
    ), comp[second_id].fields
