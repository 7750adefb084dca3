"""Benchmark: exact risk + generalized gradient for Gaussian inputs against Monte Carlo at equal accuracy.

M = 256 runs, d = 5, H = 16, k = 1, a teacher of 4 neurons (``f(x) = TV relu(TW x + Tb)``), input law
``N(mean, cov)`` with a non-identity covariance. Measured in one process:

- the exact kernels (:mod:`reluflow.kernels.gaussian_numba` and the numpy reference), each the minimum
  wall time over repeats after a warm-up call (which compiles the numba kernel or loads it from the cache);
- a vectorized Monte Carlo estimator of the same ``L`` and ``G`` (all runs at once, chunks of samples,
  batched matrix products): a pilot with ``--pilot`` samples gives the per-sample variance of the risk and
  of every gradient component, hence the number of samples for a relative standard error of 1e-6
  (``n = Var / (1e-6 scale)^2``, ``scale = L`` for the risk and ``max_j |G_j|`` of the run for each component of
  ``G``; the largest over quantities and runs, since every run must meet it), and its time per sample.

Monte Carlo at that count is not run (it would take days or years); its time is the pilot's measured time
per sample times the count. The pilot also checks the exact values (largest deviation in standard errors).

Run: ``python benchmarks/bench_gaussian.py [--repeats 10] [--pilot 20000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reluflow.kernels import gaussian, gaussian_numba
from reluflow.kernels.gaussian import GaussianTarget

M, D, H, K, HT = 256, 5, 16, 1, 4
RELATIVE_SE = 1e-6


def problem(rng: np.random.Generator):
    A = rng.normal(size=(D, D))
    cov = A @ A.T / D + 0.5 * np.eye(D)
    cov = 0.5 * (cov + cov.T)
    mean = 0.3 * rng.normal(size=D)
    target = GaussianTarget.from_pieces(
        D, K, teacher=(rng.normal(size=(HT, D)) / np.sqrt(D), 0.5 * rng.normal(size=HT), rng.normal(size=(K, HT)))
    )
    W = rng.normal(size=(M, H, D)) / np.sqrt(D)
    b = 0.5 * rng.normal(size=(M, H))
    V = rng.normal(size=(M, K, H)) / np.sqrt(H)
    c = 0.1 * rng.normal(size=(M, K))
    theta = np.concatenate([W.reshape(M, -1), b, V.reshape(M, -1), c], axis=1)
    return theta, mean, cov, target


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: compilation or cache load, page faults
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def monte_carlo(theta, mean, cov, target, samples: int, rng: np.random.Generator, chunk: int = 1000):
    """Sample means and variances of the per-sample integrands of ``L`` and ``G`` for every run, and the number of
    samples where each integrand is nonzero: ``(M, 1 + n)`` each."""
    L = np.linalg.cholesky(cov)
    W = theta[:, : D * H].reshape(M, H, D)
    b = theta[:, D * H : D * H + H]
    V = theta[:, D * H + H : D * H + H + K * H].reshape(M, K, H)
    c = theta[:, D * H + H + K * H :]
    n = theta.shape[1]
    total = np.zeros((M, 1 + n))
    total_sq = np.zeros((M, 1 + n))
    support = np.zeros((M, 1 + n))
    for start in range(0, samples, chunk):
        x = mean + rng.standard_normal((min(chunk, samples - start), D)) @ L.T  # (P, D), shared by the runs
        f = np.maximum(x @ target.TW.T + target.Tb, 0.0) @ target.TV.T  # (P, K)
        z = np.einsum("mhd,pd->mph", W, x) + b[:, None, :]  # (M, P, H)
        relu = np.maximum(z, 0.0)
        r = c[:, None, :] + np.einsum("mph,mkh->mpk", relu, V) - f  # (M, P, K)
        g_b = 2.0 * np.where(z > 0.0, np.einsum("mpk,mkh->mph", r, V), 0.0)  # integrand of G_b; G_W: times x_j
        g_v = 2.0 * r[:, :, :, None] * relu[:, :, None, :]  # (M, P, K, H)
        parts = [
            np.sum(r * r, axis=2)[:, :, None],
            (g_b[:, :, :, None] * x[None, :, None, :]).reshape(M, -1, H * D),
            g_b,
            g_v.reshape(M, -1, K * H),
            2.0 * r,
        ]
        values = np.concatenate(parts, axis=2)  # (M, P, 1 + n)
        total += values.sum(axis=1)
        total_sq += (values * values).sum(axis=1)
        support += (values != 0.0).sum(axis=1)
    estimate = total / samples
    return estimate, np.maximum(total_sq / samples - estimate**2, 0.0), support


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls of the exact kernels (numpy: a fifth)")
    parser.add_argument("--pilot", type=int, default=20000, help="Monte Carlo pilot samples")
    args = parser.parse_args()
    rng = np.random.default_rng(20240611)
    theta, mean, cov, target = problem(rng)
    args_exact = (theta, D, H, K, mean, cov, target)
    print(
        f"Gaussian inputs: M = {M} runs, d = {D}, H = {H}, k = {K}, teacher of {HT} neurons, n_params = {theta.shape[1]}"
    )

    t_numba = best_of(lambda: gaussian_numba.risk_and_gradient(*args_exact), args.repeats)
    t_numpy = best_of(lambda: gaussian.risk_and_gradient(*args_exact), max(2, args.repeats // 5))
    risk, grad = gaussian_numba.risk_and_gradient(*args_exact)
    risk_np, grad_np = gaussian.risk_and_gradient(*args_exact)

    start = time.perf_counter()
    estimate, variance, support = monte_carlo(theta, mean, cov, target, args.pilot, np.random.default_rng(1))
    t_pilot = time.perf_counter() - start
    exact = np.concatenate([risk[:, None], grad], axis=1)
    # quantities of a neuron that fewer than 100 pilot samples activate have no usable error estimate
    sampled = support >= 100
    deviation = (exact - estimate)[sampled] / np.sqrt(variance[sampled] / args.pilot)
    scale = np.concatenate(
        [risk[:, None], np.repeat(np.max(np.abs(grad), axis=1, keepdims=True), grad.shape[1], axis=1)], axis=1
    )
    needed_per_run = np.max(variance / (RELATIVE_SE * scale) ** 2, axis=1)
    needed = float(np.max(needed_per_run))
    t_mc = t_pilot / args.pilot * needed

    print(f"\nexact, numba kernel      {1e3 * t_numba:10.2f} ms   (numpy reference path {1e3 * t_numpy:.1f} ms)")
    rel_risk = np.max(np.abs(risk - risk_np) / risk)
    rel_grad = np.max(np.abs(grad - grad_np)) / np.max(np.abs(grad))
    print(f"  numba vs numpy: max |dL| / L = {rel_risk:.1e}, max |dG| / max |G| = {rel_grad:.1e}")
    print(
        f"Monte Carlo pilot        {args.pilot} samples x {M} runs in {t_pilot:.2f} s "
        f"({1e6 * t_pilot / args.pilot:.1f} us per sample for all runs)"
    )
    print(
        f"  exact values vs pilot, in standard errors: mean {np.mean(deviation):+.2f}, std {np.std(deviation):.2f}, largest "
        f"{np.max(np.abs(deviation)):.2f} over {deviation.size} quantities (the runs share the samples, so the deviations are "
        "correlated and this spread varies between pilots: std 0.7 to 1.6 over seeds)"
    )
    print(
        f"  ({np.sum(~sampled)} quantities with fewer than 100 nonzero samples left out; their exact values are "
        f"below {np.max(np.abs(exact[~sampled]), initial=0.0):.1e})"
    )
    print(f"samples for a relative standard error of {RELATIVE_SE:g} (risk: of L; gradient: of max |G| of the run):")
    print(f"  {needed:.2e} (every run; median run {np.median(needed_per_run):.2e})")
    print(f"Monte Carlo at that count {t_mc:10.3e} s  = {t_mc / 86400:.3g} days (pilot time per sample x count)")
    print(f"ratio Monte Carlo / exact (numba) = {t_mc / t_numba:.2e}")


if __name__ == "__main__":
    main()
