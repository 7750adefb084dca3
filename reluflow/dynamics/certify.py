"""Certify a flow's limit: polish a final state to a zero of the generalized gradient.

JR Theorem 1.1 says the risk of a bounded trajectory converges to the risk ``L(theta*)`` of some
``theta*`` with ``G(theta*) = 0``. A finite integration only shows ``L(Theta_T)`` levelling off; the
certificate is a nearby exact critical point: starting from ``Theta_T`` we solve ``G(theta) = 0`` by
Levenberg-Marquardt on the residual ``r = G`` (critical points of ReLU networks are never isolated, because
of the rescaling symmetry and dead neurons, so the Jacobian is singular and plain Newton is ill-posed;
LM's damping picks a nearby zero). We report ``|G(theta*)|``, ``L(theta*)`` and ``|theta* - Theta_T|``:
a small distance with ``|G(theta*)|`` at rounding level and ``L(theta*)`` equal to the flow's limit
risk is the certificate.

For the normalized flow the same ``theta*`` serves: on ``M`` the homogeneity identity
``G_{u_i} . u_i = V[:, i] . G_{V[:, i]}`` gives ``P G = 0  <=>  G = 0``.

The iteration (Madsen, Nielsen & Tingleff, *Methods for non-linear least squares problems*, 2004,
algorithm 3.16): with ``J = dG/dtheta`` (exact where :meth:`Problem.gradient_jacobian` exists, else central
differences of ``G``), ``A = J^T J`` and ``g = J^T r``, the step solves ``(A + mu I) h = -g``; it is
accepted when the gain ratio ``rho = (F(theta) - F(theta + h)) / (h^T (mu h - g) / 2)`` with
``F = |r|^2 / 2`` is positive, and ``mu`` shrinks by ``max(1/3, 1 - (2 rho - 1)^3)`` on success and grows by
``nu = 2, 4, 8, ...`` on failure.

Why our own LM and not ``scipy.optimize.least_squares(method="lm")``: near a degenerate critical set
the LM path is sensitive to the last bit of every step, and SciPy's MINPACK gave last-bit differences
from one process to the next for the same input (seen with SciPy 1.17: the same trajectory polished to
different points in a SLURM job and a local job, and in two identical local processes). The normal
equations, the Cholesky factorization and every norm here are compiled loops in a fixed order, so a
certificate is a function of ``Theta_T`` only, bitwise: the pipeline's results do not depend on where a
job ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["Certificate", "polish_critical_point", "polish_critical_points"]

# Central-difference step relative to max(1, |theta_j|) when no exact Jacobian exists: eps^(1/3) balances
# truncation (~h^2 |G'''|) against cancellation (~eps |G| / h), for a Jacobian error of ~eps^(2/3) ~ 4e-11
# (central differences, error ~sqrt(eps) ~ 1e-8, left LM stalling at |G| ~ 1e-11 on the H = 2 test point).
_FD_STEP = float(np.cbrt(np.finfo(float).eps))


@dataclass(frozen=True)
class Certificate:
    """Per-run results of :func:`polish_critical_points` (arrays of shape ``(M,)``, ``theta`` ``(M, n)``)."""

    theta: np.ndarray
    risk: np.ndarray
    grad_norm: np.ndarray
    distance: np.ndarray


@njit(cache=True)
def _norm(x):
    """Euclidean norm, scaled against overflow; a sequential loop, so bitwise reproducible."""
    scale = 0.0
    for v in x:
        scale = max(scale, abs(v))
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    total = 0.0
    for v in x:
        total += (v / scale) ** 2
    return scale * np.sqrt(total)


@njit(cache=True)
def _normal_equations(J, r):
    """``A = J^T J`` (exactly symmetric) and ``g = J^T r``, sums in a fixed order."""
    n_res, n = J.shape
    A = np.empty((n, n))
    g = np.empty(n)
    for i in range(n):
        acc = 0.0
        for p in range(n_res):
            acc += J[p, i] * r[p]
        g[i] = acc
        for j in range(i, n):
            acc = 0.0
            for p in range(n_res):
                acc += J[p, i] * J[p, j]
            A[i, j] = acc
            A[j, i] = acc
    return A, g


@njit(cache=True)
def _damped_step(A, g, mu):
    """``h`` solving ``(A + mu I) h = -g`` by Cholesky; ``ok`` is False if the matrix is not positive definite."""
    n = g.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        s = A[j, j] + mu
        for p in range(j):
            s -= L[j, p] * L[j, p]
        if not s > 0.0:  # also catches NaN
            return np.zeros(n), False
        d = np.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, n):
            s = A[i, j]
            for p in range(j):
                s -= L[i, p] * L[j, p]
            L[i, j] = s / d
    y = np.empty(n)
    for i in range(n):  # L y = -g
        s = -g[i]
        for p in range(i):
            s -= L[i, p] * y[p]
        y[i] = s / L[i, i]
    h = np.empty(n)
    for i in range(n - 1, -1, -1):  # L^T h = y
        s = y[i]
        for p in range(i + 1, n):
            s -= L[p, i] * h[p]
        h[i] = s / L[i, i]
    return h, True


def _jacobian(problem, theta, residual, jac):
    if jac is not None:
        return np.asarray(jac(theta), dtype=float)
    # central differences, all 2 n shifted points in one batched call (rows are batch-independent)
    steps = _FD_STEP * np.maximum(1.0, np.abs(theta))
    shifts = np.diag(steps)
    values = problem.generalized_gradient(np.concatenate([theta + shifts, theta - shifts]))
    n = theta.size
    return ((values[:n] - values[n:]) / (2.0 * steps)[:, None]).T


def polish_critical_point(problem, theta_final: np.ndarray, *, jac=None, max_iterations: int = 1000):
    """Polish one state; returns ``(theta*, L(theta*), |G(theta*)|, |theta* - theta_final|)``.

    ``jac(theta) -> (n, n)``, the Jacobian of ``G``, is used when given; otherwise central differences.
    A rejected or negligible step first tries dampings ``mu 100^-k`` (:func:`_smaller_damping`). Stops when
    ``G`` vanishes, when a step no longer changes ``theta`` (relative ``1e-15``) and no smaller damping
    lowers ``|G|``, when the damping grows past ``1e30`` (no descent left at rounding level), or after
    ``max_iterations``
    accepted or rejected steps. The best point seen is returned; it is the final state itself when no
    step lowered ``|G|``.
    """
    theta = np.array(theta_final, dtype=float)
    residual = np.asarray(problem.generalized_gradient(theta), dtype=float)
    cost = 0.5 * _norm(residual) ** 2
    if np.isfinite(cost) and cost > 0.0:
        J = _jacobian(problem, theta, residual, jac)
        A, g = _normal_equations(J, residual)
        mu = 1e-3 * max(float(np.max(np.diag(A))), np.finfo(float).tiny)
        mu_floor = 1e-30 * max(float(np.max(np.diag(A))), 1.0)
        nu = 2.0
        for _ in range(max_iterations):
            if not (np.all(np.isfinite(A)) and np.all(np.isfinite(g))) or cost == 0.0 or mu > 1e30:
                break
            h, ok = _damped_step(A, g, mu)
            tiny = ok and _norm(h) <= 1e-15 * (_norm(theta) + 1e-15)
            accepted = False
            if ok and not tiny:
                trial = theta + h
                trial_residual = np.asarray(problem.generalized_gradient(trial), dtype=float)
                trial_cost = 0.5 * _norm(trial_residual) ** 2
                predicted = 0.5 * float(_normal_dot(h, mu * h - g))
                gain = (cost - trial_cost) / predicted if predicted > 0.0 else -1.0
                if np.isfinite(trial_cost) and gain > 0.0:
                    theta, residual, cost = trial, trial_residual, trial_cost
                    mu *= max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
                    nu, accepted = 2.0, True
            if not accepted:
                # The damping may hide a slow direction (J nearly singular: a kink creeping to the interval's
                # end gives an eigenvalue ~1e-6 next to ones ~10, and G ~ gap^2 there): try much smaller
                # dampings at once (one batched evaluation of G) before damping more.
                better = _smaller_damping(problem, theta, A, g, mu, mu_floor, cost)
                if better is not None:
                    theta, residual, cost, mu = better
                    nu, accepted = 2.0, True
                elif tiny:
                    break  # neither this damping nor smaller ones move theta usefully: rounding level
                else:
                    mu, nu = mu * nu, 2.0 * nu
            if accepted:
                J = _jacobian(problem, theta, residual, jac)
                A, g = _normal_equations(J, residual)
    theta0 = np.asarray(theta_final, dtype=float)
    norm0 = _norm(np.asarray(problem.generalized_gradient(theta0), dtype=float))
    norm = _norm(residual)
    if not (np.isfinite(norm) and norm < norm0):
        theta, norm = theta0.copy(), norm0
    risk = float(problem.risk(theta))
    return theta, risk, float(norm), float(_norm(theta - theta0))


def _smaller_damping(problem, theta, A, g, mu, mu_floor, cost, rungs: int = 8):
    """The best of the steps with dampings ``mu 100^-k`` (k = 1..rungs, down to ``mu_floor``), if it lowers
    the cost: ``(theta, residual, cost, mu_k)``; else None."""
    steps, mus = [], []
    for k in range(1, rungs + 1):
        mu_k = mu * 100.0 ** (-k)
        if mu_k < mu_floor:
            break
        h, ok = _damped_step(A, g, mu_k)
        if not ok:
            break  # smaller dampings are not positive definite either
        if _norm(h) > 1e-15 * (_norm(theta) + 1e-15):
            steps.append(h)
            mus.append(mu_k)
    if not steps:
        return None
    trials = theta + np.array(steps)
    residuals = np.asarray(problem.generalized_gradient(trials), dtype=float)
    costs = np.array([0.5 * _norm(r) ** 2 for r in residuals])
    costs = np.where(np.isfinite(costs), costs, np.inf)
    best = int(np.argmin(costs))  # first minimum: deterministic
    if not costs[best] < cost:
        return None
    return trials[best], residuals[best], float(costs[best]), mus[best]


@njit(cache=True)
def _normal_dot(x, y):
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * y[i]
    return total


def polish_critical_points(problem, theta_final: np.ndarray, *, jac=None, max_iterations: int = 1000) -> Certificate:
    """:func:`polish_critical_point` for each row of ``theta_final (M, n)``; non-finite rows give NaN.

    Runs are polished one by one: each is an independent small least-squares problem whose result must
    not depend on the rest of the batch. ``jac="auto"`` (or None) uses the exact Jacobian of ``G`` when the
    problem has one (:attr:`Problem.has_jacobian`), central differences otherwise; pass ``jac=False`` to
    force central differences.
    """
    theta_final = np.asarray(theta_final, dtype=float)
    m, n = theta_final.shape
    out_theta = np.full((m, n), np.nan)
    risk = np.full(m, np.nan)
    gnorm = np.full(m, np.nan)
    dist = np.full(m, np.nan)
    if jac is None or jac == "auto":
        jac = problem.gradient_jacobian if getattr(problem, "has_jacobian", False) else False
    for i in range(m):
        if not np.all(np.isfinite(theta_final[i])):
            continue
        row_jac = None if jac is False else (lambda th: jac(th[None])[0])
        out_theta[i], risk[i], gnorm[i], dist[i] = polish_critical_point(
            problem, theta_final[i], jac=row_jac, max_iterations=max_iterations
        )
    return Certificate(theta=out_theta, risk=risk, grad_norm=gnorm, distance=dist)
