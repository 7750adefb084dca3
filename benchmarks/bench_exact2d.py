"""Benchmark of the exact d = 2 risk + generalized gradient against quasi-Monte Carlo.

Problem: uniform law on ``[0, 1]^2``; target ``f = 0.1 + 0.5 y - 0.3 x + 0.2 x y + relu(x - 0.5 y - 0.2)
- 0.7 relu(0.3 x + y - 0.6)`` (polynomial + teacher: piecewise smooth, like the networks). Networks: ``M = 256``
runs, ``H = 16`` neurons whose lines pass through uniform points of the square with uniform directions
(``|w|`` in [0.5, 2]; every neuron matters), ``V, c`` standard normal.

1. The exact evaluation: :mod:`reluflow.kernels.exact2d_numba` (and the numpy reference path), minimum wall
   time over repeats after a warm-up call (compilation or cache load).
2. The accuracy of the ``qmc`` measure (scrambled Sobol', equal weights) on the same networks: the RMS over
   ``R`` scramblings of the relative error of ``L`` (and of ``|G - G_exact|_max / |G_exact|_max``) at
   ``N = 2^m`` points, pooled over a subset of the networks; the fit ``C N^-alpha`` gives the ``N`` needed for
   a relative RMS error of ``1e-8`` (rounded up to a power of two, where Sobol' points are balanced).
3. The time of :func:`reluflow.discrete.risk_and_gradient` for all runs on that many points: one call on
   ``--qmc-runs`` runs (default 8; the full 256 take hours), scaled by ``M / runs`` (the discrete path
   processes runs independently, in chunks: its cost is linear in the number of runs).
4. The growth of the exact cost with ``H = 8, 16, 32, 64`` (same M): the fitted exponent of ``t ~ H^p``.

Run: ``python benchmarks/bench_exact2d.py [--repeats 5] [--scramblings 16] [--qmc-runs 8]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import qmc

from reluflow.kernels import discrete, exact2d, exact2d_numba
from reluflow.kernels.exact2d import PlanarProblemData

M, H = 256, 16
TARGET_ACCURACY = 1e-8
DATA = PlanarProblemData.with_uniform_density(
    (0.0, 1.0),
    [[[0.1, 0.5], [-0.3, 0.2]]],  # 0.1 + 0.5 y - 0.3 x + 0.2 x y
    teacher_W=[[1.0, -0.5], [0.3, 1.0]],
    teacher_b=[-0.2, -0.6],
    teacher_V=[[1.0, -0.7]],
)


def networks(rng: np.random.Generator, width: int, runs: int) -> np.ndarray:
    """``runs`` parameter vectors, lines through uniform points of the square with uniform directions."""
    angle = rng.uniform(0.0, 2.0 * np.pi, (runs, width))
    radius = rng.uniform(0.5, 2.0, (runs, width))
    W = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    bias = -np.sum(W * rng.uniform(0.0, 1.0, (runs, width, 2)), axis=-1)
    return np.concatenate([W.reshape(runs, 2 * width), bias, rng.normal(size=(runs, width + 1))], axis=1)


def best_of(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()  # compilation / cache load, page faults of the outputs
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sobol(n_points: int, seed: int) -> np.ndarray:
    engine = qmc.Sobol(2, scramble=True, rng=np.random.default_rng(seed))
    return engine.random(n_points)


def qmc_errors(theta, risk, grad, exponents, scramblings):
    """Relative RMS errors over scramblings of ``L`` and of ``G`` (max norm), pooled over the rows of ``theta``."""
    err_risk = np.zeros(len(exponents))
    err_grad = np.zeros(len(exponents))
    for row, m in enumerate(exponents):
        for seed in range(scramblings):
            points = sobol(2**m, seed)
            weights = np.full(points.shape[0], 1.0 / points.shape[0])
            risk_q, grad_q = discrete.risk_and_gradient(theta, points, weights, DATA.target(points), H)
            err_risk[row] += np.mean(((risk_q - risk) / risk) ** 2)
            err_grad[row] += np.mean((np.max(np.abs(grad_q - grad), axis=1) / np.max(np.abs(grad), axis=1)) ** 2)
    return np.sqrt(err_risk / scramblings), np.sqrt(err_grad / scramblings)


def points_needed(exponents, rms) -> tuple[float, float, int]:
    """Fit ``rms = C N^-alpha`` (least squares in log-log); the smallest power of two with ``C N^-alpha <= 1e-8``."""
    slope, intercept = np.polyfit(exponents * np.log(2.0), np.log(rms), 1)
    alpha = -slope
    n_float = np.exp((intercept - np.log(TARGET_ACCURACY)) / alpha)
    return alpha, np.exp(intercept), int(2 ** np.ceil(np.log2(n_float)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--scramblings", type=int, default=16, help="scrambled Sobol' sets per point count")
    parser.add_argument("--accuracy-runs", type=int, default=8, help="networks used to fit the QMC error")
    parser.add_argument("--qmc-runs", type=int, default=8, help="runs timed on the QMC point set (scaled to M)")
    args = parser.parse_args()
    rng = np.random.default_rng(20240602)
    theta = networks(rng, H, M)
    print(f"exact d = 2 risk + gradient vs qmc: M = {M} runs, H = {H}, uniform law on [0, 1]^2, "
          f"polynomial + teacher target (cell rule {DATA.cell_points}^2 points per triangle)")  # fmt: skip

    # 1. exact
    t_numba = best_of(lambda: exact2d_numba.risk_and_gradient(theta, H, 1, DATA), args.repeats)
    t_numpy = best_of(lambda: exact2d.risk_and_gradient(theta, H, 1, DATA), max(1, args.repeats // 5))
    t_jac = best_of(lambda: exact2d_numba.gradient_jacobian(theta, H, 1, DATA), max(1, args.repeats // 2))
    risk, grad = exact2d_numba.risk_and_gradient(theta, H, 1, DATA)
    print(f"\nexact, numba kernel         {1e3 * t_numba:9.2f} ms")
    print(f"exact, numpy reference      {1e3 * t_numpy:9.2f} ms   ({t_numpy / t_numba:.1f}x numba)")
    print(f"exact Jacobian, numba       {1e3 * t_jac:9.2f} ms   ({t_jac / t_numba:.1f}x risk + gradient)")

    # 2. qmc accuracy on a subset of the networks
    subset = slice(0, args.accuracy_runs)
    exponents = np.arange(8, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every N is a power of two: no balance warning expected
        rms_risk, rms_grad = qmc_errors(theta[subset], risk[subset], grad[subset], exponents, args.scramblings)
    print(f"\nqmc relative RMS error over {args.scramblings} scramblings, {args.accuracy_runs} networks:")
    print("    N      risk       gradient (max norm)")
    for m, er, eg in zip(exponents, rms_risk, rms_grad):
        print(f"  2^{m:<3d} {er:9.2e}   {eg:9.2e}")
    alpha, C, n_risk = points_needed(exponents, rms_risk)
    alpha_g, C_g, n_grad = points_needed(exponents, rms_grad)
    print(f"fit risk:     {C:.3g} N^-{alpha:.3f}  -> N = 2^{int(np.log2(n_risk))} = {n_risk} points for {TARGET_ACCURACY:g}")
    print(f"fit gradient: {C_g:.3g} N^-{alpha_g:.3f}  -> N = 2^{int(np.log2(n_grad))} points for {TARGET_ACCURACY:g}")

    # 3. qmc cost at that accuracy (of the risk)
    runs = min(args.qmc_runs, M)
    points = sobol(n_risk, 0)
    weights = np.full(n_risk, 1.0 / n_risk)
    values = DATA.target(points)
    t_values = best_of(lambda: DATA.target(points), 1, warm_up=False)
    t_qmc = best_of(lambda: discrete.risk_and_gradient(theta[:runs], points, weights, values, H), 1, warm_up=False) * (M / runs)
    scaled = "" if runs == M else f" (measured on {runs} runs, scaled by {M / runs:g})"
    print(f"\nqmc risk + gradient, N = {n_risk}: {t_qmc:9.2f} s{scaled}  (+ {t_values:.2f} s for the target values)")
    print(f"ratio qmc / exact: {t_qmc / t_numba:.0f}x")

    # 4. growth with H
    widths = np.array([8, 16, 32, 64])
    times = []
    for width in widths:
        batch = networks(rng, width, M)
        times.append(best_of(lambda batch=batch, width=width: exact2d_numba.risk_and_gradient(batch, width, 1, DATA), args.repeats))
    exponent = np.polyfit(np.log(widths), np.log(times), 1)[0]
    print("\nexact cost vs H (numba, M = 256):")
    for width, t in zip(widths, times):
        print(f"  H = {width:3d}  {1e3 * t:9.2f} ms")
    print(f"fitted exponent: t ~ H^{exponent:.2f}")


if __name__ == "__main__":
    main()
