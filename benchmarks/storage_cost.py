"""Storage cost of a trajectory file: bytes per saved step per parameter.

Writes a realistic batch (default M = 64 runs of the standard gradient flow for an affine target,
d = k = 1, H = 16, so n = 49 parameters, T = 200 saves at t = 0 and log-spaced times) with
:func:`reluflow.files.trajectories.write_trajectory_dataset` and prints ``file size / (M * T * n)``, next to the
uncompressed size of the same variables and to a batch of incompressible random numbers of the same shape.
The figure includes every variable of the file (theta and the per-save diagnostics), so it is the cost a
user pays per stored parameter value.

The trajectories come from :func:`reluflow.simulate.simulate` (Dormand-Prince) when the solvers are
installed; otherwise from a fixed-step Heun integration of ``theta' = -G(theta)`` written here (the
stored layout and the smoothness in time, which is what compression sees, are the same).

Usage: ``python benchmarks/storage_cost.py [--runs 64] [--saves 200] [--width 16] [--t-max 10]
[--integrator auto|simulate|heun]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from reluflow import Problem
from reluflow.dynamics.solvers.result import Status
from reluflow.files import trajectories as D


def affine_problem(width: int) -> Problem:
    return Problem.from_config(
        {
            "network": {"input_dim": 1, "width": width, "output_dim": 1},
            "domain": [0.0, 1.0],
            "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
            "measure": {"kind": "uniform"},
        }
    )


def heun_batch(problem: Problem, theta0: np.ndarray, times: np.ndarray, step: float) -> dict:
    """Fixed-step Heun for ``theta' = -G(theta)``, landing exactly on every save time; rows that become
    non-finite or exceed 1e8 in norm are frozen as NaN (as the real solvers mark DIVERGED runs)."""
    m = theta0.shape[0]
    theta = np.array(theta0, dtype=float)
    out = np.full((m, times.size, theta.shape[1]), np.nan)
    alive = np.ones(m, dtype=bool)
    t = 0.0
    for j, t_save in enumerate(times):
        while t < t_save and alive.any():
            h = min(step, t_save - t)
            rows = theta[alive]
            g1 = problem.generalized_gradient(rows)
            g2 = problem.generalized_gradient(rows - h * g1)
            theta[alive] = rows - 0.5 * h * (g1 + g2)
            bad = alive.copy()
            bad[alive] = ~np.all(np.isfinite(theta[alive]), axis=1) | (np.linalg.norm(theta[alive], axis=1) > 1e8)
            alive &= ~bad
            theta[bad] = np.nan
            t = t_save if t + h >= t_save else t + h
        out[:, j] = theta
    status = np.where(alive, int(Status.FINISHED), int(Status.DIVERGED))
    return {"theta": out, "status": status, "t_final": np.where(alive, times[-1], np.nan)}


def realistic_batch(runs: int, saves: int, width: int, t_max: float, integrator: str = "auto"):
    problem = affine_problem(width)
    rng = np.random.default_rng(20240607)
    theta0 = rng.standard_normal((runs, problem.n_params))
    times = np.concatenate([[0.0], np.geomspace(1e-3, t_max, saves - 1)])
    init = {"init_scheme": np.array(["gaussian"] * runs), "init_scale": np.ones(runs)}
    origin = "fixed-step Heun, h = 1e-2"
    if integrator in ("auto", "simulate"):
        try:
            from reluflow.simulate import simulate

            ds = simulate(problem, theta0, flow="standard", save_times=times, solver="dopri5",
                          run_ids=np.arange(runs), init=init, scenario="storage_cost", title="storage benchmark",
                          config={"benchmark": True})
            return ds, "reluflow.simulate (dopri5)"
        except Exception as exc:  # the solvers land separately; say why the fallback was used
            if integrator == "simulate":
                raise
            origin += f" (reluflow.simulate failed: {type(exc).__name__}: {exc})"
    solved = heun_batch(problem, theta0, times, step=1e-2)
    theta = solved["theta"]
    flat = theta.reshape(runs * saves, -1)
    risk = np.full(runs * saves, np.nan)
    grad_norm = np.full(runs * saves, np.nan)
    finite = np.all(np.isfinite(flat), axis=1)
    risk[finite], grad = problem.risk_and_gradient(flat[finite])
    grad_norm[finite] = np.linalg.norm(grad, axis=1)
    risk, grad_norm = risk.reshape(runs, saves), grad_norm.reshape(runs, saves)
    arrays = D.RunArrays(
        theta=theta,
        time=times,
        risk=risk,
        grad_norm=grad_norm,
        param_norm=np.linalg.norm(theta, axis=-1),
        energy_residual=np.zeros((runs, saves)),  # not integrated by the fallback; stored like any column
        status=solved["status"],
        t_final=solved["t_final"],
        run_ids=np.arange(runs),
        critical_risk=np.full(runs, np.nan),
        critical_grad_norm=np.full(runs, np.nan),
    )
    info = D.FileInfo(scenario="storage_cost", title="storage benchmark", config={"benchmark": True})
    ds = D.build_trajectory_dataset(arrays, problem.layout, info, init={**init, "initial_risk": problem.risk(theta0)})
    return ds, origin


def measure(ds, folder: Path, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    path = D.write_trajectory_dataset(ds, folder / name)
    seconds = time.perf_counter() - started
    D.open_trajectory_dataset(path)  # the file is valid
    return path.stat().st_size, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--t-max", type=float, default=10.0)
    parser.add_argument("--integrator", choices=("auto", "simulate", "heun"), default="auto",
                        help="auto: reluflow.simulate if it runs, else the Heun fallback")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    ds, origin = realistic_batch(args.runs, args.saves, args.width, args.t_max, args.integrator)
    m, t, n = ds["theta"].shape
    print(f"batch: M = {m} runs, T = {t} saves (t in [0, {args.t_max:g}]), n = {n} parameters (H = {args.width})")
    print(f"trajectories from {origin} in {time.perf_counter() - started:.1f} s; "
          f"status counts {np.bincount(ds['status'].values, minlength=len(Status)).tolist()}")

    noise = ds.copy(deep=True)
    rng = np.random.default_rng(1)
    for name, variable in noise.data_vars.items():
        if variable.dtype == np.float64:
            noise[name] = variable.copy(data=rng.standard_normal(variable.shape))
    values = m * t * n
    raw = sum(v.nbytes for v in ds.variables.values())
    with tempfile.TemporaryDirectory() as folder:
        size, seconds = measure(ds, Path(folder), "realistic.nc")
        noise_size, _ = measure(noise, Path(folder), "noise.nc")
    print(f"uncompressed variables: {raw:,} bytes = {raw / values:.3f} bytes per saved step per parameter")
    print(f"file (zlib {D.COMPRESSION_LEVEL} + shuffle): {size:,} bytes = {size / values:.3f} bytes per saved step "
          f"per parameter (written in {seconds:.2f} s)")
    print(f"same shape, random numbers: {noise_size:,} bytes = {noise_size / values:.3f} bytes per saved step "
          f"per parameter")


if __name__ == "__main__":
    main()
