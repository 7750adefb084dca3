"""Atomic replacement of trajectory files: an interrupted writer never leaves a partial file at the path.

The central test kills a writer subprocess with SIGKILL at random moments while it replaces an existing
file, and checks that the path then holds a complete file, bitwise the previous or the new one (SHA-256 of
theta compared with what the writer computed). A control test runs the same harness on a naive
``Dataset.to_netcdf(path)`` writer and shows that the harness detects the damage that one does.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from reluflow.files import atomic as atomicio
from reluflow.files import trajectories as D
from reluflow.files.trajectories import (
    TEMPORARY_FILE_PATTERN,
    TrajectoryFileError,
    open_trajectory_dataset,
    write_trajectory_dataset,
)
from reluflow.model.network import ParameterLayout, n_params

# The writer: generation g builds a batch from seed g (title "generation g"), prints the SHA-256 of theta,
# then "writing", writes with the given method and prints "done".
WRITER = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    from reluflow.files import trajectories as D
    from reluflow.model.network import ParameterLayout, n_params
    path, generation, runs, method = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(generation)
    T, H = 200, 16
    n = n_params(1, H, 1)
    theta = rng.standard_normal((runs, T, n))  # incompressible: the write takes long enough to be hit
    runs_arrays = D.RunArrays(
        theta=theta, time=np.geomspace(1e-3, 1e3, T), risk=rng.random((runs, T)),
        grad_norm=rng.random((runs, T)), param_norm=rng.random((runs, T)),
        energy_residual=rng.random((runs, T)), status=np.zeros(runs, int), t_final=np.full(runs, 1e3),
        run_ids=np.arange(runs), critical_risk=rng.random(runs), critical_grad_norm=rng.random(runs))
    info = D.FileInfo(scenario="kill_test", title=f"generation {generation}", config={"generation": generation},
                      history="kill test")
    ds = D.build_trajectory_dataset(runs_arrays, ParameterLayout(1, H, 1), info)
    print(hashlib.sha256(theta.tobytes()).hexdigest(), flush=True)
    print("writing", flush=True)
    if method == "atomic":
        D.write_trajectory_dataset(ds, path)
    else:
        ds.to_netcdf(path, engine="netcdf4", encoding=D.storage_encoding(ds))
    print("done", flush=True)
    """
)


def start_writer(script: Path, path: Path, generation: int, runs: int, method: str):
    process = subprocess.Popen(
        [sys.executable, str(script), str(path), str(generation), str(runs), method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    digest = process.stdout.readline().strip()
    assert process.stdout.readline().strip() == "writing", process.stderr.read()
    return process, digest, time.perf_counter()


def finish_writer(process) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and out.strip() == "done", err


def theta_digest(path: Path) -> tuple[str, str]:
    """(title, SHA-256 of theta) of a complete, valid file; raises TrajectoryFileError otherwise."""
    ds = open_trajectory_dataset(path)
    return ds.attrs["title"], hashlib.sha256(np.ascontiguousarray(ds["theta"].values).tobytes()).hexdigest()


def calibrate(script: Path, path: Path, method: str) -> tuple[int, float, str]:
    """Write generation 0 completely; grow the batch until one write takes more than 0.5 s, so that a kill
    at a random moment of the write lands inside it. Returns (runs, write duration, digest)."""
    runs = 400
    while True:
        process, digest, started = start_writer(script, path, 0, runs, method)
        finish_writer(process)
        duration = time.perf_counter() - started
        if duration > 0.5 or runs >= 6400:
            assert duration > 0.5, f"writing {runs} runs took only {duration:.2f} s"
            return runs, duration, digest
        runs *= 2


def other_entries(folder: Path, path: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != path.name and name != "writer.py")


def test_killed_writer_leaves_the_previous_or_the_new_complete_file(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "batch.nc"
    runs, duration, digest0 = calibrate(script, path, "atomic")
    expected = {"generation 0": digest0}
    assert theta_digest(path) == ("generation 0", digest0)
    current = "generation 0"
    rng = np.random.default_rng(20240607)  # fixed, so a failure can be replayed
    interrupted = 0
    for generation in range(1, 5):
        process, digest, started = start_writer(script, path, generation, runs, "atomic")
        expected[f"generation {generation}"] = digest
        delay = rng.uniform(0.05, 0.95) * duration
        time.sleep(max(0.0, started + delay - time.perf_counter()))
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        killed = process.returncode == -signal.SIGKILL
        # the path holds a complete, valid file: the previous one, or the new one if the rename happened
        title, found = theta_digest(path)
        assert title in (current, f"generation {generation}"), title
        assert found == expected[title]
        if killed and title == current:
            interrupted += 1
        current = title
        # leftovers are hidden temporary files that no result pattern matches
        leftovers = other_entries(tmp_path, path)
        assert all(TEMPORARY_FILE_PATTERN.match(name) for name in leftovers), leftovers
        assert sorted(p.name for p in tmp_path.glob("*.nc")) == ["batch.nc"]
    # the kills must really have hit writes in progress, else this test proved nothing
    assert interrupted >= 2, interrupted


def test_the_kill_harness_detects_a_non_atomic_writer(tmp_path):
    """Control: the same kill on ``to_netcdf(path)`` leaves a file that fails the checks above."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "batch.nc"
    runs, duration, _ = calibrate(script, path, "naive")
    process, digest, started = start_writer(script, path, 1, runs, "naive")
    time.sleep(max(0.0, started + 0.5 * duration - time.perf_counter()))
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    try:
        title, found = theta_digest(path)
    except TrajectoryFileError as exc:  # the usual outcome: a partial HDF5 file
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:  # readable, but then it is neither complete file
        assert title != "generation 0" and found != digest


def small_batch(title="old") -> xr.Dataset:
    rng = np.random.default_rng(1)
    m, t, n = 3, 4, n_params(1, 2, 1)
    runs = D.RunArrays(
        theta=rng.standard_normal((m, t, n)),
        time=np.arange(1.0, t + 1),
        risk=rng.random((m, t)),
        grad_norm=rng.random((m, t)),
        param_norm=rng.random((m, t)),
        energy_residual=rng.random((m, t)),
        status=np.zeros(m, int),
        t_final=np.full(m, float(t)),
        run_ids=np.arange(m),
        critical_risk=rng.random(m),
        critical_grad_norm=rng.random(m),
    )
    return D.build_trajectory_dataset(runs, ParameterLayout(1, 2, 1), D.FileInfo(scenario="s", title=title, config={},
                                                                                  history="test"))


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_removes_the_temporary_file_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    path = write_trajectory_dataset(small_batch("old"), tmp_path / "batch.nc")
    seen = []

    def failing_fsync(target, directory=False):
        seen.append(Path(target))
        assert Path(target).exists()  # the temporary file was fully written when the failure hits
        raise error

    monkeypatch.setattr(atomicio, "fsync_path", failing_fsync)
    with pytest.raises(type(error)):
        write_trajectory_dataset(small_batch("new"), path)
    assert len(seen) == 1 and TEMPORARY_FILE_PATTERN.match(seen[0].name) and seen[0].parent == tmp_path
    assert sorted(os.listdir(tmp_path)) == ["batch.nc"]
    assert open_trajectory_dataset(path).attrs["title"] == "old"


def test_failure_inside_the_netcdf_writer_removes_the_temporary_file(tmp_path, monkeypatch):
    def half_written(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\x89HDF\r\n\x1a\n partial")
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_written)
    with pytest.raises(RuntimeError):
        write_trajectory_dataset(small_batch(), tmp_path / "batch.nc")
    assert os.listdir(tmp_path) == []


def test_written_file_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_trajectory_dataset(small_batch(), tmp_path / "sub" / "batch.nc")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
