"""The trajectory file format: bitwise round trip, plain-xarray readability, refusal of bad files, concatenation.

All comparisons here are exact (bitwise or ``assert_identical``): the format promises lossless storage, so
there is no tolerance to state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from reluflow.dynamics.certify import Certificate
from reluflow.dynamics.solvers.result import STATUS_MEANINGS, SolveResult, Status
from reluflow.files import provenance
from reluflow.files import trajectories as D
from reluflow.files.trajectories import (
    SCHEMA_VERSION,
    FileInfo,
    RunArrays,
    SavedDiagnostics,
    TrajectoryFileError,
    build_from_solve_result,
    build_trajectory_dataset,
    open_trajectories,
    open_trajectory_dataset,
    validate_trajectory_dataset,
    write_trajectory_dataset,
)
from reluflow.model.network import ParameterLayout, n_params

HISTORY = "2024-01-01T00:00:00+00:00: reluflow simulate --test"

# NaNs with different bit patterns (quiet NaN, negative NaN, NaN with a payload): a lossless format keeps each
NAN_PATTERNS = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000123], dtype=np.uint64).view(
    np.float64
)


def batch_arguments(rng, run_ids, *, n_times=9, d=2, h=3, k=2, normalized=True, time=None, scenario="jr_affine"):
    """Random batch with the features a real batch has: diverged runs (NaN tails of several bit patterns),
    every status code, string and unsigned per-run metadata, integer extras, signed zeros, infinities and
    subnormals."""
    run_ids = np.asarray(run_ids)
    m = run_ids.size
    n = n_params(d, h, k)
    theta = rng.standard_normal((m, n_times, n))
    risk = rng.random((m, n_times))
    status = np.array([int(Status(r % len(Status))) for r in run_ids], dtype=np.int64)
    for row, code in enumerate(status):
        if code == Status.DIVERGED:  # NaN after the run blew up, one bit pattern per row
            theta[row, n_times // 2 :] = NAN_PATTERNS[row % 3]
            risk[row, n_times // 2 :] = NAN_PATTERNS[(row + 1) % 3]
    theta[0, 0, 0] = -0.0
    theta[0, 0, 1] = 5e-324  # smallest subnormal
    risk[0, -1] = np.inf
    schemes = np.array(["gaussian" if r % 2 else "near_exact" for r in run_ids])
    return dict(
        theta=theta,
        time=np.geomspace(1e-3, 1e2, n_times) if time is None else time,
        risk=risk,
        grad_norm=rng.random((m, n_times)),
        param_norm=rng.random((m, n_times)),
        energy_residual=rng.standard_normal((m, n_times)) * 1e-12,
        status=status,
        t_final=rng.random(m),
        run_ids=run_ids,
        critical_risk=np.where(status == Status.DIVERGED, np.nan, rng.random(m)),
        critical_grad_norm=rng.random(m),
        constraint_drift=rng.random((m, n_times)) if normalized else None,
        init={
            "init_scheme": schemes,
            "init_scale": rng.random(m),
            "initial_risk": rng.random(m),
            "seed": (run_ids.astype(np.uint64) * np.uint64(2**40) + np.uint64(2**63)),  # > int64 max
        },
        extra={
            "n_steps": rng.integers(0, 1000, (m, n_times)),
            "n_rejected": rng.integers(0, 10, (m, n_times)).astype(np.int32),  # stored as int64
            "critical_distance": rng.random(m),
            "neuron_balance": (
                ("run", "time", "neuron"),
                rng.standard_normal((m, n_times, h)),
                {"units": "1", "long_name": "|V[:,i]|^2 - |w_i|^2 - b_i^2", "valid_max": 1e3},
            ),
        },
        scenario=scenario,
        title="JR Theorem 1.2, affine target",
        config={"network": {"input_dim": d, "width": h, "output_dim": k}, "flow": {"rtol": 1e-10}},
        input_dim=d,
        width=h,
        output_dim=k,
        seed=2**100 + 7,
        history=HISTORY,
        attrs={"case": "base", "batch": 3, "tolerances": [1e-10, 1e-12]},
    )


RUN_FIELDS = ("theta", "time", "risk", "grad_norm", "param_norm", "energy_residual", "status", "t_final", "run_ids",
              "critical_risk", "critical_grad_norm", "constraint_drift")
INFO_FIELDS = ("scenario", "title", "config", "seed", "history", "attrs")


def build(arguments: dict):
    """:func:`build_trajectory_dataset` from the flat arguments of :func:`batch_arguments`."""
    a = dict(arguments)
    runs = RunArrays(**{name: a.pop(name) for name in RUN_FIELDS if name in a})
    info = FileInfo(**{name: a.pop(name) for name in INFO_FIELDS if name in a})
    layout = ParameterLayout(a.pop("input_dim"), a.pop("width"), a.pop("output_dim"))
    return build_trajectory_dataset(runs, layout, info, **a)


def make_batch(run_ids=(0, 1, 2, 3, 4, 5), seed=0, **kwargs):
    return build(batch_arguments(np.random.default_rng(seed), run_ids, **kwargs))


def bits(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values).tobytes()


def assert_attrs_bitwise(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert type(a[key]) is type(b[key]), key
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def assert_bitwise_identical(expected: xr.Dataset, actual: xr.Dataset) -> None:
    """assert_identical, plus: same dtypes, same bytes (NaN payloads, signed zeros), same attribute types."""
    xr.testing.assert_identical(expected, actual)
    assert list(expected.variables) == list(actual.variables)
    for name in expected.variables:
        assert expected[name].dtype == actual[name].dtype, name
        assert expected[name].dims == actual[name].dims, name
        assert bits(expected[name].values) == bits(actual[name].values), name
        assert_attrs_bitwise(expected[name].attrs, actual[name].attrs)
    assert_attrs_bitwise(expected.attrs, actual.attrs)


# ----------------------------------------------------------------------------------------------------------
# layout


def test_parameter_coordinates_follow_the_math_layout():
    d, h, k = 2, 3, 2
    coords = ParameterLayout(d, h, k).coordinates()
    n = d * h + h + k * h + k
    assert coords["param"].tolist() == list(range(n))
    names = coords["param_name"].tolist()
    # independent of the builder: the flat-index formulas of MATH.md section 1
    for i in range(h):
        for j in range(d):
            assert names[i * d + j] == f"W[{i},{j}]"
        assert names[d * h + i] == f"b[{i}]"
        for m in range(k):
            assert names[d * h + h + m * h + i] == f"V[{m},{i}]"
    for m in range(k):
        assert names[d * h + h + k * h + m] == f"c[{m}]"
    for index, name in enumerate(names):
        block, rest = name[0], name[2:-1].split(",")
        assert coords["param_block"][index] == "WbVc".index(block)
        neuron = {"W": int(rest[0]), "b": int(rest[0]), "V": int(rest[-1]), "c": -1}[block]
        assert coords["param_neuron"][index] == neuron
        assert coords["param_input"][index] == (int(rest[1]) if block == "W" else -1)
        assert coords["param_output"][index] == (int(rest[0]) if block in "Vc" else -1)


def test_built_dataset_has_the_schema():
    ds = make_batch()
    assert ds.attrs["schema_version"] == SCHEMA_VERSION
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert ds.attrs["source"] == provenance.source_string()
    assert ds.attrs["seed"] == str(2**100 + 7)
    assert json.loads(ds.attrs["config_json"])["flow"]["rtol"] == 1e-10
    assert dict(ds.sizes) == {"run": 6, "time": 9, "param": 17, "neuron": 3, "output": 2}
    assert ds["theta"].dims == ("run", "time", "param")
    assert ds["status"].dtype == np.int8 and ds["run"].dtype == np.int32
    assert ds["status"].attrs["flag_values"].tolist() == [int(s) for s in Status]
    assert ds["status"].attrs["flag_meanings"] == STATUS_MEANINGS == "finished converged diverged failed"
    for name in ("init_scheme", "init_scale", "initial_risk", "seed"):
        assert name in ds.coords and ds[name].dims == ("run",)
    assert ds["seed"].dtype == np.uint64 and ds["n_rejected"].dtype == np.int64
    for name, variable in ds.variables.items():
        assert variable.attrs["units"] == "1" and variable.attrs["long_name"], name
    # users select neurons through the integer coordinates
    neuron_1 = ds["theta"].sel(param=ds["param_neuron"] == 1)
    assert neuron_1["param_name"].values.tolist() == ["W[1,0]", "W[1,1]", "b[1]", "V[0,1]", "V[1,1]"]
    standard = make_batch(normalized=False)
    assert "constraint_drift" not in standard
    validate_trajectory_dataset(standard)


def test_default_history_is_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/reluflow", "simulate", "config file.yaml"])
    arguments = batch_arguments(np.random.default_rng(0), [0, 1])
    del arguments["history"]
    history = build(arguments).attrs["history"]
    stamp, command = history.split(": ", 1)
    assert command == "reluflow simulate 'config file.yaml'"
    assert datetime.fromisoformat(stamp).tzinfo is not None


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (lambda a: a.update(theta=a["theta"][:, :, :-1]), "theta"),
        (lambda a: a.update(time=a["time"][::-1].copy()), "time"),
        (lambda a: a.update(status=np.full(len(a["run_ids"]), 7)), "status"),
        (lambda a: a.update(run_ids=np.zeros(len(a["run_ids"]), int)), "run_ids"),
        (lambda a: a.update(run_ids=-np.arange(len(a["run_ids"]))), "run_ids"),
        (lambda a: a.update(risk=a["risk"][:, :-1]), "risk"),
        (lambda a: a.update(width=0), "width"),
        (lambda a: a.update(scenario=""), "scenario"),
        (lambda a: a["extra"].update(mystery=np.ones(len(a["run_ids"]))), "extra['mystery']"),
        (lambda a: a["extra"].update(odd=(("run", "knot"), np.ones((6, 2)), {"units": "1", "long_name": "x"})), "knot"),
        (lambda a: a["init"].update(risk=np.ones(len(a["run_ids"]))), "init['risk']"),
        (lambda a: a["attrs"].update(scenario="other"), "attrs['scenario']"),
        (lambda a: a["attrs"].update(flag=True), "attrs['flag']"),
        (lambda a: a.update(config={"x": object()}), "config"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(change, argument):
    arguments = batch_arguments(np.random.default_rng(0), np.arange(6))
    change(arguments)
    with pytest.raises(ValueError, match=argument.replace("[", r"\[").replace("]", r"\]")):
        build(arguments)


def test_build_from_solve_result_computes_the_energy_residual():
    rng = np.random.default_rng(3)
    m, t, n = 3, 5, n_params(1, 2, 1)
    result = SolveResult(
        t=np.linspace(0.5, 2.5, t),
        y=rng.standard_normal((m, t, n)),
        energy=rng.random((m, t)),
        status=np.array([0, 1, 2], np.int8),
        t_final=np.array([2.5, 1.0, 0.7]),
        n_steps=rng.integers(0, 50, (m, t)),
        n_rejected=rng.integers(0, 5, (m, t)),
        info={"solver": "dopri5", "rtol": 1e-9},
    )
    risk, initial = rng.random((m, t)), rng.random(m)
    ds = build_from_solve_result(
        result,
        SavedDiagnostics(risk=risk, grad_norm=rng.random((m, t)), param_norm=rng.random((m, t)), initial_risk=initial),
        Certificate(theta=np.zeros((m, n)), risk=rng.random(m), grad_norm=rng.random(m), distance=rng.random(m)),
        [7, 8, 9],
        ParameterLayout(1, 2, 1),
        FileInfo(scenario="s", title="t", config={}),
        init={"init_scheme": ["gaussian"] * m},
    )
    # energy identity residual L(theta_0) - L(theta_t) - int_0^t |rhs|^2, element by element
    for i in range(m):
        for j in range(t):
            assert ds["energy_residual"].values[i, j] == (initial[i] - risk[i, j]) - result.energy[i, j]
    assert np.array_equal(ds["theta"].values, result.y) and np.array_equal(ds["time"].values, result.t)
    assert np.array_equal(ds["n_steps"].values, result.n_steps)
    assert ds["initial_risk"].values.tolist() == initial.tolist()
    assert ds["status"].values.tolist() == [0, 1, 2]
    assert json.loads(ds.attrs["solver_info_json"]) == {"rtol": 1e-9, "solver": "dopri5"}


# ----------------------------------------------------------------------------------------------------------
# round trip and storage


def test_round_trip_is_bitwise(tmp_path):
    ds = make_batch(run_ids=[2, 6, 10, 3, 7, 0, 1, 4])  # runs 2, 6, 10 diverge: one NaN pattern each
    before = ds.copy(deep=True)
    path = write_trajectory_dataset(ds, tmp_path / "batch.nc")
    assert path == tmp_path / "batch.nc"
    xr.testing.assert_identical(ds, before)  # writing leaves the caller's dataset alone
    back = open_trajectory_dataset(path)
    assert_bitwise_identical(ds, back)
    diverged = back["status"].values == Status.DIVERGED
    assert diverged.any() and np.isnan(back["theta"].values[diverged, -1]).all()
    # the NaN payloads survived (no fill-value masking)
    assert {bits(v) for v in back["theta"].values[diverged, -1, 0]} == {bits(v) for v in NAN_PATTERNS}
    # a dataset read back carries xarray encodings; rewriting it must give the same file content
    write_trajectory_dataset(back, tmp_path / "again.nc")
    assert_bitwise_identical(ds, open_trajectory_dataset(tmp_path / "again.nc"))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_storage_layout_is_fixed(tmp_path):
    ds = make_batch()
    path = write_trajectory_dataset(ds, tmp_path / "batch.nc")
    m, t, n = ds["theta"].shape
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4"
        theta = nc.variables["theta"]
        assert theta.chunking() == [1, t, n]
        assert theta.filters()["zlib"] and theta.filters()["complevel"] == D.COMPRESSION_LEVEL
        assert theta.filters()["shuffle"] and theta.filters()["fletcher32"]
        assert nc.variables["risk"].chunking() == [1, t]
        assert theta.dtype == np.float64 and nc.variables["status"].dtype == np.int8
        assert nc.variables["run"].dtype == np.int32 and nc.variables["param_name"].dtype is str
        for name, variable in nc.variables.items():
            assert "_FillValue" not in variable.ncattrs(), name
            assert "scale_factor" not in variable.ncattrs() and "add_offset" not in variable.ncattrs(), name


def test_plain_xarray_opens_the_file_without_reluflow(tmp_path):
    ds = make_batch()
    path = write_trajectory_dataset(ds, tmp_path / "batch.nc")
    script = textwrap.dedent(
        """
        import json, sys, hashlib
        import xarray as xr
        ds = xr.open_dataset(sys.argv[1])
        out = {
            "attrs": {name: [v.attrs.get("units"), v.attrs.get("long_name")] for name, v in ds.variables.items()},
            "global": {k: str(v) for k, v in ds.attrs.items()},
            "theta": hashlib.sha256(ds["theta"].values.tobytes()).hexdigest(),
            "scheme": ds["init_scheme"].values.tolist(),
            "reluflow_imported": any(m.split(".")[0] == "reluflow" for m in sys.modules),
        }
        print(json.dumps(out))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    out = json.loads(completed.stdout)
    assert out["reluflow_imported"] is False
    assert set(out["attrs"]) == set(ds.variables)
    for name, (units, long_name) in out["attrs"].items():
        assert units == "1" and long_name == ds[name].attrs["long_name"], name
    assert out["global"]["schema_version"] == SCHEMA_VERSION and out["global"]["Conventions"] == "CF-1.10"
    import hashlib

    assert out["theta"] == hashlib.sha256(bits(ds["theta"].values)).hexdigest()
    assert out["scheme"] == ds["init_scheme"].values.tolist()


# ----------------------------------------------------------------------------------------------------------
# bad files


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert "\n" not in message and str(path) in message, message
    assert error.value.path == path
    for fragment in fragments:
        assert fragment in message, message


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.nc"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(path)
    _assert_one_line_naming(error, path, "delete it and rerun the workflow")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.nc"
    path.write_bytes(b"")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(path)
    _assert_one_line_naming(error, path, "delete it and rerun the workflow")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_truncated_file_is_refused(tmp_path, fraction):
    full = write_trajectory_dataset(make_batch(n_times=40), tmp_path / "full.nc")
    data = full.read_bytes()
    path = tmp_path / "cut.nc"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(path)
    _assert_one_line_naming(error, path, "delete it and rerun the workflow")


def test_flipped_bytes_are_never_read_as_other_numbers(tmp_path):
    """A flipped byte either makes the file unreadable (checksums: zlib's adler32, HDF5's Fletcher-32) or
    lies in slack space the reader never uses; it never gives back different numbers."""
    ds = make_batch(n_times=200)
    data = write_trajectory_dataset(ds, tmp_path / "batch.nc").read_bytes()
    path = tmp_path / "flipped.nc"
    detected = 0
    for position in np.linspace(0, len(data) - 1, 41).astype(int):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            back = open_trajectory_dataset(path)
        except TrajectoryFileError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc) and "delete it and rerun" in str(exc)
            detected += 1
        else:
            assert_bitwise_identical(ds, back)
    # most of the file is compressed data or metadata: the bulk of the flips must be caught
    assert detected >= 30, detected


def test_foreign_netcdf_is_refused(tmp_path):
    path = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("a", np.arange(3.0))}, attrs={"title": "someone else's"}).to_netcdf(path)
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(path)
    _assert_one_line_naming(error, path, "not a reluflow trajectory file", "delete it and rerun the workflow")
    classic = tmp_path / "classic.nc"
    xr.Dataset({"x": ("a", np.arange(3.0))}).to_netcdf(classic, format="NETCDF3_CLASSIC")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(classic)
    _assert_one_line_naming(error, classic, "not a reluflow trajectory file")


def test_other_schema_version_is_refused(tmp_path):
    ds = make_batch()
    path = tmp_path / "old.nc"
    ds.assign_attrs(schema_version="reluflow-trajectories/0").to_netcdf(path, engine="netcdf4")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectory_dataset(path)
    _assert_one_line_naming(error, path, "reluflow-trajectories/0", SCHEMA_VERSION, "delete it and rerun")


def test_missing_file_is_reported_as_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nc"):
        open_trajectory_dataset(tmp_path / "absent.nc")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda ds: ds.drop_vars("risk"), "missing variable 'risk'"),
        (lambda ds: ds.assign_coords(batch_index=("run", np.arange(6))), "'batch_index' has no string 'units'"),
        (lambda ds: ds.assign(risk=ds["risk"].astype(np.float32)), "dtype float32"),
        (lambda ds: ds.assign(status=ds["status"] * 0 + 9), "status"),
        (lambda ds: ds.assign_coords(run=ds["run"] * 0), "duplicate run id"),
        (lambda ds: ds.assign_coords(param_name=("param", ds["param_name"].values[::-1])), "parameter layout"),
        (lambda ds: ds.assign_attrs(width=np.int64(4)), "n_params = 17 but d H + H + k H + k = 22"),
        (lambda ds: ds.assign_attrs(width=np.int64(4), n_params=np.int64(22)), "'param' has length 17, expected 22"),
        (lambda ds: ds.assign(t_final=ds["t_final"].assign_attrs(units=None)), "'t_final' has no string 'units'"),
        (lambda ds: ds.assign_attrs(config_json="{"), "config_json"),
        (lambda ds: ds.assign(theta=ds["theta"].where(ds["run"] != 0, D.NETCDF_DEFAULT_FILL_DOUBLE)), "fill value"),
    ],
)
def test_validation_catches_damage(damage, fragment):
    ds = make_batch()
    damaged = damage(ds)
    with pytest.raises(TrajectoryFileError) as error:
        validate_trajectory_dataset(damaged, path="x.nc")
    assert fragment in str(error.value) and "\n" not in str(error.value) and str(error.value).startswith("x.nc: ")


def test_writing_an_invalid_dataset_is_refused_before_touching_disk(tmp_path):
    ds = make_batch().drop_vars("grad_norm")
    with pytest.raises(TrajectoryFileError, match="refusing to write"):
        write_trajectory_dataset(ds, tmp_path / "x.nc")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------
# several batch files


def test_open_trajectories_concatenates_batches_in_run_order(tmp_path):
    runs = [[4, 0, 5], [1, 2], [3, 6, 7]]
    full = make_batch(run_ids=sorted(sum(runs, [])))
    paths = []
    for index, batch in enumerate(runs):
        positions = [sorted(sum(runs, [])).index(r) for r in batch]
        part = full.isel(run=positions)
        paths.append(write_trajectory_dataset(part, tmp_path / f"batch_{index}.nc"))
    combined = open_trajectories(paths[::-1])
    # exactly the batch built in one piece: per-run coordinates and strings of every width kept
    assert_bitwise_identical(full, combined)
    with pytest.raises(ValueError, match="paths"):
        open_trajectories([])


def test_history_and_differing_attributes_are_merged(tmp_path):
    first = make_batch(run_ids=[0, 1])
    second = make_batch(run_ids=[2, 3]).assign_attrs(history="2024-02-02T00:00:00+00:00: rerun", batch=np.int64(4))
    p1 = write_trajectory_dataset(first, tmp_path / "a.nc")
    p2 = write_trajectory_dataset(second, tmp_path / "b.nc")
    combined = open_trajectories([p1, p2])
    assert combined.attrs["history"] == HISTORY + "\n2024-02-02T00:00:00+00:00: rerun"
    assert "batch" not in combined.attrs  # differing numbers have no single value
    assert combined.attrs["case"] == "base"


def test_configurations_must_agree_up_to_the_batch_index(tmp_path):
    base = batch_arguments(np.random.default_rng(0), [0])["config"]
    paths = []
    for batch, runs in enumerate([[0, 1], [2, 3], [4]]):
        ds = make_batch(run_ids=runs).assign_attrs(config_json=provenance.config_json({**base, "batch": batch}))
        paths.append(write_trajectory_dataset(ds, tmp_path / f"batch_{batch}.nc"))
    combined = open_trajectories(paths[::-1])
    assert json.loads(combined.attrs["config_json"]) == {**base, "batch": [0, 1, 2]}
    assert combined["run"].values.tolist() == [0, 1, 2, 3, 4]
    other = {**base, "flow": {"rtol": 1e-8}, "batch": 3}
    odd = make_batch(run_ids=[5]).assign_attrs(config_json=provenance.config_json(other))
    odd_path = write_trajectory_dataset(odd, tmp_path / "batch_3.nc")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectories(paths + [odd_path])
    _assert_one_line_naming(error, odd_path, "config_json keys ['flow']", str(paths[0]))


def test_duplicate_run_ids_are_refused_naming_the_file(tmp_path):
    p1 = write_trajectory_dataset(make_batch(run_ids=[0, 1, 2]), tmp_path / "a.nc")
    p2 = write_trajectory_dataset(make_batch(run_ids=[3, 2], seed=1), tmp_path / "b.nc")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectories([p1, p2])
    _assert_one_line_naming(error, p2, "run id 2", str(p1))
    with pytest.raises(TrajectoryFileError):
        open_trajectories([p1, p1])


def test_mismatched_time_grids_are_refused_naming_the_file(tmp_path):
    p1 = write_trajectory_dataset(make_batch(run_ids=[0, 1]), tmp_path / "a.nc")
    shifted = np.geomspace(1e-3, 1e2, 9)
    shifted[4] = np.nextafter(shifted[4], np.inf)  # one ulp apart is already a different grid
    p2 = write_trajectory_dataset(make_batch(run_ids=[2, 3], time=shifted), tmp_path / "b.nc")
    p3 = write_trajectory_dataset(make_batch(run_ids=[4], n_times=8), tmp_path / "c.nc")
    for bad in (p2, p3):
        with pytest.raises(TrajectoryFileError) as error:
            open_trajectories([p1, bad])
        _assert_one_line_naming(error, bad, "time grid", str(p1))


def test_mixed_scenarios_or_variables_are_refused(tmp_path):
    p1 = write_trajectory_dataset(make_batch(run_ids=[0, 1]), tmp_path / "a.nc")
    p2 = write_trajectory_dataset(make_batch(run_ids=[2], scenario="other"), tmp_path / "b.nc")
    p3 = write_trajectory_dataset(make_batch(run_ids=[3], normalized=False), tmp_path / "c.nc")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectories([p1, p2])
    _assert_one_line_naming(error, p2, "'scenario'")
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectories([p1, p3])
    _assert_one_line_naming(error, p3, "constraint_drift")


def test_a_bad_file_among_many_is_named(tmp_path):
    p1 = write_trajectory_dataset(make_batch(run_ids=[0, 1]), tmp_path / "a.nc")
    p2 = tmp_path / "b.nc"
    p2.write_bytes(p1.read_bytes()[:1000])
    with pytest.raises(TrajectoryFileError) as error:
        open_trajectories([p1, p2])
    _assert_one_line_naming(error, p2, "delete it and rerun the workflow")


# ----------------------------------------------------------------------------------------------------------
# provenance


def _git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_git_revision_of_a_checkout(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "reluflow").mkdir(parents=True)
    tracked = root / "reluflow" / "x.py"
    tracked.write_text("a = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "reluflow/x.py")
    _git(root, "commit", "-q", "-m", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(provenance, "_source_root", lambda: root.resolve())
    provenance.git_revision.cache_clear()
    try:
        assert provenance.git_revision() == head
        (root / "untracked.txt").write_text("untracked files do not make the tree dirty\n")
        provenance.git_revision.cache_clear()
        assert provenance.git_revision() == head
        tracked.write_text("a = 2\n")
        assert provenance.git_revision() == head  # cached for the life of the process
        provenance.git_revision.cache_clear()
        assert provenance.git_revision() == head + "-dirty"
        assert provenance.source_string() == f"reluflow {provenance.package_version()} (git {head}-dirty)"
        # a package folder inside some other repository is not a reluflow checkout
        monkeypatch.setattr(provenance, "_source_root", lambda: (root / "reluflow").resolve())
        provenance.git_revision.cache_clear()
        assert provenance.git_revision() == "unknown"
        monkeypatch.setattr(provenance, "_source_root", lambda: tmp_path.resolve())  # no git at all
        provenance.git_revision.cache_clear()
        assert provenance.git_revision() == "unknown"
        monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # git missing
        provenance.git_revision.cache_clear()
        assert provenance.git_revision() == "unknown"
    finally:
        provenance.git_revision.cache_clear()


def test_history_line_and_config_json():
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    line = provenance.history_line(["/opt/bin/reluflow", "simulate", "a b", "x\ny"], now=now)
    assert line == "2024-05-06T07:08:09+00:00: reluflow simulate 'a b' 'x y'"
    one = provenance.config_json({"b": np.float64(0.5), "a": (1, np.int64(2)), "c": float("inf")})
    two = provenance.config_json({"c": float("inf"), "a": [1, 2], "b": 0.5})
    assert one == two == '{"a":[1,2],"b":0.5,"c":"inf"}'
    with pytest.raises(ValueError, match="config"):
        provenance.config_json([1, 2])
