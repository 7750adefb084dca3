"""The one integration loop of every solver: ``solve(method, controller, rhs, y0, save_times)``.

The pieces are separate, in the manner of ``scipy.integrate.solve_ivp`` and diffrax's ``diffeqsolve``:

- a **method** (:mod:`~reluflow.dynamics.solvers.explicit`, :mod:`~reluflow.dynamics.solvers.rosenbrock`,
  :mod:`~reluflow.dynamics.solvers.gd`) computes one step from ``(y, f(y), h)`` and returns a
  :class:`StepEstimate`: the new state, its error estimate and the step's increment of the energy integral
  ``E(t) = int_0^t |f(y_s)|^2 ds`` (the method applied to the augmented ODE ``E' = |f(y)|^2``);
- a **controller** (:mod:`~reluflow.dynamics.solvers.controllers`) turns the estimate into an accept/reject
  decision and the next step size, and owns the rule that lands steps on the save times;
- this **loop** does the rest, for every method alike: the first step (:func:`select_initial_step`), landing
  on and recording the save times, the retraction ``post_step`` onto an invariant manifold, the stopping
  tests, the per-run status, counters and progress.

Batches. Each iteration attempts one step for every run still going; ``rhs`` (and ``jac``) are evaluated
only on those rows, and a run leaves the batch as soon as it stops. All arithmetic is elementwise or a sum
along a row, so with a row-independent ``rhs`` each run's numbers are bitwise the same whatever the other
runs of the batch. ``rhs`` must not modify its argument or keep a reference to it.

Stopping (per run; :class:`~reluflow.dynamics.solvers.result.Status`):

- ``FINISHED``: the last save time was reached.
- ``CONVERGED``: ``|f(y)| <= gtol`` (Euclidean norm) at ``y0`` or at an accepted state before the final
  time. Later save times hold that state and its energy (the run sits at a critical point to within ``gtol``).
- ``DIVERGED``: ``y0`` or an accepted state is non-finite, has ``|y| > divergence_bound``, or ``f`` is
  non-finite there; ``t_final`` is that state's time. Later save times hold NaN. (A finite-time blow-up with
  ``divergence_bound = inf`` usually ends as ``FAILED``: the state stays finite while the steps shrink to
  underflow, as in Hairer's codes; pass a finite bound to classify it as divergence.)
- ``FAILED``: the proposed step underflowed (``h < 1e-14 max(1, t)``), the run used up ``max_steps``
  attempted (accepted + rejected) steps, or the method cannot continue (a non-finite Jacobian, five singular
  linear systems in a row). Later save times hold NaN.

Counters at a save time after a run stopped hold the run's final counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from reluflow.dynamics.solvers.controllers import UNDERFLOW
from reluflow.dynamics.solvers.initial_step import select_initial_step
from reluflow.dynamics.solvers.result import SolveResult, Status

__all__ = ["StepEstimate", "solve", "check_save_times", "check_states"]

#: minimal interval between two progress callbacks, seconds.
PROGRESS_INTERVAL = 0.5
#: steps per compiled call of the runs handed to a compiled loop (progress is reported in between)
POOL_CHUNK = 64
#: once the compiled loop holds every run left, its chunks double while a call takes less than a tenth of the
#: progress interval (each call has a fixed cost: the arguments' dispatch, the loop's buffers), up to this many
MAX_POOL_CHUNK = 1 << 16


@dataclass
class StepEstimate:
    """What a method returns for one attempted step of ``m`` rows.

    ``y_new (m, n)``: the new state; ``energy_increment (m,)``: the step's increment of ``E``. ``error``,
    ``error_low``, ``energy_error``, ``energy_error_low``: the method's error estimates, in the form its
    controller expects (see :mod:`~reluflow.dynamics.solvers.controllers`). ``valid (m,)``: False where the
    step could not be computed (a singular linear system); ``None`` means every row. ``f_new``: ``f(y_new)``
    when the method has it anyway (first same as last); ``n_rhs``: rows passed to ``rhs``.
    """

    y_new: np.ndarray
    energy_increment: np.ndarray
    error: np.ndarray | None = None
    error_low: np.ndarray | None = None
    energy_error: np.ndarray | None = None
    energy_error_low: np.ndarray | None = None
    valid: np.ndarray | None = None
    f_new: np.ndarray | None = None
    n_rhs: int = 0
    #: per row: rows passed to ``rhs`` (``None``: ``n_rhs / m`` each) and to ``jac`` or a factorization
    #: (``None``: none) during the step
    rhs_rows: np.ndarray | None = None
    jac_rows: np.ndarray | None = None
    #: per row: whether ``f_new`` holds ``f(y_new)`` (``None``: every row, when ``f_new`` is given)
    f_known: np.ndarray | None = None
    #: for a method that switches per run (:mod:`~reluflow.dynamics.solvers.switching`): which rows took a
    #: stiff step, and the sub-estimates ``((rows, estimate), ...)`` when the batch was split
    stiff: np.ndarray | None = None
    parts: tuple | None = None


def check_states(y0) -> np.ndarray:
    """``y0`` as a C-contiguous float array ``(M, n)`` with ``M, n >= 1``, else ``ValueError`` naming it."""
    try:
        y = np.array(y0, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y0: must be a real array of shape (M, n): {exc}") from None
    if y.ndim != 2 or y.shape[0] < 1 or y.shape[1] < 1:
        raise ValueError(f"y0: must have shape (M, n) with M >= 1 and n >= 1, got shape {y.shape}")
    return np.ascontiguousarray(y)


def check_save_times(save_times) -> np.ndarray:
    """Save times as a non-empty 1-d array, finite, ``>= 0`` and non-decreasing, else ``ValueError``."""
    try:
        t = np.array(save_times, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_times: must be a real 1-d sequence: {exc}") from None
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


def check_stopping(gtol, divergence_bound, max_steps, progress) -> None:
    """The common stopping arguments, each refused with a message naming it."""
    if gtol is not None and not (np.isfinite(gtol) and gtol >= 0):
        raise ValueError(f"gtol: must be None or a finite number >= 0, got {gtol!r}")
    if isinstance(divergence_bound, bool) or not (divergence_bound > 0) or np.isnan(divergence_bound):
        raise ValueError(f"divergence_bound: must be > 0 (inf allowed), got {divergence_bound!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps: must be a positive integer, got {max_steps!r}")
    if progress is not None and not callable(progress):
        raise ValueError("progress: must be None or a callable progress(fraction_done)")


def call_rhs(rhs, y: np.ndarray, name: str = "rhs") -> np.ndarray:
    """``rhs(y)`` as a contiguous float array of ``y``'s shape, else ``ValueError`` naming ``rhs``."""
    f = np.asarray(rhs(y), dtype=float)
    if f.shape != y.shape:
        raise ValueError(f"{name}: returned shape {f.shape} for states of shape {y.shape}")
    return np.ascontiguousarray(f)


@njit(cache=True)
def row_checks(x):
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


#: per-row outcome codes of :func:`_advance` (``CONTINUE``, or a :class:`Status`); the statuses as plain ints for
#: the compiled loops (numba reads module globals as constants)
CONTINUE = -1
FINISHED, CONVERGED, DIVERGED, FAILED = (int(s) for s in (Status.FINISHED, Status.CONVERGED, Status.DIVERGED,
                                                          Status.FAILED))


# inline="always" (here and below): why, in reluflow.dynamics.compiled_field's docstring
@njit(cache=True, inline="always")
def _advance(ok, land, t, t_after, energy, increment, n_acc, n_rej, h, sidx, y, f, rows, save_times,
             divergence_bound, gtol, max_steps, underflow, gave_up, rec_y, rec_energy, rec_steps, rec_rejected,
             outcome):  # fmt: skip
    """The loop's bookkeeping after the accepted rows' states ``y`` and ``f(y)`` are in place (module docstring):
    per row, the new time and energy, divergence, the records at every save time equal to the landing time,
    and the stopping tests, in the order and with the arithmetic of the loop. ``t``, ``energy``, ``sidx`` are
    updated in place; ``outcome[i]`` is :data:`CONTINUE` or the row's :class:`Status`. ``gtol < 0``: no test;
    ``underflow = 0``: no step-size test; ``gave_up``: empty or the controller's verdict per row."""
    m, n = y.shape
    T = save_times.shape[0]
    for i in range(m):
        accepted = ok[i]
        y_sq = 0.0
        f_sq = 0.0
        diverged = False
        if accepted:
            t[i] = t_after[i]
            energy[i] = energy[i] + increment[i]
            y_finite = True
            f_finite = True
            for c in range(n):
                v = y[i, c]
                y_sq += v * v
                if not np.isfinite(v):
                    y_finite = False
            for c in range(n):
                v = f[i, c]
                f_sq += v * v
                if not np.isfinite(v):
                    f_finite = False
            diverged = (not y_finite) or (not f_finite) or (np.sqrt(y_sq) > divergence_bound)
        if accepted and land[i] and not diverged:
            k = sidx[i]
            while True:
                r = rows[i]
                for c in range(n):
                    rec_y[r, k, c] = y[i, c]
                rec_energy[r, k] = energy[i]
                rec_steps[r, k] = n_acc[i]
                rec_rejected[r, k] = n_rej[i]
                k += 1
                if not (k < T and save_times[min(k, T - 1)] == t[i]):
                    break
            sidx[i] = k
        finished = (not diverged) and sidx[i] == T
        if sidx[i] > T - 1:
            sidx[i] = T - 1
        if diverged:
            outcome[i] = DIVERGED
        elif finished:
            outcome[i] = FINISHED
        elif gtol >= 0.0 and accepted and np.sqrt(f_sq) <= gtol:
            outcome[i] = CONVERGED
        elif n_acc[i] + n_rej[i] >= max_steps or h[i] < underflow * max(1.0, t[i]) or (
                gave_up.shape[0] > 0 and gave_up[i]):
            outcome[i] = FAILED
        else:
            outcome[i] = CONTINUE


class _Recorder:
    """Output arrays of a :class:`SolveResult` and the per-run writes into them."""

    def __init__(self, m: int, n: int, n_times: int):
        self.T = n_times
        self.y = np.full((m, n_times, n), np.nan)
        self.energy = np.full((m, n_times), np.nan)
        self.n_steps = np.zeros((m, n_times), dtype=np.int64)
        self.n_rejected = np.zeros((m, n_times), dtype=np.int64)
        self.status = np.full(m, -1, dtype=np.int8)
        self.t_final = np.full(m, np.nan)
        self.n_rhs = np.zeros(m, dtype=np.int64)
        self.n_jac = np.zeros(m, dtype=np.int64)

    def record(self, rows, k, y, energy, n_acc, n_rej):
        """Save index ``k[i]`` of run ``rows[i]`` gets state ``y[i]`` (all arrays aligned with ``rows``)."""
        self.y[rows, k] = y
        self.energy[rows, k] = energy
        self.n_steps[rows, k] = n_acc
        self.n_rejected[rows, k] = n_rej

    def stop(self, rows, first_unsaved, status, t_final, n_acc, n_rej, y=None, energy=None, n_rhs=None, n_jac=None):
        """Run ``rows[i]`` stopped; save indices ``>= first_unsaved[i]`` get ``y``/``energy`` (or stay NaN)."""
        if rows.size == 0:
            return
        if n_rhs is not None:
            self.n_rhs[rows] = n_rhs
        if n_jac is not None:
            self.n_jac[rows] = n_jac
        later = np.arange(self.T)[None, :] >= first_unsaved[:, None]
        self.n_steps[rows] = np.where(later, n_acc[:, None], self.n_steps[rows])
        self.n_rejected[rows] = np.where(later, n_rej[:, None], self.n_rejected[rows])
        if y is not None:
            self.y[rows] = np.where(later[:, :, None], y[:, None, :], self.y[rows])
            self.energy[rows] = np.where(later, energy[:, None], self.energy[rows])
        self.status[rows] = status
        self.t_final[rows] = t_final


class _Progress:
    """Calls ``progress(fraction)`` at most every 0.5 s and once with 1.0 at the end; the fraction is the mean
    over runs of the log-time progress ``log1p(t / tau) / log1p(t_max / tau)`` (stopped runs count 1),
    ``tau`` the first positive save time: save grids are log-spaced and a stiff solve's cost grows like
    ``log t``."""

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
        if now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        done = self.n_runs - t_active.size
        frac = (done + float(np.sum(np.log1p(t_active / self.tau))) / self.denom) / self.n_runs
        self.callback(min(max(frac, 0.0), 1.0))

    def finish(self):
        if self.callback is not None:
            self.callback(1.0)


def _take(arrays: dict, idx: np.ndarray) -> dict:
    return {key: value[idx] for key, value in arrays.items()}


def solve(
    method,
    controller,
    rhs: Callable[[np.ndarray], np.ndarray],
    y0,
    save_times,
    *,
    h0=None,
    max_steps: int = 10**6,
    gtol: float | None = None,
    divergence_bound: float = np.inf,
    progress: Callable[[float], None] | None = None,
    post_step: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SolveResult:
    """Integrate ``y' = rhs(y)`` from every row of ``y0 (M, n)`` and return the states at ``save_times``.

    ``method`` and ``controller`` are the pieces described in the module docstring; ``h0`` the first step
    (a number or one per run; ``None``: Hairer's estimate per run, one more evaluation of ``rhs``, for
    adaptive controllers). ``post_step`` is a row-wise map applied to every accepted state before ``rhs`` is
    evaluated there: a projection back onto an invariant manifold that the method conserves only to its local
    error (Hairer, Lubich & Wanner, GNI IV.4); it must not change the gradient flow's potential, so the energy
    increment stays the step's own. Returns a :class:`SolveResult` whose ``info`` the caller completes.
    """
    y0 = check_states(y0)
    save_times = check_save_times(save_times)
    check_stopping(gtol, divergence_bound, max_steps, progress)
    if post_step is not None and not callable(post_step):
        raise ValueError("post_step: must be None or a callable (m, n) -> (m, n)")
    m_runs, n = y0.shape
    if h0 is not None:
        try:
            h0 = np.array(h0, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"h0: must be None, a positive number or one per run ({m_runs},), got {h0!r}") from None
        if h0.shape not in ((), (m_runs,)) or not np.all(np.isfinite(h0) & (h0 > 0)):
            raise ValueError(f"h0: must be None, a positive number or one positive number per run ({m_runs},)")
        h0 = np.broadcast_to(h0, (m_runs,))

    T = save_times.size
    t_end = float(save_times[-1])
    rec = _Recorder(m_runs, n, T)
    reporter = _Progress(progress, save_times, m_runs)
    n_rhs = 0
    n_jac = 0

    with np.errstate(all="ignore"):
        # ---- t = 0: record y0 at the save times equal to 0, classify, choose the first step ----------------
        k0 = int(np.searchsorted(save_times, 0.0, side="right"))
        zeros = np.zeros(m_runs, dtype=np.int64)
        ones = np.ones(m_runs, dtype=np.int64)
        all_rows = np.arange(m_runs)
        for k in range(k0):
            rec.record(all_rows, np.full(m_runs, k), y0, np.zeros(m_runs), zeros, zeros)
        f0 = call_rhs(rhs, y0)
        n_rhs += m_runs
        first = np.full(m_runs, k0, dtype=np.int64)
        y_sq, y_finite = row_checks(y0)
        f_sq, f_finite = row_checks(f0)
        stopped = ~y_finite | ~f_finite | (np.sqrt(y_sq) > divergence_bound)
        rec.stop(all_rows[stopped], first[stopped], Status.DIVERGED, 0.0, zeros[stopped], zeros[stopped],
                 n_rhs=1, n_jac=0)
        sel = ~stopped & (k0 == T)
        rec.stop(all_rows[sel], first[sel], Status.FINISHED, 0.0, zeros[sel], zeros[sel], n_rhs=1, n_jac=0)
        stopped |= sel
        if gtol is not None:
            sel = ~stopped & (np.sqrt(f_sq) <= gtol)
            rec.stop(all_rows[sel], first[sel], Status.CONVERGED, 0.0, zeros[sel], zeros[sel],
                     y=y0[sel], energy=np.zeros(int(sel.sum())), n_rhs=1, n_jac=0)
            stopped |= sel

        keep = np.flatnonzero(~stopped)
        m = keep.size
        run = {
            "rows": all_rows[keep],
            "y": np.ascontiguousarray(y0[keep]),
            "f": np.ascontiguousarray(f0[keep]),
            "t": np.zeros(m),
            "energy": np.zeros(m),
            "sidx": np.full(m, k0, dtype=np.int64),
            "n_acc": np.zeros(m, dtype=np.int64),
            "n_rej": np.zeros(m, dtype=np.int64),
            "n_rhs": ones[keep].copy(),
            "n_jac": zeros[keep].copy(),
        }
        if h0 is not None:
            run["h"] = np.array(h0[keep], dtype=float)
        elif not controller.adaptive:
            run["h"] = np.zeros(m)
        elif m:
            run["h"], cost = select_initial_step(lambda z: call_rhs(rhs, z), run["y"], run["f"],
                                                 controller.initial_scale(run["y"]), method.error_exponent, t_end)
            n_rhs += cost
            run["n_rhs"] += 1
        else:
            run["h"] = np.zeros(0)
        memory = _take(controller.memory(m_runs), keep)
        carry = _take(method.memory(m_runs, n), keep)
        method.workspace(m, n)
        gtol_value = -1.0 if gtol is None else float(gtol)
        underflow = UNDERFLOW if controller.adaptive else 0.0
        no_verdict = np.zeros(0, dtype=np.bool_)

        # ---- main loop: one attempted step per run still going ---------------------------------------------
        # A method whose pieces exist compiled hands runs to its compiled loop (the same numbers:
        # reluflow.dynamics.compiled_field): all of them, or for ``auto`` each run once it is stiff. The handed
        # runs (the pool) advance by as many steps as this loop takes, POOL_CHUNK at a time in one compiled call
        # (the call's own cost is then negligible), and straight on once this loop has no run left, in chunks
        # that grow while they are short; a run stays there until it stops (runs are independent: neither the
        # split nor the chunks change a number).
        offers_compiled = hasattr(method, "compiled_loop")
        pool = None
        pool_behind = 0
        pool_chunk = POOL_CHUNK
        stopping = (save_times, rec, float(divergence_bound), gtol_value, int(max_steps), underflow)
        while m or (pool is not None and pool.m):
            if m and offers_compiled:
                handed = method.compiled_loop(controller, post_step, carry, memory)
                if handed is not None:
                    pool, which = handed
                    idx = np.flatnonzero(which)
                    if hasattr(method, "stopped"):  # these runs stop in the pool: their record is final now
                        method.stopped(carry, idx, run["rows"][idx])
                    pool.join(_take(run, idx), _take(memory, idx), _take(carry, idx))
                    keep = np.flatnonzero(~which)
                    run, memory, carry = _take(run, keep), _take(memory, keep), _take(carry, keep)
                    m = keep.size
            if pool is not None and pool.m:
                pool_behind += 1
                if pool_behind == POOL_CHUNK or not m:
                    started = time.monotonic()
                    rows_f, rows_j = pool.advance(POOL_CHUNK if m else pool_chunk, *stopping)
                    if not m:  # the pool alone: chunks as long as the progress reports allow
                        took = time.monotonic() - started
                        if took < PROGRESS_INTERVAL / 10:
                            pool_chunk = min(2 * pool_chunk, MAX_POOL_CHUNK)
                        elif took > PROGRESS_INTERVAL / 2:
                            pool_chunk = max(pool_chunk // 2, POOL_CHUNK)
                    n_rhs += rows_f
                    n_jac += rows_j
                    pool_behind = 0
                if not m:
                    reporter.update(pool.t)
                    continue
            if not m:
                continue
            y, f, t, energy = run["y"], run["f"], run["t"], run["energy"]
            bad, jac_rows = method.prepare(y, carry)
            if jac_rows is not None:
                run["n_jac"] += jac_rows
                n_jac += int(jac_rows.sum())
            if bad is not None and bad.any():  # the method cannot step from these states
                outcome = np.where(bad, int(Status.FAILED), CONTINUE)
            else:
                t_next = save_times[run["sidx"]]
                h = run["h"]
                step, land = controller.landing(t, h, t_next, memory)
                est = method.step(rhs, y, f, step, carry)
                n_rhs += est.n_rhs
                run["n_rhs"] += est.n_rhs // m if est.rhs_rows is None else est.rhs_rows
                if est.jac_rows is not None:
                    run["n_jac"] += est.jac_rows
                    n_jac += int(est.jac_rows.sum())
                err = controller.estimate_norm(step, est, y, energy)
                valid = np.ones(m, dtype=bool) if est.valid is None else est.valid
                ok = valid & (err <= 1.0)
                h_next = controller.update(memory, step, err, ok, valid, run["n_acc"], estimate=est)
                # a landing step shorter than the proposal must not shrink the step sequence
                h_next = np.where(ok & land & (step < h), np.maximum(h_next, h), h_next)
                run["h"] = h_next

                # ---- commit the accepted steps ----
                all_ok = bool(ok.all())
                acc = all_rows[:m] if all_ok else np.flatnonzero(ok)
                run["n_acc"] = run["n_acc"] + ok
                run["n_rej"] = run["n_rej"] + ~ok
                if acc.size:
                    if all_ok:
                        y[:] = est.y_new
                    else:
                        y[acc] = est.y_new[acc]
                    if post_step is not None:
                        y[acc] = np.asarray(post_step(y[acc]), dtype=float)
                    need = acc  # rows whose f(y) is evaluated here
                    if est.f_new is not None and post_step is None:
                        if est.f_known is None:
                            f[acc] = est.f_new[acc]
                            need = acc[:0]
                        else:
                            known = est.f_known[acc]
                            f[acc[known]] = est.f_new[acc[known]]
                            need = acc[~known]
                    if need.size:
                        f[need] = call_rhs(rhs, y[need])
                        n_rhs += need.size
                        run["n_rhs"][need] += 1
                    method.accepted(carry, ok)
                t_after = controller.time_after(t, step, t_next, land, run["n_acc"], memory)
                gave_up = controller.failed(memory)
                outcome = np.empty(m, dtype=np.int64)
                _advance(ok, land, t, np.ascontiguousarray(t_after, dtype=float), energy,
                         np.ascontiguousarray(est.energy_increment, dtype=float), run["n_acc"], run["n_rej"],
                         run["h"], run["sidx"], y, f, run["rows"], save_times, float(divergence_bound), gtol_value,
                         int(max_steps), underflow, no_verdict if gave_up is None else gave_up, rec.y, rec.energy,
                         rec.n_steps, rec.n_rejected, outcome)  # fmt: skip

            if (outcome != CONTINUE).any():
                done = outcome
                rows, sidx, n_acc, n_rej, t = run["rows"], run["sidx"], run["n_acc"], run["n_rej"], run["t"]
                for status in (Status.DIVERGED, Status.FINISHED, Status.FAILED):
                    # t is the time of the last accepted state (for DIVERGED: the offending one)
                    idx = np.flatnonzero(done == status)
                    first_unsaved = np.full(idx.size, T) if status == Status.FINISHED else sidx[idx]
                    rec.stop(rows[idx], first_unsaved, status, t[idx], n_acc[idx], n_rej[idx],
                             n_rhs=run["n_rhs"][idx], n_jac=run["n_jac"][idx])
                idx = np.flatnonzero(done == Status.CONVERGED)
                rec.stop(rows[idx], sidx[idx], Status.CONVERGED, t[idx], n_acc[idx], n_rej[idx],
                         y=run["y"][idx], energy=run["energy"][idx], n_rhs=run["n_rhs"][idx], n_jac=run["n_jac"][idx])
                if hasattr(method, "stopped"):  # the method's per-run record of the runs that leave the batch
                    idx = np.flatnonzero(done != CONTINUE)
                    method.stopped(carry, idx, rows[idx])
                keep = np.flatnonzero(done == CONTINUE)
                run, memory, carry = _take(run, keep), _take(memory, keep), _take(carry, keep)
                m = keep.size
            reporter.update(run["t"] if pool is None or reporter.callback is None
                            else np.concatenate([run["t"], pool.t]))

    reporter.finish()
    return SolveResult(
        t=save_times.copy(),
        y=rec.y,
        energy=rec.energy,
        status=rec.status,
        t_final=rec.t_final,
        n_steps=rec.n_steps,
        n_rejected=rec.n_rejected,
        n_rhs=int(n_rhs),
        n_jac=int(n_jac),
        info={},
        n_rhs_run=rec.n_rhs,
        n_jac_run=rec.n_jac,
    )
