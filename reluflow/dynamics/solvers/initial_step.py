"""The starting step size of an adaptive solver, per run (Hairer, Norsett & Wanner I, sec. II.4).

With the scale ``sc = atol + rtol |y0|`` and the RMS norm ``||v|| = sqrt(mean((v / sc)^2))`` of each run:
``d0 = ||y0||``, ``d1 = ||f(y0)||``; a first guess ``h0 = 0.01 d0 / d1`` (``1e-6`` when either is below
``1e-5``), one explicit Euler probe ``y1 = y0 + h0 f(y0)``, ``d2 = ||f(y1) - f(y0)|| / h0`` and

    h1 = (0.01 / max(d1, d2))^(1 / k)        (h1 = max(1e-6, 1e-3 h0) when max(d1, d2) <= 1e-15)

with ``k`` the exponent of the local error, ``O(h^k)``: the step whose local error would be about 1 % of
the tolerance. The start is ``min(100 h0, h1)``, clipped to ``t_end``. Where the Euler probe already left
the region in which ``f`` is finite, ``h1`` is not finite and ``1e-3 h0`` is used instead.
"""

from __future__ import annotations

import numpy as np

from reluflow.dynamics.solvers.power import power

__all__ = ["select_initial_step"]


def _rms(x: np.ndarray) -> np.ndarray:
    """Root mean square along each row (a sum along the row only: runs stay independent)."""
    return np.sqrt(np.sum(x * x, axis=-1) / x.shape[-1])


def select_initial_step(rhs, y0: np.ndarray, f0: np.ndarray, scale: np.ndarray, error_exponent: int,
                        t_end: float = np.inf) -> tuple[np.ndarray, int]:
    """Hairer's starting step for every row of ``y0 (m, n)`` with ``f0 = rhs(y0)``; returns ``(h (m,), rows)``.

    ``scale`` is ``atol + rtol |y0|`` (shape ``(m, n)``), ``error_exponent`` the ``k`` of the module docstring
    (the local error of the step is ``O(h^k)``); ``rows`` is the number of rows passed to ``rhs`` (one probe).
    """
    d0 = _rms(y0 / scale)
    d1 = _rms(f0 / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        h0 = np.where(small, 1e-6, 0.01 * d0 / np.where(small, 1.0, d1))
        h0 = np.minimum(h0, t_end)
        f1 = np.asarray(rhs(y0 + h0[:, None] * f0), dtype=float)
        d2 = _rms((f1 - f0) / scale) / h0
        dmax = np.maximum(d1, d2)
        flat = dmax <= 1e-15
        h1 = np.where(flat, np.maximum(1e-6, 1e-3 * h0),
                      power(0.01 / np.where(flat, 1.0, dmax), 1.0 / error_exponent))
    h1 = np.where(np.isfinite(h1) & (h1 > 0), h1, 1e-3 * h0)
    return np.minimum(np.minimum(100.0 * h0, h1), t_end), y0.shape[0]
