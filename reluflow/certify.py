"""Certify a flow's limit: polish a final state to a zero of the generalized gradient.

JR Theorem 1.1 says the risk of a bounded trajectory converges to the risk ``L(theta*)`` of some
``theta*`` with ``G(theta*) = 0``. A finite integration only shows ``L(Theta_T)`` levelling off; the
certificate is a nearby exact critical point: starting from ``Theta_T`` we solve ``G(theta) = 0`` by
Levenberg-Marquardt on the residual ``G`` (critical points of ReLU networks are never isolated, because
of the rescaling symmetry and dead neurons, so the Jacobian is singular and plain Newton is ill-posed;
LM's damping picks a nearby zero). We report ``|G(theta*)|``, ``L(theta*)`` and ``|theta* - Theta_T|``:
a small distance with ``|G(theta*)|`` at rounding level and ``L(theta*)`` equal to the flow's limit
risk is the certificate.

For the normalized flow the same ``theta*`` serves: on ``M`` the homogeneity identity
``G_{u_i} . u_i = V[:, i] . G_{V[:, i]}`` gives ``P G = 0  <=>  G = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares


@dataclass(frozen=True)
class Certificate:
    """Per-run results of :func:`polish_critical_points` (arrays of shape ``(M,)``, ``theta`` ``(M, n)``)."""

    theta: np.ndarray
    risk: np.ndarray
    grad_norm: np.ndarray
    distance: np.ndarray


def polish_critical_point(problem, theta_final: np.ndarray, *, jac=None, max_nfev: int = 2000):
    """Polish one state; returns ``(theta*, L(theta*), |G(theta*)|, |theta* - theta_final|)``.

    ``jac(theta) -> (n, n)``, the Jacobian of ``G``, is used when given; otherwise finite differences.
    The polished point is kept only if it lowers ``|G|``: otherwise the final state itself is reported.
    """
    theta_final = np.asarray(theta_final, dtype=float)
    g0 = problem.generalized_gradient(theta_final)
    best, best_norm = theta_final, float(np.linalg.norm(g0))
    if best_norm > 0:
        fit = least_squares(
            problem.generalized_gradient,
            theta_final,
            jac=jac if jac is not None else "2-point",
            method="lm",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=max_nfev,
        )
        norm = float(np.linalg.norm(problem.generalized_gradient(fit.x)))
        if np.isfinite(norm) and norm < best_norm:
            best, best_norm = fit.x, norm
    risk = float(problem.risk(best))
    return best, risk, best_norm, float(np.linalg.norm(best - theta_final))


def polish_critical_points(problem, theta_final: np.ndarray, *, jac=None, max_nfev: int = 2000) -> Certificate:
    """:func:`polish_critical_point` for each row of ``theta_final (M, n)``; non-finite rows give NaN.

    Runs are polished one by one: each is an independent small least-squares problem whose result must
    not depend on the rest of the batch.
    """
    theta_final = np.asarray(theta_final, dtype=float)
    m, n = theta_final.shape
    out_theta = np.full((m, n), np.nan)
    risk = np.full(m, np.nan)
    gnorm = np.full(m, np.nan)
    dist = np.full(m, np.nan)
    for i in range(m):
        if not np.all(np.isfinite(theta_final[i])):
            continue
        row_jac = None if jac is None else (lambda th: jac(th[None])[0])
        out_theta[i], risk[i], gnorm[i], dist[i] = polish_critical_point(
            problem, theta_final[i], jac=row_jac, max_nfev=max_nfev
        )
    return Certificate(theta=out_theta, risk=risk, grad_norm=gnorm, distance=dist)
