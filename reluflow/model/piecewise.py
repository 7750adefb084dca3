"""The fixed (parameter-independent) part of a d = 1 problem as piecewise data on ``[a, b]``.

The exact d = 1 evaluation (MATH.md section 3) cuts ``[a, b]`` at the network's kinks and at the
knots of this table. On each interval ``[knots[l], knots[l+1]]`` of the table

    f_m(x) = sum_p target_poly[l, m, p] x**p  +  sum_s sines[s, m, 0] * sin(sines[s, m, 1] x + sines[s, m, 2])
    p(x)   = sum_p density_poly[l, p] x**p

(coefficients in increasing powers of the global coordinate ``x``). The network is affine on each
piece of the merged partition, so every integrand is a polynomial (times a sine for sine targets)
and Gauss-Legendre with ``quad_nodes`` points per piece is exact for polynomial data and
spectrally accurate otherwise (the table builder adds knots so that ``|omega| * width <= 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PiecewiseTable:
    """Target and density of a d = 1 problem, piecewise on a fixed partition of ``[a, b]``.

    Attributes
    ----------
    knots : (L + 1,) float array, strictly increasing, ``knots[0] = a``, ``knots[-1] = b``.
    target_poly : (L, k, Dt + 1) float array, polynomial part of the target on each interval.
    sines : (S, k, 3) float array of (amplitude, angular frequency, phase); ``S`` may be 0.
    density_poly : (L, Dp + 1) float array, the density of the input law on each interval.
    quad_nodes : Gauss-Legendre points per piece that make the evaluation exact (polynomial data)
        or accurate to rounding (sine data on intervals with ``|omega| * width <= 1``).
    """

    knots: np.ndarray
    target_poly: np.ndarray
    sines: np.ndarray
    density_poly: np.ndarray
    quad_nodes: int

    @property
    def a(self) -> float:
        return float(self.knots[0])

    @property
    def b(self) -> float:
        return float(self.knots[-1])

    @property
    def output_dim(self) -> int:
        return int(self.target_poly.shape[1])

    def target(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the target at points ``x`` (any shape) in ``[a, b]``; returns ``x.shape + (k,)``."""
        x = np.asarray(x, dtype=float)
        idx = np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, len(self.knots) - 2)
        coef = self.target_poly[idx]  # (..., k, Dt+1)
        powers = x[..., None, None] ** np.arange(coef.shape[-1])
        out = np.sum(coef * powers, axis=-1)
        for amp, omega, phase in np.moveaxis(self.sines, -1, 0).transpose(1, 0, 2):
            out = out + amp * np.sin(omega * x[..., None] + phase)
        return out

    def density(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the density at points ``x`` in ``[a, b]`` (zero outside)."""
        x = np.asarray(x, dtype=float)
        idx = np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, len(self.knots) - 2)
        coef = self.density_poly[idx]
        val = np.sum(coef * x[..., None] ** np.arange(coef.shape[-1]), axis=-1)
        return np.where((x >= self.a) & (x <= self.b), val, 0.0)
