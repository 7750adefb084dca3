"""The dense stiff step's linear algebra in its two layouts: which one a batch of ``m`` rows should take.

A Rosenbrock step on the symmetric standard flow factorizes ``W = sigma I - J`` (Cholesky, ``n = 3H + 1``) for every
row of its batch and solves with it once per stage. ``reluflow.dynamics.solvers.rosenbrock._cholesky_shifted`` has
two layouts of the same arithmetic: all rows in lockstep (one SIMD lane per row; the vector is as long as the batch)
and each row on its own (the vector lanes along a row of the factor). This script times one factorization and six
solves (Rodas4's stages) per row in each layout, for ``n = 4, 13, 49, 97`` (H = 1, 4, 16, 32) and batches of 1 to 16
rows, and prints the ratio lockstep / per row (above 1: the row layout is faster) next to the choice that
``cholesky_in_lockstep`` makes. Batches of every size occur: a batch thins as its runs finish, and ``auto`` hands
its runs to the stiff solver one by one.

Both layouts are timed interleaved, ``--repeats`` times, inside one compiled loop of ``k`` factorizations each (no
Python between them); the minimum is kept (the machine is shared). Both give the same bits, checked here too.

Usage: ``python benchmarks/bench_dense_factor.py [--repeats 5] [--sizes 4,13,49,97]``
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from reluflow.dynamics.solvers.rosenbrock import _cholesky_shifted, _dense_solve_into, cholesky_in_lockstep

STAGES = 6  # Rodas4's solves per step


@numba.njit(cache=True, error_model="numpy")
def factor_and_solve(jac, shift, A, lu, piv, kind, b, x, work, times):
    for _ in range(times):
        kind[:] = 1
        _cholesky_shifted(jac, shift, A, lu, kind)
        for _ in range(STAGES):
            _dense_solve_into(kind, A, lu, piv, b, x, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="4,13,49,97")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("lockstep time / per-row time for one factorization and six solves per row, by batch size m")
    for n in (int(v) for v in args.sizes.split(",")):
        cells = []
        for m in range(1, 17):
            a = rng.standard_normal((m, n, n))
            jac = -(a @ a.transpose(0, 2, 1)) / n  # J = -Hess L near a minimum: W positive definite
            shift = rng.uniform(0.5, 2.0, m)
            b = rng.standard_normal((m, n))
            lu, piv, work = np.empty((m, n, n)), np.zeros((m, n), dtype=np.int64), np.empty((n, m))
            kind = np.ones(m, dtype=np.int8)
            layouts = {"lockstep": np.empty((n, n, m)), "rows": np.empty((n, n, 0))}
            solutions = {}
            times = max(1, int(3e6 / (m * n**3)))
            best = dict.fromkeys(layouts, np.inf)
            for name, A in layouts.items():  # warm-up (compilation or cache load), and the bits of each layout
                x = np.empty((m, n))
                factor_and_solve(jac, shift, A, lu, piv, kind, b, x, work, 1)
                solutions[name] = x
            if not np.array_equal(solutions["lockstep"], solutions["rows"]):
                raise SystemExit(f"n = {n}, m = {m}: the two layouts differ")
            for _ in range(args.repeats):
                for name, A in layouts.items():
                    start = time.perf_counter()
                    factor_and_solve(jac, shift, A, lu, piv, kind, b, x, work, times)
                    best[name] = min(best[name], time.perf_counter() - start)
            chosen = " " if cholesky_in_lockstep(m, n) == (best["lockstep"] < best["rows"]) else "!"
            cells.append(f"{m}:{best['lockstep'] / best['rows']:.2f}{chosen}")
        per_row = best["rows"] / times / 16 * 1e6
        print(f"n = {n:3d} (per row at m = 16: {per_row:6.1f} us)  " + " ".join(cells))
    print("! : cholesky_in_lockstep picks the layout measured slower here")


if __name__ == "__main__":
    main()
