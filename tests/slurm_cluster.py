"""A real single-node SLURM cluster for tests (issue 6): a session fixture and helpers.

The cluster is started by ``scripts/slurm-cluster start`` (Debian's slurmctld + slurmd +
munged on this machine, installed with apt-get when missing) and stopped again by
``scripts/slurm-cluster stop`` at the end of the session; nothing is mocked.

Use it from a test module (pytest's default import mode puts ``tests/`` on ``sys.path``
because ``tests/`` has no ``__init__.py``)::

    from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)

    @pytest.mark.slurm
    def test_something(slurm_cluster):
        subprocess.run([...], env=slurm_cluster.env)

or from a conftest with ``pytest_plugins = ["slurm_cluster"]``.

Outside CI the fixture skips, saying why, when it cannot act as root (directly or through
password-less ``sudo -n``) or cannot install or start SLURM. With ``CI=true`` in the
environment the same conditions fail the tests instead: CI must really run them.

A cluster that is already up in the state folder (``RELUFLOW_SLURM_DIR``, default
``/tmp/reluflow-slurm``) is used as it is. Several pytest sessions may run at once on a
shared machine, so the cluster is stopped by the last session using it, and only if a
test session started it (a cluster started by hand is left running). File locks next to
the state folder arbitrate: ``<dir>.pytest-start.lock`` (exclusive, around start and
stop), ``<dir>.pytest-users.lock`` (held shared by every session using the cluster) and
the marker ``<dir>.pytest-started`` (the pid of the slurmctld a test session started).

Without an accounting database ``sacct`` knows no jobs. The independent record of what
SLURM ran is slurmctld's job completion log (``JobCompType=jobcomp/filetxt``): one line of
``Key=Value`` fields per finished job, parsed by :func:`parse_jobcomp_log`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "slurm-cluster"

# Installing SLURM on a fresh machine (apt-get update + install) takes up to a few minutes;
# starting the daemons takes seconds.
START_TIMEOUT_S = 900
STOP_TIMEOUT_S = 120

_JOBCOMP_FIELD = re.compile(r"(\w+)=(\S*)")


def in_ci() -> bool:
    """True when the environment says this is a CI run (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    """Skip the requesting test with ``reason``, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"SLURM test cluster unavailable in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


@dataclass(frozen=True)
class JobCompletionRecord:
    """One finished job as slurmctld's ``jobcomp/filetxt`` plugin wrote it.

    ``fields`` holds every ``Key=Value`` pair of the line; the attributes are the ones the
    tests read. Values are split at blanks, which is exact for the fields written here
    (ids, states, node lists, times, the plugin's job name, a run UUID).
    """

    job_id: str
    name: str
    state: str
    node_list: str
    exit_code: str
    fields: Mapping[str, str]


def parse_jobcomp_log(text: str) -> list[JobCompletionRecord]:
    """Parse a ``jobcomp/filetxt`` log: one record per non-blank line, in file order.

    Raises ``ValueError`` naming the line when a line lacks ``JobId`` or ``JobState``.
    """
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = dict(_JOBCOMP_FIELD.findall(line))
        if "JobId" not in fields or "JobState" not in fields:
            raise ValueError(f"job completion log line {line_no} has no JobId/JobState: {line!r}")
        records.append(
            JobCompletionRecord(
                job_id=fields["JobId"],
                name=fields.get("Name", ""),
                state=fields["JobState"],
                node_list=fields.get("NodeList", ""),
                exit_code=fields.get("ExitCode", ""),
                fields=fields,
            )
        )
    return records


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: where its files are and how to talk to it.

    ``env`` is this process's environment plus ``SLURM_CONF``: pass it to every process
    that runs SLURM client commands (``sbatch``, ``squeue``, ``scancel``, Snakemake with
    ``--executor slurm``).
    """

    state_dir: Path
    slurm_conf: Path
    jobcomp_log: Path
    env: Mapping[str, str] = field(repr=False)
    started_by_tests: bool

    def run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (e.g. ``"squeue", "-h"``) against this cluster."""
        return subprocess.run(
            list(args),
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def node_names(self) -> list[str]:
        """The cluster's node names, as ``sinfo`` reports them."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N").stdout
        return sorted(set(out.split()))

    def completion_records(self) -> dict[str, JobCompletionRecord]:
        """Job id -> its completion record (the last one, should a job be requeued)."""
        if not self.jobcomp_log.exists():
            return {}
        return {r.job_id: r for r in parse_jobcomp_log(self.jobcomp_log.read_text())}

    def wait_for_completion_records(
        self, job_ids: Iterable[str], timeout: float = 20
    ) -> dict[str, JobCompletionRecord]:
        """The completion records of ``job_ids``, waiting up to ``timeout`` s for them.

        slurmctld writes a record when the job ends; a client that saw the end through
        ``squeue`` may look a moment before the line reaches the file. Returns whatever
        records exist at the deadline (the caller asserts on completeness).
        """
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            records = self.completion_records()
            if wanted <= records.keys() or time.monotonic() > deadline:
                return {j: records[j] for j in wanted if j in records}
            time.sleep(0.5)


def _root_command_prefix() -> list[str] | None:
    """How to run the cluster script as root: [] when root, sudo when allowed, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        return None
    probe = subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30)
    return [sudo, "-n"] if probe.returncode == 0 else None


def _script_command(prefix: list[str], action: str) -> list[str]:
    # Through `env` so that sudo passes the chosen state folder on.
    state_dir = os.environ.get("RELUFLOW_SLURM_DIR")
    env_args = ["env", f"RELUFLOW_SLURM_DIR={state_dir}"] if state_dir else []
    return [*prefix, *env_args, "bash", str(SLURM_CLUSTER_SCRIPT), action]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _script_paths() -> dict[str, str]:
    """RELUFLOW_SLURM_DIR, SLURM_CONF and RELUFLOW_SLURM_JOBCOMP_LOG as the script sets them."""
    out = subprocess.run(
        ["bash", str(SLURM_CLUSTER_SCRIPT), "env"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    paths = {}
    for line in out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            paths[key] = value
    return paths


class _SessionLease:
    """This session's claim on the cluster (see the module doc for the protocol)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.start_lock_path = Path(f"{state_dir}.pytest-start.lock")
        self.users_lock_path = Path(f"{state_dir}.pytest-users.lock")
        self.started_marker = Path(f"{state_dir}.pytest-started")
        self._users_fd: int | None = None

    def _controller_pid(self) -> str:
        try:
            return (self.state_dir / "run" / "slurmctld.pid").read_text().strip()
        except OSError:
            return ""

    def mark_started(self) -> None:
        """Record that a test session started the running controller (by its pid)."""
        self.started_marker.write_text(self._controller_pid())

    def started_by_tests(self) -> bool:
        """True when the running controller is the one a test session started (a cluster
        restarted by hand since then has another pid and is not the tests' to stop)."""
        try:
            marked = self.started_marker.read_text().strip()
        except OSError:
            return False
        return bool(marked) and marked == self._controller_pid()

    @staticmethod
    def _open(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:  # other users' sessions must be able to lock it too
            os.fchmod(fd, 0o666)
        except PermissionError:
            pass
        return fd

    def exclusive_start_stop(self) -> int:
        """Block until no other session is starting or stopping; returns the fd to release."""
        fd = self._open(self.start_lock_path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    @staticmethod
    def release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def join(self) -> None:
        """Count this session as a user (a shared lock held until :meth:`leave`)."""
        fd = self._open(self.users_lock_path)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._users_fd = fd

    def leave(self) -> bool:
        """Stop counting as a user; True when no other session uses the cluster."""
        if self._users_fd is not None:
            self.release(self._users_fd)
            self._users_fd = None
        fd = self._open(self.users_lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.release(fd)
        return True


def start_cluster(lease_holder: list[_SessionLease] | None = None) -> SlurmCluster:
    """Start the cluster (or find it running); skip/fail via :func:`unavailable` if impossible.

    The session's lease is appended to ``lease_holder``; pass it to :func:`stop_cluster`.
    """
    if not SLURM_CLUSTER_SCRIPT.exists():
        unavailable(f"{SLURM_CLUSTER_SCRIPT} is missing")
    prefix = _root_command_prefix()
    if prefix is None:
        unavailable("not root and no password-less sudo: cannot install or start SLURM daemons")
    problem = None
    try:
        paths = _script_paths()
    except subprocess.CalledProcessError as exc:
        problem = f"`scripts/slurm-cluster env` failed: {exc.stderr.strip()}"
    except subprocess.TimeoutExpired:
        problem = "`scripts/slurm-cluster env` did not answer within 30 s"
    if problem is not None:
        unavailable(problem)
    env = dict(os.environ)
    env["SLURM_CONF"] = paths["SLURM_CONF"]
    state_dir = Path(paths["RELUFLOW_SLURM_DIR"])

    lease = _SessionLease(state_dir)
    start_fd = lease.exclusive_start_stop()
    try:
        status = subprocess.run(
            _script_command(prefix, "status"), capture_output=True, text=True, timeout=60
        )
        if status.returncode != 0:
            problem = None
            try:
                started = subprocess.run(
                    _script_command(prefix, "start"),
                    capture_output=True,
                    text=True,
                    timeout=START_TIMEOUT_S,
                )
                if started.returncode != 0:
                    problem = (
                        "`scripts/slurm-cluster start` failed "
                        f"(exit {started.returncode}):\n{_tail(started.stdout + started.stderr)}"
                    )
            except subprocess.TimeoutExpired:
                problem = f"`scripts/slurm-cluster start` took more than {START_TIMEOUT_S} s"
            if problem is not None:
                subprocess.run(
                    _script_command(prefix, "stop"), capture_output=True, timeout=STOP_TIMEOUT_S
                )
                unavailable(problem)
            lease.mark_started()
        lease.join()
    finally:
        lease.release(start_fd)
    if lease_holder is not None:
        lease_holder.append(lease)
    return SlurmCluster(
        state_dir=state_dir,
        slurm_conf=Path(paths["SLURM_CONF"]),
        jobcomp_log=Path(paths["RELUFLOW_SLURM_JOBCOMP_LOG"]),
        env=env,
        started_by_tests=lease.started_by_tests(),
    )


def stop_cluster(lease: _SessionLease) -> None:
    """End this session's use; stop the cluster if no other session uses it and tests
    started it (a cluster started by hand is left running)."""
    start_fd = lease.exclusive_start_stop()
    try:
        if not lease.leave() or not lease.started_by_tests():
            return
        prefix = _root_command_prefix() or []
        stopped = subprocess.run(
            _script_command(prefix, "stop"), capture_output=True, text=True, timeout=STOP_TIMEOUT_S
        )
        if stopped.returncode != 0:
            raise RuntimeError(
                f"`scripts/slurm-cluster stop` failed (exit {stopped.returncode}):\n"
                f"{_tail(stopped.stdout + stopped.stderr)}"
            )
        lease.started_marker.unlink(missing_ok=True)
    finally:
        lease.release(start_fd)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-node SLURM cluster for the whole test session (see module doc)."""
    leases: list[_SessionLease] = []
    cluster = start_cluster(leases)
    try:
        yield cluster
    finally:
        stop_cluster(leases[0])
