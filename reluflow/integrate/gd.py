"""Batched gradient descent: explicit Euler with a fixed step on an ensemble of states.

``y_{j+1} = R(y_j + eta * f(y_j))`` with ``f = rhs`` (``f = -G`` gives gradient descent on the risk, with
``G`` the generalized gradient) and ``R`` an optional retraction (the normalized flow maps back onto its
manifold after each step). Iterate ``j`` is compared with the gradient flow at time ``t = j * eta``; the flow
is its ``eta -> 0`` limit, with global error ``O(eta)`` on bounded time intervals (explicit Euler has order 1).

Energy: the left Riemann sum ``E_j = eta * sum_{i < j} |f(y_i)|^2`` -- the explicit-Euler quadrature of the
augmented ODE ``E' = |f(y)|^2``, consistent with :func:`reluflow.integrate.explicit.solve_explicit`.
For ``f = -grad L`` and small ``eta``, ``L(y_0) - L(y_j) - E_j = O(eta)``.

Save times. Iterates exist only at multiples of ``eta``:

- scalar ``eta``: a save time ``s`` is rounded to the nearest whole number of steps ``k = round(s / eta)``
  (halves up) and the actual time ``k * eta`` is what ``SolveResult.t`` holds;
- one ``eta`` per run ``(M,)``: ``SolveResult.t`` is one grid for all runs, so every save time must be a
  whole multiple of every ``eta_r`` (to within ``1e-6`` steps plus round-off); otherwise ``ValueError``
  naming ``save_times``. Run ``r`` then records iterate ``round(s / eta_r)`` at save time ``s``.

Stopping per run (:class:`~reluflow.integrate.result.Status`): ``FINISHED`` after the step count of the last
save time; ``CONVERGED`` when ``|f(y_j)| <= gtol`` at an iterate before that (later save times hold
``y_j`` and ``E_j``); ``DIVERGED`` when an iterate is non-finite or ``|y_j| > divergence_bound``, or
``f(y_j)`` is non-finite (later save times NaN). ``FAILED`` does not occur. ``n_steps`` counts the steps
taken up to each save time; ``n_rejected`` is 0.

Vectorized over runs (one Python iteration per step, ``rhs`` evaluated only on the runs still going);
each run's iterates are bitwise independent of the other runs in the batch for a row-independent ``rhs``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reluflow.integrate.explicit import (
    _as_save_times,
    _as_states,
    _call_rhs,
    _check_common,
    _Progress,
    _Recorder,
    _row_norm,
)
from reluflow.integrate.result import SolveResult, Status

__all__ = ["gradient_descent", "gd_save_steps"]

#: a save time counts as a whole multiple of a per-run eta if it is within this many steps of one (plus
#: the round-off of the division, a few ulps of the ratio). Decimal inputs like eta = 0.01, s = 10 give
#: ratios off by ~1e-13 steps; a genuine mismatch is a sizeable fraction of a step.
_MULTIPLE_TOL_STEPS = 1e-6


def gd_save_steps(eta, save_times) -> tuple[np.ndarray, np.ndarray]:
    """Step counts of the save times and the recorded times (see the module docstring).

    Returns ``(steps, t)``: ``steps`` of shape ``(T,)`` for scalar ``eta`` or ``(M, T)`` for per-run ``eta``,
    and ``t`` of shape ``(T,)`` (``steps * eta`` for scalar ``eta``, ``save_times`` otherwise).
    """
    save_times = _as_save_times(save_times)
    eta = np.asarray(eta, dtype=float)
    if eta.ndim == 0:
        steps = np.floor(save_times / eta + 0.5).astype(np.int64)
        return steps, steps * float(eta)
    ratio = save_times[None, :] / eta[:, None]
    steps = np.floor(ratio + 0.5)
    tol = _MULTIPLE_TOL_STEPS + 8 * np.finfo(float).eps * ratio
    bad = np.abs(ratio - steps) > tol
    if bad.any():
        r, k = np.argwhere(bad)[0]
        raise ValueError(
            f"save_times: with one eta per run every save time must be a whole multiple of every eta; "
            f"save time {save_times[k]!r} is {ratio[r, k]:.6g} steps of eta[{r}] = {eta[r]!r}"
        )
    return steps.astype(np.int64), save_times.copy()


def gradient_descent(
    rhs: Callable[[np.ndarray], np.ndarray],
    y0,
    eta,
    save_times,
    *,
    gtol: float | None = None,
    divergence_bound: float = np.inf,
    retraction: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable[[float], None] | None = None,
) -> SolveResult:
    """Run ``y_{j+1} = R(y_j + eta f(y_j))`` from ``y0`` (M, n) and record the iterates at ``save_times``.

    Parameters
    ----------
    rhs : ``f``, a row-independent vector field on a batch ``(m, n) -> (m, n)`` (``-G`` for gradient descent).
    y0 : (M, n) initial states.
    eta : step size, a positive number or one per run ``(M,)``.
    save_times : (T,) non-decreasing, ``>= 0``; rounded to whole steps (module docstring).
    gtol, divergence_bound : stopping tests as in :func:`~reluflow.integrate.explicit.solve_explicit`.
    retraction : optional ``R``, row-independent ``(m, n) -> (m, n)``, applied after every step.
    progress : optional ``progress(fraction_done)`` called at most every 0.5 s and with 1.0 at the end.
    """
    y0 = _as_states(y0)
    save_times = _as_save_times(save_times)
    m_runs, n = y0.shape
    eta_arr = np.asarray(eta, dtype=float)
    if eta_arr.shape not in ((), (m_runs,)) or not np.all(np.isfinite(eta_arr) & (eta_arr > 0)):
        raise ValueError(f"eta: must be a positive finite number or one per run, shape ({m_runs},); got {eta!r}")
    _check_common(gtol, divergence_bound, progress)
    if retraction is not None and not callable(retraction):
        raise ValueError("retraction: must be None or a callable (m, n) -> (m, n)")
    steps, t_out = gd_save_steps(eta_arr, save_times)
    steps = np.broadcast_to(steps, (m_runs, save_times.size))
    eta_run = np.broadcast_to(eta_arr, (m_runs,)).astype(float)

    T = save_times.size
    rec = _Recorder(m_runs, n, t_out)
    reporter = _Progress(progress, t_out, m_runs)
    n_rhs = 0

    rows = np.arange(m_runs)
    y = y0.copy()
    energy = np.zeros(m_runs)
    sidx = np.zeros(m_runs, dtype=np.int64)
    j = 0
    with np.errstate(all="ignore"):
        bad = ~np.all(np.isfinite(y), axis=-1) | (_row_norm(y) > divergence_bound)
        while rows.size:
            m = rows.size
            jj = np.full(m, j, dtype=np.int64)
            # record the save times whose step count is j (several if repeated / rounded together);
            # a diverged iterate is not recorded
            hit = ~bad & (steps[rows, sidx] == j)
            while hit.any():
                idx = np.flatnonzero(hit)
                rec.record(rows[idx], sidx[idx], y[idx], energy[idx], jj[idx], np.zeros(idx.size, np.int64))
                sidx[idx] += 1
                hit[idx] = (sidx[idx] < T) & (steps[rows[idx], np.minimum(sidx[idx], T - 1)] == j)
            finished = ~bad & (sidx == T)
            sidx = np.minimum(sidx, T - 1)
            t_now = j * eta_run[rows]
            zero = np.zeros(m, np.int64)
            stopped = bad | finished
            for mask, status in ((bad, Status.DIVERGED), (finished, Status.FINISHED)):
                idx = np.flatnonzero(mask)
                rec.stop(rows[idx], np.where(finished[idx], T, sidx[idx]), status, t_now[idx], jj[idx], zero[idx])
            keep = ~stopped
            rows, y, energy, sidx, t_now = rows[keep], y[keep], energy[keep], sidx[keep], t_now[keep]
            m = rows.size
            if not m:
                break

            f = _call_rhs(rhs, y)
            n_rhs += m
            f_bad = ~np.all(np.isfinite(f), axis=-1)
            converged = ~f_bad & (_row_norm(f) <= gtol) if gtol is not None else np.zeros(m, dtype=bool)
            jj = np.full(m, j, dtype=np.int64)
            zero = np.zeros(m, np.int64)
            idx = np.flatnonzero(f_bad)
            rec.stop(rows[idx], sidx[idx], Status.DIVERGED, t_now[idx], jj[idx], zero[idx])
            idx = np.flatnonzero(converged)
            rec.stop(rows[idx], sidx[idx], Status.CONVERGED, t_now[idx], jj[idx], zero[idx], y=y[idx], energy=energy[idx])
            keep = ~(f_bad | converged)
            rows, y, energy, sidx, f = rows[keep], y[keep], energy[keep], sidx[keep], f[keep]
            if not rows.size:
                break

            eta_col = eta_run[rows]
            energy = energy + eta_col * np.sum(f * f, axis=-1)
            y = y + eta_col[:, None] * f
            if retraction is not None:
                y = _call_rhs(retraction, y, "retraction")
            j += 1
            bad = ~np.all(np.isfinite(y), axis=-1) | (_row_norm(y) > divergence_bound)
            reporter.update(j * eta_run[rows])

    reporter.finish()
    return rec.result(
        t_out,
        n_rhs,
        {
            "solver": "gradient_descent",
            "eta": float(eta_arr) if eta_arr.ndim == 0 else eta_arr.tolist(),
            "gtol": None if gtol is None else float(gtol),
            "divergence_bound": float(divergence_bound),
            "retraction": retraction is not None,
        },
    )
