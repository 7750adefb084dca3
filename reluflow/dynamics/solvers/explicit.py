"""Explicit embedded Runge-Kutta pairs as a method of the driver loop, and :func:`solve_explicit`.

One step of size ``h`` of the pair of :mod:`~reluflow.dynamics.solvers.tableaux` from ``(y, k_1 = f(y))``::

    k_i = f(y + h sum_{j<i} a_ij k_j),   y_new = y + h sum_i b_i k_i,   e = sum_i (b_i - bhat_i) k_i

(``e`` without the factor ``h``: the PI controller's norm multiplies it in). Energy: the same weights applied
to the augmented ODE ``E' = |f(y)|^2``, ``E_new = E + h sum_i b_i |k_i|^2``, with error estimate
``sum_i (b_i - bhat_i) |k_i|^2``: ``E`` inherits the method's order, so for a gradient system ``f = -grad F``
the residual ``F(y0) - F(y_t) - E(t)`` of the energy identity is ``O(h^p)``. For a first-same-as-last pair
the last stage is ``f(y_new)``, reused as the next step's ``k_1``.

Implementation: the stage combinations and the energy sums are fused numba kernels working on preallocated
buffers (the solver is memory-bound when ``rhs`` is cheap). Each output element is computed from the same
row's data by the same fixed sequence of IEEE operations (no fastmath: no reassociation or contraction), so
every run is bitwise independent of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from reluflow.dynamics.solvers.controllers import PIController
from reluflow.dynamics.solvers.driver import StepEstimate, call_rhs, solve
from reluflow.dynamics.solvers.result import SolveResult
from reluflow.dynamics.solvers.tableaux import ButcherTableau, get_tableau

__all__ = ["ExplicitRungeKutta", "solve_explicit"]


def _nonzero(coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the nonzero entries of a coefficient vector (for the fused kernels)."""
    idx = np.flatnonzero(coeffs != 0.0)
    return idx.astype(np.int64), np.ascontiguousarray(coeffs[idx], dtype=float)


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


class ExplicitRungeKutta:
    """An embedded explicit pair as a driver method (module docstring); ``tableau`` a name or a tableau."""

    def __init__(self, tableau: str | ButcherTableau = "dopri5", energy_error: bool = True, field=None):
        self.tableau = tab = get_tableau(tableau)
        # the vector field in compiled form (reluflow.dynamics.compiled_field), whose stage loop replaces the
        # one below with the same operations in one compiled call, or None
        self.field = field
        self.order = tab.order
        # Hairer's codes take the starting step's exponent from the method's order (dopri5.f: iord = 5)
        self.error_exponent = tab.order
        self.energy_error = energy_error
        s = tab.stages
        self._stage_terms = [_nonzero(tab.a[i, :i]) for i in range(s)]
        self._stage_idx = tuple(idx for idx, _ in self._stage_terms)
        self._stage_w = tuple(w for _, w in self._stage_terms)
        self._b_terms = _nonzero(tab.b)
        self._err_terms = _nonzero(tab.b_error)
        self._err_low_terms = _nonzero(tab.b_error_low) if tab.b_error_low is not None else None

    def memory(self, m: int, n: int) -> dict:
        return {}

    def workspace(self, m: int, n: int) -> None:
        """Buffers for at most ``m`` rows: the stage derivatives ``K[0..s-1]``, a stage point, the new
        solution and the error combinations."""
        s = self.tableau.stages
        self._K = np.empty((s, m, n))
        self._stage = np.empty((m, n))
        self._y_new = np.empty((m, n))
        self._err = np.empty((m, n))
        self._err_low = np.empty((m, n)) if self._err_low_terms is not None else None

    def prepare(self, y: np.ndarray, memory: dict):
        return None, None

    def accepted(self, memory: dict, accepted: np.ndarray) -> None:
        pass

    def step(self, rhs, y: np.ndarray, f: np.ndarray, h: np.ndarray, memory: dict) -> StepEstimate:
        tab = self.tableau
        s = tab.stages
        m = y.shape[0]
        K = self._K
        K[0, :m] = f
        y_new = self._y_new[:m]
        if self.field is not None:
            self.field.explicit_stages(y, h, K, self._stage_idx, self._stage_w, tab.fsal, self._stage[:m], y_new)
        else:
            for i in range(1, s):
                point = y_new if (tab.fsal and i == s - 1) else self._stage[:m]  # FSAL: last point is y_new
                _stage_point(y, h, K, *self._stage_terms[i], point)
                K[i, :m] = call_rhs(rhs, point)
        if not tab.fsal:
            _stage_point(y, h, K, *self._b_terms, y_new)
        err = self._err[:m]
        _combination(K, *self._err_terms, err)
        err_low = None
        if self._err_low_terms is not None:
            err_low = self._err_low[:m]
            _combination(K, *self._err_low_terms, err_low)
        increment = h * _weighted_square_norms(K, *self._b_terms, m)
        energy_error = energy_error_low = None
        if self.energy_error:
            energy_error = _weighted_square_norms(K, *self._err_terms, m)
            if self._err_low_terms is not None:
                energy_error_low = _weighted_square_norms(K, *self._err_low_terms, m)
        return StepEstimate(
            y_new=y_new,
            energy_increment=increment,
            error=err,
            error_low=err_low,
            energy_error=energy_error,
            energy_error_low=energy_error_low,
            f_new=K[s - 1, :m] if tab.fsal else None,
            n_rhs=(s - 1) * m,
        )


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
    field=None,
) -> SolveResult:
    """Integrate ``y' = rhs(y)`` from ``y0`` (shape ``(M, n)``) with an explicit pair; states at ``save_times``.

    Parameters
    ----------
    rhs : autonomous vector field on a batch, ``(m, n) -> (m, n)``; must treat rows independently.
    y0 : (M, n) initial states (M runs of dimension n).
    save_times : (T,) non-decreasing times ``>= 0``; ``t_max = save_times[-1]``. A save time 0 records ``y0``;
        repeated times record the same state. Steps land exactly on every save time.
    tableau : ``"dopri5"``, ``"tsit5"``, ``"dop853"`` or a :class:`ButcherTableau`.
    rtol, atol : tolerances of the per-run error norm (:class:`~reluflow.dynamics.solvers.controllers.PIController`).
    h0 : initial step, scalar or (M,); ``None`` selects it per run by Hairer's algorithm (one more evaluation).
    max_steps : attempted (accepted + rejected) steps allowed per run.
    gtol : stop a run as ``CONVERGED`` once ``|rhs(y)| <= gtol`` at an accepted state; ``None`` disables.
    divergence_bound : ``|y| > divergence_bound`` at an accepted state stops the run as ``DIVERGED``.
    progress : optional ``progress(fraction_done)``, called at most every 0.5 s and once with 1.0 at the end.
    energy_in_norm : control the error of the energy integral ``E`` too. Without it the energy-identity residual
        is accurate only to the extent the state's error control happens to bound it: at rtol 1e-8 the
        benchmark's worst run had a residual of 2.6e-6 L(Theta_0), built up in the first steps of a fast
        transient (benchmarks/bench_flows.py).
    post_step : optional row-wise map applied to every accepted state (one more evaluation of ``rhs`` per
        accepted step, since a first-same-as-last stage belongs to the unprojected point): a projection back
        onto an invariant manifold that the method conserves only to its local error.
    field : ``rhs`` in compiled form (:meth:`reluflow.dynamics.flows.StandardFlow.compiled`), or ``None``: each
        step's stages then run in one compiled call, with the same numbers.

    Returns
    -------
    SolveResult with ``t = save_times``, ``y`` (M, T, n), ``energy`` (M, T) = ``int_0^t |rhs(y_s)|^2 ds`` by
    the RK weights, per-run ``status``/``t_final``, per-save-time accepted/rejected step counts and ``n_rhs``
    (rows of ``rhs`` evaluated in total); stopping rules in :mod:`reluflow.dynamics.solvers.driver`.
    """
    method = ExplicitRungeKutta(tableau, energy_error=energy_in_norm, field=field)
    tab = method.tableau
    controller = PIController(rtol=float(rtol), atol=float(atol), error_order=tab.error_order,
                              energy_in_norm=energy_in_norm)
    result = solve(method, controller, rhs, y0, save_times, h0=h0, max_steps=max_steps, gtol=gtol,
                   divergence_bound=divergence_bound, progress=progress, post_step=post_step)
    result.info = {
        "solver": "explicit_rk",
        "tableau": tab.name,
        "order": tab.order,
        "error_order": tab.error_order,
        "rtol": float(rtol),
        "atol": float(atol),
        "controller": controller.info(),
        "max_steps": int(max_steps),
        "gtol": None if gtol is None else float(gtol),
        "divergence_bound": float(divergence_bound),
    }
    return result
