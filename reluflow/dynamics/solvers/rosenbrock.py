"""Batched Rosenbrock (linearly implicit) solver for stiff autonomous ODEs ``y' = f(y)``.

Why a stiff solver
------------------
Near a limit point a gradient flow of a ReLU network decays slowly (the risk often like a power of ``t``)
while fast directions stay fast. An explicit Runge-Kutta method is then stability-limited: ``h <= C/|lambda_max|``
and its cost grows like ``t``. An L-stable method takes steps limited by accuracy only; with a power-law tail
``y ~ t^-a`` the relative local error of a step ``h`` is ``~ (h/t)^(p+1)``, so accepted steps grow like ``h ~ t``
and the cost grows like ``log t``.

Method
------
A Rosenbrock method with ``s`` stages, in the transformed form of Hairer & Wanner, *Solving ODEs II*, 2nd ed.,
sec. IV.7, eq. (7.25), with ``W = I/(h gamma) - J`` and ``J = f'(y_0)``::

    W u_i = f(y_0 + sum_{j<i} a_ij u_j) + sum_{j<i} (c_ij / h) u_j,        i = 1..s
    y_1   = y_0 + sum_i m_i u_i,        error estimate  sum_i (m_i - mhat_i) u_i.

One Jacobian and one LU factorization of ``W`` per step; ``s`` triangular solves, ``s - 1`` new evaluations of
``f`` (the first stage uses ``f(y_0)``, which is known from the previous step). After a rejection ``y_0`` and
hence ``J`` are unchanged: only ``W`` is refactorized.

The transformed coefficients relate to the classical ones (``k_i = h f(y_0 + sum alpha_ij k_j) + h J sum_{j<=i}
gamma_ij k_j``, ``gamma_ii = gamma``, ``y_1 = y_0 + sum b_i k_i``) by ``Gamma = (I/gamma - C)^-1``,
``alpha = a Gamma``, ``b = m Gamma`` (:meth:`RosenbrockTableau.classical`). With ``J = 0`` the method is the
explicit Runge-Kutta method ``(alpha, b)``, but *not* of the method's order: its order-2 condition
``b . alpha 1 = 1/2`` differs from the Rosenbrock one ``b . (alpha + Gamma) 1 = 1/2`` by ``b . Gamma 1``
(Rodas4: the ``J = 0`` limit has order 1; Rodas5P: order 2). Only the conditions of trees without single-child
vertices, which contain no ``Gamma``, carry over up to the full order. These are Rosenbrock methods, not
W-methods: ``jac`` must be the exact Jacobian, or the order drops.

Available tableaus (``method=``):

``"rodas4"`` (default): RODAS of Hairer & Wanner, order 4(3), 6 stages, ``gamma = 1/4``. L-stable and stiffly
    accurate (``y_1`` and the embedded solution are stage arguments, so ``R(inf) = 0`` for both), which makes it
    robust for very stiff problems and large ``h |lambda|``. The classic, widely validated choice
    (Hairer & Wanner, sec. VI.4; Fortran code ``rodas.f``, ``METH = 1``); the digits below are those of
    ``rodas.f`` (also in OrdinaryDiffEq.jl ``Rodas4Tableau``).
``"rodas5p"``: Rodas5P of G. Steinebach, *Construction of Rosenbrock-Wanner method Rodas5P and numerical
    benchmarks within the Julia Differential Equations package*, BIT Numer. Math. 63 (2023) 27, order 5(4),
    8 stages, stiffly accurate and L-stable. One order more per step at 8/6 of the cost per step; at
    rtol = 1e-8 it needed about half the evaluations of Rodas4 on the test problems (Robertson to 1e8:
    505 vs 1138 steps; |x|^4 tail to t = 1e6: 9743 vs 20100 rhs + jac rows), at a global error closer
    to rtol (Rodas4 over-delivers by ~50x there). Recommended for rtol <= 1e-8; Rodas4 stays the default as the
    longer-established method.

Both tableaus are checked in the tests against all Rosenbrock order conditions up to their order (trees of
the B-series with ``beta = alpha + Gamma`` on single-child vertices and ``alpha`` elsewhere, Hairer & Wanner,
Table IV.7.1), their embedded methods up to the embedded order, A- and L-stability of the stability function,
and the classical conditions of the ``J = 0`` limit described above.

Energy
------
Along a gradient flow ``dL/dt = -|f|^2``. The solver integrates the augmented system ``y' = f(y)``,
``E' = g(y) := |f(y)|^2`` with the same Rosenbrock method, the exact augmented Jacobian being::

    J_aug = [[ J,        0 ],        so   W_aug = [[ W,            0         ],
             [ grad g^T, 0 ]]                      [ -grad g^T,   1/(h gamma) ]]

with ``grad g(y_0) = 2 J^T f(y_0)``. The ``E`` column is zero (``E`` feeds back into nothing), so ``W_aug`` is
block lower triangular: the ``y`` stages are exactly those of the plain method, and each ``E`` stage is
explicit given ``u_i``::

    u^E_i = h gamma ( g(Y_i) + sum_{j<i} (c_ij/h) u^E_j + 2 f(y_0) . J u_i ),
    J u_i = u_i / (h gamma) - r_i        (r_i the right-hand side of the i-th y stage: no extra mat-vec),
    E_1   = E_0 + sum_i m_i u^E_i.

So ``E`` is integrated to the order of the method at no extra evaluation. ``E`` is output only: it is not part
of the error norm (the same state-only control as the explicit solvers, so step sequences depend on ``y`` only).

Step control
------------
The driver loop (:mod:`reluflow.dynamics.solvers.driver`) with the
:class:`~reluflow.dynamics.solvers.controllers.PredictiveController` of ``rodas.f`` (Gustafsson's predictive
factor, shown by Hairer & Wanner to suit stiff problems). A rejected step keeps its ``y_0`` and hence its
Jacobian: only ``W`` is refactorized.

Linear algebra
--------------
``W`` is factorized per run by a compiled per-row partial-pivoting LU (numba), each row's arithmetic
independent of the others, so results are bitwise independent of the batch. Measured on this machine for
``m = 256`` runs and 6 right-hand sides solved one after the other (a Rodas4 step):

=====  ===========================  ==========================  =====================
  n    ``numpy.linalg.solve`` x 6   numpy-vectorized LU + 6 sol.  numba per-row LU + 6
=====  ===========================  ==========================  =====================
 10     1.6 ms                       2.2 ms                       0.3 ms
 25     7.6 ms                      11.3 ms                       1.9 ms
 50    25.0 ms                      55.2 ms                      10.8 ms
=====  ===========================  ==========================  =====================

A singular ``W`` (zero pivot) halves ``h``; five singular factorizations in a row end the run as ``FAILED``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np

from reluflow.dynamics.solvers.controllers import PredictiveController
from reluflow.dynamics.solvers.driver import StepEstimate, call_rhs, check_states, solve
from reluflow.dynamics.solvers.result import SolveResult
from reluflow.kernels.dense_lu import lu_factor_shifted, lu_solve_into

__all__ = [
    "RosenbrockTableau",
    "RODAS4",
    "RODAS5P",
    "ROSENBROCK_TABLEAUS",
    "RosenbrockMethod",
    "RosenbrockStep",
    "rosenbrock_step",
    "solve_rosenbrock",
]


# ----------------------------------------------------------------------------------------------------------
# Tableaus
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RosenbrockTableau:
    """Coefficients of a Rosenbrock method in the transformed form (Hairer & Wanner IV.7, eq. (7.25)).

    Attributes
    ----------
    name : the ``method=`` key.
    gamma : the diagonal ``gamma_ii = gamma`` of ``Gamma``.
    a : (s, s) strictly lower triangular, stage arguments ``Y_i = y_0 + sum_j a_ij u_j``.
    c : (s, s) strictly lower triangular, stage couplings ``sum_j (c_ij / h) u_j``.
    m : (s,) weights of the solution; m_hat : (s,) weights of the embedded solution.
    order, embedded_order : classical orders of ``m`` and ``m_hat``.
    reference : where the digits come from.
    """

    name: str
    gamma: float
    a: np.ndarray
    c: np.ndarray
    m: np.ndarray
    m_hat: np.ndarray
    order: int
    embedded_order: int
    reference: str

    @property
    def stages(self) -> int:
        return len(self.m)

    def classical(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(alpha, Gamma, b, b_hat)`` of the untransformed method.

        ``u = Gamma k`` (per component), so ``C = diag(1/gamma) - Gamma^-1`` gives ``Gamma = (I/gamma - C)^-1``,
        ``alpha = a Gamma``, ``b = m Gamma``, ``b_hat = m_hat Gamma``.
        """
        s = self.stages
        big_gamma = np.linalg.inv(np.eye(s) / self.gamma - self.c)
        return self.a @ big_gamma, big_gamma, self.m @ big_gamma, self.m_hat @ big_gamma


def _lower(rows: list[list[float]], s: int) -> np.ndarray:
    out = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        out[i, : len(row)] = row
    return out


# Rodas4: Hairer & Wanner, rodas.f (METH = 1), digits as printed there.
_RODAS4_A = [
    [1.544],
    [0.9466785280815826, 0.2557011698983284],
    [3.314825187068521, 2.896124015972201, 0.9986419139977817],
    [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950],
]
# stiffly accurate: the 6th stage argument is y_0 + sum_{j<=4} a_5j u_j + u_5 (the embedded solution)
_RODAS4_A.append(_RODAS4_A[3] + [1.0])
_RODAS4_C = [
    [-5.6688],
    [-2.430093356833875, -0.2063599157091915],
    [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
    [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
    [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054],
]

RODAS4 = RosenbrockTableau(
    name="rodas4",
    gamma=0.25,
    a=_lower(_RODAS4_A, 6),
    c=_lower(_RODAS4_C, 6),
    m=np.array(_RODAS4_A[4] + [1.0]),
    m_hat=np.array(_RODAS4_A[4] + [0.0]),
    order=4,
    embedded_order=3,
    reference="Hairer & Wanner, Solving ODEs II (2nd ed.), sec. VI.4; Fortran rodas.f METH=1",
)

# Rodas5P: Steinebach, BIT 63 (2023) 27; digits as in OrdinaryDiffEq.jl (Rodas5PTableau).
_RODAS5P_A = [
    [3.0],
    [2.849394379747939, 0.45842242204463923],
    [-6.954028509809101, 2.489845061869568, -10.358996098473584],
    [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641],
    [-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256, 0.030198172008377946],
]
_RODAS5P_A.append(_RODAS5P_A[4] + [1.0])
_RODAS5P_A.append(_RODAS5P_A[4] + [1.0, 1.0])
_RODAS5P_C = [
    [-14.155112264123755],
    [-17.97296035885952, -2.859693295451294],
    [147.12150275711716, -1.41221402718213, 71.68940251302358],
    [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
    [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125, -0.6610691825249471],
    [30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783, -19.097331116725623,
     -28.087943162872662],
    [37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047, -40.06618937091002,
     -54.66780262877968, -9.48861652309627],
]

RODAS5P = RosenbrockTableau(
    name="rodas5p",
    gamma=0.21193756319429014,
    a=_lower(_RODAS5P_A, 8),
    c=_lower(_RODAS5P_C, 8),
    m=np.array(_RODAS5P_A[6] + [1.0]),
    m_hat=np.array(_RODAS5P_A[6] + [0.0]),
    order=5,
    embedded_order=4,
    reference="G. Steinebach, BIT Numer. Math. 63 (2023) 27; digits of OrdinaryDiffEq.jl Rodas5PTableau",
)

ROSENBROCK_TABLEAUS: dict[str, RosenbrockTableau] = {t.name: t for t in (RODAS4, RODAS5P)}


# ----------------------------------------------------------------------------------------------------------
# The linear systems W = sigma I - J of a step: dense (J kept per run) or structured (no n x n matrix)
# ----------------------------------------------------------------------------------------------------------


# inline="always" (here and below): why, in reluflow.dynamics.compiled_field's docstring
@numba.njit(cache=True, error_model="numpy", inline="always")
def cholesky_in_lockstep(m, n):
    """Whether :func:`_cholesky_shifted` factorizes a batch of ``m`` symmetric ``n x n`` systems in lockstep (one
    SIMD lane per row) rather than each row on its own (the lanes along a row of the factor, on average about
    ``n / 3`` long): in lockstep once the batch is about as long as those rows. Measured by
    ``benchmarks/bench_dense_factor.py`` (factorization and six solves): at ``n = 4, 13`` lockstep is faster from
    2 rows on (up to 4x at 16), at ``n = 49`` from 8 or 9 rows, at ``n = 97`` at 16 rows only; a row on its own
    is up to 4x faster than a lane of a thin batch. Either way every row gets the same bits."""
    return m >= 2 and 6 * m >= n


@numba.njit(cache=True, error_model="numpy", inline="always")
def _cholesky_shifted(jac, shift, A, lu, kind):
    """``shift[r] I - jac[r] = U_r^T U_r`` (Cholesky) for every row ``r``, from the upper triangle of the
    symmetric ``jac``; ``kind[r]`` becomes 0 where a pivot is not positive (``W`` not positive definite: the caller
    factorizes that row by LU into ``lu[r]``).

    Two layouts, chosen by the caller with :func:`cholesky_in_lockstep`, the same arithmetic: if ``A`` has a lane
    per row (``A.shape[2] == m``), ``U_r = A[:, :, r]`` and the rows advance in lockstep, every loop over them
    elementwise (right-looking: entry ``(i, j)`` loses ``U_ki U_kj`` for ``k = 0, 1, ...`` as each column ``k``
    is finished); otherwise each row on its own, ``U_r`` in the upper triangle of ``lu[r]`` and ``U_r^T`` in its
    strict lower triangle (the back substitution then reads rows, not columns), row ``i`` of ``U`` built from the
    finished rows above it (up-looking: the same subtractions on entry ``(i, j)``, in the same order of ``k``, four
    per pass over the row). No row's arithmetic depends on the batch or the layout."""
    m, n, _ = jac.shape
    if A.shape[2] == m:
        for i in range(n):
            for j in range(i, n):
                for r in range(m):
                    A[i, j, r] = -jac[r, i, j]
            for r in range(m):
                A[i, i, r] += shift[r]
        for k in range(n):
            for r in range(m):
                d = A[k, k, r]
                if not (d > 0.0 and d < np.inf):
                    kind[r] = 0
                    A[k, k, r] = 1.0  # keeps the failed row's lane finite; its numbers are discarded
            for r in range(m):
                A[k, k, r] = np.sqrt(A[k, k, r])
            for j in range(k + 1, n):
                for r in range(m):
                    A[k, j, r] /= A[k, k, r]
            for i in range(k + 1, n):
                for j in range(i, n):
                    for r in range(m):
                        A[i, j, r] -= A[k, i, r] * A[k, j, r]
        return
    for r in range(m):
        U = lu[r]
        for i in range(n):
            for j in range(i, n):
                U[i, j] = -jac[r, i, j]
            U[i, i] += shift[r]
            k = 0
            while k + 4 <= i:
                u0, u1, u2, u3 = U[k, i], U[k + 1, i], U[k + 2, i], U[k + 3, i]
                for j in range(i, n):
                    U[i, j] = (((U[i, j] - u0 * U[k, j]) - u1 * U[k + 1, j]) - u2 * U[k + 2, j]) - u3 * U[k + 3, j]
                k += 4
            while k < i:
                uk = U[k, i]
                for j in range(i, n):
                    U[i, j] -= uk * U[k, j]
                k += 1
            d = U[i, i]
            if not (d > 0.0 and d < np.inf):
                kind[r] = 0  # the caller's LU overwrites lu[r]
                break
            U[i, i] = np.sqrt(d)
            for j in range(i + 1, n):
                U[i, j] /= U[i, i]
                U[j, i] = U[i, j]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _dense_solve_into(kind, A, lu, piv, b, x, work):
    """``x[r] = W_r^{-1} b[r]`` from :meth:`DenseShiftedSystem.factor`: rows with ``kind[r] == 1`` by their
    Cholesky factors (in ``A``, all rows in lockstep, if it has a lane per row, else in ``lu[r]``: the two layouts
    of :func:`_cholesky_shifted`, the same arithmetic), the others by the LU of ``lu, piv``. ``work (n, m)``:
    scratch."""
    m, n = b.shape
    lockstep = A.shape[2] == m
    if lockstep:
        for i in range(n):
            for r in range(m):
                work[i, r] = b[r, i]
        for k in range(n):  # U^T z = b
            for r in range(m):
                work[k, r] /= A[k, k, r]
            for j in range(k + 1, n):
                for r in range(m):
                    work[j, r] -= A[k, j, r] * work[k, r]
        for k in range(n - 1, -1, -1):  # U x = z
            for r in range(m):
                work[k, r] /= A[k, k, r]
            for j in range(k):
                for r in range(m):
                    work[j, r] -= A[j, k, r] * work[k, r]
        for r in range(m):
            if kind[r] == 1:
                for i in range(n):
                    x[r, i] = work[i, r]
    for r in range(m):
        if kind[r] != 1:
            lu_solve_into(lu[r : r + 1], piv[r : r + 1], b[r : r + 1], x[r : r + 1])
        elif not lockstep:
            U, z = lu[r], x[r]
            for i in range(n):
                z[i] = b[r, i]
            for k in range(n):  # U^T z = b, by the rows of U
                z[k] /= U[k, k]
                for j in range(k + 1, n):
                    z[j] -= U[k, j] * z[k]
            for k in range(n - 1, -1, -1):  # U x = z, by the rows of U^T (the lower triangle)
                z[k] /= U[k, k]
                for j in range(k):
                    z[j] -= U[k, j] * z[k]


class DenseShiftedSystem:
    """``W = sigma I - J`` from dense Jacobians ``jac (m, n, n)``, factorized per row by this module's compiled
    kernels: partial-pivoting LU, or, for a symmetric ``J`` (``symmetric=True``: the standard gradient flow,
    ``J = -Hess L``), Cholesky where ``W`` is positive definite (near a minimum it always is) and LU in the
    other rows. Cholesky (:func:`_cholesky_shifted`) runs on all rows in lockstep where the batch is long enough
    (:func:`cholesky_in_lockstep`; 5x faster than the per-row LU at n = 49, m = 16), each row on its own in a thin
    batch. The choice between Cholesky and LU is per row, from that row's numbers."""

    def __init__(self, symmetric: bool = False):
        self.symmetric = bool(symmetric)
        self._capacity = (0, 0)

    def _reserve(self, m: int, n: int) -> None:
        if m > self._capacity[0] or n != self._capacity[1]:
            self.lu = np.empty((m, n, n))
            self.piv = np.zeros((m, n), dtype=np.int64)
            self.ok = np.empty(m, dtype=np.bool_)
            self.kind = np.empty(m, dtype=np.int8)
            self._work = np.empty(n * m)
            self._capacity = (m, n)

    def factor(self, jac: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        m, n = jac.shape[:2]
        self._reserve(m, n)
        self._m = m
        kind, ok = self.kind[:m], self.ok[:m]
        ok[:] = True
        if self.symmetric:
            kind[:] = 1
            self.A = np.empty((n, n, m if cholesky_in_lockstep(m, n) else 0))
            _cholesky_shifted(jac, sigma, self.A, self.lu[:m], kind)
        else:
            kind[:] = 0
            self.A = np.empty((n, n, 0))
        rows = np.flatnonzero(kind == 0)
        if rows.size == m:
            lu_factor_shifted(jac, sigma, self.lu[:m], self.piv[:m], ok)
        elif rows.size:
            lu, piv = np.empty((rows.size, n, n)), np.empty((rows.size, n), dtype=np.int64)
            part_ok = np.empty(rows.size, dtype=np.bool_)
            lu_factor_shifted(np.ascontiguousarray(jac[rows]), sigma[rows], lu, piv, part_ok)
            self.lu[rows], self.piv[rows], ok[rows] = lu, piv, part_ok
        return ok

    def parts(self):
        """The factors as the compiled solve reads them: ``(kind, A, lu, piv, work)`` for the last ``m`` rows."""
        m, n = self._m, self.lu.shape[1]
        return self.kind[:m], self.A, self.lu[:m], self.piv[:m], self._work[: n * m].reshape(n, m)

    def solve(self, rhs: np.ndarray, out: np.ndarray) -> np.ndarray:
        _dense_solve_into(*self.parts()[:4], rhs, out, self.parts()[4])
        return out


@numba.njit(cache=True, error_model="numpy")
def _finite_rows(x):
    """Per row of ``x (m, k)``: every entry finite (``v - v`` is 0 exactly for finite ``v``; one pass, no branch)."""
    m, k = x.shape
    out = np.empty(m, dtype=np.bool_)
    for r in range(m):
        acc = 0.0
        for c in range(k):
            acc += x[r, c] - x[r, c]
        out[r] = acc == 0.0
    return out


# ----------------------------------------------------------------------------------------------------------
# One step: the stage arithmetic, fused per stage (compiled), each row on its own
# ----------------------------------------------------------------------------------------------------------


@numba.njit(cache=True, error_model="numpy", inline="always")
def _stage_rhs(fs, U, Ue, i, c_row, h, r, r_energy):
    """``r = fs + sum_{j<i} (c_ij / h) U[j]`` and ``r_energy = |fs|^2 + sum_{j<i} (c_ij / h) Ue[j]`` per row."""
    m, n = fs.shape
    for row in range(m):
        acc = 0.0
        for col in range(n):
            v = fs[row, col]
            r[row, col] = v
            acc += v * v
        for j in range(i):
            cj = c_row[j]
            if cj != 0.0:
                coef = cj / h[row]
                for col in range(n):
                    r[row, col] += coef * U[j, row, col]
                acc += coef * Ue[j, row]
        r_energy[row] = acc


@numba.njit(cache=True, error_model="numpy", inline="always")
def _stage_finish(U, Ue, i, r, r_energy, f0, h_gamma, y, a_next, next_arg):
    """The energy stage ``Ue[i] = h gamma (r_energy + 2 f0 . J U[i])`` with ``J U[i] = U[i] / (h gamma) - r``
    (module docstring), and the next stage's argument ``y + sum_{j<=i} a_next[j] U[j]`` (if ``a_next`` has
    entries)."""
    m, n = r.shape
    for row in range(m):
        hg = h_gamma[row]
        dot = 0.0
        for col in range(n):
            dot += f0[row, col] * (U[i, row, col] / hg - r[row, col])
        Ue[i, row] = hg * (r_energy[row] + 2.0 * dot)
    if a_next.shape[0] > 0:
        for row in range(m):
            for col in range(n):
                next_arg[row, col] = y[row, col]
            for j in range(i + 1):
                aj = a_next[j]
                if aj != 0.0:
                    for col in range(n):
                        next_arg[row, col] += aj * U[j, row, col]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _dense_stage(kind, A, lu, piv, work, fs, U, Ue, i, c_row, h, h_gamma, r, r_energy, f0, y, a_next, next_arg):
    """One stage with a dense factorization, fused (one compiled call per stage, where the per-call cost of three
    calls outweighs the arithmetic of a small system): :func:`_stage_rhs`, the solve into ``U[i]``,
    :func:`_stage_finish`."""
    _stage_rhs(fs, U, Ue, i, c_row, h, r, r_energy)
    _dense_solve_into(kind, A, lu, piv, r, U[i], work)
    _stage_finish(U, Ue, i, r, r_energy, f0, h_gamma, y, a_next, next_arg)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _combine(y, U, Ue, m_w, e_w, y_new, err, d_energy, e_energy):
    """``y_new = y + sum m_i U[i]``, ``err = sum (m_i - mhat_i) U[i]`` and the same for the energy stages."""
    s = U.shape[0]
    m, n = y.shape
    for row in range(m):
        for col in range(n):
            y_new[row, col] = y[row, col]
            err[row, col] = 0.0
        de = 0.0
        ee = 0.0
        for i in range(s):
            mi = m_w[i]
            if mi != 0.0:
                for col in range(n):
                    y_new[row, col] += mi * U[i, row, col]
                de += mi * Ue[i, row]
            wi = e_w[i]
            if wi != 0.0:
                for col in range(n):
                    err[row, col] += wi * U[i, row, col]
                ee += wi * Ue[i, row]
        d_energy[row] = de
        e_energy[row] = ee


@dataclass
class RosenbrockStep:
    """The outcome of one Rosenbrock step for a batch of rows.

    ``y_new``, ``error`` (the embedded difference, not normalized) and ``energy_increment`` are only meaningful
    where ``nonsingular``; singular rows hold NaN. ``n_rhs`` counts the rows passed to ``rhs``.
    """

    y_new: np.ndarray
    error: np.ndarray
    energy_increment: np.ndarray
    nonsingular: np.ndarray
    n_rhs: int
    energy_error: np.ndarray | None = None  # the embedded difference of the energy increment


def _call_jac(jac, y):
    out = np.asarray(jac(y), dtype=float)
    m, n = y.shape
    if out.shape != (m, n, n):
        raise ValueError(f"jac: returned shape {out.shape}, expected {(m, n, n)}")
    return out


class _Stages:
    """The tableau's coefficients as the stage kernels read them, and the step's buffers (grown on demand).
    ``field``: the vector field in compiled form (:class:`reluflow.dynamics.compiled_field.StandardField1D`), whose
    stage loop replaces this one's with a dense system (the same operations in one compiled call), or ``None``."""

    def __init__(self, tableau: RosenbrockTableau, field=None):
        self.tableau = tab = tableau
        self.field = field
        s = tab.stages
        self.c_rows = [np.ascontiguousarray(tab.c[i, :i]) for i in range(s)]
        self.a_next = [np.ascontiguousarray(tab.a[i + 1, : i + 1]) if i + 1 < s else np.zeros(0) for i in range(s)]
        self.m_w = np.ascontiguousarray(tab.m)
        self.e_w = np.ascontiguousarray(tab.m - tab.m_hat)
        self._capacity = (0, 0)

    def reserve(self, m: int, n: int) -> None:
        if m > self._capacity[0] or n != self._capacity[1]:
            s = self.tableau.stages
            self.U = np.empty((s, m, n))
            self.Ue = np.empty((s, m))
            self.r = np.empty((m, n))
            self.r_energy = np.empty(m)
            self.arg = np.empty((m, n))
            self._capacity = (m, n)

    def run(self, rhs, system, y, f0, h, h_gamma):
        """The stages of one step from ``y (m, n)`` with ``f0 = rhs(y)``; ``system`` already factorized for these
        rows. Returns ``(y_new, error, energy_increment, energy_error)`` (new arrays) and the rows passed to ``rhs``."""
        tab = self.tableau
        m, n = y.shape
        self.reserve(m, n)
        U, Ue, r, r_energy = self.U[:, :m], self.Ue[:, :m], self.r[:m], self.r_energy[:m]
        arg = self.arg[:m]
        dense = isinstance(system, DenseShiftedSystem)
        if dense:
            kind, A, lu, piv, work = system.parts()
        n_rhs = 0
        if dense and self.field is not None:
            self.field.rosenbrock_dense_stages((kind, A, lu, piv, work), y, f0, h, h_gamma, tab.c, tab.a, U, Ue, r,
                                               r_energy, arg)  # fmt: skip
            n_rhs = m * (tab.stages - 1)
        else:
            for i in range(tab.stages):
                if i == 0:
                    fs = f0
                else:
                    fs = call_rhs(rhs, arg)
                    n_rhs += m
                if dense:
                    _dense_stage(kind, A, lu, piv, work, fs, U, Ue, i, self.c_rows[i], h, h_gamma, r, r_energy, f0,
                                 y, self.a_next[i], arg)  # fmt: skip
                else:
                    _stage_rhs(fs, U, Ue, i, self.c_rows[i], h, r, r_energy)
                    system.solve(r, U[i])
                    _stage_finish(U, Ue, i, r, r_energy, f0, h_gamma, y, self.a_next[i], arg)
        y_new, err = np.empty((m, n)), np.empty((m, n))
        d_energy, e_energy = np.empty(m), np.empty(m)
        _combine(y, U, Ue, self.m_w, self.e_w, y_new, err, d_energy, e_energy)
        return (y_new, err, d_energy, e_energy), n_rhs


def _factored_step(stages: _Stages, rhs, y, f0, h, factor):
    """One step with ``factor(rows, sigma) -> ok`` factorizing ``W`` of the given rows (``None``: all) and
    leaving the system ready to solve. Rows with a singular ``W`` get NaN; the others are computed on their
    own (the system refactorized without the singular rows), so no NaN reaches ``rhs``."""
    h = np.ascontiguousarray(h, dtype=float)
    h_gamma = h * stages.tableau.gamma
    sigma = 1.0 / h_gamma
    ok = np.array(factor(None, sigma), dtype=bool)
    if ok.all():
        return stages.run(rhs, factor.system, y, f0, h, h_gamma), ok
    m, n = y.shape
    rows = np.flatnonzero(ok)
    out = (np.full((m, n), np.nan), np.full((m, n), np.nan), np.full(m, np.nan), np.full(m, np.nan))
    n_rhs = 0
    if rows.size:
        factor(rows, sigma[rows])
        part, n_rhs = stages.run(rhs, factor.system, np.ascontiguousarray(y[rows]), np.ascontiguousarray(f0[rows]),
                                 h[rows], h_gamma[rows])
        for full, values in zip(out, part):
            full[rows] = values
    return (out, n_rhs), ok


class _DenseFactor:
    """``factor(rows, sigma)`` for :func:`_factored_step` from dense Jacobians ``jac (m, n, n)``."""

    def __init__(self, system: DenseShiftedSystem, jac: np.ndarray):
        self.system = system
        self.jac = jac

    def __call__(self, rows, sigma):
        jac = self.jac if rows is None else np.ascontiguousarray(self.jac[rows])
        return self.system.factor(jac, sigma)


class _StructuredFactor:
    """``factor(rows, sigma)`` for :func:`_factored_step` from the states, by a structured factorizer."""

    def __init__(self, system, y: np.ndarray):
        self.system = system
        self.y = y

    def __call__(self, rows, sigma):
        y = self.y if rows is None else np.ascontiguousarray(self.y[rows])
        return self.system.factor(y, np.ascontiguousarray(sigma))


def rosenbrock_step(
    tableau: RosenbrockTableau,
    rhs: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    f0: np.ndarray,
    jac_y: np.ndarray,
    h: np.ndarray,
) -> RosenbrockStep:
    """One step of size ``h[r]`` from ``y[r]`` for every row, given ``f0 = rhs(y)`` and ``jac_y = jac(y)``.

    Implements the transformed stage equations of the module docstring together with the explicit ``E`` stages
    of the augmented energy equation. Shapes: ``y, f0 (m, n)``, ``jac_y (m, n, n)``, ``h (m,)``.
    """
    y = np.ascontiguousarray(y, dtype=float)
    f0 = np.ascontiguousarray(f0, dtype=float)
    factor = _DenseFactor(DenseShiftedSystem(), np.ascontiguousarray(jac_y, dtype=float))
    (values, n_rhs), ok = _factored_step(_Stages(tableau), rhs, y, f0, h, factor)
    y_new, err, d_energy, e_energy = values
    return RosenbrockStep(y_new, err, d_energy, ok, n_rhs, e_energy)


# ----------------------------------------------------------------------------------------------------------
# The method and the solver
# ----------------------------------------------------------------------------------------------------------


def _factorizations(ok: np.ndarray) -> np.ndarray:
    """Factorizations per row in :func:`_factored_step`: one, and a second for the rows that were not singular
    when another row was (the system is refactorized without it)."""
    counts = np.ones(ok.size, dtype=np.int64)
    if not ok.all():
        counts += ok
    return counts


class RosenbrockMethod:
    """A Rosenbrock tableau as a driver method.

    The linear systems ``W = sigma I - J`` come from one of two sources:

    - ``jac(y) (m, n, n)``, the dense exact Jacobian, evaluated once per new state and kept per run (a
      rejected step keeps its ``y_0`` and hence its ``J``), factorized by :class:`DenseShiftedSystem` (with
      ``symmetric=True``, the caller's statement that ``J`` is symmetric, by Cholesky where ``W`` is positive
      definite);
    - ``factorization``, an object with ``factor(y (m, n), sigma (m,)) -> ok (m,)`` and
      ``solve(rhs (m, n), out (m, n))`` that factorizes ``W`` from the states without any ``n x n`` matrix
      (:meth:`reluflow.dynamics.flows.StandardFlow.shifted_factorization`, O(H log H) per run for d = 1).
      The Jacobian's structure is recomputed with each factorization, so ``n_jac`` counts factorizations.

    ``field``: optionally the vector field in compiled form (the same field as ``rhs``), whose compiled stage
    loop runs a dense step in one call (:mod:`reluflow.dynamics.compiled_field`).
    """

    def __init__(self, tableau: RosenbrockTableau, jac: Callable[[np.ndarray], np.ndarray] | None = None,
                 factorization=None, symmetric: bool = False, field=None):
        if (jac is None) == (factorization is None):
            raise ValueError("jac, factorization: give exactly one of them")
        self.tableau = tableau
        self.jac = jac
        self.factorization = factorization
        self.order = tableau.order
        # the local error of an order-p step is O(h^(p+1))
        self.error_exponent = tableau.order + 1
        self.field = field
        self._pool = None
        self._stages = _Stages(tableau, field)
        self._dense = DenseShiftedSystem(symmetric)

    def memory(self, m: int, n: int) -> dict:
        if self.factorization is not None:
            return {}
        return {"jac": np.empty((m, n, n)), "jac_current": np.zeros(m, dtype=bool)}

    def workspace(self, m: int, n: int) -> None:
        self._stages.reserve(m, n)

    def prepare(self, y: np.ndarray, memory: dict, active: np.ndarray | None = None):
        """Jacobians at the rows' new states (of the ``active`` rows only, if given); returns the rows whose
        Jacobian is not finite (they cannot step) and the Jacobian evaluations per row (the structured path
        counts its factorizations in :meth:`step`)."""
        if self.factorization is not None:
            return None, None
        stale = ~memory["jac_current"]
        need = np.flatnonzero(stale if active is None else stale & active)
        if need.size == 0:
            return None, None
        all_rows = need.size == y.shape[0]
        jac_new = np.ascontiguousarray(_call_jac(self.jac, y if all_rows else y[need]))
        if all_rows:  # keep the new stack itself: no copy of (m, n, n) numbers
            memory["jac"] = jac_new
        else:
            memory["jac"][need] = jac_new
        memory["jac_current"][need] = True
        bad = np.zeros(y.shape[0], dtype=bool)
        bad[need] = ~_finite_rows(jac_new.reshape(need.size, -1))
        counts = np.zeros(y.shape[0], dtype=np.int64)
        counts[need] = 1
        return bad, counts

    def accepted(self, memory: dict, accepted: np.ndarray) -> None:
        if self.factorization is None:
            memory["jac_current"] &= ~accepted

    def compiled_loop(self, controller, post_step, carry, memory):
        """``(loop, which)``: the driver loop compiled as a whole for this method and the runs it takes (all), if
        its pieces allow it (a compiled field that offers one, the dense system, the predictive controller, no
        ``post_step``), else ``None`` (:mod:`reluflow.dynamics.compiled_field`)."""
        if (self.field is None or not hasattr(self.field, "rosenbrock_loop") or self.factorization is not None
                or post_step is not None or not isinstance(controller, PredictiveController)):
            return None
        if self._pool is None or self._pool[0] is not controller:  # one pool per solve (one controller each)
            self._pool = (controller, self.field.rosenbrock_loop(self.tableau, controller, self._dense.symmetric))
        return self._pool[1], np.ones(carry["jac_current"].shape[0], dtype=bool)

    def step(self, rhs, y, f, h, memory) -> StepEstimate:
        if self.factorization is None:
            factor = _DenseFactor(self._dense, memory["jac"])
        else:
            factor = _StructuredFactor(self.factorization, y)
        (values, n_rhs), ok = _factored_step(self._stages, rhs, y, f, h, factor)
        y_new, err, d_energy, e_energy = values
        s1 = self.tableau.stages - 1
        return StepEstimate(
            y_new=y_new,
            energy_increment=d_energy,
            error=err,
            energy_error=e_energy,
            valid=ok,
            n_rhs=n_rhs,
            rhs_rows=np.where(ok, s1, 0),
            jac_rows=None if self.factorization is None else _factorizations(ok),
        )


def _check_real(name: str, value, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (not allow_inf and math.isinf(value)):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return value


def solve_rosenbrock(
    rhs: Callable[[np.ndarray], np.ndarray],
    jac: Callable[[np.ndarray], np.ndarray] | None,
    y0,
    save_times,
    *,
    factorization=None,
    symmetric_jacobian: bool = False,
    field=None,
    method: str = "rodas4",
    rtol: float = 1e-8,
    atol=1e-10,
    h0=None,
    max_steps: int = 10**6,
    gtol: float | None = None,
    divergence_bound: float = math.inf,
    progress: Callable[[float], None] | None = None,
    post_step: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SolveResult:
    """Integrate ``y' = rhs(y)``, ``y(0) = y0[r]`` for every run ``r`` with a stiff Rosenbrock method.

    Parameters
    ----------
    rhs : ``(m, n) -> (m, n)``, autonomous and batched (row ``r`` of the output depends on row ``r`` only).
    jac : ``(m, n) -> (m, n, n)``, ``d rhs_i / d y_j`` per row, a new array on every call (the solver keeps
        it); may be ``None`` with ``factorization``.
    factorization : instead of ``jac``, an object that factorizes ``W = sigma I - J`` from the states
        (:class:`RosenbrockMethod`; for d = 1 networks :meth:`reluflow.dynamics.flows.StandardFlow.shifted_factorization`,
        O(H log H) per run and no ``n x n`` matrix).
    symmetric_jacobian : ``jac`` returns symmetric matrices (a gradient flow's ``-Hess L``): ``W`` is then
        factorized by Cholesky wherever it is positive definite (half the work of LU), by LU elsewhere.
    field : ``rhs`` in compiled form (:meth:`reluflow.dynamics.flows.StandardFlow.compiled`), or ``None``: with
        ``jac``, each step's stages then run in one compiled call, with the same numbers.
    y0 : (M, n) initial states (a non-finite row is ``DIVERGED`` at ``t = 0``).
    save_times : (T,) non-decreasing, finite, ``>= 0``; steps land exactly on every save time. A save time 0
        records ``y0``; repeated times record the same state.
    method : a key of :data:`ROSENBROCK_TABLEAUS` (``"rodas4"``, ``"rodas5p"``).
    rtol, atol : error tolerances, ``err = RMS(e / (atol + rtol max(|y_n|, |y_{n+1}|))) <= 1`` (with the energy
        integral as one more component); ``atol`` a positive scalar or an (n,) array.
    h0 : first step, a positive number or one per run (M,); by default estimated per run (Hairer's algorithm,
        one extra evaluation of ``rhs``).
    max_steps : per run, bound on attempted (accepted + rejected) steps; exceeding it is ``FAILED``.
    gtol, divergence_bound, progress : stopping tests and progress of :mod:`reluflow.dynamics.solvers.driver`.
    post_step : optional row-wise map applied to every accepted state before ``rhs`` is evaluated there: a
        projection back onto an invariant manifold (a Rosenbrock method conserves linear invariants only; the
        normalized flow's ``|u_i| = 1`` is quadratic). The projection must not change ``L``.

    Returns
    -------
    :class:`SolveResult`; besides the driver's stopping rules a run ``FAILED`` after five singular ``W`` in a
    row or a non-finite Jacobian. ``n_jac`` counts the rows passed to ``jac``.
    """
    if not callable(rhs):
        raise ValueError(f"rhs: must be callable, got {type(rhs).__name__}")
    if factorization is None and not callable(jac):
        raise ValueError(f"jac: must be callable, got {type(jac).__name__}")
    if factorization is not None and not (hasattr(factorization, "factor") and hasattr(factorization, "solve")):
        raise ValueError("factorization: must have factor(y, sigma) and solve(rhs, out)")
    if not isinstance(method, str) or method not in ROSENBROCK_TABLEAUS:
        raise ValueError(f"method: must be one of {sorted(ROSENBROCK_TABLEAUS)}, got {method!r}")
    tab = ROSENBROCK_TABLEAUS[method]
    y0 = check_states(y0)
    n = y0.shape[1]
    rtol = _check_real("rtol", rtol)
    if not (100 * np.finfo(float).eps <= rtol < 1):
        raise ValueError(f"rtol: must lie in [{100 * np.finfo(float).eps:.3g}, 1), got {rtol!r}")
    try:
        atol_arr = np.array(atol, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"atol: must be a positive number or an (n,) array, got {atol!r}") from None
    if atol_arr.shape not in ((), (n,)) or not np.all(np.isfinite(atol_arr)) or not np.all(atol_arr > 0):
        raise ValueError(f"atol: must be a positive finite scalar or an array of shape ({n},)")
    if gtol is not None:
        gtol = _check_real("gtol", gtol)
    divergence_bound = _check_real("divergence_bound", divergence_bound, allow_inf=True)

    controller = PredictiveController(rtol, atol_arr, tab.embedded_order)
    stepper = RosenbrockMethod(tab, jac=None if factorization is not None else jac, factorization=factorization,
                               symmetric=symmetric_jacobian, field=field)
    result = solve(stepper, controller, rhs, y0, save_times, h0=h0, max_steps=max_steps,
                   gtol=gtol, divergence_bound=divergence_bound, progress=progress, post_step=post_step)
    result.info = {
        "solver": "rosenbrock",
        "method": tab.name,
        "tableau": tab.name,
        "order": tab.order,
        "embedded_order": tab.embedded_order,
        "tableau_reference": tab.reference,
        "linear_algebra": "structured" if factorization is not None else (
            "dense, Cholesky where positive definite" if symmetric_jacobian else "dense LU"),
        "rtol": rtol,
        "atol": atol_arr.tolist(),
        "h0": None if h0 is None else np.broadcast_to(np.asarray(h0, dtype=float), (y0.shape[0],)).tolist(),
        "max_steps": int(max_steps),
        "gtol": gtol,
        "divergence_bound": divergence_bound,
        "controller": controller.info(),
    }
    return result
