"""Cost of the linear algebra of one stiff step, d = 1: factorize ``W = sigma I - J`` and solve 6 right-hand sides.

For each width ``H`` and ``M = 8`` runs, times :func:`reluflow.kernels.structured1d.factorize` followed by 6 calls of
``.solve`` (a Rodas4 step: one factorization, 6 stages solved one after the other), with
``method="structured"`` (the augmented band system, O(H log H) per run) and ``method="dense"`` (the dense exact
Jacobian and a partial-pivoting LU of ``W``, O(H^3) per run; only up to ``--dense-max``, beyond which it takes
minutes and gigabytes). Both start from ``theta``: the dense time includes forming ``J``, the structured time
the sort and the piece moments. Where both run, the largest relative difference of their solutions is printed
(a sanity check; the accuracy is tested in ``tests/test_structured1d.py``).

Reported: the growth exponent ``p`` of the structured time, ``t ~ H^p``, fitted by least squares on
``log t`` over the widths ``>= 64``, and the crossover: the smallest width of ``--crossover`` from which the
structured path is faster at every larger width measured there (``dense_below_width`` of the module is set from it).

Each configuration is timed ``--repeats`` times after a warm-up call (numba compilation / cache load), the two
methods interleaved. Times are the CPU time of this process (``time.process_time``; every kernel here runs on one
thread): on a shared machine wall time also counts the time other jobs hold the core. The minimum over the
repeats is the figure of merit (medians printed too).

Usage: ``python benchmarks/bench_structured1d.py [--runs 8] [--widths 16 64 256 1024 4096] [--dense-max 256]
[--crossover 8 12 16 20 24 32 48] [--flow standard] [--outputs 1] [--repeats 5] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reluflow import Problem
from reluflow.kernels.structured1d import factorize

SOLVES = 6
SIGMA = 10.0  # 1 / (h gamma): a moderately stiff step


def one_step(problem: Problem, theta: np.ndarray, rhs: np.ndarray, flow: str, method: str):
    """Factorize and solve ``SOLVES`` right-hand sides; returns ``(seconds factorizing, seconds solving, x)``."""
    start = time.process_time()
    factors = factorize(theta, SIGMA, problem.table, problem.width, flow, method=method)
    middle = time.process_time()
    for _ in range(SOLVES):
        x = factors.solve(rhs)
    return middle - start, time.process_time() - middle, x


def measure(width: int, args, methods) -> dict:
    """``{method: (factor seconds (repeats,), solve seconds (repeats,), last solution)}`` for one width."""
    k = args.outputs
    target = {"kind": "affine", "slope": [2.0 - m for m in range(k)], "intercept": [-1.0 + 0.5 * m for m in range(k)]}
    problem = Problem.from_config({"network": {"width": width, "output_dim": k}, "target": target})
    rng = np.random.default_rng(args.seed)
    theta = rng.normal(size=(args.runs, problem.n_params))  # kinks -b/w spread over and beyond [0, 1]
    if args.flow == "normalized":
        from reluflow.dynamics.flows import project_to_manifold

        theta = project_to_manifold(problem, theta)
    rhs = rng.normal(size=theta.shape)
    for method in methods:
        one_step(problem, theta, rhs, args.flow, method)  # warm-up
    factor_times = {method: [] for method in methods}
    solve_times = {method: [] for method in methods}
    solution = {}
    for _ in range(args.repeats):
        for method in methods:
            factor, solve, solution[method] = one_step(problem, theta, rhs, args.flow, method)
            factor_times[method].append(factor)
            solve_times[method].append(solve)
    return {method: (np.array(factor_times[method]), np.array(solve_times[method]), solution[method]) for method in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--dense-max", type=int, default=256)
    parser.add_argument("--crossover", type=int, nargs="+", default=[8, 12, 16, 20, 24, 32, 48])
    parser.add_argument("--flow", choices=["standard", "normalized"], default="standard")
    parser.add_argument("--outputs", type=int, default=1, help="output dimension k")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"M = {args.runs} runs, k = {args.outputs}, flow {args.flow}, sigma = {SIGMA}, factorize + {SOLVES} solves; affine target, "
          f"uniform law; {args.repeats} interleaved repeats; times in ms (min / median)")  # fmt: skip
    header = (f"{'H':>5s} {'n':>6s}   {'structured: total (factor + solves)':>40s}   "
              f"{'dense: total (factor + solves)':>40s}   dense/struct  max rel diff")
    print(header)
    structured_min = {}
    for width in args.widths:
        methods = ["structured"] + (["dense"] if width <= args.dense_max else [])
        result = measure(width, args, methods)
        cells = []
        for method in ("structured", "dense"):
            if method not in result:
                cells.append(f"{'-':>40s}")
                continue
            factor, solve, _ = result[method]
            total = factor + solve
            cells.append(f"{1e3 * total.min():9.3f} / {1e3 * np.median(total):9.3f} ({1e3 * factor.min():8.3f} + {1e3 * solve.min():8.3f})")
        structured_min[width] = (result["structured"][0] + result["structured"][1]).min()
        line = f"{width:5d} {(2 + args.outputs) * width + args.outputs:6d}   {cells[0]}   {cells[1]}"
        if "dense" in result:
            dense_total = (result["dense"][0] + result["dense"][1]).min()
            x_s, x_d = result["structured"][2], result["dense"][2]
            difference = np.max(np.linalg.norm(x_s - x_d, axis=1) / np.linalg.norm(x_d, axis=1))
            line += f"   {dense_total / structured_min[width]:10.2f}  {difference:10.2e}"
        print(line)
    large = np.array([w for w in structured_min if w >= 64])
    if large.size >= 2:
        slope = np.polyfit(np.log(large), np.log([structured_min[w] for w in large]), 1)[0]
        print(f"structured time ~ H^p, least squares over H = {', '.join(map(str, large))}: p = {slope:.2f}")

    print(f"\ncrossover (min total ms over {args.repeats} repeats):")
    faster = {}
    for width in args.crossover:
        result = measure(width, args, ["structured", "dense"])
        s, d = ((result[m][0] + result[m][1]).min() for m in ("structured", "dense"))
        faster[width] = s < d
        print(f"  H = {width:4d}: structured {1e3 * s:8.3f}  dense {1e3 * d:8.3f}  -> {'structured' if s < d else 'dense'}")
    widths = sorted(faster)
    from_width = next((w for i, w in enumerate(widths) if all(faster[v] for v in widths[i:])), None)
    print(f"structured faster from H = {from_width} on (of the widths measured)" if from_width else "dense faster at every width measured")


if __name__ == "__main__":
    main()
