"""Dense LU of ``sigma I - J`` per row of a batch, with partial pivoting (compiled).

Each row is factorized and solved on its own, by the same fixed sequence of IEEE operations whatever the batch:
the numbers of a run are bitwise independent of the other runs (no LAPACK, whose blocked kernels sum in a
CPU-dependent order). Used by the stiff solver for small widths and by the dense path of
:mod:`reluflow.kernels.structured1d`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["lu_factor_shifted", "lu_solve_into", "lu_solve_row"]


@njit(cache=True, error_model="numpy")
def lu_factor_shifted(jac, shift, lu, piv, ok):
    """``lu[r] = LU(diag(shift[r]) - jac[r])`` with partial pivoting, in place; ``ok[r]`` False on a zero pivot."""
    m, n, _ = jac.shape
    for r in range(m):
        a = lu[r]
        for i in range(n):
            for j in range(n):
                a[i, j] = -jac[r, i, j]
            a[i, i] += shift[r]
        ok[r] = True
        for k in range(n):
            p = k
            big = abs(a[k, k])
            for i in range(k + 1, n):
                v = abs(a[i, k])
                if v > big:
                    big = v
                    p = i
            piv[r, k] = p
            if not (big > 0.0 and big < np.inf):
                ok[r] = False
                for kk in range(k, n):  # keep the pivot vector a valid permutation: solving never indexes out
                    piv[r, kk] = kk
                break
            if p != k:
                for j in range(n):
                    tmp = a[k, j]
                    a[k, j] = a[p, j]
                    a[p, j] = tmp
            pivot = a[k, k]
            for i in range(k + 1, n):
                factor = a[i, k] / pivot
                a[i, k] = factor
                if factor != 0.0:
                    for j in range(k + 1, n):
                        a[i, j] -= factor * a[k, j]


@njit(cache=True, error_model="numpy")
def lu_solve_into(lu, piv, b, x):
    """``x[r] = LU[r]^{-1} b[r]`` for every row ``r`` (forward then back substitution; ``x`` may be ``b``)."""
    for r in range(b.shape[0]):
        lu_solve_row(lu, piv, r, b, r, x, r)


# inlined into its callers, and indexed rather than given views: it runs once per run and step (or corrector
# iteration) inside compiled loops, where a call's or a view's reference counts, atomic operations, cost more
# than the substitutions of a small system
@njit(cache=True, error_model="numpy", inline="always")
def lu_solve_row(lu, piv, r, b, rb, x, rx):
    """``x[rx] = LU[r]^{-1} b[rb]`` (forward then back substitution; ``x`` may be ``b`` when ``rx = rb``)."""
    n = b.shape[1]
    for i in range(n):
        x[rx, i] = b[rb, i]
    for k in range(n):
        p = piv[r, k]
        if p != k:
            tmp = x[rx, k]
            x[rx, k] = x[rx, p]
            x[rx, p] = tmp
    for i in range(n):
        acc = x[rx, i]
        for j in range(i):
            acc -= lu[r, i, j] * x[rx, j]
        x[rx, i] = acc
    for i in range(n - 1, -1, -1):
        acc = x[rx, i]
        for j in range(i + 1, n):
            acc -= lu[r, i, j] * x[rx, j]
        x[rx, i] = acc / lu[r, i, i]
