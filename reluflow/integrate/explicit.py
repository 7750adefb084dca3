"""Batched adaptive explicit Runge-Kutta integration of ``y' = f(y)`` on an ensemble of states ``(M, n)``.

Method. Each run ``r`` is integrated by the embedded pair of :mod:`reluflow.integrate.tableaux` with its own
step size and its own accept/reject decision (:class:`~reluflow.integrate.controller.PIController`). One
iteration of the main loop attempts one step for every still-active run; ``rhs`` is evaluated only on those
rows (gather/scatter by index), and a run leaves the active set as soon as it stops.

Save times are hit exactly: a step that would pass the next save time ``t_k`` (or come within 1% of it) is
replaced by the step ``t_k - t`` that lands on it, and the state there is the RK solution itself -- no
dense-output interpolation. The unclipped proposal is kept: after an accepted landing step the next step is
``max(controller proposal, unclipped proposal)``, so a save time that happens to be close does not shrink
the step sequence.

Energy. With the stage derivatives ``k_i = f(Y_i)`` the method is applied to the augmented ODE
``(y, E)' = (f(y), |f(y)|^2)``, i.e. ``E_{n+1} = E_n + h sum_i b_i |k_i|^2``. ``E`` is excluded from the
error control but inherits the method's order: for a gradient system ``f = -grad F`` the residual
``F(y0) - F(y_t) - E(t)`` of the energy identity is ``O(h^p)`` (``p`` the order of the pair).

Stopping (per run; ``Status`` codes of :mod:`reluflow.integrate.result`):

- ``FINISHED``: the last save time was reached.
- ``CONVERGED``: at an accepted state before the final time ``|f(y)| <= gtol`` (Euclidean norm). Later save
  times hold that state and its energy (the run sits at a critical point to within ``gtol``).
- ``DIVERGED``: an accepted state (or ``y0``) is non-finite, has ``|y| > divergence_bound``, or ``f`` is
  non-finite there. Later save times hold NaN. Note: a finite-time blow-up with ``divergence_bound = inf``
  usually ends as ``FAILED`` instead: the state stays finite while the steps shrink to underflow (as in
  Hairer's codes); pass a finite bound to classify it as divergence.
- ``FAILED``: the proposed step underflowed, ``h < 1e-14 * max(1, t)``, or the run used up ``max_steps``
  attempted (accepted + rejected) steps. Later save times hold NaN.

Counters at a save time after a run stopped hold the run's final counts. Non-finite values in one row
never reach another row: all arithmetic is elementwise or a sum along a row.

Reproducibility: the step sequence of a run depends only on its own row (no reductions across rows), so
with a row-independent ``rhs`` each run's result is bitwise the same whatever the other runs in the batch.

Implementation: the stage combinations, error sums, energy increments and row checks are fused numba
kernels working on preallocated buffers (the solver is memory-bound when ``rhs`` is cheap). ``rhs`` is
handed views of these buffers: it must not modify its argument or keep a reference to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numba import njit

from reluflow.integrate.controller import PIController
from reluflow.integrate.result import SolveResult, Status
from reluflow.integrate.tableaux import ButcherTableau, get_tableau

__all__ = ["solve_explicit"]

#: relative step-size underflow threshold: ``h < UNDERFLOW * max(1, t)`` fails the run (a step that small
#: changes ``t`` by only ~100 ulps, so the integration cannot make meaningful progress).
UNDERFLOW = 1e-14
#: a step that would end within this fraction of the next save time is stretched to land on it, so a
#: save time just ahead does not leave a tiny sliver step (Hairer's codes use the same 1%).
_LANDING_SLACK = 1.01
#: minimal interval between two progress callbacks, seconds.
_PROGRESS_INTERVAL = 0.5


# ---------------------------------------------------------------------------------------------------------
# validation and bookkeeping shared with reluflow.integrate.gd


def _as_states(y0) -> np.ndarray:
    y = np.asarray(y0, dtype=float)
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise ValueError(f"y0: must have shape (M, n) with M >= 1 and n >= 1, got shape {np.shape(y0)}")
    return np.ascontiguousarray(y)


def _as_save_times(save_times) -> np.ndarray:
    t = np.asarray(save_times, dtype=float)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"save_times: must be a non-empty 1-d sequence, got shape {np.shape(save_times)}")
    if not np.all(np.isfinite(t)):
        raise ValueError("save_times: must be finite")
    if np.any(t < 0):
        raise ValueError(f"save_times: must be >= 0, got min {t.min()!r}")
    if np.any(np.diff(t) < 0):
        i = int(np.argmax(np.diff(t) < 0))
        raise ValueError(f"save_times: must be non-decreasing, got {t[i]!r} before {t[i + 1]!r}")
    return t


def _check_common(gtol, divergence_bound, progress):
    if gtol is not None and not (np.isfinite(gtol) and gtol >= 0):
        raise ValueError(f"gtol: must be None or a finite number >= 0, got {gtol!r}")
    if not (divergence_bound > 0) or np.isnan(divergence_bound):
        raise ValueError(f"divergence_bound: must be > 0 (inf allowed), got {divergence_bound!r}")
    if progress is not None and not callable(progress):
        raise ValueError("progress: must be None or a callable progress(fraction_done)")


def _call_rhs(rhs, y: np.ndarray, name: str = "rhs") -> np.ndarray:
    f = np.asarray(rhs(y), dtype=float)
    if f.shape != y.shape:
        raise ValueError(f"{name}: returned shape {f.shape} for states of shape {y.shape}")
    return np.ascontiguousarray(f)


def _row_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row (a sum along the row only)."""
    return np.sqrt(np.sum(x * x, axis=-1))


class _Recorder:
    """Output arrays of a :class:`SolveResult` and the per-run writes into them."""

    def __init__(self, m: int, n: int, save_times: np.ndarray):
        self.T = save_times.size
        self.y = np.full((m, self.T, n), np.nan)
        self.energy = np.full((m, self.T), np.nan)
        self.n_steps = np.zeros((m, self.T), dtype=np.int64)
        self.n_rejected = np.zeros((m, self.T), dtype=np.int64)
        self.status = np.full(m, -1, dtype=np.int8)
        self.t_final = np.full(m, np.nan)

    def record(self, rows, k, y, energy, n_acc, n_rej):
        """Save index ``k[i]`` of run ``rows[i]`` gets state ``y[i]`` (all arrays aligned with ``rows``)."""
        self.y[rows, k] = y
        self.energy[rows, k] = energy
        self.n_steps[rows, k] = n_acc
        self.n_rejected[rows, k] = n_rej

    def stop(self, rows, first_unsaved, status, t_final, n_acc, n_rej, y=None, energy=None):
        """Run ``rows[i]`` stopped; save indices ``>= first_unsaved[i]`` get ``y``/``energy`` (or stay NaN)."""
        if rows.size == 0:
            return
        later = np.arange(self.T)[None, :] >= first_unsaved[:, None]
        self.n_steps[rows] = np.where(later, n_acc[:, None], self.n_steps[rows])
        self.n_rejected[rows] = np.where(later, n_rej[:, None], self.n_rejected[rows])
        if y is not None:
            self.y[rows] = np.where(later[:, :, None], y[:, None, :], self.y[rows])
            self.energy[rows] = np.where(later, energy[:, None], self.energy[rows])
        self.status[rows] = status
        self.t_final[rows] = t_final

    def result(self, t: np.ndarray, n_rhs: int, info: dict) -> SolveResult:
        """The recorded arrays as a :class:`SolveResult` at save times ``t`` (no Jacobian used)."""
        return SolveResult(
            t=t,
            y=self.y,
            energy=self.energy,
            status=self.status,
            t_final=self.t_final,
            n_steps=self.n_steps,
            n_rejected=self.n_rejected,
            n_rhs=int(n_rhs),
            n_jac=0,
            info=info,
        )


class _Progress:
    """Calls ``progress(fraction)`` at most every 0.5 s; the fraction is the mean over runs of the
    log-time progress ``log1p(t / tau) / log1p(t_max / tau)`` (stopped runs count 1), ``tau`` the first
    positive save time, since the save grids are log-spaced."""

    def __init__(self, callback, save_times: np.ndarray, n_runs: int):
        self.callback = callback
        self.n_runs = n_runs
        pos = save_times[save_times > 0]
        self.tau = pos[0] if pos.size else 1.0
        self.denom = np.log1p(save_times[-1] / self.tau) if pos.size else 1.0
        self.last = time.monotonic()

    def update(self, t_active: np.ndarray):
        if self.callback is None:
            return
        now = time.monotonic()
        if now - self.last < _PROGRESS_INTERVAL:
            return
        self.last = now
        done = self.n_runs - t_active.size
        frac = (done + float(np.sum(np.log1p(t_active / self.tau))) / self.denom) / self.n_runs
        self.callback(min(max(frac, 0.0), 1.0))

    def finish(self):
        if self.callback is not None:
            self.callback(1.0)


# ---------------------------------------------------------------------------------------------------------


def _nonzero(coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the nonzero entries of a coefficient vector (for the fused kernels)."""
    idx = np.flatnonzero(coeffs != 0.0)
    return idx.astype(np.int64), np.ascontiguousarray(coeffs[idx], dtype=float)


# Fused per-element kernels. Each output element is computed from the same row's data by the same fixed
# sequence of IEEE operations (no fastmath, so no reassociation or contraction), which keeps every run
# bitwise independent of the batch; fusing them saves the temporaries and memory passes of the
# equivalent numpy expressions (the solver is memory-bound for cheap right-hand sides).


@njit(cache=True)
def _stage_point(y, h, K, idx, w, out):
    """``out[r] = y[r] + h[r] * sum_t w[t] K[idx[t], r]`` for the rows ``r < out.shape[0]``."""
    m, n = out.shape
    acc = np.empty(n)
    for r in range(m):
        acc[:] = 0.0
        for t in range(idx.size):  # the same summation order for every element
            wt = w[t]
            Kt = K[idx[t], r]
            for c in range(n):
                acc[c] += wt * Kt[c]
        hr = h[r]
        for c in range(n):
            out[r, c] = y[r, c] + hr * acc[c]


@njit(cache=True)
def _combination(K, idx, w, out):
    """``out[r] = sum_t w[t] K[idx[t], r]`` for the rows ``r < out.shape[0]``."""
    m, n = out.shape
    for r in range(m):
        out[r, :] = 0.0
        for t in range(idx.size):
            wt = w[t]
            Kt = K[idx[t], r]
            for c in range(n):
                out[r, c] += wt * Kt[c]


@njit(cache=True)
def _weighted_square_norms(K, idx, w, m):
    """``sum_t w[t] |K[idx[t], r]|^2`` for the rows ``r < m``: the energy increment per unit step."""
    n = K.shape[2]
    out = np.zeros(m)
    for r in range(m):
        acc = 0.0
        for t in range(idx.size):
            sq = 0.0
            for c in range(n):
                v = K[idx[t], r, c]
                sq += v * v
            acc += w[t] * sq
        out[r] = acc
    return out


@njit(cache=True)
def _row_checks(x):
    """Per row: the squared Euclidean norm and whether every entry is finite."""
    m, n = x.shape
    sq = np.empty(m)
    finite = np.empty(m, dtype=np.bool_)
    for r in range(m):
        acc = 0.0
        ok = True
        for c in range(n):
            v = x[r, c]
            acc += v * v
            if not np.isfinite(v):
                ok = False
        sq[r] = acc
        finite[r] = ok
    return sq, finite


def solve_explicit(
    rhs: Callable[[np.ndarray], np.ndarray],
    y0,
    save_times,
    *,
    tableau: str | ButcherTableau = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    h0=None,
    max_steps: int = 10**6,
    gtol: float | None = None,
    divergence_bound: float = np.inf,
    progress: Callable[[float], None] | None = None,
    energy_in_norm: bool = True,
    post_step: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SolveResult:
    """Integrate ``y' = rhs(y)`` from ``y0`` (shape ``(M, n)``) and return the states at ``save_times``.

    Parameters
    ----------
    rhs : autonomous vector field on a batch, ``(m, n) -> (m, n)``; must treat rows independently.
    y0 : (M, n) initial states (M runs of dimension n).
    save_times : (T,) non-decreasing times ``>= 0``; ``t_max = save_times[-1]``. A save time 0 records ``y0``;
        repeated times record the same state.
    tableau : ``"dopri5"``, ``"tsit5"``, ``"dop853"`` or a :class:`ButcherTableau`.
    rtol, atol : tolerances of the per-run error norm (:mod:`reluflow.integrate.controller`); both > 0.
    h0 : initial step, scalar or (M,); ``None`` selects it per run by Hairer's algorithm (one extra
        evaluation of ``rhs``).
    max_steps : attempted (accepted + rejected) steps allowed per run.
    gtol : stop a run as ``CONVERGED`` once ``|rhs(y)| <= gtol`` at an accepted state; ``None`` disables.
    divergence_bound : ``|y| > divergence_bound`` at an accepted state stops the run as ``DIVERGED``.
    progress : optional ``progress(fraction_done)``, called at most every 0.5 s and once with 1.0 at the end.
    energy_in_norm : control the error of the energy integral ``E`` too (the pair's error estimate applied
        to ``E' = |f|^2`` is one more component of the error norm). Without it the energy-identity residual
        is accurate only to the extent the state's error control happens to bound it: at rtol 1e-8 the
        benchmark's worst run had a residual of 2.6e-6 L(Theta_0), built up in the first steps of a fast
        transient (benchmarks/bench_flows.py).
    post_step : optional row-wise map ``(m, n) -> (m, n)`` applied to every accepted state, after which ``rhs``
        is evaluated there again (one more evaluation per accepted step): a projection back onto an
        invariant manifold that the RK method conserves only to its local error (the normalized flow's
        ``|u_i| = 1``). It must not change ``L`` (the realization-preserving map does not), so the energy
        increment stays the step's own.

    Returns
    -------
    SolveResult with ``t = save_times``, ``y`` (M, T, n), ``energy`` (M, T) = ``int_0^t |rhs(y_s)|^2 ds``
    by the RK weights, per-run ``status``/``t_final``, per-save-time accepted/rejected step counts, and
    ``n_rhs`` = rows of ``rhs`` evaluated in total. See the module docstring for the stopping rules.
    """
    tab = get_tableau(tableau)
    y0 = _as_states(y0)
    save_times = _as_save_times(save_times)
    controller = PIController(rtol=float(rtol), atol=float(atol), error_order=tab.error_order)
    if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
        raise ValueError(f"max_steps: must be a positive integer, got {max_steps!r}")
    _check_common(gtol, divergence_bound, progress)
    m_runs, n = y0.shape
    if h0 is not None:
        h0_arr = np.asarray(h0, dtype=float)
        if h0_arr.shape not in ((), (m_runs,)) or not np.all(np.isfinite(h0_arr) & (h0_arr > 0)):
            raise ValueError(f"h0: must be None, a positive number or one positive number per run ({m_runs},)")
        h0 = np.broadcast_to(h0_arr, (m_runs,))

    T = save_times.size
    rec = _Recorder(m_runs, n, save_times)
    reporter = _Progress(progress, save_times, m_runs)
    n_rhs = 0

    # stage coefficients as (indices, weights) of the nonzero entries
    s = tab.stages
    stage_terms = [_nonzero(tab.a[i, :i]) for i in range(s)]
    b_terms = _nonzero(tab.b)
    err_terms = _nonzero(tab.b_error)
    err_low_terms = _nonzero(tab.b_error_low) if tab.b_error_low is not None else None

    with np.errstate(all="ignore"):
        # ---- t = 0: record, classify, choose the first step -------------------------------------------
        k0 = int(np.searchsorted(save_times, 0.0, side="right"))  # save times equal to 0
        zeros = np.zeros(m_runs, dtype=np.int64)
        all_rows = np.arange(m_runs)
        for k in range(k0):
            rec.record(all_rows, np.full(m_runs, k), y0, np.zeros(m_runs), zeros, zeros)
        f0 = _call_rhs(rhs, y0)
        n_rhs += m_runs
        first = np.full(m_runs, k0, dtype=np.int64)
        bad = ~np.all(np.isfinite(y0), axis=-1) | ~np.all(np.isfinite(f0), axis=-1)
        bad |= _row_norm(y0) > divergence_bound
        done0 = np.zeros(m_runs, dtype=bool)
        sel = bad
        rec.stop(all_rows[sel], first[sel], Status.DIVERGED, 0.0, zeros[sel], zeros[sel])
        done0 |= sel
        sel = ~done0 & (k0 == T)
        rec.stop(all_rows[sel], first[sel], Status.FINISHED, 0.0, zeros[sel], zeros[sel])
        done0 |= sel
        if gtol is not None:
            sel = ~done0 & (_row_norm(f0) <= gtol)
            rec.stop(
                all_rows[sel], first[sel], Status.CONVERGED, 0.0, zeros[sel], zeros[sel],
                y=y0[sel], energy=np.zeros(int(sel.sum())),
            )  # fmt: skip
            done0 |= sel

        rows = all_rows[~done0]
        m = rows.size
        # work buffers, the first m rows in use: the states, the stage derivatives K[0..s-1] (K[0] = f(y)),
        # a stage point, the new solution and the error combinations
        y_buf = np.empty((m, n))
        K = np.empty((s, m, n))
        stage_buf = np.empty((m, n))
        ynew_buf = np.empty((m, n))
        err_buf = np.empty((m, n))
        err_low_buf = np.empty((m, n)) if err_low_terms is not None else None
        y_buf[:] = y0[rows]
        K[0] = f0[rows]
        if m and h0 is None:
            h, cost = controller.initial_step(lambda z: _call_rhs(rhs, z), y_buf, K[0], tab.order)
            n_rhs += cost
        else:
            h = np.array(h0[rows] if h0 is not None else np.zeros(0), dtype=float)
        t = np.zeros(m)
        energy = np.zeros(m)
        err_prev = np.ones(m)
        sidx = np.full(m, k0, dtype=np.int64)
        n_acc = np.zeros(m, dtype=np.int64)
        n_rej = np.zeros(m, dtype=np.int64)

        # ---- main loop: one attempted step per active run ---------------------------------------------
        while m:
            y = y_buf[:m]
            y_new = ynew_buf[:m]
            t_next = save_times[sidx]
            remaining = t_next - t
            land = _LANDING_SLACK * h >= remaining
            hs = np.where(land, remaining, h)

            for i in range(1, s):
                point = y_new if (tab.fsal and i == s - 1) else stage_buf[:m]  # FSAL: last point is y_{n+1}
                _stage_point(y, hs, K, *stage_terms[i], point)
                K[i, :m] = _call_rhs(rhs, point)
                n_rhs += m
            if not tab.fsal:
                _stage_point(y, hs, K, *b_terms, y_new)
            _combination(K, *err_terms, err_buf[:m])
            e_low = None
            if err_low_terms is not None:
                e_low = err_low_buf[:m]
                _combination(K, *err_low_terms, e_low)
            # energy: the RK weights applied to E' = |f(y)|^2
            energy_new = energy + hs * _weighted_square_norms(K, *b_terms, m)
            energy_error = None
            if energy_in_norm:
                e_energy = _weighted_square_norms(K, *err_terms, m)
                e_energy_low = None if err_low_terms is None else _weighted_square_norms(K, *err_low_terms, m)
                energy_error = (e_energy, e_energy_low, energy, energy_new)
            err = controller.error_norm(hs, err_buf[:m], y, y_new, e_low, energy_error)
            ok = err <= 1.0

            h_next = controller.next_step(hs, err, err_prev, ok)
            # a landing step shorter than the proposal must not shrink the step sequence
            h_next = np.where(ok & land & (hs < h), np.maximum(h_next, h), h_next)

            # ---- commit the accepted steps ----
            ok_col = ok[:, None]
            np.copyto(y, y_new, where=ok_col)
            if tab.fsal and post_step is None:
                np.copyto(K[0, :m], K[s - 1, :m], where=ok_col)
            elif ok.any():
                acc_rows = np.flatnonzero(ok)
                if post_step is not None:
                    # projection method (Hairer, Lubich & Wanner, GNI IV.4): back onto the invariant
                    # manifold; an FSAL value would belong to the unprojected point, so f is evaluated anew
                    y[acc_rows] = np.asarray(post_step(y[acc_rows]), dtype=float)
                K[0, acc_rows] = _call_rhs(rhs, y[acc_rows])
                n_rhs += acc_rows.size
            t = np.where(ok, np.where(land, t_next, t + hs), t)
            energy = np.where(ok, energy_new, energy)
            err_prev = np.where(ok, err, err_prev)
            h = h_next
            n_acc += ok
            n_rej += ~ok

            y_sq, y_finite = _row_checks(y)
            k_sq, k_finite = _row_checks(K[0, :m])
            diverged = ok & (~y_finite | ~k_finite | (np.sqrt(y_sq) > divergence_bound))
            # record every save time equal to the landing time (repeated save times)
            hit = ok & land & ~diverged
            while hit.any():
                idx = np.flatnonzero(hit)
                rec.record(rows[idx], sidx[idx], y[idx], energy[idx], n_acc[idx], n_rej[idx])
                sidx[idx] += 1
                hit[idx] = (sidx[idx] < T) & (save_times[np.minimum(sidx[idx], T - 1)] == t[idx])
            finished = ~diverged & (sidx == T)
            sidx = np.minimum(sidx, T - 1)
            stopped = diverged | finished
            converged = np.zeros(m, dtype=bool)
            if gtol is not None:
                converged = ok & ~stopped & (np.sqrt(k_sq) <= gtol)
                stopped |= converged
            failed = ~stopped & ((h < UNDERFLOW * np.maximum(1.0, t)) | (n_acc + n_rej >= max_steps))
            stopped |= failed

            if stopped.any():
                for mask, status in ((diverged, Status.DIVERGED), (finished, Status.FINISHED), (failed, Status.FAILED)):
                    # t is the time of the last accepted state (for DIVERGED: the offending one)
                    idx = np.flatnonzero(mask)
                    first_unsaved = np.where(finished[idx], T, sidx[idx])
                    rec.stop(rows[idx], first_unsaved, status, t[idx], n_acc[idx], n_rej[idx])
                idx = np.flatnonzero(converged)
                rec.stop(
                    rows[idx], sidx[idx], Status.CONVERGED, t[idx], n_acc[idx], n_rej[idx],
                    y=y[idx], energy=energy[idx],
                )  # fmt: skip
                keep = np.flatnonzero(~stopped)
                m_new = keep.size
                y_buf[:m_new] = y[keep]
                K[0, :m_new] = K[0, keep]
                rows, h, t, energy, err_prev, sidx, n_acc, n_rej = (
                    a[keep] for a in (rows, h, t, energy, err_prev, sidx, n_acc, n_rej)
                )
                m = m_new
            reporter.update(t)

    reporter.finish()
    return rec.result(
        save_times.copy(),
        n_rhs,
        {
            "solver": "explicit_rk",
            "tableau": tab.name,
            "order": tab.order,
            "error_order": tab.error_order,
            "rtol": float(rtol),
            "atol": float(atol),
            "controller": {
                "kind": "PI",
                "beta1": controller.exponents[0],
                "beta2": controller.exponents[1],
                "safety": controller.safety,
                "fmin": controller.fmin,
                "fmax": controller.fmax,
            },
            "max_steps": int(max_steps),
            "gtol": None if gtol is None else float(gtol),
            "divergence_bound": float(divergence_bound),
        },
    )
