"""LSODA's split on the compiled d = 1 field: variable-order Adams, then Rodas4 per run once stiff.

Why. At a tight tolerance the transient of a small network's flow is where a solve spends its evaluations: to
``t = 20`` of the benchmark's H = 1 flows (rtol 1e-10) Rodas5P takes about 1,700 evaluations of ``G`` and 200
Jacobians per run, LSODA's Adams phase about 600 evaluations and none. Past the transient the flow is stiff and
Rodas4, L-stable and exact-Jacobian, takes steps limited by accuracy alone. This solver is LSODA's split with
Rodas4 in place of the BDF methods: the variable-order Adams methods of
:mod:`reluflow.dynamics.solvers.adams` from the start, and per run, once stability holds its Adams step to a
fifth of what accuracy would allow (LSODA's test), Rodas4 from there on (the compiled Rosenbrock loop of
:mod:`reluflow.dynamics.compiled_field`, its state and energy handed over, ``f`` evaluated there afresh).
The switch is one way, as in ``solver: auto`` (:mod:`reluflow.dynamics.solvers.switching`, which says why).

Where it stands (measured, README "Speed at the limit"): it saves evaluations where runs settle after a smooth
transient (490 to 830 per run to t = 1e6 at H = 1 against LSODA's 430 to 680 and Rodas4's 1,400 to 2,200), but
runs with a long stiff, accuracy-limited stretch spend 1,000 and more Rodas4 steps there (six evaluations and a
Jacobian each) where LSODA's BDF makes two evaluations per step and reuses its Jacobian; at an equal
energy-identity residual the whole benchmark solve is then no faster than Rodas5P alone. It is therefore a
function of the package (:func:`solve_lsoda`, used by the benchmark), not yet a configuration's ``solver``.

Step control and order selection are LSODE's, with two choices of this package:

- the stability estimate. LSODA makes a second corrector evaluation on every Adams step to estimate the
  Lipschitz constant that caps the step and feeds the stiffness test; so does this solver by default
  (``lipschitz_every = 1``). A larger ``lipschitz_every`` estimates it on every k-th step only (the corrector's
  convergence test then uses the last estimated rate, as LSODE's does): measured at H = 1 with k = 4, 15 % fewer
  evaluations on runs that settle quickly, but the runs with a long transient switched later, at ``h |J|`` of 1
  to 2 (their estimate lagged), and the solve as a whole was not faster.
- the stiffness test. LSODA compares the Adams step with the one its BDF would take (their error constants);
  Rodas4 has no such constant at the Adams order, so the test asks for the ratio :data:`STIFF_RATIO` between
  the step the Adams error allows and the one its stability region allows (LSODA's ``RATIO``). As in LSODA the
  test runs from the 20th step on and at orders 1 to 5 only.

Save times are not landed on: an Adams step crosses them and the states there are the Nordsieck polynomial's
(LSODE's interpolation, of the method's order); the last step may pass ``t_max``. Energy: the augmented
component ``E' = |G|^2`` is a component of the Adams system (its error counted as in every solver's norm).
``gtol``: the test reads the derivative the method carries (``z_1 / h``, ``f`` at the last corrector
iterate). Everything else (statuses, records, counts) is the driver's (:mod:`reluflow.dynamics.solvers.driver`).

Per run independence: every row's arithmetic is its own (the kernel is row by row), so a run's numbers are the
same in any batch.
"""

from __future__ import annotations

import numba
import numpy as np

from reluflow.dynamics.compiled_field import _negative_gradient, _stop
from reluflow.dynamics.solvers.adams import (
    EL,
    MAX_CORRECTIONS,
    MAX_ORDER,
    STABILITY_BOUND,
    STIFF_RATIO,
    TESCO,
    interpolate,
    predict,
    rescale,
    step_ratio,
    weighted_rms,
)
from reluflow.dynamics.solvers.driver import CONTINUE, CONVERGED, DIVERGED, FAILED, FINISHED

__all__ = ["AdamsLoop", "LIPSCHITZ_EVERY", "solve_lsoda"]

#: every how many accepted steps an Adams step makes a second corrector evaluation for the Lipschitz estimate
LIPSCHITZ_EVERY = 1
#: convergence failures of the corrector in one step before the run fails (LSODE's MXNCF)
_MAX_CONVERGENCE_FAILURES = 10
#: error-test failures in one step before the run fails (LSODE: 10)
_MAX_ERROR_FAILURES = 10
#: accepted steps before the first stiffness test (LSODA's ICOUNT)
_FIRST_TEST = 20
_EPS = np.finfo(float).eps

_ITERATING, _CONVERGED, _DIVERGING = 0, 1, 2


@numba.njit(cache=True, error_model="numpy", inline="always")
def _augmented(f, n, h, out):
    """``out = h (f, |f|^2)``: the augmented field of ``(theta, E)`` times ``h`` (``f`` has ``n`` entries)."""
    sq = 0.0
    for c in range(n):
        out[c] = h * f[c]
        sq += f[c] * f[c]
    out[n] = h * sq


@numba.njit(cache=True, error_model="numpy", inline="always")
def _change_step(z, q, h, rh, rmax, pdlast):
    """LSODE's statement 170 for one run: the ratio ``rh`` capped by ``rmax`` and by the stability bound of
    order ``q``, the array rescaled; returns the new step."""
    rh = min(rh, rmax)
    pdh = max(h * pdlast, 1e-6)
    if rh * pdh * 1.00001 >= STABILITY_BOUND[q - 1]:
        rh = STABILITY_BOUND[q - 1] / pdh
    rescale(z, q, rh)
    return h * rh


@numba.njit(cache=True, error_model="numpy")
def _adams_chunk(H, arguments, rtol, atol_row, atol_energy, lipschitz_every, m, rows, z, zsave, q, h, t, sidx, n_acc,
                 n_rej, n_rhs_run, ialth, rmax, crate, pdest, pdlast, icount, kflag, ncf, acor, acor_prev, stiff,
                 save_times, divergence_bound, gtol, max_steps, underflow, rec_y, rec_energy, rec_steps,
                 rec_rejected, rec_status, rec_t_final, rec_n_rhs, rec_n_jac, max_iterations, totals):  # fmt: skip
    """Up to ``max_iterations`` step attempts of every row of the first ``m`` (compacted in place as runs stop;
    a row that turns stiff stays, flagged, and is not stepped again); returns the number of rows left."""
    M, _, N = z.shape
    n = N - 1
    T = save_times.shape[0]
    scale = np.empty((M, N))
    y_it = np.empty((M, N))
    delp = np.empty(M)
    dlt = np.empty(M)
    rate = np.empty(M)
    pnorm = np.empty(M)
    phase = np.empty(M, dtype=np.int64)
    m_conv = np.empty(M, dtype=np.int64)
    force = np.empty(M, dtype=np.bool_)
    pick = np.empty(M, dtype=np.int64)
    gather = np.empty((M, n))
    f_out = np.empty((M, n))
    risk = np.empty(M)
    fa = np.empty(N)
    buf = np.empty(N)
    outcome = np.empty(M, dtype=np.int64)
    y_last = np.empty((M, n))
    e_last = np.empty(M)
    n_jac_zero = np.zeros(M, dtype=np.int64)
    one_row = np.empty((1, n))
    one_f = np.empty((1, n))
    one_risk = np.empty(1)

    for _ in range(max_iterations):
        if m == 0:
            break
        # ---- predict: the error weights at the step's start, then Taylor's rule ----
        for i in range(m):
            outcome[i] = CONTINUE
            if stiff[i]:
                phase[i] = -1
                continue
            qi = q[i]
            for j in range(qi + 1):
                for c in range(N):
                    zsave[i, j, c] = z[i, j, c]
            for c in range(n):
                scale[i, c] = atol_row[c] + rtol * abs(z[i, 0, c])
            scale[i, n] = atol_energy + rtol * abs(z[i, 0, n])
            predict(z[i], qi)
            pnorm[i] = weighted_rms(z[i, 0], scale[i])
            for c in range(N):
                acor[i, c] = 0.0
                y_it[i, c] = z[i, 0, c]
            phase[i] = _ITERATING
            rate[i] = 0.0
            delp[i] = 0.0
            force[i] = n_acc[i] % lipschitz_every == 0
        # ---- the corrector's functional iteration, every iterating row in one evaluation per round ----
        for it in range(MAX_CORRECTIONS):
            k = 0
            for i in range(m):
                if phase[i] == _ITERATING:
                    pick[k] = i
                    for c in range(n):
                        gather[k, c] = y_it[i, c]
                    k += 1
            if k == 0:
                break
            _negative_gradient(H, arguments, gather[:k], f_out[:k], risk[:k])
            totals[0] += k
            for j in range(k):
                i = pick[j]
                n_rhs_run[i] += 1
                qi = q[i]
                el0 = EL[qi - 1, 0]
                _augmented(f_out[j], n, h[i], fa)
                acc = 0.0
                for c in range(N):
                    s = fa[c] - z[i, 1, c]
                    d = (s - acor[i, c]) / scale[i, c]
                    acc += d * d
                    acor[i, c] = s
                    y_it[i, c] = z[i, 0, c] + el0 * s
                d_norm = np.sqrt(acc / N)
                dlt[i] = d_norm
                if not np.isfinite(d_norm):
                    phase[i] = _DIVERGING
                    continue
                if d_norm <= 100.0 * pnorm[i] * _EPS:
                    phase[i] = _CONVERGED
                    m_conv[i] = it
                    continue
                if not (it == 0 and force[i]):
                    if it > 0:
                        rm = 1024.0 if d_norm > 1024.0 * delp[i] else d_norm / delp[i]
                        rate[i] = max(rate[i], rm)
                        crate[i] = max(0.2 * crate[i], rm)
                    conit = 0.5 / (qi + 2)
                    dcon = d_norm * min(1.0, 1.5 * crate[i]) / (TESCO[qi - 1, 1] * conit)
                    if dcon <= 1.0:
                        phase[i] = _CONVERGED
                        m_conv[i] = it
                        if rate[i] > 0.0:
                            pdest[i] = max(pdest[i], rate[i] / abs(h[i] * el0))
                        if pdest[i] != 0.0:
                            pdlast[i] = pdest[i]
                        continue
                if it + 1 == MAX_CORRECTIONS or (it + 1 >= 2 and d_norm > 2.0 * delp[i]):
                    phase[i] = _DIVERGING
                else:
                    delp[i] = d_norm
        # ---- the error test, the update of the history, the records and the choice of step and order ----
        for i in range(m):
            if phase[i] == -1:
                continue
            qi = q[i]
            if phase[i] != _CONVERGED:  # the corrector failed: back to the old array, a quarter of the step
                for j in range(qi + 1):
                    for c in range(N):
                        z[i, j, c] = zsave[i, j, c]
                n_rej[i] += 1
                ncf[i] += 1
                rmax[i] = 2.0
                if ncf[i] >= _MAX_CONVERGENCE_FAILURES:
                    outcome[i] = FAILED
                    continue
                h[i] = _change_step(z[i], qi, h[i], 0.25, rmax[i], pdlast[i])
                ialth[i] = qi + 1
            else:
                if m_conv[i] == 0:
                    dsm = dlt[i] / TESCO[qi - 1, 1]
                else:
                    dsm = weighted_rms(acor[i], scale[i]) / TESCO[qi - 1, 1]
                if dsm <= 1.0:
                    # ---- accepted ----
                    kflag[i] = 0
                    ncf[i] = 0
                    for j in range(qi + 1):
                        lj = EL[qi - 1, j]
                        for c in range(N):
                            z[i, j, c] += lj * acor[i, c]
                    t[i] += h[i]
                    n_acc[i] += 1
                    y_sq = 0.0
                    finite = True
                    for c in range(N):
                        v = z[i, 0, c]
                        if not np.isfinite(v):
                            finite = False
                        if c < n:
                            y_sq += v * v
                    if not finite or np.sqrt(y_sq) > divergence_bound:
                        outcome[i] = DIVERGED
                        continue
                    r = rows[i]
                    while sidx[i] < T and save_times[sidx[i]] <= t[i]:
                        kk = sidx[i]
                        interpolate(z[i], qi, (save_times[kk] - t[i]) / h[i], buf)
                        for c in range(n):
                            rec_y[r, kk, c] = buf[c]
                        rec_energy[r, kk] = buf[n]
                        rec_steps[r, kk] = n_acc[i]
                        rec_rejected[r, kk] = n_rej[i]
                        sidx[i] = kk + 1
                    if sidx[i] == T:
                        outcome[i] = FINISHED
                        continue
                    if gtol >= 0.0:
                        g_sq = 0.0
                        for c in range(n):
                            g_sq += z[i, 1, c] * z[i, 1, c]
                        if np.sqrt(g_sq) / h[i] <= gtol:
                            outcome[i] = CONVERGED
                            continue
                    if n_acc[i] + n_rej[i] >= max_steps:
                        outcome[i] = FAILED
                        continue
                    # ---- the stiffness test (LSODA's, module docstring) ----
                    icount[i] -= 1
                    if icount[i] < 0 and qi <= 5 and pdest[i] != 0.0 and dsm > 100.0 * pnorm[i] * _EPS:
                        rh1 = step_ratio(dsm, 1.0 / (qi + 1), 1.2)
                        pdh = pdlast[i] * h[i]
                        if pdh * rh1 > 1e-5 and STIFF_RATIO * STABILITY_BOUND[qi - 1] / pdh <= rh1:
                            stiff[i] = True
                            continue
                    ialth[i] -= 1
                    if ialth[i] > 0:
                        if ialth[i] == 1 and qi < MAX_ORDER:
                            for c in range(N):
                                acor_prev[i, c] = acor[i, c]
                        continue
                    consider_up = True
                else:
                    # ---- the error test failed: back to the old array ----
                    for j in range(qi + 1):
                        for c in range(N):
                            z[i, j, c] = zsave[i, j, c]
                    n_rej[i] += 1
                    kflag[i] -= 1
                    rmax[i] = 2.0
                    if kflag[i] <= -_MAX_ERROR_FAILURES:
                        outcome[i] = FAILED
                        continue
                    if kflag[i] <= -3:
                        # the history is assumed wrong: order 1 from f at the current state, a tenth of the step
                        h[i] = 0.1 * h[i]
                        for c in range(n):
                            one_row[0, c] = z[i, 0, c]
                        _negative_gradient(H, arguments, one_row, one_f, one_risk)
                        totals[0] += 1
                        n_rhs_run[i] += 1
                        _augmented(one_f[0], n, h[i], fa)
                        for c in range(N):
                            z[i, 1, c] = fa[c]
                        q[i] = 1
                        ialth[i] = 5
                        continue
                    consider_up = False
                # ---- the step ratios at orders q - 1, q, q + 1 (LSODE, statements 520 to 630) ----
                rhup = 0.0
                if consider_up and qi < MAX_ORDER:
                    acc = 0.0
                    for c in range(N):
                        d = (acor[i, c] - acor_prev[i, c]) / scale[i, c]
                        acc += d * d
                    rhup = step_ratio(np.sqrt(acc / N) / TESCO[qi - 1, 2], 1.0 / (qi + 2), 1.4)
                rhsm = step_ratio(dsm, 1.0 / (qi + 1), 1.2)
                rhdn = 0.0
                if qi > 1:
                    rhdn = step_ratio(weighted_rms(z[i, qi], scale[i]) / TESCO[qi - 1, 0], 1.0 / qi, 1.3)
                pdh = max(h[i] * pdlast[i], 1e-6)
                if qi < MAX_ORDER:
                    rhup = min(rhup, STABILITY_BOUND[qi] / pdh)
                rhsm = min(rhsm, STABILITY_BOUND[qi - 1] / pdh)
                if qi > 1:
                    rhdn = min(rhdn, STABILITY_BOUND[qi - 2] / pdh)
                pdest[i] = 0.0
                if rhsm < rhup and rhup > rhdn:
                    if rhup < 1.1:
                        ialth[i] = 3
                        continue
                    lq = EL[qi - 1, qi] / (qi + 1)
                    for c in range(N):
                        z[i, qi + 1, c] = acor[i, c] * lq
                    q[i] = qi + 1
                    rh = rhup
                else:
                    if rhsm >= rhup and rhsm >= rhdn:
                        newq = qi
                        rh = rhsm
                    else:
                        newq = qi - 1
                        rh = rhdn
                        if kflag[i] < 0 and rh > 1.0:
                            rh = 1.0
                    # a step held by stability changes whatever the ratio; otherwise only by 10 % or more
                    if not (rh * pdh * 1.00001 >= STABILITY_BOUND[newq - 1]) and kflag[i] == 0 and rh < 1.1:
                        ialth[i] = 3
                        continue
                    if kflag[i] <= -2:
                        rh = min(rh, 0.2)
                    q[i] = newq
                h[i] = _change_step(z[i], q[i], h[i], rh, rmax[i], pdlast[i])
                ialth[i] = q[i] + 1
                if kflag[i] == 0:
                    rmax[i] = 10.0
            if h[i] < underflow * max(1.0, t[i]):
                outcome[i] = FAILED
        # ---- runs that stopped leave (a stable compaction) ----
        keep = 0
        for i in range(m):
            status = outcome[i]
            if status != CONTINUE:
                for c in range(n):
                    y_last[i, c] = z[i, 0, c]
                e_last[i] = z[i, 0, n]
                first_unsaved = T if status == FINISHED else sidx[i]
                if status == FINISHED:
                    t[i] = save_times[T - 1]
                _stop(i, status, first_unsaved, rows, t, y_last, e_last, n_acc, n_rej, n_rhs_run, n_jac_zero,
                      rec_y, rec_energy, rec_steps, rec_rejected, rec_status, rec_t_final, rec_n_rhs,
                      rec_n_jac)  # fmt: skip
                continue
            if keep != i:
                rows[keep] = rows[i]
                q[keep] = q[i]
                h[keep] = h[i]
                t[keep] = t[i]
                sidx[keep] = sidx[i]
                n_acc[keep] = n_acc[i]
                n_rej[keep] = n_rej[i]
                n_rhs_run[keep] = n_rhs_run[i]
                ialth[keep] = ialth[i]
                rmax[keep] = rmax[i]
                crate[keep] = crate[i]
                pdest[keep] = pdest[i]
                pdlast[keep] = pdlast[i]
                icount[keep] = icount[i]
                kflag[keep] = kflag[i]
                ncf[keep] = ncf[i]
                stiff[keep] = stiff[i]
                for c in range(N):
                    acor[keep, c] = acor[i, c]
                    acor_prev[keep, c] = acor_prev[i, c]
                    for j in range(MAX_ORDER + 1):
                        z[keep, j, c] = z[i, j, c]
            keep += 1
        m = keep
        all_stiff = True
        for i in range(m):
            if not stiff[i]:
                all_stiff = False
                break
        if all_stiff:
            break
    return m


@numba.njit(cache=True, error_model="numpy")
def _negative_gradient_rows(H, arguments, theta, out):
    """``out = -G(theta)`` for a batch (the rows handed to the stiff phase)."""
    risk = np.empty(theta.shape[0])
    _negative_gradient(H, arguments, theta, out, risk)


_PER_RUN = ("rows", "q", "h", "t", "sidx", "n_acc", "n_rej", "n_rhs", "ialth", "rmax", "crate", "pdest", "pdlast",
            "icount", "kflag", "ncf", "stiff")


class AdamsLoop:
    """The runs in their Adams phase (a pool, ``m`` of them going) and, once stiff, in Rodas4's compiled loop.

    The driver hands every run over at its start with :meth:`join` and advances the pool by :meth:`advance`
    (the interface of :class:`~reluflow.dynamics.compiled_field.RosenbrockLoop`); ``stiff_from_step`` maps
    each run that switched to its accepted Adams steps before the switch.
    """

    def __init__(self, field, rosenbrock_loop, rtol: float, atol, lipschitz_every: int = LIPSCHITZ_EVERY):
        self.field = field
        self.stiff_loop = rosenbrock_loop
        self.rtol = float(rtol)
        self.atol = np.asarray(atol, dtype=float)
        self.lipschitz_every = int(lipschitz_every)
        self.m_adams = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.stiff_from_step: dict[int, int] = {}

    @property
    def m(self) -> int:
        return self.m_adams + self.stiff_loop.m

    @property
    def t(self) -> np.ndarray:
        return np.concatenate([self.arrays["t"][: self.m_adams] if self.m_adams else np.zeros(0), self.stiff_loop.t])

    def join(self, run: dict, memory: dict, carry: dict) -> None:
        """Start the Adams phase of runs (the driver's per-run arrays: state, ``f`` there, first step)."""
        m, n = run["y"].shape
        N = n + 1
        z = np.zeros((m, MAX_ORDER + 1, N))
        h = np.asarray(run["h"], dtype=float)
        z[:, 0, :n] = run["y"]
        z[:, 0, n] = run["energy"]
        z[:, 1, :n] = h[:, None] * run["f"]
        z[:, 1, n] = h * np.einsum("ij,ij->i", run["f"], run["f"])
        new = {
            "rows": run["rows"], "q": np.ones(m, dtype=np.int64), "h": h, "t": run["t"], "sidx": run["sidx"],
            "n_acc": run["n_acc"], "n_rej": run["n_rej"], "n_rhs": run["n_rhs"],
            "ialth": np.full(m, 2, dtype=np.int64), "rmax": np.full(m, 1e4), "crate": np.full(m, 0.7),
            "pdest": np.zeros(m), "pdlast": np.zeros(m), "icount": np.full(m, _FIRST_TEST, dtype=np.int64),
            "kflag": np.zeros(m, dtype=np.int64), "ncf": np.zeros(m, dtype=np.int64),
            "stiff": np.zeros(m, dtype=np.bool_), "z": z, "acor": np.zeros((m, N)), "acor_prev": np.zeros((m, N)),
        }
        if self.m_adams:
            new = {key: np.concatenate([self.arrays[key][: self.m_adams], value]) for key, value in new.items()}
        self.arrays = {key: np.ascontiguousarray(value) for key, value in new.items()}
        self.arrays["zsave"] = np.empty_like(self.arrays["z"])
        self.m_adams = self.arrays["rows"].shape[0]

    def _hand_over_stiff(self) -> int:
        """Move the runs flagged stiff to the Rosenbrock pool; returns the evaluations of ``f`` made there."""
        a = self.arrays
        m = self.m_adams
        stiff = a["stiff"][:m]
        if not np.count_nonzero(stiff):
            return 0
        idx = np.flatnonzero(stiff)
        n = a["z"].shape[2] - 1
        y = np.ascontiguousarray(a["z"][idx, 0, :n])
        f = np.empty_like(y)
        _negative_gradient_rows(self.field.width, self.field.arguments, y, f)
        k = idx.size
        for i, run in zip(idx, a["rows"][idx]):
            self.stiff_from_step[int(run)] = int(a["n_acc"][i])
        run = {"rows": a["rows"][idx], "y": y, "f": f, "t": a["t"][idx], "energy": a["z"][idx, 0, n].copy(),
               "sidx": a["sidx"][idx], "n_acc": a["n_acc"][idx], "n_rej": a["n_rej"][idx], "h": a["h"][idx],
               "n_rhs": a["n_rhs"][idx] + 1, "n_jac": np.zeros(k, dtype=np.int64)}
        memory = {"h_acc": np.zeros(k), "err_acc": np.ones(k), "last_rejected": np.zeros(k, dtype=bool),
                  "n_singular": np.zeros(k, dtype=np.int64)}
        carry = {"jac": np.empty((k, n, n)), "jac_current": np.zeros(k, dtype=bool)}
        self.stiff_loop.join(run, memory, carry)
        keep = np.flatnonzero(~stiff)
        for key, value in a.items():
            if key != "zsave":
                value[: keep.size] = value[keep]
        self.m_adams = keep.size
        return k

    def advance(self, iterations: int, save_times, rec, divergence_bound: float, gtol: float, max_steps: int,
                underflow: float) -> tuple[int, int]:
        """Up to ``iterations`` steps of every run going (Adams runs first, then the stiff ones, including those
        that switched now); returns the rows passed to the field and to the Jacobian."""
        rows_f = rows_j = 0
        if self.m_adams:
            a = self.arrays
            n = a["z"].shape[2] - 1
            atol_row = np.ascontiguousarray(np.broadcast_to(self.atol, (n,)), dtype=float)
            totals = np.zeros(2, dtype=np.int64)
            self.m_adams = _adams_chunk(
                self.field.width, self.field.arguments, self.rtol, atol_row, float(np.max(self.atol)),
                self.lipschitz_every, self.m_adams, a["rows"], a["z"], a["zsave"], a["q"], a["h"], a["t"],
                a["sidx"], a["n_acc"], a["n_rej"], a["n_rhs"], a["ialth"], a["rmax"], a["crate"], a["pdest"],
                a["pdlast"], a["icount"], a["kflag"], a["ncf"], a["acor"], a["acor_prev"], a["stiff"], save_times,
                divergence_bound, gtol, max_steps, underflow, rec.y, rec.energy, rec.n_steps, rec.n_rejected,
                rec.status, rec.t_final, rec.n_rhs, rec.n_jac, int(iterations), totals)
            rows_f += int(totals[0]) + self._hand_over_stiff()
        if self.stiff_loop.m:
            more_f, more_j = self.stiff_loop.advance(iterations, save_times, rec, divergence_bound, gtol, max_steps,
                                                     underflow)
            rows_f += more_f
            rows_j += more_j
        return rows_f, rows_j


class _AdamsMethod:
    """The driver's view of this solver: every run goes to the compiled :class:`AdamsLoop` at its start."""

    order = 1
    error_exponent = 2  # the first step is of order 1: local error O(h^2), for the starting-step estimate

    def __init__(self, pool: AdamsLoop):
        self.pool = pool

    def memory(self, m: int, n: int) -> dict:
        return {"adams": np.ones(m, dtype=bool)}

    def workspace(self, m: int, n: int) -> None:
        pass

    def compiled_loop(self, controller, post_step, carry, memory):
        return self.pool, carry["adams"]


class _AdamsStart:
    """The driver's controller for the start (its starting-step scale); the pool controls every step."""

    adaptive = True

    def __init__(self, rtol: float, atol):
        self.rtol = rtol
        self.atol = atol

    def initial_scale(self, y0: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(y0)

    def memory(self, m: int) -> dict:
        return {}


def solve_lsoda(rhs, jac, y0, save_times, *, field, symmetric_jacobian: bool = False, method: str = "rodas4",
                rtol: float = 1e-8, atol: float = 1e-10, h0=None, max_steps: int = 10**6, gtol: float | None = None,
                divergence_bound: float = np.inf, progress=None, post_step=None, factorization=None,
                lipschitz_every: int = LIPSCHITZ_EVERY):
    """Integrate ``y' = rhs(y)`` from every row of ``y0`` with Adams, then Rodas4 per run once stiff (module
    docstring). ``field``: the compiled d = 1 field (:class:`~reluflow.dynamics.compiled_field.StandardField1D`,
    which evaluates every step; ``rhs`` serves the start); ``method``: the stiff phase's Rosenbrock tableau
    (dense ``sigma I - J``, Cholesky where positive definite with ``symmetric_jacobian``). ``jac`` is not called
    (the compiled loop has its own Jacobian kernel); ``post_step`` and ``factorization`` are not supported (a
    clear error: take ``solver: auto``). ``result.info["stiff_from_step"]`` as for ``auto``."""
    from reluflow.dynamics.solvers.controllers import PredictiveController
    from reluflow.dynamics.solvers.driver import solve
    from reluflow.dynamics.solvers.rosenbrock import ROSENBROCK_TABLEAUS

    if field is None or not hasattr(field, "rosenbrock_loop"):
        raise ValueError("solver lsoda: needs the compiled field of a d = 1 law with a density (take solver auto)")
    if post_step is not None:
        raise ValueError("solver lsoda: the normalized flow's retraction is not supported (take solver auto)")
    if factorization is not None:
        raise ValueError("solver lsoda: the structured factorization of wide networks is not supported (take "
                         "solver auto)")
    if isinstance(lipschitz_every, bool) or not isinstance(lipschitz_every, int) or lipschitz_every < 1:
        raise ValueError(f"lipschitz_every: must be a positive integer, got {lipschitz_every!r}")
    tab = ROSENBROCK_TABLEAUS[method]
    atol_arr = np.asarray(float(atol))
    stiff_controller = PredictiveController(float(rtol), atol_arr, tab.embedded_order)
    pool = AdamsLoop(field, field.rosenbrock_loop(tab, stiff_controller, symmetric_jacobian), float(rtol), atol_arr,
                     lipschitz_every)
    result = solve(_AdamsMethod(pool), _AdamsStart(float(rtol), atol_arr), rhs, y0, save_times, h0=h0,
                   max_steps=max_steps, gtol=gtol, divergence_bound=divergence_bound, progress=progress)
    result.info = {
        "solver": "lsoda",
        "nonstiff": "adams (Nordsieck, orders 1-12, LSODE)",
        "stiff": tab.name,
        "linear_algebra": "dense, Cholesky where positive definite" if symmetric_jacobian else "dense LU",
        "stiffness_detection": {"ratio": STIFF_RATIO, "lipschitz_every": int(lipschitz_every)},
        "stiff_from_step": {str(run): steps for run, steps in sorted(pool.stiff_from_step.items())},
        "rtol": float(rtol),
        "atol": float(atol),
        "max_steps": int(max_steps),
        "gtol": None if gtol is None else float(gtol),
        "divergence_bound": float(divergence_bound),
    }
    return result
