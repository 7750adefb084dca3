"""Small smooth gradient systems shared by the integrator tests (independent of ReLU networks)."""

from __future__ import annotations

import numpy as np


def quartic(seed: int = 1, n: int = 5, shift: float = 0.2):
    """``F(y) = 1/2 y.Q y + 1/4 sum_i c_i y_i^4`` with ``Q = B B^T / n + shift I`` positive definite.

    Convex with minimum 0 at 0; ``rhs = -grad F`` treats rows independently (no matmul across the batch),
    so a batched integrator's rows can be compared one by one with a scalar reference.
    Returns ``(F, rhs, rng)``, ``rng`` continuing the stream that drew ``Q`` and ``c``.
    """
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    Q = B @ B.T / n + shift * np.eye(n)
    c4 = rng.uniform(0.5, 2.0, size=n)

    def qy(y):
        return sum(y[..., j : j + 1] * Q[j] for j in range(n))

    def F(y):
        return 0.5 * np.sum(y * qy(y), axis=-1) + 0.25 * np.sum(c4 * y * y * y * y, axis=-1)

    def rhs(y):
        return -(qy(y) + c4 * y * y * y)

    return F, rhs, rng
