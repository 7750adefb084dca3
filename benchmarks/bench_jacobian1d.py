"""Cost of the exact d = 1 gradient Jacobian relative to one risk + gradient evaluation of the same batch.

Target (issue 8): for M = 256 runs and H = 16 neurons, ``reluflow.kernels.jacobian1d.gradient_jacobian`` (default
backend, the compiled kernel) should take at most ~20 times ``Problem.risk_and_gradient`` (default backend)
on the same batch. The Jacobian writes ``n^2 = 2401`` numbers per run against ``n = 49`` for the gradient.

Both are timed interleaved, ``--repeats`` times each, after a warm-up call (numba compilation / cache load).
The machine is shared, so the figure of merit is the ratio of the *minimum* times (the least disturbed
runs); medians are printed as well. Targets: an affine target on a uniform law (Q = 2 Gauss-Legendre
nodes per piece) and a sine target on a triangular law (Q = 16, several table intervals).

Usage: ``python benchmarks/bench_jacobian1d.py [--runs 256] [--width 16] [--repeats 50] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reluflow import Problem
from reluflow.kernels.jacobian1d import gradient_jacobian

PROBLEMS = {
    "affine / uniform": {"target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}, "measure": {"kind": "uniform"}},
    "sine / triangular": {"target": {"kind": "sine", "frequency": 3.0}, "measure": {"kind": "triangular"}},
}


def measure(problem: Problem, theta: np.ndarray, repeats: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per call of risk+gradient and of the Jacobian, ``repeats`` interleaved samples each."""
    problem.risk_and_gradient(theta)
    gradient_jacobian(theta, problem.table, problem.width, backend=backend)
    gradient_times, jacobian_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        problem.risk_and_gradient(theta)
        gradient_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        gradient_jacobian(theta, problem.table, problem.width, backend=backend)
        jacobian_times.append(time.perf_counter() - start)
    return np.array(gradient_times), np.array(jacobian_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"M = {args.runs} runs, H = {args.width}, {args.repeats} interleaved repeats; times in ms (min / median)")
    for name, spec in PROBLEMS.items():
        problem = Problem.from_config({"network": {"width": args.width}, **spec})
        rng = np.random.default_rng(args.seed)
        theta = rng.normal(size=(args.runs, problem.n_params))  # kinks -b/w spread over and beyond [0, 1]
        for backend in ("numba", "numpy"):
            gradient, jacobian = measure(problem, theta, args.repeats, backend)
            print(
                f"{name:18s} jacobian[{backend:5s}] {1e3 * jacobian.min():8.3f} / {1e3 * np.median(jacobian):8.3f}   "
                f"risk+grad {1e3 * gradient.min():7.3f} / {1e3 * np.median(gradient):7.3f}   "
                f"ratio {jacobian.min() / gradient.min():6.1f} / {np.median(jacobian) / np.median(gradient):6.1f}"
            )


if __name__ == "__main__":
    main()
