"""The standard flow of a d = 1 problem as a compiled field: a step's stages in one compiled call.

Why. On small networks a solver step is bound by its calls, not by its arithmetic: at H = 1 an evaluation of
``G`` for 16 runs is a few microseconds of kernel behind ten of Python (the field, the problem, the kernel's
dispatch), and a Rodas4 step makes five of them. Here the vector field ``f = -G`` of
:class:`~reluflow.dynamics.flows.StandardFlow` is evaluated inside the compiled loop over a Rosenbrock step's
stages, by the same kernel (:func:`reluflow.kernels.exact1d_numba._rows`) with the same arguments, followed by
the same stage arithmetic (:func:`reluflow.dynamics.solvers.rosenbrock._dense_stage`): each operation is the
one of the uncompiled loop, in the same order, so the numbers are the same bits.

The same for an explicit pair's stages (:class:`~reluflow.dynamics.solvers.explicit.ExplicitRungeKutta`):
each stage point by the pair's own :func:`~reluflow.dynamics.solvers.explicit._stage_point`, then ``-G`` there.

The whole driver loop, for one combination of pieces (a :class:`~reluflow.dynamics.solvers.rosenbrock.RosenbrockMethod`
with a dense system, :class:`~reluflow.dynamics.solvers.controllers.PredictiveController`, no ``post_step``):
with the stages compiled, a small network's step still spends most of its time in the Python around it, about
thirty small numpy calls per step (landing, controller, bookkeeping), each costing more than the arithmetic of a
batch of a few four-parameter runs. :meth:`StandardField1D.rosenbrock_loop` runs the loop of
:func:`reluflow.dynamics.solvers.driver.solve` in one compiled call per chunk of steps: its body piece for piece,
in the same order, with the same compiled pieces (the Jacobian kernel, the Cholesky and LU of ``sigma I - J``, the
stage loop, ``_combine``, ``_predictive_norm``, ``_predictive_update``, ``_advance``) and the same elementwise
rules between them, so every number is the bit of the Python loop. Two differences of bookkeeping only: a row
whose ``sigma I - J`` is singular runs through the stages with the others and its results are then discarded (the
Python loop refactorizes without it; each row's arithmetic is its own either way), and the runs that stop leave
the batch by a stable in-place compaction. The runs handed over form a pool (:class:`RosenbrockLoop`) that the
driver advances a chunk of steps at a time, beside its own loop (for ``auto``: the runs not yet stiff) and, once
that is empty, to the end, with its progress report in between.

The loop's small compiled pieces are inlined into it (numba's ``inline="always"``, at the IR level: the same
operations in the same order): called, each with a dozen array arguments, they cost more than the arithmetic of a
few four-parameter runs (at H = 1, 16 runs, the whole solve 15 to 25 % faster inlined).

The kernel is called statically (a compiled function passed as an argument would be recompiled in every new
process: numba cannot cache it), so this module is specific to the exact d = 1 kernel, the one law whose small
networks are overhead-bound; other fields take the solvers' general path.
"""

from __future__ import annotations

import numba
import numpy as np

from reluflow.dynamics.solvers.controllers import _MAX_SINGULAR, LANDING_SLACK, _predictive_norm, _predictive_update
from reluflow.dynamics.solvers.driver import CONTINUE, CONVERGED, FAILED, FINISHED, _advance
from reluflow.dynamics.solvers.explicit import _stage_point
from reluflow.dynamics.solvers.rosenbrock import _cholesky_shifted, _combine, _dense_stage, cholesky_in_lockstep
from reluflow.kernels.dense_lu import lu_factor_shifted
from reluflow.kernels.exact1d_numba import _rows, _rows_into, workspace
from reluflow.kernels.jacobian1d_numba import _rows as _jacobian_rows

__all__ = ["StandardField1D"]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _negative_gradient(H, arguments, theta, out, risk):
    """``out = -G(theta)`` by the exact d = 1 kernel, as :meth:`StandardFlow.rhs` computes it."""
    knots, target_poly, target_pow, sines, density_poly, density_pow, nodes, weights, tokens = arguments
    _rows(theta, H, knots, target_poly, target_pow, sines, density_poly, density_pow, nodes, weights, tokens, risk,
          out)  # fmt: skip
    _negate(out)


@numba.njit(cache=True, error_model="numpy", inline="always")
def store_jacobian_of_f(gathered, j, jac, i):
    """``jac[i] = -gathered[j]``: the Jacobian of ``f = -G`` from the kernel's Jacobian of ``G``; returns whether
    every entry is finite."""
    n = jac.shape[1]
    finite = True
    for p in range(n):
        for p2 in range(n):
            v = -gathered[j, p, p2]
            jac[i, p, p2] = v
            if not np.isfinite(v):
                finite = False
    return finite


@numba.njit(cache=True, error_model="numpy", inline="always")
def kernel_workspace(H, arguments):
    """The kernel's scratch arrays for this field (:func:`reluflow.kernels.exact1d_numba.workspace`), for a
    compiled loop that evaluates ``G`` many times: allocated once, they save a fixed cost per call that is half
    the kernel's time on a batch of a few runs of a small network."""
    knots, target_poly, target_pow, sines, density_poly, density_pow, nodes, weights, tokens = arguments
    return workspace(H, knots, target_pow, density_pow, nodes)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _negative_gradient_into(H, arguments, ws, theta, out, risk):
    """:func:`_negative_gradient` with the kernel's scratch arrays ``ws`` from :func:`kernel_workspace` (the
    same arithmetic)."""
    knots, target_poly, target_pow, sines, density_poly, density_pow, nodes, weights, tokens = arguments
    _rows_into(theta, H, knots, target_poly, target_pow, sines, density_poly, density_pow, nodes, weights, tokens,
               ws, risk, out)  # fmt: skip
    _negate(out)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _negate(out):
    m, n = out.shape
    for row in range(m):
        for col in range(n):
            out[row, col] = -out[row, col]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _rosenbrock_dense_stages(H, arguments, kind, A, lu, piv, work, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy,
                             arg, fs, risk):  # fmt: skip
    """Every stage of one Rosenbrock step (``s = U.shape[0]``) from ``y (m, n)`` with ``f0 = f(y)``: the stage
    arguments' ``f = -G`` by the exact d = 1 kernel (``H`` and the table's ``arguments``), then
    :func:`_dense_stage` with the coefficient rows ``c[i, :i]`` and ``a[i + 1, :i + 1]``. ``fs (m, n)``,
    ``risk (m,)``: scratch."""
    s = U.shape[0]
    for i in range(s):
        if i == 0:
            stage_f = f0
        else:
            _negative_gradient(H, arguments, arg, fs, risk)
            stage_f = fs
        a_next = a[i + 1, : i + 1] if i + 1 < s else a[0, :0]
        _dense_stage(kind, A, lu, piv, work, stage_f, U, Ue, i, c[i, :i], h, h_gamma, r, r_energy, f0, y, a_next,
                     arg)  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def _explicit_stages(H, arguments, y, h, K, stage_idx, stage_w, fsal, point, y_new, risk):
    """Stages ``1 .. s - 1`` of an explicit pair from ``y (m, n)`` with ``K[0, :m] = f(y)``: the stage point by
    :func:`_stage_point` with the nonzero coefficients ``stage_idx[i], stage_w[i]`` of row ``i``, then
    ``K[i, :m] = -G(point)``; with ``fsal`` the last point is ``y_new``."""
    s = K.shape[0]
    m = y.shape[0]
    for i in range(1, s):
        target = y_new if (fsal and i == s - 1) else point
        _stage_point(y, h, K, stage_idx[i], stage_w[i], target)
        _negative_gradient(H, arguments, target, K[i, :m], risk)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _stop(i, status, first_unsaved, rows, t, y, energy, n_acc, n_rej, n_rhs_run, n_jac_run, rec_y, rec_energy,
          rec_steps, rec_rejected, rec_status, rec_t_final, rec_n_rhs, rec_n_jac):  # fmt: skip
    """``_Recorder.stop`` for active row ``i``: final counters at the save indices from ``first_unsaved`` on,
    the state held there for a converged run (NaN stays for the others), status, final time and evaluations."""
    r = rows[i]
    T = rec_steps.shape[1]
    n = y.shape[1]
    rec_n_rhs[r] = n_rhs_run[i]
    rec_n_jac[r] = n_jac_run[i]
    for k in range(first_unsaved, T):
        rec_steps[r, k] = n_acc[i]
        rec_rejected[r, k] = n_rej[i]
        if status == CONVERGED:
            for c in range(n):
                rec_y[r, k, c] = y[i, c]
            rec_energy[r, k] = energy[i]
    rec_status[r] = status
    rec_t_final[r] = t[i]


@numba.njit(cache=True, error_model="numpy")
def _rosenbrock_chunk(H, arguments, jac_arguments, symmetric, a, c, m_w, e_w, gamma, rtol, atol_row, atol_energy, q,
                      m, rows, y, f, t, energy, sidx, n_acc, n_rej, h, n_rhs_run, n_jac_run, h_acc, err_acc,
                      last_rejected, n_singular, jac, jac_current, save_times, divergence_bound, gtol, max_steps,
                      underflow, rec_y, rec_energy, rec_steps, rec_rejected, rec_status, rec_t_final, rec_n_rhs,
                      rec_n_jac, max_iterations, totals):  # fmt: skip
    """Up to ``max_iterations`` iterations of the driver loop on the first ``m`` rows of the run arrays (compacted
    in place as runs stop); returns the number of rows still going. ``totals[0], totals[1]``: rows passed to
    the field and to the Jacobian, accumulated."""
    n = y.shape[1]
    s = m_w.shape[0]
    M = y.shape[0]
    T = save_times.shape[0]
    knots, target_poly, sines, density_poly, nodes, weights = jac_arguments
    # buffers for at most M rows
    U = np.empty((s, M, n))
    Ue = np.empty((s, M))
    r_buf = np.empty((M, n))
    r_energy = np.empty(M)
    arg = np.empty((M, n))
    fs = np.empty((M, n))
    risk = np.empty(M)
    y_new = np.empty((M, n))
    err_vec = np.empty((M, n))
    d_energy = np.empty(M)
    e_energy = np.empty(M)
    step = np.empty(M)
    land = np.empty(M, dtype=np.bool_)
    h_gamma = np.empty(M)
    sigma = np.empty(M)
    err = np.empty(M)
    ok = np.empty(M, dtype=np.bool_)
    accepted = np.empty(M, dtype=np.bool_)
    h_next = np.empty(M)
    t_after = np.empty(M)
    gave_up = np.empty(M, dtype=np.bool_)
    outcome = np.empty(M, dtype=np.int64)
    kind = np.empty(M, dtype=np.int8)
    lu = np.empty((M, n, n))
    piv = np.zeros((M, n), dtype=np.int64)
    work = np.empty((n, M))
    gather = np.empty((M, n))
    gathered_jac = np.empty((M, n, n))
    gathered_f = np.empty((M, n))
    pick = np.empty(M, dtype=np.int64)
    bad = np.zeros(M, dtype=np.bool_)
    no_lanes = np.empty((n, n, 0))  # the Cholesky factors when no row is factorized in lockstep

    for _ in range(max_iterations):
        if m == 0:
            break
        # ---- method.prepare: Jacobians at the rows' new states (the stale ones) ----
        k = 0
        for i in range(m):
            bad[i] = False
            if not jac_current[i]:
                pick[k] = i
                for col in range(n):
                    gather[k, col] = y[i, col]
                k += 1
        any_bad = False
        if k > 0:
            _jacobian_rows(gather[:k], H, knots, target_poly, sines, density_poly, nodes, weights,
                           gathered_jac[:k])  # fmt: skip
            totals[1] += k
            for j in range(k):
                i = pick[j]
                finite = store_jacobian_of_f(gathered_jac, j, jac, i)
                jac_current[i] = True
                n_jac_run[i] += 1
                bad[i] = not finite
                any_bad = any_bad or not finite
        if any_bad:
            for i in range(m):
                outcome[i] = FAILED if bad[i] else CONTINUE
        else:
            # ---- controller.landing ----
            for i in range(m):
                remaining = save_times[sidx[i]] - t[i]
                land[i] = LANDING_SLACK * h[i] >= remaining
                step[i] = remaining if land[i] else h[i]
                h_gamma[i] = step[i] * gamma
                sigma[i] = 1.0 / h_gamma[i]
            # ---- method.step: factorize sigma I - J, the stages, the combination ----
            jm = jac[:m]
            ok[:m] = True
            if symmetric:
                kind[:m] = 1
                Am = np.empty((n, n, m)) if cholesky_in_lockstep(m, n) else no_lanes
                _cholesky_shifted(jm, sigma[:m], Am, lu[:m], kind[:m])
            else:
                kind[:m] = 0
                Am = no_lanes
            for i in range(m):
                if kind[i] == 0:
                    lu_factor_shifted(jm[i : i + 1], sigma[i : i + 1], lu[i : i + 1], piv[i : i + 1], ok[i : i + 1])
            _rosenbrock_dense_stages(H, arguments, kind[:m], Am, lu[:m], piv[:m], work[:, :m], y[:m], f[:m], step[:m],
                                     h_gamma[:m], c, a, U[:, :m], Ue[:, :m], r_buf[:m], r_energy[:m], arg[:m], fs[:m],
                                     risk[:m])  # fmt: skip
            _combine(y[:m], U[:, :m], Ue[:, :m], m_w, e_w, y_new[:m], err_vec[:m], d_energy[:m], e_energy[:m])
            for i in range(m):
                if ok[i]:
                    n_rhs_run[i] += s - 1
                    totals[0] += s - 1
                else:  # a singular W: no step from this row (NaN, as the Python loop leaves it)
                    for col in range(n):
                        y_new[i, col] = np.nan
                        err_vec[i, col] = np.nan
                    d_energy[i] = np.nan
                    e_energy[i] = np.nan
            # ---- controller.estimate_norm, accept, controller.update ----
            _predictive_norm(err_vec[:m], y[:m], y_new[:m], e_energy[:m], energy[:m], d_energy[:m], rtol, atol_row,
                             atol_energy, err[:m])  # fmt: skip
            for i in range(m):
                accepted[i] = ok[i] and err[i] <= 1.0
            _predictive_update(step[:m], err[:m], accepted[:m], ok[:m], n_acc[:m], h_acc[:m], err_acc[:m],
                               last_rejected[:m], n_singular[:m], q, h_next[:m])  # fmt: skip
            for i in range(m):
                # a landing step shorter than the proposal must not shrink the step sequence
                if accepted[i] and land[i] and step[i] < h[i]:
                    h_next[i] = max(h_next[i], h[i])
                h[i] = h_next[i]
                if accepted[i]:
                    n_acc[i] += 1
                else:
                    n_rej[i] += 1
            # ---- commit the accepted steps: the state, f there (rows passed to the field), Jacobian stale ----
            k = 0
            for i in range(m):
                if accepted[i]:
                    pick[k] = i
                    for col in range(n):
                        y[i, col] = y_new[i, col]
                        gather[k, col] = y_new[i, col]
                    k += 1
            if k > 0:
                _negative_gradient(H, arguments, gather[:k], gathered_f[:k], risk[:k])
                totals[0] += k
                for j in range(k):
                    i = pick[j]
                    for col in range(n):
                        f[i, col] = gathered_f[j, col]
                    n_rhs_run[i] += 1
                    jac_current[i] = False
            # ---- controller.time_after and failed, then the loop's bookkeeping ----
            for i in range(m):
                t_after[i] = save_times[sidx[i]] if land[i] else t[i] + step[i]
                gave_up[i] = n_singular[i] >= _MAX_SINGULAR
            _advance(accepted[:m], land[:m], t[:m], t_after[:m], energy[:m], d_energy[:m], n_acc[:m], n_rej[:m],
                     h[:m], sidx[:m], y[:m], f[:m], rows[:m], save_times, divergence_bound, gtol, max_steps,
                     underflow, gave_up[:m], rec_y, rec_energy, rec_steps, rec_rejected, outcome[:m])  # fmt: skip
        # ---- runs that stopped leave the batch (a stable compaction of every per-run array) ----
        keep = 0
        for i in range(m):
            status = outcome[i]
            if status != CONTINUE:
                first_unsaved = T if status == FINISHED else sidx[i]
                _stop(i, status, first_unsaved, rows, t, y, energy, n_acc, n_rej, n_rhs_run, n_jac_run, rec_y,
                      rec_energy, rec_steps, rec_rejected, rec_status, rec_t_final, rec_n_rhs, rec_n_jac)  # fmt: skip
                continue
            if keep != i:
                rows[keep] = rows[i]
                t[keep] = t[i]
                energy[keep] = energy[i]
                sidx[keep] = sidx[i]
                n_acc[keep] = n_acc[i]
                n_rej[keep] = n_rej[i]
                h[keep] = h[i]
                n_rhs_run[keep] = n_rhs_run[i]
                n_jac_run[keep] = n_jac_run[i]
                h_acc[keep] = h_acc[i]
                err_acc[keep] = err_acc[i]
                last_rejected[keep] = last_rejected[i]
                n_singular[keep] = n_singular[i]
                jac_current[keep] = jac_current[i]
                for col in range(n):
                    y[keep, col] = y[i, col]
                    f[keep, col] = f[i, col]
                for p in range(n):
                    for q2 in range(n):
                        jac[keep, p, q2] = jac[i, p, q2]
            keep += 1
        m = keep
    return m


class StandardField1D:
    """``f = -G`` of a d = 1 problem with a density, for the solvers' compiled stage loops.

    ``width`` and ``arguments`` are the kernel's (:func:`reluflow.kernels.exact1d_numba.kernel_arguments`,
    prepared once per problem), ``jac_arguments`` the table as the Jacobian kernel reads it (``knots,
    target_poly, sines, density_poly, nodes, weights``). It stands for the same field as :meth:`StandardFlow.rhs`; a solver given one uses
    it where it pays (the dense Rosenbrock step) and ``rhs`` elsewhere.
    """

    def __init__(self, width: int, arguments: tuple, jac_arguments: tuple):
        self.width = int(width)
        self.arguments = arguments
        self.jac_arguments = jac_arguments
        self._scratch = (np.empty((0, 0)), np.empty(0))

    def _buffers(self, m: int, n: int):
        fs, risk = self._scratch
        if fs.shape[0] < m or fs.shape[1] != n:
            fs, risk = np.empty((m, n)), np.empty(m)
            self._scratch = (fs, risk)
        return fs[:m], risk[:m]

    def rosenbrock_dense_stages(self, factors, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy, arg) -> None:
        """The stages of one step into ``U, Ue`` (as the solver's own loop fills them); ``factors``: the dense
        system's ``(kind, A, lu, piv, work)``; ``c``, ``a``: the tableau's ``(s, s)`` coefficient matrices."""
        m, n = y.shape
        fs, risk = self._buffers(m, n)
        _rosenbrock_dense_stages(self.width, self.arguments, *factors, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy,
                                 arg, fs, risk)  # fmt: skip

    def explicit_stages(self, y, h, K, stage_idx, stage_w, fsal, point, y_new) -> None:
        """Stages ``1 .. s - 1`` of an explicit pair into ``K[1:, :m]`` (as the method's own loop fills them);
        ``stage_idx``, ``stage_w``: per stage the nonzero coefficients of its row (tuples of arrays)."""
        m, n = y.shape
        _, risk = self._buffers(m, n)
        _explicit_stages(self.width, self.arguments, y, h, K, stage_idx, stage_w, fsal, point, y_new, risk)

    def rosenbrock_loop(self, tableau, controller, symmetric: bool) -> "RosenbrockLoop":
        """The compiled driver loop of a dense Rosenbrock method with ``controller``
        (:class:`~reluflow.dynamics.solvers.controllers.PredictiveController`) on this field."""
        return RosenbrockLoop(self, tableau, controller, symmetric)


_RUN_KEYS = ("rows", "y", "f", "t", "energy", "sidx", "n_acc", "n_rej", "h", "n_rhs", "n_jac")
_CONTROLLER_KEYS = ("h_acc", "err_acc", "last_rejected", "n_singular")
_METHOD_KEYS = ("jac", "jac_current")


class RosenbrockLoop:
    """The runs handed to the compiled loop (a pool, ``m`` of them going) and how to advance them.

    The driver hands runs over with :meth:`join` (its per-run arrays: ``run``, the controller's ``memory``, the
    method's ``carry``), possibly several times, and advances the pool by :meth:`advance`; a run stays in the pool
    until it stops, its records going straight into the driver's recorder. The pool's order of runs is not theirs
    in the batch: each run's arithmetic is its own.
    """

    def __init__(self, field: StandardField1D, tableau, controller, symmetric: bool):
        self.field = field
        self.controller = controller
        self.symmetric = bool(symmetric)
        self.a = np.ascontiguousarray(tableau.a)
        self.c = np.ascontiguousarray(tableau.c)
        self.m_w = np.ascontiguousarray(tableau.m)
        self.e_w = np.ascontiguousarray(tableau.m - tableau.m_hat)
        self.gamma = float(tableau.gamma)
        self.m = 0
        self.arrays: list[np.ndarray] = []

    def join(self, run: dict, memory: dict, carry: dict) -> None:
        """Add runs (the driver's per-run arrays for them) to the pool."""
        new = [run[k] for k in _RUN_KEYS] + [memory[k] for k in _CONTROLLER_KEYS] + [carry[k] for k in _METHOD_KEYS]
        if self.m:
            new = [np.concatenate([old[: self.m], part]) for old, part in zip(self.arrays, new)]
        self.arrays = [np.ascontiguousarray(x) for x in new]
        h = _RUN_KEYS.index("h")
        self.arrays[h] = np.ascontiguousarray(self.arrays[h], dtype=float)
        self.m = self.arrays[0].shape[0]

    @property
    def t(self) -> np.ndarray:
        """The times of the runs going."""
        return self.arrays[3][: self.m] if self.m else np.zeros(0)

    def advance(self, iterations: int, save_times, rec, divergence_bound: float, gtol: float, max_steps: int,
                underflow: float) -> tuple[int, int]:
        """Up to ``iterations`` steps of every run going; returns the rows passed to the field and to the
        Jacobian."""
        if not self.m:
            return 0, 0
        n = self.arrays[1].shape[1]
        controller = self.controller
        atol_row = np.ascontiguousarray(np.broadcast_to(controller.atol, (n,)), dtype=float)
        totals = np.zeros(2, dtype=np.int64)
        field = self.field
        self.m = _rosenbrock_chunk(field.width, field.arguments, field.jac_arguments, self.symmetric, self.a, self.c,
                                   self.m_w, self.e_w, self.gamma, controller.rtol, atol_row,
                                   float(np.max(controller.atol)), float(controller.q), self.m, *self.arrays,
                                   save_times, divergence_bound, gtol, max_steps, underflow, rec.y, rec.energy,
                                   rec.n_steps, rec.n_rejected, rec.status, rec.t_final, rec.n_rhs, rec.n_jac,
                                   int(iterations), totals)  # fmt: skip
        return int(totals[0]), int(totals[1])
