"""The trajectory file format: build, validate, write atomically, open one or many batch files.

A trajectory dataset holds a batch of ``M`` runs of one flow, saved at ``T`` flow times, of a network with
``n = d H + H + k H + k`` parameters (input dimension ``d``, width ``H``, output dimension ``k``; layout of
``docs/MATH.md`` section 1). It is a plain CF-1.10 netCDF-4 file that opens with ``xarray.open_dataset``
alone; this module fixes its layout (schema :data:`SCHEMA_VERSION`):

Dimensions
    ``run`` (M), ``time`` (T), ``param`` (n), ``neuron`` (H), ``output`` (k).
Coordinates
    ``run`` (int32 run id, unique within a scenario), ``time`` (float64 flow time ``t``, strictly
    increasing), ``param`` (int32 flat index), ``param_name`` (``"W[i,j]"``, ``"b[i]"``, ``"V[m,i]"``,
    ``"c[m]"``), ``param_block`` (int8 flags ``0..3`` = ``W b V c``), ``param_neuron`` (hidden neuron
    ``i`` of the entry, ``-1`` for ``c``), ``param_input`` (``j`` for ``W[i,j]``, else ``-1``),
    ``param_output`` (``m`` for ``V[m,i]`` and ``c[m]``, else ``-1``), ``neuron``, ``output``; and the
    per-run initialization metadata (``seed``, ``init_scheme``, ``init_scale``, ``initial_risk``, ...) as
    coordinates along ``run``.
Data variables
    ``theta(run, time, param)``; ``risk``, ``grad_norm`` (``|G(theta)|``), ``param_norm``
    (``|theta|``), ``energy_residual`` (``L(theta_0) - L(theta_t) - int_0^t |rhs|^2 ds``), all
    ``(run, time)``; ``status(run)`` (int8 :class:`~reluflow.dynamics.solvers.result.Status` codes as CF flags),
    ``t_final(run)``, ``critical_risk(run)``, ``critical_grad_norm(run)``; for normalized flows
    ``constraint_drift(run, time)`` (``max_i | |w_i|^2 + b_i^2 - 1 |``); optional extra variables
    (``n_steps``, ``n_rejected``, ``critical_distance``, ...).
Global attributes
    ``Conventions``, ``title``, ``history``, ``source``, ``scenario``, ``schema_version``,
    ``config_json`` (the full problem + integrator configuration), ``input_dim``, ``width``,
    ``output_dim``, ``n_params``, and ``seed`` (the root seed, a decimal string) when given.

Every variable and coordinate has ``units`` (``"1"``: every quantity here is a dimensionless number) and
``long_name``. Numbers are stored as float64 and int8/int32/int64 without packing and without
``_FillValue`` (NaN marks diverged runs and is stored as is), so a write followed by a read gives back
bitwise the same values, coordinates and attributes.

Files are written atomically (temporary file ``.<name>.<random>.tmp`` in the target folder, fsync,
``os.replace``): a reader sees the previous complete file or the new complete file, never a partial one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import xarray as xr

from reluflow.dynamics.solvers.result import STATUS_MEANINGS, SolveResult, Status
from reluflow.files.atomic import TEMPORARY_FILE_PATTERN, atomic_output
from reluflow.files.provenance import config_json as _config_json
from reluflow.files.provenance import history_line, package_version, source_string
from reluflow.model.network import ParameterLayout, n_params

#: the layout version, stored as the global attribute ``schema_version``; bump it on any incompatible change
SCHEMA_VERSION = "reluflow-trajectories/1"

#: the CF version the files follow (global attribute ``Conventions``)
CONVENTIONS = "CF-1.10"

#: how to recover from an unreadable or foreign file (part of every file error message)
RECOVERY_HINT = "delete it and rerun the workflow"


#: zlib level: 4 is within a few percent of level 9's size on float64 trajectories at a fraction of the time
COMPRESSION_LEVEL = 4

DIMENSIONS = ("run", "time", "param", "neuron", "output")

#: parameter blocks, in layout order (values of ``param_block``)
PARAMETER_BLOCKS = ("W", "b", "V", "c")

_STATUS_FLAGS = np.array([int(s) for s in Status], dtype=np.int8)

#: units and long names of the variables and coordinates the schema knows; callers may add others
#: (with their own ``units`` and ``long_name``) through ``init`` and ``extra``
VARIABLE_ATTRS: dict[str, dict[str, Any]] = {
    # coordinates
    "run": {"units": "1", "long_name": "run id (unique within a scenario; selects the run's random stream)"},
    "time": {"units": "1", "long_name": "flow time t"},
    "param": {"units": "1", "long_name": "flat parameter index (docs/MATH.md section 1 layout)"},
    "param_name": {"units": "1", "long_name": "parameter name: W[i,j], b[i], V[m,i] or c[m]"},
    "param_block": {
        "units": "1",
        "long_name": "parameter block",
        "flag_values": np.arange(len(PARAMETER_BLOCKS), dtype=np.int8),
        "flag_meanings": " ".join(PARAMETER_BLOCKS),
    },
    "param_neuron": {"units": "1", "long_name": "hidden neuron i of W[i,j], b[i], V[m,i] (-1 for c[m])"},
    "param_input": {"units": "1", "long_name": "input coordinate j of W[i,j] (-1 for other entries)"},
    "param_output": {"units": "1", "long_name": "output m of V[m,i] and c[m] (-1 for other entries)"},
    "neuron": {"units": "1", "long_name": "hidden neuron index i"},
    "output": {"units": "1", "long_name": "output index m"},
    # per-run initialization metadata
    "seed": {"units": "1", "long_name": "random seed of the run's initialization"},
    "init_scheme": {"units": "1", "long_name": "initialization scheme"},
    "init_scale": {
        "units": "1",
        "long_name": "initialization scale (gaussian scale, or relative perturbation of a near-exact start)",
    },
    "initial_risk": {"units": "1", "long_name": "risk at initialization L(theta_0)"},
    # core data variables
    "theta": {"units": "1", "long_name": "network parameters theta (docs/MATH.md section 1 layout)"},
    "risk": {"units": "1", "long_name": "risk L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)"},
    "grad_norm": {"units": "1", "long_name": "Euclidean norm of the generalized gradient |G(theta)|"},
    "param_norm": {"units": "1", "long_name": "Euclidean norm of the parameter vector |theta|"},
    "energy_residual": {
        "units": "1",
        "long_name": "energy identity residual L(theta_0) - L(theta_t) - int_0^t |rhs(theta_s)|^2 ds",
    },
    "status": {
        "units": "1",
        "long_name": "why the run stopped",
        "flag_values": _STATUS_FLAGS,
        "flag_meanings": STATUS_MEANINGS,
    },
    "t_final": {"units": "1", "long_name": "flow time the run reached"},
    "critical_risk": {"units": "1", "long_name": "risk of the critical point certified near the final state"},
    "critical_grad_norm": {
        "units": "1",
        "long_name": "generalized-gradient norm |G| at the certified critical point",
    },
    "constraint_drift": {
        "units": "1",
        "long_name": "normalized-flow constraint violation max_i | |w_i|^2 + b_i^2 - 1 |",
    },
    # known optional extras
    "n_steps": {"units": "1", "long_name": "accepted integrator steps up to the save time"},
    "n_rejected": {"units": "1", "long_name": "rejected integrator steps up to the save time"},
    "n_rhs": {"units": "1", "long_name": "evaluations of the vector field (of G) for the run"},
    "n_jac": {
        "units": "1",
        "long_name": "evaluations of the Jacobian of the vector field for the run (structured stiff steps: "
        "factorizations of sigma I - J, each computing the Jacobian's structure)",
    },
    "critical_distance": {
        "units": "1",
        "long_name": "distance |theta_final - theta_critical| to the certified critical point",
    },
}

#: required data variables: dims and the one dtype each is stored with
REQUIRED_DATA_VARS: dict[str, tuple[tuple[str, ...], np.dtype]] = {
    "theta": (("run", "time", "param"), np.dtype(np.float64)),
    "risk": (("run", "time"), np.dtype(np.float64)),
    "grad_norm": (("run", "time"), np.dtype(np.float64)),
    "param_norm": (("run", "time"), np.dtype(np.float64)),
    "energy_residual": (("run", "time"), np.dtype(np.float64)),
    "status": (("run",), np.dtype(np.int8)),
    "t_final": (("run",), np.dtype(np.float64)),
    "critical_risk": (("run",), np.dtype(np.float64)),
    "critical_grad_norm": (("run",), np.dtype(np.float64)),
}

#: optional data variables the schema fixes when present
OPTIONAL_DATA_VARS: dict[str, tuple[tuple[str, ...], np.dtype]] = {
    "constraint_drift": (("run", "time"), np.dtype(np.float64)),
}

#: required coordinates: dims and dtype
REQUIRED_COORDS: dict[str, tuple[tuple[str, ...], np.dtype | None]] = {
    "run": (("run",), np.dtype(np.int32)),
    "time": (("time",), np.dtype(np.float64)),
    "param": (("param",), np.dtype(np.int32)),
    "param_name": (("param",), None),  # numpy unicode, width = longest name
    "param_block": (("param",), np.dtype(np.int8)),
    "param_neuron": (("param",), np.dtype(np.int32)),
    "param_input": (("param",), np.dtype(np.int32)),
    "param_output": (("param",), np.dtype(np.int32)),
    "neuron": (("neuron",), np.dtype(np.int32)),
    "output": (("output",), np.dtype(np.int32)),
}

REQUIRED_ATTRS = (
    "Conventions",
    "title",
    "history",
    "source",
    "scenario",
    "schema_version",
    "config_json",
    "input_dim",
    "width",
    "output_dim",
    "n_params",
)

#: global attributes that every batch of one flow must share (checked by :func:`open_trajectories`);
#: ``config_json`` must agree as well, except for the top-level keys in :data:`PER_BATCH_CONFIG_KEYS`
SHARED_ATTRS = (
    "schema_version",
    "Conventions",
    "scenario",
    "input_dim",
    "width",
    "output_dim",
    "n_params",
    "seed",
)

#: top-level configuration keys that identify a batch rather than the experiment: they may differ between
#: the batch files of one flow; a concatenation lists their distinct values (e.g. ``"batch": [0, 1, 2]``)
PER_BATCH_CONFIG_KEYS = ("batch",)

_INT32 = np.iinfo(np.int32)

#: what netCDF returns for float64 data that was never written (no ``_FillValue`` is declared, so a chunk a
#: killed non-atomic writer never wrote reads as this number rather than failing)
NETCDF_DEFAULT_FILL_DOUBLE = 9.9692099683868690e36


class TrajectoryFileError(ValueError):
    """A trajectory file or dataset that does not follow the schema; the message is one line naming it."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(_one_line(message))
        self.path = None if path is None else Path(path)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------------------
# parameter layout


# ----------------------------------------------------------------------------------------------------------
# building


def _normalize_attr(owner: str, key: str, value: Any) -> Any:
    """An attribute value in the form netCDF gives back, so that write + read is the identity.

    Python ints/floats become numpy int64/float64 scalars, sequences numeric numpy arrays, length-1
    arrays scalars (netCDF returns a length-1 attribute as a scalar).
    """
    where = f"{owner}.attrs[{key!r}]"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{where}: netCDF attributes cannot hold {value!r}; use an int or a string")
    if isinstance(value, int):
        if not np.iinfo(np.int64).min <= value <= np.iinfo(np.int64).max:
            raise ValueError(f"{where}: integer {value} does not fit int64; store it as a string")
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, np.generic) and value.dtype.kind in "iuf":
        return value
    array = np.asarray(value)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iuf":
        raise ValueError(f"{where}: must be a string, a number or a non-empty 1-d numeric array, got {value!r}")
    if array.dtype.kind == "f":
        array = array.astype(np.float64)
    return array[0] if array.size == 1 else array


def _normalize_attrs(owner: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _normalize_attr(owner, str(k), v) for k, v in attrs.items()}


def _stored_values(name: str, values: Any) -> np.ndarray:
    """Values in the one dtype they are stored with: float64, int64, uint64, int8 (bool) or unicode."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float64)
    if kind == "b":
        return array.astype(np.int8)
    if kind == "i":
        return array.astype(np.int64)
    if kind == "u":
        return array.astype(np.uint64)
    if kind == "U":
        return array.copy()  # the dataset must not share memory with the caller's array
    if kind == "O" and all(isinstance(v, str) for v in array.ravel()):
        return array.astype(str) if array.size else np.zeros(array.shape, dtype="<U1")
    raise ValueError(f"{name}: values of dtype {array.dtype} cannot be stored (use floats, integers or strings)")


def _float_array(name: str, values: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name}: must be real numbers, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name}: shape {array.shape}, expected {shape}")
    return array.astype(np.float64)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _variable(
    group: str,
    name: str,
    spec: Any,
    sizes: Mapping[str, int],
    default_dims: Mapping[tuple[int, ...], tuple[str, ...]],
) -> xr.Variable:
    """A variable from ``values`` (dims from its shape, attrs from :data:`VARIABLE_ATTRS`) or from a
    tuple ``(dims, values)`` / ``(dims, values, attrs)``; it must end up with ``units`` and ``long_name``."""
    key = f"{group}[{name!r}]"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"{group}: variable name {name!r} must be an identifier")
    attrs = dict(VARIABLE_ATTRS.get(name, {}))
    if isinstance(spec, xr.DataArray):
        dims, values = spec.dims, spec.values
        attrs.update(spec.attrs)
    elif isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise ValueError(f"{key}: expected (dims, values) or (dims, values, attrs)")
        dims, values = spec[0], spec[1]
        dims = (dims,) if isinstance(dims, str) else tuple(dims)
        if len(spec) == 3:
            attrs.update(spec[2])
    else:
        values = spec
        shape = np.shape(values)
        if shape not in default_dims:
            raise ValueError(
                f"{key}: shape {shape} matches none of {sorted(default_dims)}; pass (dims, values, attrs)"
            )
        dims = default_dims[shape]
    unknown = [dim for dim in dims if dim not in sizes]
    if unknown:
        raise ValueError(f"{key}: unknown dimension(s) {unknown}; expected some of {list(sizes)}")
    expected = tuple(sizes[dim] for dim in dims)
    if np.shape(values) != expected:
        raise ValueError(f"{key}: shape {np.shape(values)} does not match dims {dims} = {expected}")
    for required in ("units", "long_name"):
        if not isinstance(attrs.get(required), str) or not attrs[required]:
            raise ValueError(
                f"{key}: needs a string {required!r} attribute (not a known variable: pass (dims, values, attrs))"
            )
    return xr.Variable(dims, _stored_values(key, values), _normalize_attrs(key, attrs))


@dataclass(frozen=True)
class RunArrays:
    """What a batch of ``M`` runs did, at ``T`` save times (the arrays of a trajectory file).

    ``theta (M, T, n)``; ``time (T,)`` flow times, finite, ``>= 0``, strictly increasing; ``risk``,
    ``grad_norm``, ``param_norm``, ``energy_residual`` ``(M, T)``; ``status (M,)``
    :class:`~reluflow.dynamics.solvers.result.Status` codes; ``t_final``, ``critical_risk``,
    ``critical_grad_norm`` ``(M,)``; ``run_ids (M,)`` distinct integers in ``[0, 2^31)``;
    ``constraint_drift (M, T)`` for normalized flows, else None (then the variable is absent).
    """

    theta: Any
    time: Any
    risk: Any
    grad_norm: Any
    param_norm: Any
    energy_residual: Any
    status: Any
    t_final: Any
    run_ids: Any
    critical_risk: Any
    critical_grad_norm: Any
    constraint_drift: Any | None = None


@dataclass(frozen=True)
class FileInfo:
    """A file's provenance: ``scenario`` and ``title`` (global attributes), ``config`` (stored as canonical
    JSON in ``config_json``), the root ``seed`` of the runs' random streams (a decimal string), the
    ``history`` line (default: :func:`reluflow.files.provenance.history_line` of ``sys.argv``) and further
    global ``attrs`` (strings, numbers, 1-d numeric arrays; they may not replace schema ones)."""

    scenario: str
    title: str
    config: Mapping[str, Any]
    seed: int | str | None = None
    history: str | None = None
    attrs: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SavedDiagnostics:
    """What is computed from a trajectory at its save times: ``risk``, ``grad_norm`` and ``param_norm``
    ``(M, T)``, ``initial_risk (M,)`` (the risk of each run's initial state, which starts the energy
    identity) and, for the normalized flow, ``constraint_drift (M, T)``."""

    risk: np.ndarray
    grad_norm: np.ndarray
    param_norm: np.ndarray
    initial_risk: np.ndarray
    constraint_drift: np.ndarray | None = None


def build_trajectory_dataset(
    runs: RunArrays,
    layout: ParameterLayout,
    info: FileInfo,
    *,
    init: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The trajectory dataset of a batch of ``M`` runs saved at ``T`` flow times (layout in the module doc).

    ``runs`` holds the arrays (:class:`RunArrays`), ``layout`` the network's ``d``, ``H``, ``k``
    (:class:`~reluflow.model.network.ParameterLayout`), ``info`` the provenance (:class:`FileInfo`).
    ``init``: per-run initialization metadata, stored as coordinates along ``run``: ``name -> (M,) values``
    for the known names (``seed``, ``init_scheme``, ``init_scale``, ``initial_risk``), or
    ``name -> (dims, values, attrs)`` with ``units`` and ``long_name`` in ``attrs``. ``extra``: further data
    variables: ``name -> values`` for known names (``n_steps``, ``n_rejected``, ``critical_distance``, ...)
    with shape (M,), (M, T) or (M, T, n) (dims run / run, time / run, time, param), or
    ``name -> (dims, values, attrs)`` over the dims run, time, param, neuron, output.

    Floats are stored as float64, integers as int64 (uint64 if unsigned), booleans as int8, strings as
    numpy unicode; ``run`` is int32 and ``status`` int8. Raises ``ValueError`` naming the argument.
    """
    theta, time, risk, status, run_ids = runs.theta, runs.time, runs.risk, runs.status, runs.run_ids
    scenario, title = info.scenario, info.title
    d = _positive_int("input_dim", layout.input_dim)
    h = _positive_int("width", layout.width)
    k = _positive_int("output_dim", layout.output_dim)
    n = n_params(d, h, k)
    if not isinstance(scenario, str) or not scenario:
        raise ValueError(f"scenario: must be a non-empty string, got {scenario!r}")
    if not isinstance(title, str):
        raise ValueError(f"title: must be a string, got {title!r}")

    theta = np.asarray(theta)
    if theta.ndim != 3 or theta.shape[0] < 1 or theta.shape[1] < 1:
        raise ValueError(f"theta: shape {theta.shape}, expected (M, T, n) with M, T >= 1")
    if theta.shape[2] != n:
        raise ValueError(f"theta: last axis has length {theta.shape[2]}, expected n_params = {n}")
    m_runs, n_times = theta.shape[:2]
    theta = _float_array("theta", theta, (m_runs, n_times, n))

    time = _float_array("time", time, (n_times,))
    if not np.all(np.isfinite(time)) or np.any(time < 0) or np.any(np.diff(time) <= 0):
        raise ValueError("time: flow times must be finite, >= 0 and strictly increasing")

    run_ids = np.asarray(run_ids)
    if run_ids.shape != (m_runs,) or run_ids.dtype.kind not in "iu":
        raise ValueError(f"run_ids: expected ({m_runs},) integers, got shape {run_ids.shape}, dtype {run_ids.dtype}")
    if np.any(run_ids < 0) or np.any(run_ids > _INT32.max):
        raise ValueError(f"run_ids: must lie in [0, {_INT32.max}]")
    if np.unique(run_ids).size != m_runs:
        raise ValueError("run_ids: must be distinct")

    status = np.asarray(status)
    if status.shape != (m_runs,) or status.dtype.kind not in "iu":
        raise ValueError(f"status: expected ({m_runs},) integer Status codes, got {status.shape} {status.dtype}")
    if not np.all(np.isin(status, _STATUS_FLAGS)):
        raise ValueError(f"status: codes must be among {_STATUS_FLAGS.tolist()} ({STATUS_MEANINGS})")

    per_run_time = {
        "risk": risk,
        "grad_norm": runs.grad_norm,
        "param_norm": runs.param_norm,
        "energy_residual": runs.energy_residual,
    }
    if runs.constraint_drift is not None:
        per_run_time["constraint_drift"] = runs.constraint_drift
    per_run = {"t_final": runs.t_final, "critical_risk": runs.critical_risk, "critical_grad_norm": runs.critical_grad_norm}

    sizes = {"run": m_runs, "time": n_times, "param": n, "neuron": h, "output": k}
    data_vars: dict[str, xr.Variable] = {
        "theta": xr.Variable(("run", "time", "param"), theta, _normalize_attrs("theta", VARIABLE_ATTRS["theta"]))
    }
    for name, values in per_run_time.items():
        data_vars[name] = xr.Variable(
            ("run", "time"), _float_array(name, values, (m_runs, n_times)), _normalize_attrs(name, VARIABLE_ATTRS[name])
        )
    data_vars["status"] = xr.Variable(
        ("run",), status.astype(np.int8), _normalize_attrs("status", VARIABLE_ATTRS["status"])
    )
    for name, values in per_run.items():
        data_vars[name] = xr.Variable(
            ("run",), _float_array(name, values, (m_runs,)), _normalize_attrs(name, VARIABLE_ATTRS[name])
        )

    coords: dict[str, xr.Variable] = {
        "run": xr.Variable(("run",), run_ids.astype(np.int32), _normalize_attrs("run", VARIABLE_ATTRS["run"])),
        "time": xr.Variable(("time",), time, _normalize_attrs("time", VARIABLE_ATTRS["time"])),
    }
    for name, values in ParameterLayout(d, h, k).coordinates().items():
        coords[name] = xr.Variable(("param",), values, _normalize_attrs(name, VARIABLE_ATTRS[name]))
    coords["neuron"] = xr.Variable(("neuron",), np.arange(h, dtype=np.int32), VARIABLE_ATTRS["neuron"])
    coords["output"] = xr.Variable(("output",), np.arange(k, dtype=np.int32), VARIABLE_ATTRS["output"])

    taken = set(data_vars) | set(coords)
    for name, spec in (init or {}).items():
        if name in taken:
            raise ValueError(f"init[{name!r}]: name is already used by the schema")
        variable = _variable("init", name, spec, sizes, {(m_runs,): ("run",)})
        if variable.dims != ("run",):
            raise ValueError(f"init[{name!r}]: per-run metadata must have dims ('run',), got {variable.dims}")
        coords[name] = variable
        taken.add(name)
    extra_dims = {
        (m_runs,): ("run",),
        (m_runs, n_times): ("run", "time"),
        (m_runs, n_times, n): ("run", "time", "param"),
    }
    for name, spec in (extra or {}).items():
        if name in taken:
            raise ValueError(f"extra[{name!r}]: name is already used by the schema or by init")
        data_vars[name] = _variable("extra", name, spec, sizes, extra_dims)
        taken.add(name)

    global_attrs: dict[str, Any] = {
        "Conventions": CONVENTIONS,
        "title": title,
        "history": history_line() if info.history is None else _one_line(info.history),
        "source": source_string(),
        "scenario": scenario,
        "schema_version": SCHEMA_VERSION,
        "config_json": _config_json(info.config),
        "input_dim": np.int64(d),
        "width": np.int64(h),
        "output_dim": np.int64(k),
        "n_params": np.int64(n),
    }
    seed = info.seed
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer, str)):
            raise ValueError(f"seed: must be an integer or a string, got {seed!r}")
        global_attrs["seed"] = str(int(seed)) if not isinstance(seed, str) else seed
    for key, value in _normalize_attrs("attrs", info.attrs or {}).items():
        if key in global_attrs or key in REQUIRED_ATTRS:
            raise ValueError(f"attrs[{key!r}]: is set by the schema and cannot be replaced")
        global_attrs[key] = value

    dataset = xr.Dataset(data_vars, coords=coords, attrs=global_attrs)
    validate_trajectory_dataset(dataset)
    return dataset


def build_from_solve_result(
    result: SolveResult,
    saved: SavedDiagnostics,
    certificate,
    run_ids: Any,
    layout: ParameterLayout,
    info: FileInfo,
    *,
    init: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """:func:`build_trajectory_dataset` from a solver's :class:`~reluflow.dynamics.solvers.result.SolveResult`,
    the diagnostics at its save times and each run's certificate (``risk``, ``grad_norm``, ``distance`` of
    :class:`reluflow.dynamics.certify.Certificate`).

    ``time = result.t``, ``theta = result.y``, ``status``, ``t_final`` from the result;
    ``energy_residual = (L(theta_0) - L(theta_t)) - E_t`` with ``L(theta_0) = saved.initial_risk`` (M,),
    ``L(theta_t) = saved.risk`` (M, T) and ``E_t = result.energy`` (the solver's ``int_0^t |rhs|^2 ds``);
    ``initial_risk`` is also stored in ``init``; ``n_steps``/``n_rejected``, the per-run evaluation counts
    ``n_rhs``/``n_jac`` and ``critical_distance`` go to ``extra``; ``result.info`` is stored as JSON in the
    global attribute ``solver_info_json``.
    """
    y = np.asarray(result.y)
    if y.ndim != 3:
        raise ValueError(f"result.y: shape {y.shape}, expected (M, T, n)")
    m_runs, n_times = y.shape[:2]
    initial_risk = _float_array("initial_risk", saved.initial_risk, (m_runs,))
    risk = _float_array("risk", saved.risk, (m_runs, n_times))
    energy = _float_array("result.energy", result.energy, (m_runs, n_times))
    init = dict(init or {})
    if "initial_risk" in init:
        raise ValueError("init['initial_risk']: taken from the saved diagnostics")
    init["initial_risk"] = initial_risk
    for name in ("n_steps", "n_rejected", "critical_distance", "n_rhs", "n_jac"):
        if name in (extra or {}):
            raise ValueError(f"extra[{name!r}]: taken from the solver's result and the certificate")
    extra = {"critical_distance": np.asarray(certificate.distance), **(extra or {}),
             "n_steps": np.asarray(result.n_steps), "n_rejected": np.asarray(result.n_rejected)}
    for name in ("n_rhs", "n_jac"):  # per-run evaluation counts, when the solver reports them
        counts = getattr(result, f"{name}_run", None)
        if counts is not None:
            extra[name] = (("run",), np.asarray(counts, dtype=np.int64))
    attrs = dict(info.attrs or {})
    attrs["solver_info_json"] = _config_json(result.info)
    runs = RunArrays(
        theta=y,
        time=result.t,
        risk=risk,
        grad_norm=saved.grad_norm,
        param_norm=saved.param_norm,
        energy_residual=(initial_risk[:, None] - risk) - energy,
        status=result.status,
        t_final=result.t_final,
        run_ids=run_ids,
        critical_risk=certificate.risk,
        critical_grad_norm=certificate.grad_norm,
        constraint_drift=saved.constraint_drift,
    )
    return build_trajectory_dataset(runs, layout, dataclasses.replace(info, attrs=attrs), init=init, extra=extra)


# ----------------------------------------------------------------------------------------------------------
# validation


def validate_trajectory_dataset(ds: xr.Dataset, path: str | os.PathLike | None = None) -> None:
    """Check that ``ds`` follows schema :data:`SCHEMA_VERSION`; raise :class:`TrajectoryFileError` if not.

    Checks the schema version, the global attributes, the dimensions (``param`` of length
    ``d H + H + k H + k``), the parameter coordinates (exactly the layout of docs/MATH.md section 1),
    ``run`` (distinct, non-negative integers), ``time`` (finite, strictly increasing), dims and dtypes of
    the schema's variables, ``status`` codes, ``units``/``long_name`` on every variable, and that no float
    variable holds netCDF's default fill value (data a killed non-atomic writer never wrote). The message
    is one line starting with ``path`` (or "trajectory dataset"); for a file it says how to recover.
    """
    where = "trajectory dataset" if path is None else str(path)

    def fail(problem: str) -> None:
        hint = f"; {RECOVERY_HINT}" if path is not None else ""
        raise TrajectoryFileError(f"{where}: {problem}{hint}", path=path)

    if not isinstance(ds, xr.Dataset):
        fail(f"expected an xarray.Dataset, got {type(ds).__name__}")
    version = ds.attrs.get("schema_version")
    if version is None:
        fail("not a reluflow trajectory file (no global attribute 'schema_version')")
    if version != SCHEMA_VERSION:
        fail(f"schema version {version!r}, but reluflow {package_version()} reads {SCHEMA_VERSION!r}")
    missing = [key for key in REQUIRED_ATTRS if key not in ds.attrs]
    if missing:
        fail(f"missing global attribute(s) {missing}")
    for key in ("Conventions", "title", "history", "source", "scenario", "config_json"):
        if not isinstance(ds.attrs[key], str):
            fail(f"global attribute {key!r} must be a string, got {ds.attrs[key]!r}")
    if ds.attrs["Conventions"] != CONVENTIONS:
        fail(f"Conventions is {ds.attrs['Conventions']!r}, expected {CONVENTIONS!r}")
    if not ds.attrs["scenario"]:
        fail("global attribute 'scenario' is empty")
    try:
        config = json.loads(ds.attrs["config_json"])
    except ValueError:
        fail("global attribute 'config_json' is not valid JSON")
    if not isinstance(config, dict):
        fail("global attribute 'config_json' is not a JSON object")
    dims_attr = {}
    for key in ("input_dim", "width", "output_dim", "n_params"):
        value = ds.attrs[key]
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
            fail(f"global attribute {key!r} must be a positive integer, got {value!r}")
        dims_attr[key] = int(value)
    d, h, k = dims_attr["input_dim"], dims_attr["width"], dims_attr["output_dim"]
    n = n_params(d, h, k)
    if dims_attr["n_params"] != n:
        fail(f"n_params = {dims_attr['n_params']} but d H + H + k H + k = {n}")
    if "seed" in ds.attrs and not isinstance(ds.attrs["seed"], str):
        fail(f"global attribute 'seed' must be a string, got {ds.attrs['seed']!r}")

    expected_sizes = {"param": n, "neuron": h, "output": k}
    for dim in DIMENSIONS:
        if dim not in ds.sizes:
            fail(f"missing dimension {dim!r}")
        if ds.sizes[dim] < 1:
            fail(f"dimension {dim!r} is empty")
        if dim in expected_sizes and ds.sizes[dim] != expected_sizes[dim]:
            fail(f"dimension {dim!r} has length {ds.sizes[dim]}, expected {expected_sizes[dim]}")

    def check_variable(name, dims, dtype, coordinate):
        kind = "coordinate" if coordinate else "variable"
        table = ds.coords if coordinate else ds.data_vars
        if name not in table:
            fail(f"missing {kind} {name!r}")
        variable = table[name].variable
        if variable.dims != dims:
            fail(f"{kind} {name!r} has dims {variable.dims}, expected {dims}")
        if dtype is not None and variable.dtype != dtype:
            fail(f"{kind} {name!r} has dtype {variable.dtype}, expected {dtype}")

    for name, (dims, dtype) in REQUIRED_COORDS.items():
        check_variable(name, dims, dtype, coordinate=True)
    for name, (dims, dtype) in REQUIRED_DATA_VARS.items():
        check_variable(name, dims, dtype, coordinate=False)
    for name, (dims, dtype) in OPTIONAL_DATA_VARS.items():
        if name in ds.data_vars:
            check_variable(name, dims, dtype, coordinate=False)

    expected_layout = ParameterLayout(d, h, k).coordinates()
    for name, values in expected_layout.items():
        if not np.array_equal(ds[name].values, values):
            fail(f"coordinate {name!r} does not follow the parameter layout of docs/MATH.md section 1")
    for name, size in (("neuron", h), ("output", k)):
        if not np.array_equal(ds[name].values, np.arange(size)):
            fail(f"coordinate {name!r} must be 0 .. {size - 1}")
    runs = ds["run"].values
    if np.any(runs < 0):
        fail("run ids must be non-negative")
    unique, counts = np.unique(runs, return_counts=True)
    if unique.size != runs.size:
        fail(f"duplicate run id(s) {unique[counts > 1].tolist()}")
    times = ds["time"].values
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        fail("time must be finite and strictly increasing")
    if not np.all(np.isin(ds["status"].values, _STATUS_FLAGS)):
        fail(f"status holds codes outside {_STATUS_FLAGS.tolist()} ({STATUS_MEANINGS})")
    for name, variable in ds.variables.items():
        for required in ("units", "long_name"):
            if not isinstance(variable.attrs.get(required), str):
                fail(f"{name!r} has no string {required!r} attribute")
    for name, variable in ds.variables.items():
        if variable.dtype == np.float64 and np.any(variable.values == NETCDF_DEFAULT_FILL_DOUBLE):
            fail(f"{name!r} holds the netCDF default fill value {NETCDF_DEFAULT_FILL_DOUBLE!r} (data never written)")


# ----------------------------------------------------------------------------------------------------------
# writing


def _chunks(variable: xr.Variable) -> tuple[int, ...]:
    """One run's whole history per chunk: ``run`` -> 1 for variables with more dims than ``run``."""
    if "run" in variable.dims and variable.ndim > 1:
        return tuple(1 if dim == "run" else size for dim, size in zip(variable.dims, variable.shape))
    return tuple(variable.shape)


def storage_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """The netCDF encoding of every variable: fixed dtype, no ``_FillValue``, no packing; numeric
    variables zlib-compressed (level :data:`COMPRESSION_LEVEL`, byte shuffle, Fletcher-32 checksums so that
    corrupted chunks fail to read instead of giving wrong numbers), chunked by run."""
    encoding: dict[str, dict[str, Any]] = {}
    for name, variable in ds.variables.items():
        if variable.dtype.kind == "U":
            encoding[name] = {"dtype": str}  # netCDF-4 variable-length strings (filters do not apply)
        else:
            encoding[name] = {
                "dtype": variable.dtype,
                "_FillValue": None,
                "zlib": True,
                "complevel": COMPRESSION_LEVEL,
                "shuffle": True,
                "fletcher32": True,
                "chunksizes": _chunks(variable),
            }
    return encoding


def write_trajectory_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Validate ``ds`` and write it to ``path`` atomically; returns ``path``.

    Through :func:`reluflow.files.atomic.atomic_output`: the file is written to ``.<name>.<random>.tmp`` in the
    same folder, flushed to disk, then moved over ``path``; on any exception (including KeyboardInterrupt)
    the temporary file is removed. A reader therefore sees either the previous file or the complete new one.
    Encoding: :func:`storage_encoding` (any encoding carried by ``ds`` is ignored).
    """
    path = Path(path)
    try:
        validate_trajectory_dataset(ds)
    except TrajectoryFileError as exc:
        raise TrajectoryFileError(f"refusing to write {path}: {exc}", path=path) from None
    to_write = ds.copy(deep=False)
    to_write.encoding = {}
    for variable in to_write.variables.values():
        variable.encoding = {}
    with atomic_output(path) as temporary:
        to_write.to_netcdf(
            temporary, mode="w", format="NETCDF4", engine="netcdf4", encoding=storage_encoding(to_write)
        )
    return path


# ----------------------------------------------------------------------------------------------------------
# reading

#: errors the netCDF4/HDF5 stack raises for files it cannot parse (corrupt, truncated, not netCDF)
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError)


def open_trajectory_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Read one trajectory file eagerly (the file is closed on return) and validate it.

    Raises ``FileNotFoundError`` for a missing file and :class:`TrajectoryFileError` (one line naming
    the file and how to recover) for a truncated, corrupt, foreign or other-schema-version file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such trajectory file", str(path))
    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False, decode_timedelta=False) as handle:
            ds = handle.load()
    except _READ_ERRORS as exc:
        reason = _one_line(f"{type(exc).__name__}: {exc}")[:200]
        raise TrajectoryFileError(
            f"{path}: cannot be read as a netCDF-4 trajectory file ({reason}); it is truncated, corrupt or "
            f"not a trajectory file: {RECOVERY_HINT}",
            path=path,
        ) from exc
    validate_trajectory_dataset(ds, path)
    return ds


def _combined_config(datasets: list[xr.Dataset], paths: list[Path]) -> str:
    """The ``config_json`` of a concatenation: the configurations must agree except for the keys in
    :data:`PER_BATCH_CONFIG_KEYS`, which become the sorted list of their distinct values."""
    configs = [json.loads(ds.attrs["config_json"]) for ds in datasets]
    shared = [{k: v for k, v in c.items() if k not in PER_BATCH_CONFIG_KEYS} for c in configs]
    for config, path in zip(shared[1:], paths[1:]):
        if config != shared[0]:
            keys = sorted(k for k in set(config) | set(shared[0]) if config.get(k) != shared[0].get(k))
            raise TrajectoryFileError(
                f"{path}: configuration (config_json keys {keys}) differs from that of {paths[0]}; batches of "
                f"different configurations cannot be combined: {RECOVERY_HINT}",
                path=path,
            )
    if len(configs) == 1:
        return datasets[0].attrs["config_json"]
    combined = dict(shared[0])
    for key in PER_BATCH_CONFIG_KEYS:
        values = [c[key] for c in configs if key in c]
        if values:
            distinct: list[Any] = []
            for value in values:
                if value not in distinct:
                    distinct.append(value)
            try:  # independent of the order the files were given in
                distinct = sorted(distinct)
            except TypeError:
                distinct.sort(key=lambda value: json.dumps(value, sort_keys=True))
            combined[key] = distinct
    return _config_json(combined)


def _combine_attrs(datasets: list[xr.Dataset], paths: list[Path]) -> dict[str, Any]:
    """Global attributes of a concatenation: the shared ones must agree; ``config_json`` as in
    :func:`_combined_config`; ``history`` keeps every distinct line; other string attributes that differ
    keep their distinct values, one per line; other non-string attributes that differ are dropped."""
    first = datasets[0].attrs
    for ds, path in zip(datasets[1:], paths[1:]):
        for key in SHARED_ATTRS:
            mine, theirs = ds.attrs.get(key), first.get(key)
            if (mine is None) != (theirs is None) or (mine is not None and mine != theirs):
                raise TrajectoryFileError(
                    f"{path}: global attribute {key!r} differs from that of {paths[0]} (files of different "
                    f"runs of the workflow or configurations cannot be combined): {RECOVERY_HINT}",
                    path=path,
                )
    combined: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for ds in datasets for key in ds.attrs))
    for key in keys:
        values = [ds.attrs[key] for ds in datasets if key in ds.attrs]
        if key == "config_json":
            combined[key] = _combined_config(datasets, paths)
            continue
        if key == "history":
            lines = [line for value in values for line in str(value).splitlines()]
            combined[key] = "\n".join(dict.fromkeys(lines))
            continue
        distinct = []
        for value in values:
            if not any(_same_attr(value, seen) for seen in distinct):
                distinct.append(value)
        if len(distinct) == 1 and len(values) == len(datasets):
            combined[key] = distinct[0]
        elif all(isinstance(value, str) for value in distinct):
            combined[key] = "\n".join(distinct)
    return combined


def _same_attr(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.all(a == b))


def open_trajectories(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> xr.Dataset:
    """Open batch files of one flow, validate each, and concatenate them along ``run``.

    The result holds the runs in increasing run id, with their per-run coordinates. Every file must share
    the time grid (bitwise), the variables, the parameter layout, the attributes in :data:`SHARED_ATTRS`
    and the configuration (``config_json`` up to :data:`PER_BATCH_CONFIG_KEYS`); run ids must be distinct
    across files. Global attributes are combined by :func:`_combine_attrs`. Any violation raises
    :class:`TrajectoryFileError` naming the offending file. Data are loaded and files closed.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths: no trajectory files given")
    return combine_trajectories([open_trajectory_dataset(p) for p in paths], paths)


def group_trajectories(paths: Iterable[str | os.PathLike]) -> dict[tuple[str, str], xr.Dataset]:
    """``{(case, flow label): dataset}`` from the batch files of a scenario, each group's batches combined by
    :func:`combine_trajectories`. The case and the flow are read from each file's ``config_json`` (written by
    ``reluflow simulate``), so the files may live anywhere; each file is read once."""
    groups: dict[tuple[str, str], list[tuple[xr.Dataset, Path]]] = {}
    for path in map(Path, paths):
        ds = open_trajectory_dataset(path)
        try:
            config = json.loads(ds.attrs["config_json"])
            key = (str(config["case"]), str(config["flow"]["label"]))
        except (KeyError, TypeError, ValueError):
            raise TrajectoryFileError(f"{path}: its config_json names no case and flow label (it was not written "
                                      f"by 'reluflow simulate'): {RECOVERY_HINT}", path=path) from None
        groups.setdefault(key, []).append((ds, path))
    return {key: combine_trajectories([d for d, _ in sorted(members, key=lambda m: str(m[1]))],
                                      sorted(p for _, p in members))
            for key, members in sorted(groups.items())}


def combine_trajectories(datasets: list[xr.Dataset], paths: list[Path]) -> xr.Dataset:
    """Concatenate validated batch datasets of one flow (read from ``paths``) along ``run``: the checks and
    result of :func:`open_trajectories`."""
    reference, reference_path = datasets[0], paths[0]
    owner: dict[int, Path] = {}
    for ds, path in zip(datasets, paths):
        if ds.sizes["time"] != reference.sizes["time"] or not np.array_equal(
            ds["time"].values, reference["time"].values
        ):
            raise TrajectoryFileError(
                f"{path}: time grid ({ds.sizes['time']} saves, t in [{ds['time'].values[0]!r}, "
                f"{ds['time'].values[-1]!r}]) differs from that of {reference_path} "
                f"({reference.sizes['time']} saves, t in [{reference['time'].values[0]!r}, "
                f"{reference['time'].values[-1]!r}]); batches of one flow share their save times: {RECOVERY_HINT}",
                path=path,
            )
        if set(ds.variables) != set(reference.variables):
            difference = sorted(set(ds.variables) ^ set(reference.variables))
            raise TrajectoryFileError(
                f"{path}: variables {difference} are in only one of this file and {reference_path}: {RECOVERY_HINT}",
                path=path,
            )
        for run in ds["run"].values.tolist():
            if run in owner:
                raise TrajectoryFileError(
                    f"{path}: run id {run} also occurs in {owner[run]}; run ids must be unique across batch "
                    f"files (is a file listed twice or left over from another run?): {RECOVERY_HINT}",
                    path=path,
                )
            owner[run] = path
    attrs = _combine_attrs(datasets, paths)
    bare = [ds.copy(deep=False) for ds in datasets]
    for ds in bare:  # global attributes are combined above; compat="identical" applies to variables
        ds.attrs = {}
    combined = xr.concat(
        bare,
        dim="run",
        data_vars="minimal",
        coords="minimal",
        compat="identical",
        join="exact",
        combine_attrs="override",
    )
    combined = combined.isel(run=np.argsort(combined["run"].values, kind="stable"))
    combined.attrs = attrs
    validate_trajectory_dataset(combined)
    return combined


__all__ = [
    "COMPRESSION_LEVEL",
    "CONVENTIONS",
    "DIMENSIONS",
    "PARAMETER_BLOCKS",
    "RECOVERY_HINT",
    "SCHEMA_VERSION",
    "TEMPORARY_FILE_PATTERN",
    "TrajectoryFileError",
    "VARIABLE_ATTRS",
    "FileInfo",
    "RunArrays",
    "SavedDiagnostics",
    "build_from_solve_result",
    "build_trajectory_dataset",
    "combine_trajectories",
    "group_trajectories",
    "open_trajectories",
    "open_trajectory_dataset",
    "storage_encoding",
    "validate_trajectory_dataset",
    "write_trajectory_dataset",
]
