"""Gradient descent: explicit Euler with a fixed step, as a method of the driver loop.

``y_{j+1} = R(y_j + eta f(y_j))`` with ``f = rhs`` (``f = -G`` gives gradient descent on the risk, with ``G``
the generalized gradient) and ``R`` an optional retraction (the normalized flow maps back onto its manifold
after each step). Iterate ``j`` is compared with the gradient flow at time ``t = j eta``; the flow is its
``eta -> 0`` limit, with global error ``O(eta)`` on bounded time intervals (explicit Euler has order 1).

Energy: the left Riemann sum ``E_j = eta sum_{i < j} |f(y_i)|^2``, the explicit-Euler quadrature of the
augmented ODE ``E' = |f(y)|^2``, consistent with the other solvers. For ``f = -grad L`` and small ``eta``,
``L(y_0) - L(y_j) - E_j = O(eta)``.

Save times. Iterates exist only at multiples of ``eta``:

- scalar ``eta``: a save time ``s`` is rounded to the nearest whole number of steps ``k = round(s / eta)``
  (halves up) and the actual time ``k eta`` is what ``SolveResult.t`` holds;
- one ``eta`` per run ``(M,)``: ``SolveResult.t`` is one grid for all runs, so every save time must be a
  whole multiple of every ``eta_r`` (to within ``1e-6`` steps plus round-off); otherwise ``ValueError``
  naming ``save_times``. Run ``r`` then records iterate ``round(s / eta_r)`` at save time ``s``.

Stopping as in :mod:`reluflow.dynamics.solvers.driver`; ``FAILED`` does not occur and ``n_rejected`` is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reluflow.dynamics.solvers.controllers import FixedStep
from reluflow.dynamics.solvers.driver import StepEstimate, call_rhs, check_save_times, check_states, solve
from reluflow.dynamics.solvers.result import SolveResult

__all__ = ["EulerStep", "gradient_descent", "gd_save_steps"]

#: a save time counts as a whole multiple of a per-run eta if it is within this many steps of one (plus
#: the round-off of the division, a few ulps of the ratio). Decimal inputs like eta = 0.01, s = 10 give
#: ratios off by ~1e-13 steps; a genuine mismatch is a sizeable fraction of a step.
_MULTIPLE_TOL_STEPS = 1e-6


def gd_save_steps(eta, save_times) -> tuple[np.ndarray, np.ndarray]:
    """Step counts of the save times and the recorded times (see the module docstring).

    Returns ``(steps, t)``: ``steps`` of shape ``(T,)`` for scalar ``eta`` or ``(M, T)`` for per-run ``eta``,
    and ``t`` of shape ``(T,)`` (``steps * eta`` for scalar ``eta``, ``save_times`` otherwise).
    """
    save_times = check_save_times(save_times)
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


class EulerStep:
    """``y + h f(y)`` with the left-point energy increment ``h |f(y)|^2``; no error estimate."""

    order = 1
    error_exponent = 1

    def memory(self, m: int, n: int) -> dict:
        return {}

    def workspace(self, m: int, n: int) -> None:
        pass

    def prepare(self, y, memory):
        return None, None

    def accepted(self, memory, accepted) -> None:
        pass

    def step(self, rhs, y, f, h, memory) -> StepEstimate:
        return StepEstimate(y_new=y + h[:, None] * f, energy_increment=h * np.sum(f * f, axis=-1))


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
    gtol, divergence_bound : stopping tests of :mod:`reluflow.dynamics.solvers.driver`.
    retraction : optional ``R``, row-independent ``(m, n) -> (m, n)``, applied after every step.
    progress : optional ``progress(fraction_done)`` called at most every 0.5 s and with 1.0 at the end.
    """
    y0 = check_states(y0)
    m_runs = y0.shape[0]
    eta_arr = np.asarray(eta, dtype=float)
    if eta_arr.shape not in ((), (m_runs,)) or not np.all(np.isfinite(eta_arr) & (eta_arr > 0)):
        raise ValueError(f"eta: must be a positive finite number or one per run, shape ({m_runs},); got {eta!r}")
    if retraction is not None and not callable(retraction):
        raise ValueError("retraction: must be None or a callable (m, n) -> (m, n)")
    _, t_out = gd_save_steps(eta_arr, save_times)
    post_step = None if retraction is None else (lambda y: call_rhs(retraction, y, "retraction"))
    result = solve(EulerStep(), FixedStep(eta_arr), rhs, y0, t_out, max_steps=np.iinfo(np.int64).max,
                   gtol=gtol, divergence_bound=divergence_bound, progress=progress, post_step=post_step)
    result.info = {
        "solver": "gradient_descent",
        "eta": float(eta_arr) if eta_arr.ndim == 0 else eta_arr.tolist(),
        "gtol": None if gtol is None else float(gtol),
        "divergence_bound": float(divergence_bound),
        "retraction": retraction is not None,
    }
    return result
