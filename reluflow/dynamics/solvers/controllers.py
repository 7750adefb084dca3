"""Step-size controllers: given a step's error estimate, accept or reject it and propose the next step.

A controller acts row by row on a batch (one step size, one error norm and one decision per run, computed
with elementwise operations and sums along a row only), so a run's step sequence does not depend on the
other runs in the batch. Its per-run memory (the last accepted error, ...) lives in a dict of arrays that the
driver (:mod:`reluflow.dynamics.solvers.driver`) compacts together with the run states when runs stop.

Three controllers, each the one its method family was designed and validated with:

:class:`PIController` (explicit embedded pairs; Hairer, Norsett & Wanner I, II.4 and II, IV.2). With the scale
``sc_i = atol + rtol max(|y_n,i|, |y_n+1,i|)`` and the error ``e = h sum_j (b_j - bhat_j) k_j``::

    err = sqrt( (1/n) sum_i (e_i / sc_i)^2 )                                      (HNW I, (4.11))

DOP853's two estimators ``e5`` and ``e3`` combine into ``err = |h| S5 / sqrt(n (S5 + 0.01 S3))`` with
``S = sum_i (sum_j E_j k_j,i / sc_i)^2``, which is ``O(h^8)``. With ``k = q + 1`` (``q`` the order of the
error estimate) an accepted step is followed by ``h * clip(0.9 err^(-beta1) err_prev^(beta2), 0.2, 10)``
(Gustafsson's PI control, ``beta1 = 0.7/k``, ``beta2 = 0.4/k``, HNW II, IV.2, (2.43): the ``err_prev``
factor damps the oscillation of plain control when the step is limited by stability, as for a gradient flow
settled near a minimum), a rejected one by ``h * clip(0.9 err^(-1/k), 0.2, 1)`` (no growth).

:class:`PredictiveController` (Rosenbrock methods; Hairer & Wanner's ``rodas.f``). RMS error norm of the
step's own error estimate, ``h / fac`` with ``fac = clip(err^(1/q) / 0.9, 1/6, 5)`` (``q`` = embedded order
+ 1) and, after an accepted step preceded by an accepted one, Gustafsson's predictive factor
``(h_acc / h) (err^2 / err_acc)^(1/q) / 0.9`` (the larger step wins); no increase right after a rejection;
a rejected first step is retried with ``h / 10``, a singular linear system with ``h / 2``; five singular
systems in a row fail the run.

:class:`FixedStep` (gradient descent): every step has length ``eta`` and is accepted; the iterates live on
the grid ``t_j = j eta`` (computed as that product, never as a sum of ``j`` roundings).

Energy: the solvers integrate ``E' = |f(y)|^2`` beside ``y`` (the energy identity of a gradient flow);
its error estimate joins the error norm as one more component, so the energy-identity residual is
controlled, not incidental.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from reluflow.dynamics.solvers.power import c_pow

__all__ = ["PIController", "PredictiveController", "FixedStep", "LANDING_SLACK", "UNDERFLOW"]

#: a step that would end within this fraction of the next save time is stretched to land on it, so a save
#: time just ahead does not leave a sliver step (Hairer's codes use the same 1 %).
LANDING_SLACK = 1.01

#: relative step-size underflow: ``h < UNDERFLOW * max(1, t)`` fails the run (such a step changes ``t`` by
#: about 100 ulps, so the integration cannot make meaningful progress).
UNDERFLOW = 1e-14

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


@njit(cache=True, error_model="numpy")
def _rms_error(h, e, y0, y1, rtol, atol, with_energy, e_energy, energy0, energy1, out):
    """:meth:`PIController.error_norm` without a second estimator, in one compiled call: the state's sums by
    :func:`_scaled_square_sums`, then the numpy form's operations in its order (``np.maximum``'s NaN for the
    energy's scale included), so the same numbers."""
    m, n = e.shape
    components = n + 1 if with_energy else n
    sums = _scaled_square_sums(e, y0, y1, rtol, atol)
    for r in range(m):
        acc = sums[r]
        if with_energy:
            a0 = abs(energy0[r])
            a1 = abs(energy1[r])
            bigger = a0 if a0 > a1 else a1
            if a0 != a0 or a1 != a1:
                bigger = np.nan
            q = e_energy[r] / (atol + rtol * bigger)
            acc = acc + q * q
        err = abs(h[r]) * np.sqrt(acc / components)
        out[r] = err if np.isfinite(err) else np.inf


@njit(cache=True, error_model="numpy")
def _pi_proposal(h, err, err_prev, beta1, beta2, k, safety, fmin, fmax, accepted, out):
    """:meth:`PIController.next_step` in one compiled pass: with ``e = max(err, 1e-10)`` (NaN stays NaN, as in
    ``np.maximum``), ``h * clip(safety e^-beta1 e_prev^beta2, fmin, fmax)`` after an accepted step,
    ``h * clip(safety e^(-1/k), fmin, 1)`` after a rejection, NaN -> ``fmin``; the powers by the C library's
    ``pow`` on every CPU (:mod:`reluflow.dynamics.solvers.power`), the numpy form's operations in its order."""
    for r in range(h.shape[0]):
        e = err[r]
        if e < _ERR_FLOOR:
            e = _ERR_FLOOR
        if accepted[r]:
            ep = err_prev[r]
            if ep < _ERR_FLOOR:
                ep = _ERR_FLOOR
            fac = safety * c_pow(e, -beta1) * c_pow(ep, beta2)
            upper = fmax
        else:
            fac = safety * c_pow(e, -1.0 / k)
            upper = 1.0
        if not fac >= fmin:  # np.fmax(fac, fmin): fmin for NaN and below
            fac = fmin
        if fac > upper:
            fac = upper
        out[r] = h[r] * fac


class _AdaptiveLanding:
    """Save times are hit exactly: a step that would pass the next save time ``t_k`` (or come within 1 %
    of it) is replaced by the step ``t_k - t`` that lands on it. The state there is the method's solution
    itself (no dense-output interpolation)."""

    adaptive = True

    def landing(self, t: np.ndarray, h: np.ndarray, t_next: np.ndarray, memory: dict):
        remaining = t_next - t
        land = LANDING_SLACK * h >= remaining
        return np.where(land, remaining, h), land

    def time_after(self, t, step, t_next, land, n_accepted, memory):
        return np.where(land, t_next, t + step)


@dataclass(frozen=True)
class PIController(_AdaptiveLanding):
    """Per-run PI step-size controller of the explicit pairs (module docstring).

    Parameters
    ----------
    rtol, atol : relative and absolute tolerances of the scale ``atol + rtol * max(|y_n|, |y_{n+1}|)``.
    error_order : ``q``, the order of the embedded error estimate (``k = q + 1`` in the exponents).
    beta1, beta2 : PI exponents; ``None`` means ``0.7/k`` and ``0.4/k``. ``beta2 = 0, beta1 = 1/k`` gives the
        classical I controller.
    safety, fmin, fmax : safety factor and the clip of the step ratio ``h_new / h``.
    energy_in_norm : the energy integral's error estimate is one more component of the error norm.
    """

    rtol: float
    atol: float
    error_order: int
    beta1: float | None = None
    beta2: float | None = None
    safety: float = 0.9
    fmin: float = 0.2
    fmax: float = 10.0
    energy_in_norm: bool = True

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

    def initial_scale(self, y0: np.ndarray) -> np.ndarray:
        """The scale of the starting-step estimate, ``atol + rtol |y0|``."""
        return self.atol + self.rtol * np.abs(y0)

    def memory(self, m: int) -> dict:
        """Per-run memory: the error of the last accepted step (1 at the start)."""
        return {"err_prev": np.ones(m)}

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
        if e_low is None:  # the common case (every pair but DOP853): one compiled call
            err = np.empty(y0.shape[0])
            if energy is None:
                _rms_error(h, e_main, y0, y1, float(self.rtol), float(self.atol), False, err, err, err, err)
            else:
                e_energy, _, energy0, energy1 = energy
                _rms_error(h, e_main, y0, y1, float(self.rtol), float(self.atol), True, e_energy,
                           np.asarray(energy0, dtype=float), np.asarray(energy1, dtype=float), err)  # fmt: skip
            return err
        s_main = _scaled_square_sums(e_main, y0, y1, float(self.rtol), float(self.atol))
        if energy is not None:
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

    def estimate_norm(self, h, estimate, y0, energy0):
        """The error norm of a method's :class:`~reluflow.dynamics.solvers.driver.StepEstimate`."""
        energy = None
        if self.energy_in_norm:
            energy = (estimate.energy_error, estimate.energy_error_low, energy0,
                      energy0 + estimate.energy_increment)
        return self.error_norm(h, estimate.error, y0, estimate.y_new, estimate.error_low, energy)

    def next_step(self, h: np.ndarray, err: np.ndarray, err_prev: np.ndarray, accepted: np.ndarray) -> np.ndarray:
        """Proposed next step per run: PI update after an accepted step, I update (no growth) after a rejection."""
        beta1, beta2 = self.exponents
        # clipped to [fmin, fmax] (after a rejection [fmin, 1]) with NaN -> fmin, +-inf to the bounds
        out = np.empty(h.shape[0])
        _pi_proposal(np.asarray(h, dtype=float), np.asarray(err, dtype=float), np.asarray(err_prev, dtype=float),
                     float(beta1), float(beta2), float(self.k), float(self.safety), float(self.fmin),
                     float(self.fmax), np.asarray(accepted, dtype=np.bool_), out)  # fmt: skip
        return out

    def update(self, memory: dict, step, err, accepted, valid, n_accepted, estimate=None) -> np.ndarray:
        """The next proposal after attempting ``step``; the memory is updated in place."""
        h_next = self.next_step(step, err, memory["err_prev"], accepted)
        memory["err_prev"] = np.where(accepted, err, memory["err_prev"])
        return h_next

    def failed(self, memory: dict) -> np.ndarray | None:
        return None

    def info(self) -> dict:
        return {"kind": "PI", "beta1": self.exponents[0], "beta2": self.exponents[1], "safety": self.safety,
                "fmin": self.fmin, "fmax": self.fmax}


_SAFETY = 0.9
_FAC_GROW = 1.0 / 6.0  # smallest h/h_new: at most 6x growth per step
_FAC_SHRINK = 5.0  # largest h/h_new: at most 5x reduction per rejection
_MAX_SINGULAR = 5


# inline="always" (here and below): why, in reluflow.dynamics.compiled_field's docstring
@njit(cache=True, error_model="numpy", inline="always")
def _predictive_norm(error, y0, y1, energy_error, energy0, increment, rtol, atol, atol_energy, out):
    """The RMS error norm of :meth:`PredictiveController.estimate_norm`, one row at a time (compiled: the
    controller runs once per step, where numpy's per-call overhead on a small batch outweighs the arithmetic)."""
    m, n = error.shape
    for r in range(m):
        acc = 0.0
        finite = True
        for c in range(n):
            v = y1[r, c]
            if not np.isfinite(v):
                finite = False
            q = error[r, c] / (atol[c] + rtol * max(abs(y0[r, c]), abs(v)))
            acc += q * q
        e0 = energy0[r]
        scale = atol_energy + rtol * max(abs(e0), abs(e0 + increment[r]))
        qe = energy_error[r] / scale
        err = np.sqrt((acc + qe * qe) / (n + 1))
        out[r] = err if (finite and np.isfinite(err)) else np.inf


@njit(cache=True, error_model="numpy", inline="always")
def _predictive_update(step, err, accepted, valid, n_accepted, h_acc, err_acc, last_rejected, n_singular, q, h_new):
    """The step proposal and memory update of :meth:`PredictiveController.update`, per row, in place."""
    for r in range(step.shape[0]):
        e = err[r]
        fac = min(max(c_pow(e, 1.0 / q) / _SAFETY, _FAC_GROW), _FAC_SHRINK)
        if accepted[r] and n_accepted[r] > 0:
            fac_gus = (h_acc[r] / step[r]) * c_pow(e * e / err_acc[r], 1.0 / q) / _SAFETY
            if not np.isnan(fac_gus):
                fac = max(fac, min(max(fac_gus, _FAC_GROW), _FAC_SHRINK))
        h = step[r] / fac
        if accepted[r] and last_rejected[r]:
            h = min(h, step[r])
        if valid[r] and not accepted[r] and n_accepted[r] == 0:
            h = 0.1 * step[r]
        if not valid[r]:
            h = 0.5 * step[r]
        h_new[r] = h
        if accepted[r]:
            h_acc[r] = step[r]
            err_acc[r] = max(e, 1e-2)
        last_rejected[r] = not accepted[r]
        n_singular[r] = 0 if valid[r] else n_singular[r] + 1


class PredictiveController(_AdaptiveLanding):
    """Per-run controller of ``rodas.f`` with Gustafsson's predictive factor (module docstring).

    ``atol`` is a positive number or one per component ``(n,)``; ``embedded_order`` the order of the
    embedded solution. The energy integral's error joins the RMS norm as an ``(n + 1)``-th component.
    """

    def __init__(self, rtol: float, atol, embedded_order: int):
        self.rtol = float(rtol)
        self.atol = np.asarray(atol, dtype=float)
        self.q = embedded_order + 1
        self._atol_row = None

    def initial_scale(self, y0: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(y0)

    def memory(self, m: int) -> dict:
        """Per-run memory: the last accepted step and its error, whether the last attempt was rejected, and
        the number of singular linear systems in a row."""
        return {"h_acc": np.zeros(m), "err_acc": np.ones(m), "last_rejected": np.zeros(m, dtype=bool),
                "n_singular": np.zeros(m, dtype=np.int64)}

    def estimate_norm(self, h, estimate, y0, energy0):
        """``sqrt((sum_i (e_i / sc_i)^2 + (e_E / sc_E)^2) / (n + 1))``, ``sc = atol + rtol max(|y0|, |y1|)``
        (``sc_E`` with the largest ``atol``); ``inf`` where it or ``y1`` is not finite."""
        m, n = y0.shape
        if self._atol_row is None or self._atol_row.size != n:
            self._atol_row = np.ascontiguousarray(np.broadcast_to(self.atol, (n,)), dtype=float)
        out = np.empty(m)
        _predictive_norm(np.ascontiguousarray(estimate.error), y0, np.ascontiguousarray(estimate.y_new),
                         np.ascontiguousarray(estimate.energy_error, dtype=float), energy0,
                         np.ascontiguousarray(estimate.energy_increment, dtype=float), self.rtol, self._atol_row,
                         float(np.max(self.atol)), out)  # fmt: skip
        return out

    def update(self, memory: dict, step, err, accepted, valid, n_accepted, estimate=None) -> np.ndarray:
        """The next proposal; ``valid`` is False where the method's linear system was singular."""
        h_new = np.empty(step.shape[0])
        _predictive_update(np.ascontiguousarray(step, dtype=float), err, accepted, valid, n_accepted,
                           memory["h_acc"], memory["err_acc"], memory["last_rejected"], memory["n_singular"],
                           float(self.q), h_new)  # fmt: skip
        return h_new

    def failed(self, memory: dict) -> np.ndarray:
        """Runs whose last five linear systems were singular."""
        return memory["n_singular"] >= _MAX_SINGULAR

    def info(self) -> str:
        return "Gustafsson predictive (rodas.f), safety 0.9, factors in [1/5, 6]"


class FixedStep:
    """Steps of fixed length ``eta`` (a number, or one per run), always accepted: explicit Euler's grid.

    The iterates live on ``t_j = j eta``: a save time is reached at the step whose index is its step count
    (save times are whole multiples of ``eta``, :func:`reluflow.dynamics.solvers.gd.gd_save_steps`), and
    the time after ``j`` steps is the product ``j eta``.
    """

    adaptive = False

    def __init__(self, eta):
        self.eta = np.asarray(eta, dtype=float)

    def memory(self, m: int) -> dict:
        return {"eta": np.array(np.broadcast_to(self.eta, (m,)), dtype=float)}

    def landing(self, t, h, t_next, memory):
        eta = memory["eta"]
        # t and t_next are whole multiples of eta: the next save is one step away iff the gap is one step
        # (the next possibility, two steps, is far from the rounding of these products)
        return eta, t_next - t <= 1.5 * eta

    def time_after(self, t, step, t_next, land, n_accepted, memory):
        return np.where(land, t_next, n_accepted * memory["eta"])

    def estimate_norm(self, h, estimate, y0, energy0):
        return np.zeros(y0.shape[0])

    def update(self, memory, step, err, accepted, valid, n_accepted, estimate=None):
        return memory["eta"]

    def failed(self, memory: dict) -> None:
        return None
