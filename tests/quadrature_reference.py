"""Independent references for the exact d = 1 kernels: the defining formulas of MATH.md section 2
integrated by adaptive quadrature (``scipy.integrate.quad``), and the exact gradient of the risk of a
smoothed network (relu replaced by a smooth ``R_r``) integrated by Gauss-Legendre on a graded mesh.

Nothing here uses the kernels' algorithm (no sorting, no prefix sums, no tables): the network is
evaluated as ``c + V relu(w x + b)``, the target and the density by the case's own formulas.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import quad
from scipy.special import expit
from tables1d import Case, unpack

# QUADPACK refuses epsrel < 50 eps = 1.11e-14 when epsabs = 0: this is the tightest it accepts.
EPSREL = 1.2e-14


def breakpoints(c: Case, w, b) -> list[float]:
    """Interior kinks and knots: where the integrands may be non-smooth (``points=`` for quad)."""
    pts = set(float(t) for t in c.interior_knots)
    for wi, bi in zip(w, b):
        if wi != 0.0:
            xi = -bi / wi
            if c.a < xi < c.b:
                pts.add(float(xi))
    return sorted(pts)


def _quad(fn, c: Case, points, epsrel=EPSREL) -> float:
    value, _err = quad(fn, c.a, c.b, points=points or None, epsabs=0.0, epsrel=epsrel, limit=500)
    return value


def risk_and_gradient_reference(c: Case, theta: np.ndarray, H: int):
    """``L``, ``G`` and per-component error scales, each component integrated on its own.

    ``scale`` is ``G``'s integrand with every factor replaced by its absolute value and ``r`` by
    ``|N| + |f|`` (``2 int |x| 1_I sum_m |V_mi| (|N_m| + |f_m|) p`` for ``G_W[i]``, ...): a floating-point
    evaluation of the defining formula, this reference's included, errs by a few ulps of it.
    """
    k = c.k
    w, b, V, cv = unpack(theta, H, k)
    points = breakpoints(c, w, b)

    def parts(x):
        z = w * x + b
        N = cv + V @ np.maximum(z, 0.0)
        f = c.target(x)
        return z, N, f, c.density(x)

    def residual_term(x, fn):
        z, N, f, p = parts(x)
        return fn(x, z, N - f, np.abs(N) + np.abs(f)) * p

    risk = _quad(lambda x: residual_term(x, lambda x, z, r, s: float(r @ r)), c, points)
    G = np.empty(theta.size)
    scale = np.empty(theta.size)
    for i in range(H):
        ind = lambda z: float(z[i] > 0.0)  # noqa: E731  strict active set: relu'(0) = 0
        G[i] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: x * ind(z) * float(V[:, i] @ r)), c, points)
        scale[i] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: abs(x) * ind(z) * float(np.abs(V[:, i]) @ s)), c, points, 1e-6)
        G[H + i] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: ind(z) * float(V[:, i] @ r)), c, points)
        scale[H + i] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: ind(z) * float(np.abs(V[:, i]) @ s)), c, points, 1e-6)
        for m in range(k):
            j = 2 * H + m * H + i
            G[j] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: max(z[i], 0.0) * r[m]), c, points)
            scale[j] = 2 * _quad(
                lambda x: residual_term(x, lambda x, z, r, s: ind(z) * (abs(w[i] * x) + abs(b[i])) * s[m]), c, points, 1e-6
            )
    for m in range(k):
        j = 2 * H + k * H + m
        G[j] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: r[m]), c, points)
        scale[j] = 2 * _quad(lambda x: residual_term(x, lambda x, z, r, s: s[m]), c, points, 1e-6)
    return risk, G, scale


# ---- smoothed risks ----------------------------------------------------------------------------


def shifted_softplus(z, r):
    """``R_r(z) = r^-1 log(1 + r^-1 exp(r z))`` and ``R_r'(z) = 1 / (1 + r exp(-r z))`` (stable forms).

    ``R_r -> relu`` and ``R_r' -> 1_(0, inf)`` pointwise *including at 0*: ``R_r'(0) = 1 / (1 + r) -> 0``.
    The plain softplus ``log(1 + exp(r z)) / r`` has derivative 1/2 at 0 for every ``r``, so where a
    neuron's preactivation vanishes on a set of positive mass (``w_i = b_i = 0``; any kink carrying
    mass under a discrete measure) its limit is not ``G`` with relu'(0) = 0.
    """
    t = r * z - math.log(r)
    return np.logaddexp(0.0, t) / r, expit(t)


def plain_softplus(z, r):
    """``log(1 + exp(r z)) / r`` and its derivative ``1 / (1 + exp(-r z))`` (1/2 at 0)."""
    t = r * z
    return np.logaddexp(0.0, t) / r, expit(t)


def _graded_mesh(c: Case, w, b, r) -> np.ndarray:
    """Knots, kinks and the points ``kink +- 2^j / (r |w_i|)`` (j = 0, 1, ...): the smoothed integrands
    vary on the scale ``1 / (r |w_i|)`` near a kink and are analytic between mesh points."""
    pts = {c.a, c.b, *(float(t) for t in c.interior_knots)}
    for wi, bi in zip(w, b):
        if wi == 0.0:
            continue
        xi = -bi / wi
        width = 1.0 / (r * abs(wi))
        if c.a - 40.0 * width < xi < c.b + 40.0 * width:
            pts.add(min(max(xi, c.a), c.b))
            step = width
            while step < (c.b - c.a):
                for y in (xi - step, xi + step):
                    if c.a < y < c.b:
                        pts.add(y)
                step *= 2.0
    return np.array(sorted(pts))


def smoothed_gradient(c: Case, theta: np.ndarray, H: int, r: float, activation=shifted_softplus, nodes: int = 24):
    """Exact gradient of ``L_r(theta) = int |c + V R_r(w x + b) - f|^2 p``, differentiated under the
    integral (``dN/dw_i = V_i R_r'(z_i) x``, ``dN/db_i = V_i R_r'(z_i)``, ``dN/dV_mi = R_r(z_i)``) and
    integrated by ``nodes``-point Gauss-Legendre on every cell of a graded mesh (vectorized)."""
    k = c.k
    w, b, V, cv = unpack(theta, H, k)
    mesh = _graded_mesh(c, w, b, r)
    t, wt = np.polynomial.legendre.leggauss(nodes)
    mid = 0.5 * (mesh[1:] + mesh[:-1])
    half = 0.5 * (mesh[1:] - mesh[:-1])
    x = (mid[:, None] + half[:, None] * t).ravel()
    weight = (half[:, None] * wt).ravel() * np.array([c.density(xx) for xx in x])
    f = np.array([c.target(xx) for xx in x])  # (P, k)
    z = np.outer(x, w) + b  # (P, H)
    R, dR = activation(z, r)
    residual = cv + R @ V.T - f  # (P, k)
    VR = residual @ V  # (P, H): V[:, i] . r
    G = np.empty(theta.size)
    G[:H] = 2 * np.sum((weight * x)[:, None] * dR * VR, axis=0)
    G[H : 2 * H] = 2 * np.sum(weight[:, None] * dR * VR, axis=0)
    G[2 * H : 2 * H + k * H] = (2 * np.einsum("p,pi,pm->mi", weight, R, residual)).ravel()
    G[2 * H + k * H :] = 2 * np.sum(weight[:, None] * residual, axis=0)
    return G
