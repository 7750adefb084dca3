"""The initialization file: one batch of initial parameters with their provenance (netCDF).

Layout (schema ``reluflow-initializations/1``): ``theta0(run, param)``, coordinates ``run`` (run ids),
``param_name``, per-run ``init_scheme`` and ``init_scale``; global attributes ``schema_version``,
``scenario``, ``case``, ``batch``, ``seed`` (how the runs' random streams derive), ``source``,
``history`` and ``config_json`` (the problem and the initialization settings it was drawn from).
Written atomically (:mod:`reluflow.files.atomic`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from reluflow.files.atomic import atomic_output
from reluflow.files.provenance import config_json, history_line, source_string
from reluflow.files.trajectories import TrajectoryFileError

SCHEMA_VERSION = "reluflow-initializations/1"


def build_init_dataset(theta0, run_ids, meta: Mapping, *, spec: Mapping, batch: int, problem) -> xr.Dataset:
    """The dataset of one batch of initial parameters ``theta0 (M, n)`` for runs ``run_ids``."""
    theta0 = np.asarray(theta0, dtype=float)
    coords = {
        "run": ("run", np.asarray(run_ids, dtype=np.int32), {"long_name": "run id", "units": "1"}),
        "init_scheme": ("run", np.asarray(meta["init_scheme"], dtype=str),
                        {"long_name": "initialization scheme", "units": "1"}),
        "init_scale": ("run", np.asarray(meta["init_scale"], dtype=float),
                       {"long_name": "initialization scale (gaussian std or relative perturbation)", "units": "1"}),
    }
    pcoords = problem.layout.coordinates()
    coords["param_name"] = ("param", np.asarray(pcoords["param_name"]), {"long_name": "parameter", "units": "1"})
    ds = xr.Dataset(
        {"theta0": (("run", "param"), theta0, {"long_name": "initial network parameters", "units": "1"})},
        coords=coords,
        attrs={
            "schema_version": SCHEMA_VERSION,
            "title": f"reluflow initializations: {spec['scenario']} / {spec['case']} batch {batch}",
            "scenario": spec["scenario"],
            "case": spec["case"],
            "batch": int(batch),
            "seed": (f"SeedSequence(entropy=sha256('{spec['scenario']}' US '{spec['case']}')[:16], "
                     "spawn_key=(run,))"),
            "source": source_string(),
            "history": history_line(),
            "config_json": config_json(spec),
        },
    )
    return ds


def write_init_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write atomically (netCDF4, zlib)."""
    enc = {name: {"zlib": True, "complevel": 4} for name in ("theta0", "init_scale")}
    with atomic_output(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=enc)
    return Path(path)


def open_init_dataset(path: str | os.PathLike) -> tuple[xr.Dataset, dict]:
    """Read an initialization file eagerly; returns ``(dataset, spec)``.

    Raises :class:`~reluflow.files.trajectories.TrajectoryFileError` (one line naming the file) for a corrupt,
    truncated or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such initialization file", str(path))
    try:
        with xr.open_dataset(path, engine="netcdf4") as handle:
            ds = handle.load()
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise TrajectoryFileError(
            f"{path}: not a readable netCDF file ({type(exc).__name__}); delete it and rerun the workflow", path=path
        ) from None
    if ds.attrs.get("schema_version") != SCHEMA_VERSION or "theta0" not in ds:
        raise TrajectoryFileError(
            f"{path}: not a reluflow initialization file (schema_version "
            f"{ds.attrs.get('schema_version')!r}, expected {SCHEMA_VERSION!r}); delete it and rerun the workflow",
            path=path,
        )
    return ds, json.loads(ds.attrs["config_json"])
