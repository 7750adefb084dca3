"""``x ** y`` elementwise by the C library's ``pow``, for the step sizes of the adaptive solvers.

Why. The step-size formulas (the PI controller's ``e^-beta1 e_prev^beta2``, the starting step's
``(0.01 / d)^(1 / k)``) need a real power of every run's error. NumPy's ``power`` on arrays dispatches to a
SIMD implementation on CPUs with AVX-512 (NumPy's ``X86_V4`` target), which differs from the C library's
``pow`` in the last bit for about 5 % of arguments (measured on uniformly spread logarithms); on CPUs without
AVX-512 NumPy calls the C library. The step sizes, and with them every number of an adaptive solve, then
depended on the CPU's vector extensions (a solve run with ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL"``, as
on such a CPU, gave other step counts). The compiled loop here calls the C library's ``pow`` for every element
whatever the CPU (numba lowers ``**`` of two floats to it; no SIMD math library is in use), as NumPy's scalar
power and :func:`math.pow` do.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["power", "c_pow"]


@njit(cache=True, error_model="numpy", inline="always")
def c_pow(x, y):
    """``x ** y`` of two floats by the C library's ``pow``, for compiled callers (the PI controller's proposal)."""
    return x ** y


@njit(cache=True, error_model="numpy")
def _power_into(x, y, out):
    for i in range(x.shape[0]):
        out[i] = c_pow(x[i], y)


def power(x, y: float) -> np.ndarray:
    """``x ** y`` for every entry of the float array ``x`` (any shape) and one exponent ``y``, each by the C
    library's ``pow`` (IEEE special cases as NumPy's: ``0 ** -a = inf``, NaN stays NaN)."""
    x = np.asarray(x, dtype=float)
    flat = np.ascontiguousarray(x).ravel()
    out = np.empty_like(flat)
    _power_into(flat, float(y), out)
    return out.reshape(x.shape)
