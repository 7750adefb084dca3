"""Per-run step-size control for embedded Runge-Kutta pairs (Hairer, Norsett & Wanner I, II.4; II, IV.2).

Everything here acts row by row on a batch: one step size, one error norm and one accept/reject decision
per run, computed with elementwise operations and sums over a row only, so a run's step sequence does not
depend on the other runs in the batch.

Error norm (HNW I, (4.11)): with the scale ``sc_i = atol + rtol * max(|y_n,i|, |y_{n+1},i|)``

    err = sqrt( (1/n) sum_i (e_i / sc_i)^2 ),           e = y_{n+1} - yhat_{n+1} = h sum_j (b_j - bhat_j) k_j

and a step is accepted iff ``err <= 1``. DOP853's two estimators ``e5`` (order 5) and ``e3`` (order 3)
are combined as in Hairer's code into ``err = |h| S5 / sqrt(n (S5 + 0.01 S3))`` with
``S = sum_i (sum_j E_j k_j,i / sc_i)^2``, i.e. ``err5^2 / sqrt(err5^2 + 0.01 err3^2)``, which is ``O(h^8)``.

Step-size update with ``k = q + 1`` (``q`` the order of the error estimate, local error ``O(h^k)``):

    accepted:  h_new = h * clip(safety * err_n^(-beta1) * err_{n-1}^(beta2), fmin, fmax)     (PI control)
    rejected:  h_new = h * clip(safety * err_n^(-1/k), fmin, 1)                              (I control)

``beta1 = 0.7/k, beta2 = 0.4/k`` are the PI coefficients recommended by Gustafsson (HNW II, IV.2, (2.43)):
the ``err_{n-1}`` factor damps the oscillation of the plain controller (``beta1 = 1/k, beta2 = 0``) when
the step size is limited by stability rather than accuracy -- the situation of a gradient flow that has
settled near a minimum, where the Jacobian is large-ish and the solution nearly constant.
``err_{n-1}`` is the error of the last *accepted* step (1 at the start). After a rejection the step never
grows.

Initial step (HNW I, II.4, "starting step size"): with ``d0 = ||y0||``, ``d1 = ||f(y0)||`` in the scaled
RMS norm, ``h0 = 0.01 d0 / d1`` (or ``1e-6`` if either is below ``1e-5``), an explicit Euler step
``y1 = y0 + h0 f(y0)``, ``d2 = ||f(y1) - f(y0)|| / h0`` and ``h1 = (0.01 / max(d1, d2))^(1/p)``
(``p`` the method's order; ``h1 = max(1e-6, 1e-3 h0)`` if ``max(d1, d2) <= 1e-15``);
the start is ``min(100 h0, h1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["PIController"]

#: an error norm of exactly 0 would give an infinite growth factor; fmax caps it anyway, and this floor keeps
#: the arithmetic finite (``err^-beta1 * err_prev^beta2`` with err_prev -> 0 would otherwise give inf * 0).
_ERR_FLOOR = 1e-10


@njit(cache=True)
def _scaled_square_sums(e, y0, y1, rtol, atol):
    """``sum_i (e_i / (atol + rtol * max(|y0_i|, |y1_i|)))^2`` for each row, in one pass (sequential sum
    along the row, so the value depends on that row only)."""
    m, n = e.shape
    out = np.empty(m)
    for r in range(m):
        acc = 0.0
        for c in range(n):
            q = e[r, c] / (atol + rtol * max(abs(y0[r, c]), abs(y1[r, c])))
            acc += q * q
        out[r] = acc
    return out


@dataclass(frozen=True)
class PIController:
    """Per-run PI step-size controller (see module docstring for the formulas).

    Parameters
    ----------
    rtol, atol : relative and absolute tolerances of the scale ``atol + rtol * max(|y_n|, |y_{n+1}|)``.
    error_order : ``q``, the order of the embedded error estimate (``k = q + 1`` in the exponents).
    beta1, beta2 : PI exponents; ``None`` means ``0.7/k`` and ``0.4/k``. ``beta2 = 0, beta1 = 1/k`` gives the
        classical I controller.
    safety, fmin, fmax : safety factor and the clip of the step ratio ``h_new / h``.
    """

    rtol: float
    atol: float
    error_order: int
    beta1: float | None = None
    beta2: float | None = None
    safety: float = 0.9
    fmin: float = 0.2
    fmax: float = 10.0

    def __post_init__(self):
        if not (np.isfinite(self.rtol) and self.rtol > 0):
            raise ValueError(f"rtol: must be a positive finite number, got {self.rtol!r}")
        if not (np.isfinite(self.atol) and self.atol > 0):
            raise ValueError(f"atol: must be a positive finite number, got {self.atol!r}")
        if not (isinstance(self.error_order, (int, np.integer)) and self.error_order >= 1):
            raise ValueError(f"error_order: must be a positive integer, got {self.error_order!r}")
        if not (0 < self.safety <= 1 and 0 < self.fmin < 1 < self.fmax):
            raise ValueError("safety, fmin, fmax: need 0 < safety <= 1 and 0 < fmin < 1 < fmax")

    @property
    def k(self) -> int:
        return self.error_order + 1

    @property
    def exponents(self) -> tuple[float, float]:
        """``(beta1, beta2)`` with the defaults filled in."""
        b1 = 0.7 / self.k if self.beta1 is None else self.beta1
        b2 = 0.4 / self.k if self.beta2 is None else self.beta2
        return b1, b2

    def scale(self, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
        """``atol + rtol * max(|y0|, |y1|)`` componentwise, shape ``(m, n)``."""
        return self.atol + self.rtol * np.maximum(np.abs(y0), np.abs(y1))

    def error_norm(
        self,
        h: np.ndarray,
        e_main: np.ndarray,
        y0: np.ndarray,
        y1: np.ndarray,
        e_low: np.ndarray | None = None,
        energy: tuple | None = None,
    ) -> np.ndarray:
        """Scaled error norm per run, shape ``(m,)``.

        ``e_main = sum_j (b_j - bhat_j) k_j`` (without the factor ``h``), ``h`` of shape ``(m,)``. With
        ``e_low`` (DOP853's third-order estimator) the combined norm of the module docstring is returned.
        ``energy = (e_E, e_E_low, E0, E1)`` adds the energy integral ``E`` as one more component (its error
        estimates without the factor ``h``, ``e_E_low`` only with ``e_low``, and its values before and after).
        A non-finite estimate gives ``inf`` (the step is rejected).
        """
        n = y0.shape[-1]
        s_main = _scaled_square_sums(e_main, y0, y1, float(self.rtol), float(self.atol))
        if energy is not None:
            # the energy integral E as one more component of the state: (E_error_main[, E_error_low], E0, E1)
            e_energy, e_energy_low, energy0, energy1 = energy
            scale = self.atol + self.rtol * np.maximum(np.abs(energy0), np.abs(energy1))
            s_main = s_main + np.square(e_energy / scale)
            n += 1
        if e_low is None:
            err = np.abs(h) * np.sqrt(s_main / n)
        else:
            s_low = _scaled_square_sums(e_low, y0, y1, float(self.rtol), float(self.atol))
            if energy is not None:
                s_low = s_low + np.square(e_energy_low / scale)
            denom = s_main + 0.01 * s_low
            denom = np.where(denom > 0, denom, 1.0)
            err = np.abs(h) * s_main / np.sqrt(n * denom)
        return np.where(np.isfinite(err), err, np.inf)

    def next_step(
        self, h: np.ndarray, err: np.ndarray, err_prev: np.ndarray, accepted: np.ndarray
    ) -> np.ndarray:
        """Proposed next step per run: PI update after an accepted step, I update (no growth) after a rejection."""
        beta1, beta2 = self.exponents
        e = np.maximum(err, _ERR_FLOOR)
        ep = np.maximum(err_prev, _ERR_FLOOR)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fac_acc = self.safety * np.power(e, -beta1) * np.power(ep, beta2)
            fac_rej = self.safety * np.power(e, -1.0 / self.k)
        fac_acc = np.clip(np.nan_to_num(fac_acc, nan=self.fmin), self.fmin, self.fmax)
        fac_rej = np.clip(np.nan_to_num(fac_rej, nan=self.fmin), self.fmin, 1.0)
        return h * np.where(accepted, fac_acc, fac_rej)

    def initial_step(self, rhs, y0: np.ndarray, f0: np.ndarray, order: int) -> tuple[np.ndarray, int]:
        """Hairer's starting step per run (module docstring); returns ``(h, rows_evaluated)``.

        Costs one evaluation of ``rhs`` on all rows (at ``y0 + h0 f0``). A non-finite ``f(y1)`` (an Euler
        step of length ``h0`` already leaves the domain where ``rhs`` is finite) falls back to ``1e-3 h0``.
        """
        n = y0.shape[-1]
        sc = self.atol + self.rtol * np.abs(y0)
        d0 = np.sqrt(np.sum(np.square(y0 / sc), axis=-1) / n)
        d1 = np.sqrt(np.sum(np.square(f0 / sc), axis=-1) / n)
        small = (d0 < 1e-5) | (d1 < 1e-5)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            h0 = np.where(small, 1e-6, 0.01 * d0 / np.where(small, 1.0, d1))
            y1 = y0 + h0[:, None] * f0
            f1 = np.asarray(rhs(y1), dtype=float)
            d2 = np.sqrt(np.sum(np.square((f1 - f0) / sc), axis=-1) / n) / h0
            dmax = np.maximum(d1, d2)
            flat = dmax <= 1e-15
            h1 = np.where(flat, np.maximum(1e-6, 1e-3 * h0), np.power(0.01 / np.where(flat, 1.0, dmax), 1.0 / order))
        h1 = np.where(np.isfinite(h1) & (h1 > 0), h1, 1e-3 * h0)
        return np.minimum(100.0 * h0, h1), y0.shape[0]
