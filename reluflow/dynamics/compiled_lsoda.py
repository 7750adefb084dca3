"""LSODA on the compiled d = 1 field: variable-order Adams, then per run the BDF once stiff, batched.

``solver: lsoda``, and what ``solver: auto`` is for the standard flow of a d = 1 law with a density below the
structured width (:func:`reluflow.simulate.choose_solver`).

Why. At a tight tolerance a small network's solve is bound by its evaluations of ``G``. To ``t = 20`` of the
benchmark's H = 1 flows (rtol 1e-10) Rodas5P takes about 1,700 evaluations and 200 Jacobians per run, an Adams
phase about 600 evaluations and none; and some runs then approach a degenerate limit slowly, stiff but limited
by accuracy up to ``t = 1e6`` (100 to 300 steps per decade of ``t``), where a Rosenbrock step costs a Jacobian,
a factorization and six evaluations and a BDF step two evaluations, its Jacobian and factorization kept over
many steps. LSODA (Petzold 1983) is this pair; here it is written for a batch of runs in one compiled loop,
with the methods and coefficients of :mod:`reluflow.dynamics.solvers.nordsieck` and LSODE's step and order
control, each run its own (the kernel is row by row, so a run's numbers are the same in any batch).

Choices of this package beside LSODA's:

- the switch is one way, Adams to BDF (as the Dormand-Prince / Rodas4 pair's,
  :mod:`reluflow.dynamics.solvers.switching`, which says why; LSODA switches back when the Adams step would be
  as long);
- the Jacobian is the exact one (the compiled kernel), the linear systems ``(1 / (h l_0)) I - J`` are
  factorized by LU with partial pivoting, kept while ``h l_0`` stays within 30 % of its value at the
  factorization and for at most 20 steps (LSODE's ``CCMAX``, ``MSBP``), and renewed after a failed corrector
  iteration on an old Jacobian;
- the energy ``E' = |G|^2`` is a component of the system (its error counted in the norm, as in every solver
  here); in the chord iteration its row of the Jacobian is left out (``E`` does not feed back into ``theta``, so
  its correction is exact once ``theta``'s has converged);
- the stability estimate (a second corrector evaluation on an Adams step) is made on every step, as LSODA
  makes it, by default (``lipschitz_every = 1``); a larger value makes it every k-th step only (the corrector's
  convergence test then uses the last estimated rate, as LSODE's does). Measured at H = 1 with k = 2, 3, 4:
  fewer evaluations on runs that settle quickly, but runs with a long transient switched later (their estimate
  lagged), and the solve as a whole was 5 to 15 % slower at an equal residual.

Save times are not landed on: a step crosses them and the states there are the Nordsieck polynomial's (LSODE's
interpolation, of the method's order); the last step may pass ``t_max`` (the run's divergence test reads that
step's state, as every accepted state's). ``gtol``: the test reads the
derivative the method carries (``z_1 / h``, ``f`` at the last corrector iterate). Statuses, records and counts
are the driver's (:mod:`reluflow.dynamics.solvers.driver`); ``n_jac`` counts Jacobians evaluated.
"""

from __future__ import annotations

import numba
import numpy as np

from reluflow.dynamics.compiled_field import _negative_gradient_into, _stop, kernel_workspace, store_jacobian_of_f
from reluflow.dynamics.solvers.driver import CONTINUE, CONVERGED, DIVERGED, FAILED, FINISHED
from reluflow.dynamics.solvers.nordsieck import (
    ADAMS_CM,
    BDF_CM,
    BDF_EL,
    BDF_TESCO,
    EL,
    MAX_BDF_ORDER,
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
from reluflow.kernels.dense_lu import lu_factor_shifted, lu_solve_row
from reluflow.kernels.jacobian1d_numba import _rows as _jacobian_rows

__all__ = ["LsodaLoop", "LIPSCHITZ_EVERY", "solve_lsoda"]

#: every how many accepted steps an Adams step makes a second corrector evaluation for the Lipschitz estimate
LIPSCHITZ_EVERY = 1
#: convergence failures of the corrector in one step before the run fails (LSODE's MXNCF)
_MAX_CONVERGENCE_FAILURES = 10
#: error-test failures in one step before the run fails (LSODE: 10)
_MAX_ERROR_FAILURES = 10
#: accepted steps before the first stiffness test (LSODA's ICOUNT)
_FIRST_TEST = 20
#: relative change of ``h l_0`` that renews the factorization, and the most steps one is kept (LSODE)
_CCMAX = 0.3
_MSBP = 20
_EPS = np.finfo(float).eps

_ADAMS, _BDF = 1, 2
_IDLE, _ITERATING, _CONVERGED, _DIVERGING, _RETRY = -1, 0, 1, 2, 3


@numba.njit(cache=True, error_model="numpy", inline="always")
def _augmented(f, j, n, h, out):
    """``out = h (f[j], |f[j]|^2)``: the augmented field of ``(theta, E)`` times ``h`` (``f[j]`` has ``n``
    entries)."""
    sq = 0.0
    for c in range(n):
        out[c] = h * f[j, c]
        sq += f[j, c] * f[j, c]
    out[n] = h * sq


@numba.njit(cache=True, error_model="numpy", inline="always")
def _l(meth, q, j):
    """Entry ``j`` of the corrector vector of the method ``meth`` at order ``q``."""
    return EL[q - 1, j] if meth == _ADAMS else BDF_EL[q - 1, j]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _t(meth, q, k):
    """Test constant ``t_(k+1)`` of the method ``meth`` at order ``q``."""
    return TESCO[q - 1, k] if meth == _ADAMS else BDF_TESCO[q - 1, k]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _copy_history(src, dst, i, q):
    """``dst[i, :q + 1] = src[i, :q + 1]``: a run's Nordsieck array, saved before a step and restored after a failed
    one (the retraction by subtraction of LSODE would not give back the same bits)."""
    for j in range(q + 1):
        for c in range(src.shape[2]):
            dst[i, j, c] = src[i, j, c]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _change_step(z, i, q, meth, h, rh, rmax, pdlast):
    """LSODE's statement 170 for one run: the ratio ``rh`` capped by ``rmax`` and, for Adams, by the stability
    bound of order ``q``; the array rescaled. Returns the new step and whether the stability bound held it."""
    rh = min(rh, rmax)
    capped = False
    if meth == _ADAMS:
        pdh = max(h * pdlast, 1e-6)
        if rh * pdh * 1.00001 >= STABILITY_BOUND[q - 1]:
            rh = STABILITY_BOUND[q - 1] / pdh
            capped = True
    rescale(z, i, q, rh)
    return h * rh, capped


@numba.njit(cache=True, error_model="numpy")
def _lsoda_chunk(H, arguments, jac_arguments, rtol, atol_row, atol_energy, lipschitz_every, m, rows, z, zsave, q,
                 meth, h, t, sidx, n_acc, n_rej, n_rhs_run, n_jac_run, ialth, rmax, crate, pdest, pdlast, irflag,
                 icount, kflag, ncf, acor, lu, piv, h_l0_factored, steps_factored, need_jac,
                 restart, switch_record, save_times, divergence_bound, gtol, max_steps, underflow, rec_y, rec_energy, rec_steps,
                 rec_rejected, rec_status, rec_t_final, rec_n_rhs, rec_n_jac, max_iterations, totals):  # fmt: skip
    """Up to ``max_iterations`` step attempts of every run of the first ``m`` (compacted in place as runs stop);
    returns the number of runs left. ``totals``: rows passed to the field and to the Jacobian, then the calls of
    each, accumulated."""
    M, _, N = z.shape
    n = N - 1
    T = save_times.shape[0]
    knots, target_poly, sines, density_poly, nodes, weights = jac_arguments
    scale = np.empty((M, N))
    y_it = np.empty((M, N))
    delp = np.empty(M)
    dlt = np.empty(M)
    rate = np.empty(M)
    pnorm = np.empty(M)
    phase = np.empty(M, dtype=np.int64)
    m_conv = np.empty(M, dtype=np.int64)
    force = np.empty(M, dtype=np.bool_)
    fresh = np.empty(M, dtype=np.bool_)
    pick = np.empty(M, dtype=np.int64)
    gather = np.empty((M, n))
    f_out = np.empty((M, n))
    jac_out = np.empty((M, n, n))
    risk = np.empty(M)
    fa = np.empty(N)
    buf = np.empty(N)
    rhs_b = np.empty((1, n))
    sol = np.empty((1, n))
    sig = np.empty(1)
    ok1 = np.empty(1, dtype=np.bool_)
    outcome = np.empty(M, dtype=np.int64)
    y_last = np.empty((M, n))
    e_last = np.empty(M)
    ws = kernel_workspace(H, arguments)

    for _ in range(max_iterations):
        if m == 0:
            break
        # ---- round 0: f at the state of the runs restarting at order 1, then the prediction (and the BDF runs'
        # Jacobians); rounds 1 to 3: the corrector, every iterating run in one evaluation of f per round. One
        # call site of the kernel, which is inlined (the calls' own cost, mostly the reference counts of their
        # array arguments, was a third of the solve at H = 1) ----
        for rnd in range(MAX_CORRECTIONS + 1):
            it = rnd - 1
            k = 0
            for i in range(m):
                if (rnd == 0 and restart[i]) or (rnd > 0 and phase[i] == _ITERATING):
                    pick[k] = i
                    for c in range(n):
                        gather[k, c] = z[i, 0, c] if rnd == 0 else y_it[i, c]
                    k += 1
            if k > 0:
                _negative_gradient_into(H, arguments, ws, gather[:k], f_out[:k], risk[:k])
                totals[0] += k
                totals[2] += 1
            for j in range(k):
                i = pick[j]
                n_rhs_run[i] += 1
                if rnd == 0:  # the history is reset to order 1: z_1 = h f
                    _augmented(f_out, j, n, h[i], fa)
                    for c in range(N):
                        z[i, 1, c] = fa[c]
                    restart[i] = False
                    continue
                qi = q[i]
                el0 = _l(meth[i], qi, 0)
                _augmented(f_out, j, n, h[i], fa)
                acc = 0.0
                if meth[i] == _ADAMS:
                    for c in range(N):
                        s = fa[c] - z[i, 1, c]
                        d = (s - acor[i, 0, c]) / scale[i, c]
                        acc += d * d
                        acor[i, 0, c] = s
                        y_it[i, c] = z[i, 0, c] + el0 * s
                else:
                    # chord Newton: (I - h l_0 J) delta = h f - z_1 - e, solved as ((1/(h l_0)) I - J) delta =
                    # r / (h l_0) with the factorization's h l_0 (LSODE uses P as it was factorized)
                    inv = 1.0 / h_l0_factored[i]
                    for c in range(n):
                        rhs_b[0, c] = (fa[c] - z[i, 1, c] - acor[i, 0, c]) * inv
                    lu_solve_row(lu, piv, i, rhs_b, 0, sol, 0)
                    for c in range(N):
                        d = sol[0, c] if c < n else fa[n] - z[i, 1, n] - acor[i, 0, n]
                        acor[i, 0, c] += d
                        y_it[i, c] = z[i, 0, c] + el0 * acor[i, 0, c]
                        d = d / scale[i, c]
                        acc += d * d
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
                    dcon = d_norm * min(1.0, 1.5 * crate[i]) / (_t(meth[i], qi, 1) * 0.5 / (qi + 2))
                    if dcon <= 1.0:
                        phase[i] = _CONVERGED
                        m_conv[i] = it
                        if meth[i] == _ADAMS:
                            if rate[i] > 0.0:
                                pdest[i] = max(pdest[i], rate[i] / abs(h[i] * el0))
                            if pdest[i] != 0.0:
                                pdlast[i] = pdest[i]
                        continue
                if it + 1 == MAX_CORRECTIONS or (it + 1 >= 2 and d_norm > 2.0 * delp[i]):
                    # an old Jacobian: try again with a new one before the step is cut (LSODE)
                    phase[i] = _RETRY if (meth[i] == _BDF and not fresh[i]) else _DIVERGING
                else:
                    delp[i] = d_norm
            if rnd == 0:
                # ---- predict: the error weights at the step's start, then Taylor's rule ----
                for i in range(m):
                    outcome[i] = CONTINUE
                    qi = q[i]
                    _copy_history(z, zsave, i, qi)
                    for c in range(n):
                        scale[i, c] = atol_row[c] + rtol * abs(z[i, 0, c])
                    scale[i, n] = atol_energy + rtol * abs(z[i, 0, n])
                    predict(z, i, qi)
                    pnorm[i] = weighted_rms(z, i, 0, scale)
                    for c in range(N):
                        acor[i, 0, c] = 0.0
                        y_it[i, c] = z[i, 0, c]
                    phase[i] = _ITERATING
                    rate[i] = 0.0
                    delp[i] = 0.0
                    force[i] = meth[i] == _ADAMS and n_acc[i] % lipschitz_every == 0
                    fresh[i] = False
                    if meth[i] == _BDF:
                        hl0 = h[i] * BDF_EL[qi - 1, 0]
                        if abs(hl0 / h_l0_factored[i] - 1.0) > _CCMAX or n_acc[i] >= steps_factored[i] + _MSBP:
                            need_jac[i] = True
                # ---- BDF runs: the Jacobian at the predicted state and the LU of (1 / (h l_0)) I - J ----
                k = 0
                for i in range(m):
                    if meth[i] == _BDF and need_jac[i]:
                        pick[k] = i
                        for c in range(n):
                            gather[k, c] = z[i, 0, c]
                        k += 1
                if k > 0:
                    _jacobian_rows(gather[:k], H, knots, target_poly, sines, density_poly, nodes, weights, jac_out[:k])
                    totals[1] += k
                    totals[3] += 1
                    for j in range(k):
                        i = pick[j]
                        n_jac_run[i] += 1
                        finite = store_jacobian_of_f(jac_out, j, jac_out, j)  # J of f, in place
                        hl0 = h[i] * BDF_EL[q[i] - 1, 0]
                        sig[0] = 1.0 / hl0
                        lu_factor_shifted(jac_out[j : j + 1], sig, lu[i : i + 1], piv[i : i + 1], ok1)
                        if not (finite and ok1[0]):
                            outcome[i] = FAILED
                            phase[i] = _IDLE
                            continue
                        h_l0_factored[i] = hl0
                        steps_factored[i] = n_acc[i]
                        need_jac[i] = False
                        fresh[i] = True
                        crate[i] = 0.7
            elif k == 0:
                break
        # ---- the error test, the update of the history, the records and the choice of step and order ----
        for i in range(m):
            if phase[i] == _IDLE:
                continue
            qi = q[i]
            mi = meth[i]
            if phase[i] == _RETRY:
                _copy_history(zsave, z, i, qi)
                need_jac[i] = True
                continue
            if phase[i] != _CONVERGED:  # the corrector failed: back to the old array, a quarter of the step
                _copy_history(zsave, z, i, qi)
                n_rej[i] += 1
                ncf[i] += 1
                rmax[i] = 2.0
                need_jac[i] = mi == _BDF
                if ncf[i] >= _MAX_CONVERGENCE_FAILURES:
                    outcome[i] = FAILED
                    continue
                h[i], capped = _change_step(z, i, qi, mi, h[i], 0.25, rmax[i], pdlast[i])
                irflag[i] = capped
                ialth[i] = qi + 1
                if h[i] < underflow * max(1.0, t[i]):
                    outcome[i] = FAILED
                continue
            if m_conv[i] == 0:
                dsm = dlt[i] / _t(mi, qi, 1)
            else:
                dsm = weighted_rms(acor, i, 0, scale) / _t(mi, qi, 1)
            consider_up = False
            switch = False
            rh = 1.0
            if dsm <= 1.0:
                # ---- accepted ----
                kflag[i] = 0
                ncf[i] = 0
                for j in range(qi + 1):
                    lj = _l(mi, qi, j)
                    for c in range(N):
                        z[i, j, c] += lj * acor[i, 0, c]
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
                    interpolate(z, i, qi, (save_times[kk] - t[i]) / h[i], buf)
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
                # ---- the switch to BDF (LSODA's test: the BDF step of the same error, RATIO times longer) ----
                icount[i] -= 1
                if mi == _ADAMS and icount[i] < 0 and qi <= MAX_BDF_ORDER:
                    if dsm > 100.0 * pnorm[i] * _EPS and pdest[i] != 0.0:
                        rh1 = step_ratio(dsm, 1.0 / (qi + 1), 1.2)
                        rh1it = 2.0 * rh1
                        pdh = pdlast[i] * h[i]
                        if pdh * rh1 > 1e-5:
                            rh1it = STABILITY_BOUND[qi - 1] / pdh
                        rh1 = min(rh1, rh1it)
                        rh2 = step_ratio(dsm * (ADAMS_CM[qi - 1] / BDF_CM[qi - 1]), 1.0 / (qi + 1), 1.2)
                        if rh2 >= STIFF_RATIO * rh1:
                            switch = True
                            rh = rh2
                    elif irflag[i]:  # estimates at rounding level and the step held by stability
                        switch = True
                        rh = 2.0
                if switch:
                    meth[i] = _BDF
                    switch_record[rows[i]] = n_acc[i]
                    pdlast[i] = 0.0
                    need_jac[i] = True
                    h[i], capped = _change_step(z, i, qi, _BDF, h[i], rh, rmax[i], 0.0)
                    irflag[i] = False
                    ialth[i] = qi + 1
                    rmax[i] = 10.0
                    continue
                ialth[i] -= 1
                if ialth[i] > 0:
                    if ialth[i] == 1 and qi < (MAX_ORDER if mi == _ADAMS else MAX_BDF_ORDER):
                        for c in range(N):
                            acor[i, 1, c] = acor[i, 0, c]
                    continue
                consider_up = True
            else:
                # ---- the error test failed: back to the old array ----
                _copy_history(zsave, z, i, qi)
                n_rej[i] += 1
                kflag[i] -= 1
                rmax[i] = 2.0
                if kflag[i] <= -_MAX_ERROR_FAILURES:
                    outcome[i] = FAILED
                    continue
                if kflag[i] <= -3:
                    # the history is assumed wrong: order 1 from f at the current state, a tenth of the step
                    h[i] = 0.1 * h[i]
                    restart[i] = True  # z_1 = h f at the next attempt's round 0
                    q[i] = 1
                    ialth[i] = 5
                    need_jac[i] = mi == _BDF
                    if h[i] < underflow * max(1.0, t[i]):
                        outcome[i] = FAILED
                    continue
            # ---- the step ratios at orders q - 1, q, q + 1 (LSODE, statements 520 to 630) ----
            top = MAX_ORDER if mi == _ADAMS else MAX_BDF_ORDER
            rhup = 0.0
            if consider_up and qi < top:
                acc = 0.0
                for c in range(N):
                    d = (acor[i, 0, c] - acor[i, 1, c]) / scale[i, c]
                    acc += d * d
                rhup = step_ratio(np.sqrt(acc / N) / _t(mi, qi, 2), 1.0 / (qi + 2), 1.4)
            rhsm = step_ratio(dsm, 1.0 / (qi + 1), 1.2)
            rhdn = 0.0
            if qi > 1:
                rhdn = step_ratio(weighted_rms(z, i, qi, scale) / _t(mi, qi, 0), 1.0 / qi, 1.3)
            pdh = max(h[i] * pdlast[i], 1e-6)
            if mi == _ADAMS:
                if qi < top:
                    rhup = min(rhup, STABILITY_BOUND[qi] / pdh)
                rhsm = min(rhsm, STABILITY_BOUND[qi - 1] / pdh)
                if qi > 1:
                    rhdn = min(rhdn, STABILITY_BOUND[qi - 2] / pdh)
                pdest[i] = 0.0
            if rhsm < rhup and rhup > rhdn:
                if rhup < 1.1:
                    ialth[i] = 3
                    continue
                lq = _l(mi, qi, qi) / (qi + 1)
                for c in range(N):
                    z[i, qi + 1, c] = acor[i, 0, c] * lq
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
                # an Adams step held by stability changes whatever the ratio; otherwise only by 10 % or more
                held = mi == _ADAMS and rh * pdh * 1.00001 >= STABILITY_BOUND[newq - 1]
                if not held and kflag[i] == 0 and rh < 1.1:
                    ialth[i] = 3
                    continue
                if kflag[i] <= -2:
                    rh = min(rh, 0.2)
                q[i] = newq
            h[i], capped = _change_step(z, i, q[i], mi, h[i], rh, rmax[i], pdlast[i])
            irflag[i] = capped
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
                _stop(i, status, first_unsaved, rows, t, y_last, e_last, n_acc, n_rej, n_rhs_run, n_jac_run,
                      rec_y, rec_energy, rec_steps, rec_rejected, rec_status, rec_t_final, rec_n_rhs,
                      rec_n_jac)  # fmt: skip
                continue
            if keep != i:
                rows[keep] = rows[i]
                q[keep] = q[i]
                meth[keep] = meth[i]
                h[keep] = h[i]
                t[keep] = t[i]
                sidx[keep] = sidx[i]
                n_acc[keep] = n_acc[i]
                n_rej[keep] = n_rej[i]
                n_rhs_run[keep] = n_rhs_run[i]
                n_jac_run[keep] = n_jac_run[i]
                ialth[keep] = ialth[i]
                rmax[keep] = rmax[i]
                crate[keep] = crate[i]
                pdest[keep] = pdest[i]
                pdlast[keep] = pdlast[i]
                irflag[keep] = irflag[i]
                icount[keep] = icount[i]
                kflag[keep] = kflag[i]
                ncf[keep] = ncf[i]
                h_l0_factored[keep] = h_l0_factored[i]
                steps_factored[keep] = steps_factored[i]
                need_jac[keep] = need_jac[i]
                restart[keep] = restart[i]
                for c in range(N):
                    acor[keep, 0, c] = acor[i, 0, c]
                    acor[keep, 1, c] = acor[i, 1, c]
                    for j in range(MAX_ORDER + 1):
                        z[keep, j, c] = z[i, j, c]
                for p in range(n):
                    piv[keep, p] = piv[i, p]
                    for p2 in range(n):
                        lu[keep, p, p2] = lu[i, p, p2]
            keep += 1
        m = keep
    return m


class LsodaLoop:
    """The runs in the compiled loop (a pool, ``m`` of them going) and how to advance them.

    The driver hands every run over at its start with :meth:`join` and advances the pool by :meth:`advance`
    (the interface of :class:`~reluflow.dynamics.compiled_field.RosenbrockLoop`). ``stiff_from_step`` maps each
    run that switched to BDF to its accepted Adams steps before the switch.
    """

    def __init__(self, field, rtol: float, atol, lipschitz_every: int = LIPSCHITZ_EVERY):
        self.field = field
        self.rtol = float(rtol)
        self.atol = np.asarray(atol, dtype=float)
        self.lipschitz_every = int(lipschitz_every)
        self.m = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.switch_record = np.zeros(0, dtype=np.int64)  # per run of the solve: accepted steps at its switch
        self.calls = np.zeros(2, dtype=np.int64)  # calls of the kernel of G and of the Jacobian's (batches)

    @property
    def stiff_from_step(self) -> dict[int, int]:
        """Each run that switched to BDF: its accepted Adams steps before the switch."""
        return {int(run): int(step) for run, step in enumerate(self.switch_record) if step >= 0}

    @property
    def t(self) -> np.ndarray:
        return self.arrays["t"][: self.m] if self.m else np.zeros(0)

    def join(self, run: dict, memory: dict, carry: dict) -> None:
        """Start runs (the driver's per-run arrays: state, ``f`` there, first step) at order 1 of Adams."""
        m, n = run["y"].shape
        N = n + 1
        z = np.zeros((m, MAX_ORDER + 1, N))
        h = np.asarray(run["h"], dtype=float)
        z[:, 0, :n] = run["y"]
        z[:, 0, n] = run["energy"]
        z[:, 1, :n] = h[:, None] * run["f"]
        z[:, 1, n] = h * np.einsum("ij,ij->i", run["f"], run["f"])
        zeros_i = np.zeros(m, dtype=np.int64)
        new = {
            "rows": run["rows"], "q": np.ones(m, dtype=np.int64), "meth": np.full(m, _ADAMS, dtype=np.int64),
            "h": h, "t": run["t"], "sidx": run["sidx"], "n_acc": run["n_acc"], "n_rej": run["n_rej"],
            "n_rhs": run["n_rhs"], "n_jac": run["n_jac"], "ialth": np.full(m, 2, dtype=np.int64),
            "rmax": np.full(m, 1e4), "crate": np.full(m, 0.7), "pdest": np.zeros(m), "pdlast": np.zeros(m),
            "irflag": np.zeros(m, dtype=np.bool_), "icount": np.full(m, _FIRST_TEST, dtype=np.int64),
            "kflag": zeros_i, "ncf": zeros_i.copy(), "acor": np.zeros((m, 2, N)),
            "lu": np.zeros((m, n, n)), "piv": np.zeros((m, n), dtype=np.int64),
            "h_l0_factored": np.ones(m), "steps_factored": zeros_i.copy(), "need_jac": np.ones(m, dtype=np.bool_),
            "restart": np.zeros(m, dtype=np.bool_), "z": z,
        }
        if self.m:
            new = {key: np.concatenate([self.arrays[key][: self.m], value]) for key, value in new.items()}
        self.arrays = {key: np.ascontiguousarray(value) for key, value in new.items()}
        self.arrays["zsave"] = np.empty_like(self.arrays["z"])
        self.m = self.arrays["rows"].shape[0]

    def advance(self, iterations: int, save_times, rec, divergence_bound: float, gtol: float, max_steps: int,
                underflow: float) -> tuple[int, int]:
        """Up to ``iterations`` step attempts of every run going; returns the rows passed to the field and to
        the Jacobian."""
        if not self.m:
            return 0, 0
        a = self.arrays
        n = a["z"].shape[2] - 1
        atol_row = np.ascontiguousarray(np.broadcast_to(self.atol, (n,)), dtype=float)
        totals = np.zeros(4, dtype=np.int64)
        if self.switch_record.shape[0] != rec.status.shape[0]:
            self.switch_record = np.full(rec.status.shape[0], -1, dtype=np.int64)
        field = self.field
        self.m = _lsoda_chunk(
            field.width, field.arguments, field.jac_arguments, self.rtol, atol_row, float(np.max(self.atol)),
            self.lipschitz_every, self.m, a["rows"], a["z"], a["zsave"], a["q"], a["meth"], a["h"], a["t"],
            a["sidx"], a["n_acc"], a["n_rej"], a["n_rhs"], a["n_jac"], a["ialth"], a["rmax"], a["crate"],
            a["pdest"], a["pdlast"], a["irflag"], a["icount"], a["kflag"], a["ncf"], a["acor"],
            a["lu"], a["piv"], a["h_l0_factored"], a["steps_factored"], a["need_jac"], a["restart"], self.switch_record,
            save_times, divergence_bound, gtol, max_steps, underflow, rec.y, rec.energy, rec.n_steps,
            rec.n_rejected, rec.status, rec.t_final, rec.n_rhs, rec.n_jac, int(iterations), totals)
        self.calls += totals[2:]
        return int(totals[0]), int(totals[1])


class _LsodaMethod:
    """The driver's view of this solver: every run goes to the compiled :class:`LsodaLoop` at its start."""

    order = 1
    error_exponent = 2  # the first step is of order 1: local error O(h^2), for the starting-step estimate

    def __init__(self, pool: LsodaLoop):
        self.pool = pool

    def memory(self, m: int, n: int) -> dict:
        return {"pooled": np.ones(m, dtype=bool)}

    def workspace(self, m: int, n: int) -> None:
        pass

    def compiled_loop(self, controller, post_step, carry, memory):
        return self.pool, carry["pooled"]


class _LsodaStart:
    """The driver's controller for the start (the scale of its starting-step estimate); the pool controls every
    step after it."""

    adaptive = True

    def __init__(self, rtol: float, atol):
        self.rtol = rtol
        self.atol = atol

    def initial_scale(self, y0: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(y0)

    def memory(self, m: int) -> dict:
        return {}


def solve_lsoda(rhs, y0, save_times, *, field, rtol: float = 1e-8, atol: float = 1e-10, h0=None,
                max_steps: int = 10**6, gtol: float | None = None, divergence_bound: float = np.inf, progress=None,
                lipschitz_every: int = LIPSCHITZ_EVERY):
    """Integrate ``y' = rhs(y)`` from every row of ``y0`` by LSODA's Adams and BDF methods (module docstring).

    ``field``: the compiled d = 1 field (:class:`~reluflow.dynamics.compiled_field.StandardField1D`: it
    evaluates ``f`` and the Jacobian of every step; ``rhs``, the same field, serves the start); ``atol`` a
    scalar; the other arguments as for the other solvers. ``result.info["stiff_from_step"]`` maps each run that
    switched to BDF to its accepted Adams steps before the switch."""
    from reluflow.dynamics.solvers.driver import solve

    if field is None or not hasattr(field, "jac_arguments"):
        raise ValueError("solver lsoda: needs the compiled field of a d = 1 law with a density")
    if isinstance(lipschitz_every, bool) or not isinstance(lipschitz_every, int) or lipschitz_every < 1:
        raise ValueError(f"lipschitz_every: must be a positive integer, got {lipschitz_every!r}")
    atol_arr = np.asarray(float(atol))
    pool = LsodaLoop(field, float(rtol), atol_arr, lipschitz_every)
    result = solve(_LsodaMethod(pool), _LsodaStart(float(rtol), atol_arr), rhs, y0, save_times, h0=h0,
                   max_steps=max_steps, gtol=gtol, divergence_bound=divergence_bound, progress=progress)
    result.info = {
        "solver": "lsoda",
        "nonstiff": "adams (Nordsieck, orders 1-12, LSODE)",
        "stiff": "bdf (Nordsieck, orders 1-5, chord Newton with the exact Jacobian, LU)",
        "stiffness_detection": {"ratio": STIFF_RATIO, "lipschitz_every": int(lipschitz_every)},
        "stiff_from_step": {str(run): steps for run, steps in sorted(pool.stiff_from_step.items())},
        "calls": {"rhs": int(pool.calls[0]), "jac": int(pool.calls[1])},
        "rtol": float(rtol),
        "atol": float(atol),
        "max_steps": int(max_steps),
        "gtol": None if gtol is None else float(gtol),
        "divergence_bound": float(divergence_bound),
    }
    return result
