"""The exact Gaussian-input kernels (:mod:`reluflow.kernels.gaussian` and its numba twin), checked independently.

Every reference below evaluates the defining formulas of MATH.md section 2 pointwise -- the network as
``c + V relu(W x + b)``, the target as ``x^T Q x + A x + c0 + TV relu(TW x + Tb)`` written out here -- and
integrates them against the Gaussian density by a method that shares nothing with the kernels (no Stein
identity, no bivariate normal function, no whitening of parameters):

- d = 1: ``scipy.integrate.quad`` on the real line split at every kink (network and teacher);
- d = 2: a nested product rule in whitened coordinates ``x = mean + L u``: for each node ``u1`` of the outer
  rule, the inner range is cut where the lines ``w.x + b = 0`` cross it, the outer range where two lines
  meet; composite Gauss-Legendre on both levels, converged (a finer rule changes nothing at the tolerance);
- d = 5: Monte Carlo with 10^7 samples;
- the smoothing limit (JR's definition of ``G``) by the same quadratures, for r -> infinity;
- central differences of ``G`` for the Jacobian.

Parameters (``special_theta``) contain constant neurons (``w = 0`` with ``b > 0``, ``b < 0``, ``b = 0``),
exactly parallel neurons with distinct and with identical kink hyperplanes, an exactly anti-parallel
neuron, a neuron at angle 1e-6 from another and one parallel up to rounding, neurons at +-8 standard
deviations, and a teacher neuron equal to a student neuron; mean and covariance are not the identity.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.integrate import IntegrationWarning, quad
from scipy.special import expit, owens_t

from reluflow.kernels import gaussian, gaussian_numba
from reluflow.kernels.gaussian import (
    GaussianTarget,
    bivariate_normal_upper,
    evaluate_target,
    normal_cdf,
)

EPS = np.finfo(float).eps
PATHS = {"numpy": gaussian, "numba": gaussian_numba}


# ---- problems and parameters ----------------------------------------------------------------------------


def make_problem(d: int, k: int, rng, quadratic: bool = True):
    """``mean``, ``cov`` (not the identity) and a target with a quadratic part and a teacher of three
    neurons: a random one, a constant one (``TW = 0``) and one filled in by :func:`special_theta` as a copy
    of a student neuron (here a random placeholder)."""
    A = rng.normal(size=(d, d))
    cov = 0.6 * A @ A.T / d + 0.5 * np.eye(d)
    cov = 0.5 * (cov + cov.T)
    mean = rng.normal(size=d)
    TW = np.stack([rng.normal(size=d), np.zeros(d), rng.normal(size=d)])
    Tb = np.array([rng.normal(), 0.3, rng.normal()])
    TV = rng.normal(size=(k, 3))
    Q = 0.3 * rng.normal(size=(k, d, d)) if quadratic else None
    return (
        mean,
        cov,
        {"quadratic": Q, "linear": rng.normal(size=(k, d)), "constant": rng.normal(size=k), "teacher": (TW, Tb, TV)},
    )


def special_theta(d: int, k: int, mean, cov, pieces, rng):
    """Width ``H`` (9 for d = 1, 11 otherwise), the parameter vector and the target (its teacher neuron 2 is
    student neuron 3). Neurons: 0, 1, 2 constant (``b > 0``, ``b < 0``, ``b = 0``); 3 generic; 4 = 2 x 3
    (parallel, other hyperplane); 5 = -1/2 x 3 (anti-parallel, nonempty common active set); 6 = 1/2 x 3
    with half its bias (the same hyperplane); 7, 8 at +8 and -8 standard deviations; for d >= 2, 9 at angle
    1e-6 from 3 (whitened) and 10 = 3 x 3 (parallel up to the rounding of the whitened unit vectors)."""
    H = 9 if d == 1 else 11
    def std(w):
        return math.sqrt(w @ cov @ w)  # standard deviation of w.x
    W = np.zeros((H, d))
    b = np.zeros(H)
    b[0], b[1], b[2] = 0.8, -0.5, 0.0
    W[3] = rng.normal(size=d)
    b[3] = -W[3] @ mean + 0.4 * std(W[3])
    W[4], b[4] = 2.0 * W[3], -2.0 * W[3] @ mean - 0.7 * std(2.0 * W[3])
    W[5], b[5] = -0.5 * W[3], 0.5 * W[3] @ mean + 0.9 * std(0.5 * W[3])
    W[6], b[6] = 0.5 * W[3], 0.5 * b[3]
    for i, h in ((7, 8.0), (8, -8.0)):
        W[i] = rng.normal(size=d)
        b[i] = -W[i] @ mean + h * std(W[i])
    if d >= 2:
        L = np.linalg.cholesky(cov)
        a3 = L.T @ W[3]
        normal = rng.normal(size=d)
        normal -= (normal @ a3) / (a3 @ a3) * a3
        a9 = math.cos(1e-6) * a3 / np.linalg.norm(a3) + math.sin(1e-6) * normal / np.linalg.norm(normal)
        W[9] = np.linalg.solve(L.T, 1.3 * a9)
        b[9] = -W[9] @ mean - 0.2 * std(W[9])
        W[10], b[10] = 3.0 * W[3], 3.0 * b[3] + 0.5
    V = rng.normal(size=(k, H))
    c = rng.normal(size=k)
    TW, Tb, TV = (np.array(x, dtype=float) for x in pieces["teacher"])
    TW[2], Tb[2] = W[3], b[3]
    target = GaussianTarget.from_pieces(d, k, **{**pieces, "teacher": (TW, Tb, TV)})
    return H, np.concatenate([W.ravel(), b, V.ravel(), c]), target


def unpack(theta, d, H, k):
    W = theta[: d * H].reshape(H, d)
    b = theta[d * H : d * H + H]
    V = theta[d * H + H : d * H + H + k * H].reshape(k, H)
    c = theta[d * H + H + k * H :]
    return W, b, V, c


def integrands(theta, d, H, k, target, x, with_scales=True):
    """Values ``(P, 1 + n)`` of the integrands of ``L`` and of each ``G`` component at points ``x (P, d)``
    (MATH.md section 2, written out), and (``with_scales``) their natural scales: the same integrands with
    every factor replaced by its absolute value and the residual ``r_m`` by the sum of the absolute values of
    the terms of ``N_m`` and ``f_m``."""
    W, b, V, c = unpack(theta, d, H, k)
    z = x @ W.T + b
    relu = np.maximum(z, 0.0)
    active = (z > 0.0).astype(float)  # strict: relu'(0) = 0
    quad_part = quadratic_form(target.Q, x)
    lin_part = x @ target.A.T
    t_relu = np.maximum(x @ target.TW.T + target.Tb, 0.0)
    r = c + relu @ V.T - (quad_part + lin_part + target.c0 + t_relu @ target.TV.T)
    P = x.shape[0]
    n = d * H + H + k * H + k
    val = np.empty((P, 1 + n))
    val[:, 0] = np.sum(r * r, axis=1)
    Vr = r @ V  # (P, H): V_i . r
    val[:, 1 : 1 + d * H] = (2.0 * (active * Vr)[:, :, None] * x[:, None, :]).reshape(P, d * H)
    val[:, 1 + d * H : 1 + d * H + H] = 2.0 * active * Vr
    val[:, 1 + d * H + H : 1 + n - k] = (2.0 * r[:, :, None] * relu[:, None, :]).reshape(P, k * H)
    val[:, 1 + n - k :] = 2.0 * r
    if not with_scales:
        return val
    size = (np.abs(c) + relu @ np.abs(V).T) + (
        np.abs(quad_part) + np.abs(lin_part) + np.abs(target.c0) + t_relu @ np.abs(target.TV).T
    )
    mag = np.empty((P, 1 + n))
    mag[:, 0] = np.sum(size * size, axis=1)
    Vs = size @ np.abs(V)
    mag[:, 1 : 1 + d * H] = (2.0 * (active * Vs)[:, :, None] * np.abs(x)[:, None, :]).reshape(P, d * H)
    mag[:, 1 + d * H : 1 + d * H + H] = 2.0 * active * Vs
    relu_abs = active * (np.abs(x) @ np.abs(W).T + np.abs(b))
    mag[:, 1 + d * H + H : 1 + n - k] = (2.0 * size[:, :, None] * relu_abs[:, None, :]).reshape(P, k * H)
    mag[:, 1 + n - k :] = 2.0 * size
    return val, mag


def quadratic_form(Q, x):
    """``x^T Q[m] x`` for every point ``x (P, d)`` and output ``m``: ``(P, k)``."""
    return np.stack([np.sum((x @ Q[m]) * x, axis=1) for m in range(Q.shape[0])], axis=1)


def kinks_1d(theta, H, k, target):
    W, b, _, _ = unpack(theta, 1, H, k)
    w_all = np.concatenate([W[:, 0], target.TW[:, 0]])
    b_all = np.concatenate([b, target.Tb])
    return sorted({float(-bb / ww) for ww, bb in zip(w_all, b_all) if ww != 0.0})


# ---- d = 1: adaptive quadrature ---------------------------------------------------------------------------


def quad_reference_1d(theta, H, k, mean, cov, target, epsrel=1.2e-14):
    """``L``, ``G`` and their natural scales by ``scipy.integrate.quad`` of each component on the pieces of
    the real line between consecutive kinks (infinite end pieces by QUADPACK's infinite-range rule).
    1.2e-14 is the tightest relative tolerance QUADPACK accepts with ``epsabs = 0``."""
    mu, sigma = float(mean[0]), math.sqrt(cov[0, 0])
    edges = [-math.inf, *kinks_1d(theta, H, k, target), math.inf]
    n = 2 * H + k * H + k

    def component(j, which, tol):
        def fn(x):
            val, mag = integrands(theta, 1, H, k, target, np.array([[x]]))
            density = math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
            return (val if which == 0 else mag)[0, j] * density

        total = 0.0
        for lo, hi in itertools.pairwise(edges):
            total += quad(fn, lo, hi, epsabs=0.0, epsrel=tol, limit=200)[0]
        return total

    with warnings.catch_warnings():
        # QUADPACK may flag "roundoff error" at a tolerance at the rounding level; the pieces are smooth
        # (every kink is a breakpoint), where its value is still accurate to rounding.
        warnings.simplefilter("ignore", IntegrationWarning)
        values = np.array([component(j, 0, epsrel) for j in range(1 + n)])
        scales = np.array([component(j, 1, 1e-6) for j in range(1 + n)])
    return values, scales


@pytest.mark.parametrize("seed", [0, 1])
def test_d1_risk_and_gradient_match_adaptive_quadrature(seed):
    rng = np.random.default_rng(seed)
    d, k = 1, 2
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    values, scales = quad_reference_1d(theta, H, k, mean, cov, target)
    # little cancellation in the risk (its scale is at most 100 L), so its own relative error is meaningful
    assert values[0] > 0.01 * scales[0]
    for name, path in PATHS.items():
        risk, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        exact = np.concatenate([[risk], grad])
        # Required: relative 1e-11. Each value is compared with its natural scale (the integral of the
        # absolute values of its integrand's terms), which is what bounds the rounding error of any
        # evaluation, the reference's included: a component that is small because its neuron sits 8 standard
        # deviations into its dead side has a small scale and is checked to 1e-11 of that, not of |G|.
        # The kernels' error is a few eps times the scale, up to ~|h|^3 eps in the far tails (module
        # docstring), so 1e-11 is 100x above it; a wrong term or active set is O(scale).
        error = np.abs(exact - values)
        assert np.all(error <= 1e-11 * scales), (name, np.max(error / np.where(scales > 0, scales, 1.0)))
        assert abs(risk - values[0]) <= 1e-11 * values[0], name
        # dead neurons (w = 0 with b <= 0) have zero scale: their components must be exactly zero
        assert np.all(exact[scales == 0.0] == 0.0), name


# ---- d = 2: nested quadrature in whitened coordinates --------------------------------------------------------


@functools.cache
def gauss_legendre(nodes: int):
    return np.polynomial.legendre.leggauss(nodes)


def panel_rule(breaks, width: float, nodes: int):
    """Composite ``nodes``-point Gauss-Legendre on ``[breaks[0], breaks[-1]]``: every piece between consecutive
    breaks is cut into equal panels of width at most ``width``."""
    t, w = gauss_legendre(nodes)
    breaks = np.asarray(breaks, dtype=float)
    lo, hi = breaks[:-1], breaks[1:]
    lo, hi = lo[hi > lo], hi[hi > lo]
    count = np.ceil((hi - lo) / width).astype(int)
    piece = np.repeat(np.arange(lo.size), count)
    j = np.arange(piece.size) - np.repeat(np.cumsum(count) - count, count)
    step = ((hi - lo) / count)[piece]
    left = lo[piece] + j * step
    right = np.where(j == count[piece] - 1, hi[piece], left + step)
    mid, half = 0.5 * (left + right), 0.5 * (right - left)
    return (mid[:, None] + half[:, None] * t).ravel(), (half[:, None] * w).ravel()


def lines_2d(theta, H, k, mean, cov, target, smoothing=None):
    """Every neuron's kink line ``a.u + beta = 0`` in whitened coordinates ``x = mean + L u`` (``w != 0``); with
    ``smoothing = r`` the student neurons' lines are moved to the centre ``z = log(r) / r`` of their smoothed
    layer (the teacher's kinks stay)."""
    L = np.linalg.cholesky(cov)
    W, b, _, _ = unpack(theta, 2, H, k)
    if smoothing is not None:
        b = b - math.log(smoothing) / smoothing
    W_all, b_all = np.concatenate([W, target.TW]), np.concatenate([b, target.Tb])
    keep = np.any(W_all != 0.0, axis=1)
    return L, W_all[keep] @ L, b_all[keep] + W_all[keep] @ mean


def nested_reference_2d(theta, H, k, mean, cov, target, width=0.5, nodes=12, half_range=12.0, smoothing=None):
    """``int int g(mean + L u) phi(u1) phi(u2) du2 du1`` on ``[-12, 12]^2`` (the Gaussian mass outside is below
    ``Phi(-12) = 2e-33``, i.e. 1e-17 of the mass of a neuron's active set at 8 standard deviations) for the
    integrands of :func:`integrands` (or of :func:`smoothed_integrands` with ``smoothing = r``).

    Inner rule (over ``u2``, for each outer node ``u1``): pieces cut where the kink lines cross the vertical
    line at ``u1``, so the integrand is a polynomial times ``phi(u2)`` on each piece. Outer rule: pieces cut
    at the intersections of two lines and at vertical lines, where the inner integral has kinks (it is
    analytic between them). With ``smoothing = r`` the integrands vary on the scale ``1 / (r |a|)`` across the
    centre line of a student neuron's layer (:func:`lines_2d`); both rules then add the points
    ``crossing +- 2^j / (r |a|)`` (graded meshes)."""
    L, a, beta = lines_2d(theta, H, k, mean, cov, target, smoothing)
    T = half_range

    def graded(points, scales):
        if smoothing is None:
            return list(points)
        out = list(points)
        for x0, sc in zip(points, scales):
            step = 1.0 / (smoothing * sc)
            while step < width:
                out += [x0 - step, x0 + step]
                step *= 2.0
        return out

    outer = []
    outer_scale = []
    for p in range(len(a)):
        if a[p, 1] == 0.0:
            outer.append(-beta[p] / a[p, 0])
            outer_scale.append(abs(a[p, 0]))
        for q in range(p + 1, len(a)):
            det = a[p, 0] * a[q, 1] - a[p, 1] * a[q, 0]
            if det != 0.0:
                outer.append((-beta[p] * a[q, 1] + beta[q] * a[p, 1]) / det)
                outer_scale.append(abs(det) / max(np.linalg.norm(a[p]), np.linalg.norm(a[q])))
    breaks = np.unique(np.clip([-T, T, *graded(outer, outer_scale)], -T, T))
    u1, w1 = panel_rule(breaks, width, nodes)
    total = None
    for start in range(0, u1.size, 64):
        xs, ws = [], []
        for x1, wt1 in zip(u1[start : start + 64], w1[start : start + 64]):
            vertical = a[:, 1] != 0.0
            cross = -(beta[vertical] + a[vertical, 0] * x1) / a[vertical, 1]
            inner = np.unique(np.clip([-T, T, *graded(cross, np.abs(a[vertical, 1]))], -T, T))
            x2, wt2 = panel_rule(inner, width, nodes)
            xs.append(np.stack([np.full_like(x2, x1), x2], axis=1))
            ws.append(wt1 * wt2 * np.exp(-0.5 * (x1 * x1 + x2 * x2)) / (2.0 * math.pi))
        u = np.concatenate(xs)
        weight = np.concatenate(ws)
        x = mean + u @ L.T
        if smoothing is None:
            val, mag = integrands(theta, 2, H, k, target, x)
            part = np.concatenate([weight @ val, weight @ mag])
        else:
            part = weight @ smoothed_integrands(theta, 2, H, k, target, x, smoothing)
        total = part if total is None else total + part
    return total


def smoothed_integrands(theta, d, H, k, target, x, r):
    """Integrands ``(P, 1 + n)`` of ``L_r`` and of its exact gradient, relu replaced by the shifted softplus
    ``R_r(z) = log(1 + exp(r z) / r) / r`` (``R_r -> relu``, ``R_r' = 1 / (1 + r exp(-r z)) -> 1_(0, inf)`` pointwise
    *including at 0*, the strict convention of ``G``; the plain softplus has ``R_r'(0) = 1/2``), differentiated
    under the integral: ``dN/dw_i = V_i R_r'(z_i) x``, ``dN/db_i = V_i R_r'(z_i)``, ``dN/dV[m,i] = R_r(z_i)``."""
    W, b, V, c = unpack(theta, d, H, k)
    z = x @ W.T + b
    shifted = r * z - math.log(r)
    R, dR = np.logaddexp(0.0, shifted) / r, expit(shifted)
    f = (
        quadratic_form(target.Q, x)
        + x @ target.A.T
        + target.c0
        + np.maximum(x @ target.TW.T + target.Tb, 0.0) @ target.TV.T
    )
    res = c + R @ V.T - f
    P = x.shape[0]
    n = d * H + H + k * H + k
    out = np.empty((P, 1 + n))
    out[:, 0] = np.sum(res * res, axis=1)
    Vr = res @ V
    out[:, 1 : 1 + d * H] = (2.0 * (dR * Vr)[:, :, None] * x[:, None, :]).reshape(P, d * H)
    out[:, 1 + d * H : 1 + d * H + H] = 2.0 * dR * Vr
    out[:, 1 + d * H + H : 1 + n - k] = (2.0 * res[:, :, None] * R[:, None, :]).reshape(P, k * H)
    out[:, 1 + n - k :] = 2.0 * res
    return out


def test_d2_risk_and_gradient_match_nested_quadrature():
    rng = np.random.default_rng(5)
    d, k = 2, 2
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    n = d * H + H + k * H + k
    reference = nested_reference_2d(theta, H, k, mean, cov, target, width=1.0, nodes=16)
    check = nested_reference_2d(theta, H, k, mean, cov, target, width=0.5, nodes=10)
    values, scales = reference[: 1 + n], reference[1 + n :]
    # the reference is converged: another rule (half the panel width, other nodes) agrees far below the
    # tolerance (measured: 1e-14 of the scales)
    assert np.all(np.abs(check[: 1 + n] - values) <= 1e-12 * scales)
    for name, path in PATHS.items():
        risk, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        exact = np.concatenate([[risk], grad])
        # Required: relative 1e-9, against each component's natural scale (as in d = 1, see there); the
        # kernels are at a few eps of it, the reference at 1e-12 (checked above).
        error = np.abs(exact - values)
        assert np.all(error <= 1e-9 * scales), (name, np.max(error / np.where(scales > 0, scales, 1.0)))
        assert abs(risk - values[0]) <= 1e-9 * values[0], name
        assert np.all(exact[scales == 0.0] == 0.0), name


# ---- the Jacobian --------------------------------------------------------------------------------------------


def smooth_theta(d, k, seed):
    """``special_theta`` moved off the points where ``G`` is not twice differentiable: the ``w = b = 0`` neuron
    gets ``b = -0.3`` (a constant dead neuron, where ``G`` is C^inf), neuron 6 and the teacher's copy of
    neuron 3 get other biases (no two kink hyperplanes coincide), and neuron 8 moves from -8 to -8.25 standard
    deviations (in d = 1 neurons 7 and 8 are anti-parallel with the same kink for one sign pattern: their
    common active set is exactly empty and any perturbation opens it, so there ``G`` is C^1 only). Parallel,
    anti-parallel, nearly parallel, constant and 8 sigma neurons remain."""
    rng = np.random.default_rng(seed)
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    W = theta[: d * H].reshape(H, d)
    theta[d * H + 2] = -0.3
    theta[d * H + 6] += 0.3 * math.sqrt(W[6] @ cov @ W[6])
    theta[d * H + 8] -= 0.25 * math.sqrt(W[8] @ cov @ W[8])
    target = GaussianTarget(target.Q, target.A, target.c0, target.TW, target.Tb + np.array([0.0, 0.0, 0.5]), target.TV)
    return H, theta, mean, cov, target


def central_differences(path, theta, d, H, k, mean, cov, target, h_rel):
    n = theta.size
    h = h_rel * np.maximum(1.0, np.abs(theta))
    steps = h[:, None] * np.eye(n)
    plus = path.risk_and_gradient(theta + steps, d, H, k, mean, cov, target)[1]
    minus = path.risk_and_gradient(theta - steps, d, H, k, mean, cov, target)[1]
    return ((plus - minus) / (2.0 * h[:, None])).T  # J[r, s] = dG_r / dtheta_s


@pytest.mark.parametrize("d", [1, 2, 3])
def test_jacobian_matches_central_differences_of_G(d):
    k = 2
    H, theta, mean, cov, target = smooth_theta(d, k, 10 + d)
    for name, path in PATHS.items():
        J = path.gradient_jacobian(theta, d, H, k, mean, cov, target)
        assert np.array_equal(J, J.T), name  # exactly symmetric: the Hessian of L
        J_fd = central_differences(path, theta, d, H, k, mean, cov, target, 1e-6)
        # Each row is compared with its own scale max_s |J[r, s]|, so that the rows of the neuron 8 standard
        # deviations into its dead side (entries ~1e-13) are checked as closely as the others; rows of the
        # dead constant neurons are 0 and must be matched exactly. Central differences with h = 1e-6
        # (relative): truncation h^2 |G'''| / 6, measured 1e-9 of the row scale (1e-7 at h = 1e-5: the h^2
        # law), rounding eps |G| / h ~ 1e-10. A missing or wrong term (kink term, Gauss-Newton block,
        # whitening) is O(1) of its row.
        scale = np.max(np.abs(J), axis=1, keepdims=True)
        error = np.abs(J - J_fd)
        assert np.all(error <= 1e-7 * scale), (name, np.max(error / np.where(scale > 0, scale, 1.0)))


def rotate_neuron(theta, d, H, i, angle, mean, cov, rng):
    """Neuron ``i`` with its whitened weight vector rotated by ``angle`` about a point of its kink hyperplane,
    which therefore turns about that point (``w`` and ``b`` mapped back from whitened coordinates)."""
    L = np.linalg.cholesky(cov)
    w, b = theta[i * d : (i + 1) * d], theta[d * H + i]
    a, beta = L.T @ w, b + w @ mean
    anchor = -beta * a / (a @ a)
    normal = rng.normal(size=d)
    normal -= (normal @ a) / (a @ a) * a
    rotated = math.cos(angle) * a + math.sin(angle) * np.linalg.norm(a) * normal / np.linalg.norm(normal)
    out = theta.copy()
    out[i * d : (i + 1) * d] = np.linalg.solve(L.T, rotated)
    out[d * H + i] = -rotated @ anchor - out[i * d : (i + 1) * d] @ mean
    return out


@pytest.mark.parametrize("neuron", [6, 5, 4], ids=["parallel-same-hyperplane", "anti-parallel", "parallel"])
def test_values_are_continuous_into_the_parallel_limits_without_loss_of_accuracy(neuron):
    """Rotating neuron 6 (same hyperplane as neuron 3), 5 (anti-parallel) or 4 (parallel) by ``eps`` out of
    the exactly parallel configuration: ``L``, ``G`` and ``J`` (generic bivariate branch) must tend to their
    values at ``eps = 0`` (parallel branch) linearly, down to ``eps = 1e-14``. A formula that lost accuracy
    as the correlation tends to +-1 (``1 - rho`` formed as such, ``sqrt(1 - rho^2)``, the matrices of ``W`` not
    in their ``O(r^2)`` form) would show errors growing like ``eps_machine / eps`` instead (1e-4 at 1e-12).
    This also shows that ``J`` is continuous where two kink hyperplanes coincide (``G`` is C^1 there), where
    central differences only converge to first order."""
    d, k = 3, 2
    rng = np.random.default_rng(21)
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    for name, path in PATHS.items():
        risk0, grad0 = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        J0 = path.gradient_jacobian(theta, d, H, k, mean, cov, target)
        slopes = []
        for eps in 10.0 ** -np.arange(2, 15, 2):
            rotated = rotate_neuron(theta, d, H, neuron, eps, mean, cov, np.random.default_rng(3))
            risk, grad = path.risk_and_gradient(rotated, d, H, k, mean, cov, target)
            J = path.gradient_jacobian(rotated, d, H, k, mean, cov, target)
            change = np.array(
                [
                    abs(risk - risk0) / risk0,
                    np.max(np.abs(grad - grad0)) / np.max(np.abs(grad0)),
                    np.max(np.abs(J - J0)) / np.max(np.abs(J0)),
                ]
            )
            # (measured: change / eps constant to 2 digits for eps = 1e-2 ... 1e-14)
            slopes.append(np.maximum(change - 16 * EPS, 0.0) / eps)
        slopes = np.array(slopes)
        assert np.all(slopes <= 2.0 * slopes[0]), (name, slopes)


def test_jacobian_at_w_b_zero_is_the_limit_from_b_negative():
    """At ``w_i = b_i = 0`` ``G_b[i]`` jumps (0 for ``b_i < 0``, ``2 E[V_i.r]`` for ``b_i > 0``); the value returned
    is the limit along ``w_i = 0, b_i -> 0-``: the rows and columns of neuron ``i`` vanish, as they do at
    ``b_i = -1e-300``, where ``G`` is differentiable and central differences confirm it."""
    d, k = 2, 2
    rng = np.random.default_rng(4)
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    i = 2  # w = b = 0
    n = theta.size
    own = np.r_[i * d : (i + 1) * d, d * H + i, [d * H + H + m * H + i for m in range(k)]]
    for name, path in PATHS.items():
        J = path.gradient_jacobian(theta, d, H, k, mean, cov, target)
        assert np.all(J[own] == 0.0) and np.all(J[:, own] == 0.0), name
        below = theta.copy()
        below[d * H + i] = -1e-300
        assert np.array_equal(path.gradient_jacobian(below, d, H, k, mean, cov, target), J), name
        _, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        above = theta.copy()
        above[d * H + i] = 1e-300
        _, grad_above = path.risk_and_gradient(above, d, H, k, mean, cov, target)
        assert grad[d * H + i] == 0.0 and abs(grad_above[d * H + i]) > 1e-3, name  # the jump
    assert n == J.shape[0]


# ---- d = 5: Monte Carlo ---------------------------------------------------------------------------------------


def test_d5_risk_and_gradient_match_monte_carlo():
    rng = np.random.default_rng(7)
    d, k = 5, 2
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    n = d * H + H + k * H + k
    L = np.linalg.cholesky(cov)
    W, b, V, c = unpack(theta, d, H, k)
    samples, chunk = 10**7, 200_000  # chunks of 200 000 points: ~30 MB of arrays at a time
    sampler = np.random.default_rng(2024)
    total = np.zeros(1 + n)
    total_sq = np.zeros(1 + n)
    hits = np.zeros(H)

    def accumulate(block, column):  # per-sample values of the components `column`, summed and squared
        total[column] += block[0]
        total_sq[column] += block[1]

    for _ in range(samples // chunk):
        x = mean + sampler.standard_normal((chunk, d)) @ L.T
        z = x @ W.T + b
        relu = np.maximum(z, 0.0)
        active = z > 0.0  # strict: relu'(0) = 0
        f = (
            quadratic_form(target.Q, x)
            + x @ target.A.T
            + target.c0
            + np.maximum(x @ target.TW.T + target.Tb, 0.0) @ target.TV.T
        )
        r = c + relu @ V.T - f
        g_b = 2.0 * np.where(active, r @ V, 0.0)  # per-sample integrand of G_b[i]; G_W[i, j] has an extra x_j
        risk = np.sum(r * r, axis=1)
        accumulate((risk.sum(), risk @ risk), 0)
        accumulate(((g_b.T @ x).ravel(), ((g_b * g_b).T @ (x * x)).ravel()), slice(1, 1 + d * H))
        accumulate((g_b.sum(axis=0), (g_b * g_b).sum(axis=0)), slice(1 + d * H, 1 + d * H + H))
        accumulate(
            ((2.0 * r.T @ relu).ravel(), (4.0 * (r * r).T @ (relu * relu)).ravel()), slice(1 + d * H + H, 1 + n - k)
        )
        accumulate((2.0 * r.sum(axis=0), 4.0 * (r * r).sum(axis=0)), slice(1 + n - k, 1 + n))
        hits += np.sum(active, axis=0)
    estimate = total / samples
    stderr = np.sqrt(np.maximum(total_sq / samples - estimate**2, 0.0) / samples)
    # Components of a neuron whose active set received fewer than 1000 samples cannot be estimated (their
    # empirical standard error is meaningless): here the neuron 8 standard deviations into its dead side
    # (probability 6e-16, no sample) and the dead constant neurons. The quadrature tests in d = 1 and 2
    # check such components to 1e-11 and 1e-9 of their natural scale.
    owner = np.concatenate([[-1], np.repeat(np.arange(H), d), np.arange(H), np.tile(np.arange(H), k), np.full(k, -1)])
    resolved = (owner < 0) | (hits[np.maximum(owner, 0)] >= 1000)
    assert np.sum(~resolved) == (d + 1 + k) * 3  # neurons 1 (w = 0, b < 0), 2 (w = b = 0), 8 (-8 sigma)
    for name, path in PATHS.items():
        risk, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        exact = np.concatenate([[risk], grad])
        # within 4 standard errors, component by component (91 comparisons: a chance of 6e-5 each to exceed
        # 4 SE if the formulas are right; the seed is fixed)
        error = np.abs(exact - estimate)
        assert np.all(error[resolved] <= 4.0 * stderr[resolved]), (name, np.max(error[resolved] / stderr[resolved]))
        # unresolved: the dead constant neurons' components are exactly 0, the -8 sigma neuron's are O(1e-15) |G|
        assert np.all(np.abs(exact[~resolved]) <= 1e-12 * np.max(np.abs(grad))), name


# ---- the smoothing limit (JR's definition of G) ------------------------------------------------------------


def smoothed_gradient_1d(theta, H, k, mean, cov, target, r, nodes=12):
    """Exact gradient of ``L_r`` (see :func:`smoothed_integrands`) for d = 1: composite Gauss-Legendre in
    ``u = (x - mean) / sigma`` on ``[-12, 12]`` with panels of width <= 0.25, cut at the teacher's kinks and
    graded towards the centre of each student neuron's smoothed layer (``r z = log r``, where ``R_r'`` is
    1/2; the layer has width ``1 / (r |w| sigma)`` in ``u``): points ``centre +- 2^j / (r |w| sigma)``."""
    mu, sigma = float(mean[0]), math.sqrt(cov[0, 0])
    breaks = [
        -12.0,
        12.0,
        *(
            ((-target.Tb[t] / target.TW[t, 0]) - mu) / sigma
            for t in range(target.teacher_width)
            if target.TW[t, 0] != 0.0
        ),
    ]
    for w, b in zip(theta[:H], theta[H : 2 * H]):
        if w != 0.0:
            centre = ((math.log(r) / r - b) / w - mu) / sigma
            step = 1.0 / (r * abs(w) * sigma)
            breaks.append(centre)
            while step < 0.25:
                breaks += [centre - step, centre + step]
                step *= 2.0
    u, w = panel_rule(np.unique(np.clip(breaks, -12.0, 12.0)), 0.25, nodes)
    weight = w * np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return weight @ smoothed_integrands(theta, 1, H, k, target, (mu + sigma * u)[:, None], r)


def assert_log_r_over_r_convergence(errors, r_values, final):
    """``|G_r - G| = O(log(r) / r)``: ``|R_r - relu| <= log(r) / r`` and ``R_r'`` differs from the indicator
    in a layer of width ~ ``log(r) / (r |a|)`` around each kink, so each decade of ``r`` divides the error by
    about ``10 ln(r) / ln(10 r)`` (6.7 to 8 here). Required: a factor 4 per decade, a constant ``C`` in
    ``|G_r - G| <= C |G| log(r) / r`` that stays within a factor 2, and ``errors[-1] <= final``."""
    errors, r_values = np.asarray(errors), np.asarray(r_values)
    assert np.all(errors[1:] <= errors[:-1] / 4.0), errors
    C = errors * r_values / np.log(r_values)
    assert np.max(C) <= 2.0 * np.min(C), C
    assert errors[-1] <= final, errors


def test_d1_generalized_gradient_is_the_limit_of_smoothed_gradients():
    rng = np.random.default_rng(2)
    d, k = 1, 2
    mean, cov, pieces = make_problem(d, k, rng)
    H, theta, target = special_theta(d, k, mean, cov, pieces, rng)
    _, G = gaussian.risk_and_gradient(theta, d, H, k, mean, cov, target)
    size = np.max(np.abs(G))
    r_values = (1e2, 1e3, 1e4, 1e5)
    errors = []
    for r in r_values:
        G_r = smoothed_gradient_1d(theta, H, k, mean, cov, target, r)[1:]
        # the reference is converged: more nodes per panel change it by rounding only
        assert (
            np.max(np.abs(smoothed_gradient_1d(theta, H, k, mean, cov, target, r, nodes=20)[1:] - G_r)) <= 1e-12 * size
        )
        errors.append(np.max(np.abs(G_r - G)) / size)
    # measured: 1.2e-1 ... 2.6e-4 (C = 2.3 ... 2.6); log(1e5) / 1e5 = 1.2e-4
    assert_log_r_over_r_convergence(errors, r_values, 1e-3)
    # the neuron with w = b = 0 has z = 0 everywhere: its G_w, G_b are 0 (strict active set), and so are
    # the limits of the shifted softplus (R_r'(0) = 1 / (1 + r) -> 0)
    assert G[2] == 0.0 and G[H + 2] == 0.0


def test_d2_generalized_gradient_is_the_limit_of_smoothed_gradients():
    """d = 2, with a constant neuron (``w = b = 0``), parallel, anti-parallel and +-3 sigma neurons, a
    quadratic target and a one-neuron teacher (fewer neurons than elsewhere: the graded nested rule has
    ~ (log r)^2 times more points per line intersection)."""
    rng = np.random.default_rng(9)
    d, k = 2, 1
    mean, cov, pieces = make_problem(d, k, rng)
    TW, Tb, TV = pieces["teacher"]
    pieces["teacher"] = (TW[:1], Tb[:1], TV[:, :1])
    def std(w):
        return math.sqrt(w @ cov @ w)  # standard deviation of w.x
    w1 = rng.normal(size=d)
    W = np.array([[0.0, 0.0], w1, 2.0 * w1, -0.5 * w1, rng.normal(size=d), rng.normal(size=d)])
    b = np.array(
        [
            0.0,
            -w1 @ mean + 0.3 * std(w1),
            -2.0 * w1 @ mean - 0.8 * std(2.0 * w1),
            0.5 * w1 @ mean + 0.6 * std(0.5 * w1),
            0.0,
            0.0,
        ]
    )
    b[4] = -W[4] @ mean + 3.0 * std(W[4])
    b[5] = -W[5] @ mean - 3.0 * std(W[5])
    H = 6
    theta = np.concatenate([W.ravel(), b, rng.normal(size=k * H), rng.normal(size=k)])
    target = GaussianTarget.from_pieces(d, k, **pieces)
    _, G = gaussian.risk_and_gradient(theta, d, H, k, mean, cov, target)
    size = np.max(np.abs(G))
    r_values = (1e1, 1e2, 1e3)
    errors = []
    for r in r_values:
        G_r = nested_reference_2d(theta, H, k, mean, cov, target, width=0.5, nodes=6, smoothing=r)[1:]
        errors.append(np.max(np.abs(G_r - G)) / size)
    # the reference is converged: another rule agrees to 1e-13 (measured 3e-14)
    G_check = nested_reference_2d(theta, H, k, mean, cov, target, width=1.0, nodes=8, smoothing=r_values[-1])[1:]
    assert np.max(np.abs(G_check - G_r)) <= 1e-12 * size
    # measured: 0.15, 0.032, 0.0048 (C = 0.65, 0.69, 0.69); log(1e3) / 1e3 = 6.9e-3
    assert_log_r_over_r_convergence(errors, r_values, 1e-2)
    assert G[0] == 0.0 and G[1] == 0.0 and G[d * H] == 0.0


# ---- numba == numpy, batch independence ---------------------------------------------------------------------


def mixed_batch(d, k, seed, rows=24):
    """``special_theta`` rows (every degenerate configuration, different random draws) and generic rows
    (every parameter standard normal), for one problem."""
    rng = np.random.default_rng(seed)
    mean, cov, pieces = make_problem(d, k, rng)
    first_rng = np.random.default_rng(seed + 1000)
    H, theta0, target = special_theta(d, k, mean, cov, pieces, first_rng)
    special = [theta0]
    for _ in range(rows // 2 - 1):
        special.append(special_theta(d, k, mean, cov, pieces, rng)[1])
    generic = rng.normal(size=(rows - len(special), theta0.size))
    return H, np.concatenate([np.stack(special), generic]), mean, cov, target


def natural_scales(theta, d, H, k, mean, cov, target):
    """Per run: ``Lambda_m``, a bound of ``sqrt(E[(sum of |terms of N_m and f_m|)^2])`` (Minkowski: the sum of
    the root mean squares of the terms), the risk scale ``sum_m Lambda_m^2`` and, per component of ``G``, the
    Cauchy-Schwarz bound of the expectation of the absolute value of its integrand's terms
    (``2 sum_m |V[m,i]| sqrt(E x_j^2) Lambda_m`` for ``G_W[i,j]``, ...). A floating-point evaluation of
    ``L`` or ``G`` errs by a few eps times these."""
    M = theta.shape[0]
    W = theta[:, : d * H].reshape(M, H, d)
    b = theta[:, d * H : d * H + H]
    V = theta[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
    c = theta[:, d * H + H + k * H :]
    rms_z = np.sqrt(np.einsum("mhi,ij,mhj->mh", W, cov, W) + (W @ mean + b) ** 2)
    rms_t = np.sqrt(np.einsum("hi,ij,hj->h", target.TW, cov, target.TW) + (target.TW @ mean + target.Tb) ** 2)
    lam = np.abs(c) + np.abs(target.c0)
    for m in range(k):
        Q, A = target.Q[m], target.A[m]
        mean_q = np.trace(Q @ cov) + mean @ Q @ mean
        var_q = 2.0 * np.trace(Q @ cov @ Q @ cov) + 4.0 * mean @ Q @ cov @ Q @ mean
        lam[:, m] += np.sum(np.abs(V[:, m]) * rms_z, axis=1) + math.sqrt(mean_q**2 + var_q)
        lam[:, m] += math.sqrt(A @ cov @ A + (A @ mean) ** 2) + np.abs(target.TV[m]) @ rms_t
    rms_x = np.sqrt(np.diag(cov) + mean**2)
    VL = np.einsum("mkh,mk->mh", np.abs(V), lam)
    grad = np.concatenate(
        [
            2.0 * (VL[:, :, None] * rms_x).reshape(M, d * H),
            2.0 * VL,
            (2.0 * rms_z[:, None, :] * lam[:, :, None]).reshape(M, k * H),
            2.0 * lam,
        ],
        axis=1,
    )
    return np.sum(lam**2, axis=1), grad


@pytest.mark.parametrize("d,k", [(1, 1), (1, 2), (2, 2), (5, 1), (5, 3)])
def test_numba_equals_numpy_to_a_few_ulps_of_the_natural_scale(d, k):
    H, theta, mean, cov, target = mixed_batch(d, k, 100 * d + k)
    risk_np, grad_np = gaussian.risk_and_gradient(theta, d, H, k, mean, cov, target)
    risk_nb, grad_nb = gaussian_numba.risk_and_gradient(theta, d, H, k, mean, cov, target)
    J_np = gaussian.gradient_jacobian(theta, d, H, k, mean, cov, target)
    J_nb = gaussian_numba.gradient_jacobian(theta, d, H, k, mean, cov, target)
    risk_scale, grad_scale = natural_scales(theta, d, H, k, mean, cov, target)
    # Both paths evaluate the same formulas in the same order; they differ only where the platform's exp,
    # erfc, sin, asin differ from numpy's and scipy's in the last bit, amplified by the cancellations of the
    # closed forms. Measured on these batches: risk 0.17 eps, G 0.83 eps, J 1.1 eps of the scales (J: of
    # max |J| of the run). 8 eps leaves a margin of 7; a formula or branch that differs is O(1) of them.
    # Components whose scale is 0 (a dead constant neuron) are exactly 0 in both.
    assert np.all(np.abs(risk_nb - risk_np) <= 8 * EPS * risk_scale)
    assert np.all(np.abs(grad_nb - grad_np) <= 8 * EPS * grad_scale)
    assert np.all(np.abs(J_nb - J_np) <= 8 * EPS * np.max(np.abs(J_np), axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("name", list(PATHS))
def test_rows_are_bitwise_independent_of_the_batch(name):
    path = PATHS[name]
    d, k = 3, 2
    H, theta, mean, cov, target = mixed_batch(d, k, 77)
    risk, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
    J = path.gradient_jacobian(theta, d, H, k, mean, cov, target)
    for row in (0, 5, len(theta) - 1):  # alone, as a 1-D vector
        r1, g1 = path.risk_and_gradient(theta[row], d, H, k, mean, cov, target)
        J1 = path.gradient_jacobian(theta[row], d, H, k, mean, cov, target)
        assert r1.shape == () and g1.shape == theta[row].shape and J1.shape == (theta.shape[1],) * 2
        assert (
            r1.tobytes() == risk[row].tobytes()
            and g1.tobytes() == grad[row].tobytes()
            and J1.tobytes() == J[row].tobytes()
        )
    perm = np.random.default_rng(0).permutation(len(theta))
    mixed = np.concatenate([theta[perm], theta[:3]])  # other order, other size, duplicates
    r2, g2 = path.risk_and_gradient(mixed, d, H, k, mean, cov, target)
    J2 = path.gradient_jacobian(mixed, d, H, k, mean, cov, target)
    assert r2[: len(theta)].tobytes() == risk[perm].tobytes() and g2[: len(theta)].tobytes() == grad[perm].tobytes()
    assert J2[: len(theta)].tobytes() == J[perm].tobytes()
    r3, g3 = path.risk_and_gradient(
        theta.reshape(4, -1, theta.shape[1]), d, H, k, mean, cov, target
    )  # batch shape kept
    assert r3.shape == (4, len(theta) // 4) and g3.shape == (4, len(theta) // 4, theta.shape[1])
    assert r3.ravel().tobytes() == risk.tobytes()


# ---- identities, special functions, target, validation ---------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_homogeneity_identity(d):
    """relu is positively homogeneous, so ``w_i.x 1_i + b_i 1_i = relu(z_i)`` pointwise and hence, exactly (no
    differentiability needed), ``w_i.G_W[i] + b_i G_b[i] = sum_m V[m,i] G_V[m,i]``: a relation between
    components computed by different formulas (``S1``, ``S0`` against ``S2``, through the whitening)."""
    k = 2
    H, theta, mean, cov, target = mixed_batch(d, k, 5 + d)
    for name, path in PATHS.items():
        _, grad = path.risk_and_gradient(theta, d, H, k, mean, cov, target)
        _, grad_scale = natural_scales(theta, d, H, k, mean, cov, target)
        M = theta.shape[0]
        W, b = theta[:, : d * H].reshape(M, H, d), theta[:, d * H : d * H + H]
        V = theta[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
        GW, Gb = grad[:, : d * H].reshape(M, H, d), grad[:, d * H : d * H + H]
        GV = grad[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
        lhs = np.sum(W * GW, axis=2) + b * Gb
        rhs = np.sum(V * GV, axis=1)
        sW, sb = grad_scale[:, : d * H].reshape(M, H, d), grad_scale[:, d * H : d * H + H]
        sV = grad_scale[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
        bound = np.sum(np.abs(W) * sW, axis=2) + np.abs(b) * sb + np.sum(np.abs(V) * sV, axis=1)
        # rounding only: measured below 1 eps of the bound; 16 eps (the sums have up to 2 d + 2 k terms)
        assert np.all(np.abs(lhs - rhs) <= 16 * EPS * bound), name


def test_bivariate_normal_against_high_precision_quadrature():
    """``P(X > h, Y > k)`` against 40-digit quadrature of ``int_h^inf phi(x) Phi((rho x - k) / r) dx`` on a grid
    reaching 10 standard deviations and correlations within 1e-12 of +-1 (given through the exact ``1 -+ rho``).
    Absolute error below 2e-16, and below 1e-13 of the smaller marginal tail ``min(Phi(-h), Phi(-k))``, the
    natural scale of the probability (measured: 1.3e-16 and 5.3e-14)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40

    def reference(h, k, omr, opr):
        h, k, omr, opr = (mpmath.mpf(float(v)) for v in (h, k, omr, opr))
        rho, r = (opr - omr) / 2, mpmath.sqrt(omr * opr)
        points = [h, mpmath.inf]
        if k / rho > h:  # where the inner probability switches (a step of width r)
            points[1:1] = sorted({max(h, k / rho - 10 * r), k / rho, k / rho + 10 * r} - {h})
        return float(mpmath.quad(lambda x: mpmath.npdf(x) * mpmath.ncdf((rho * x - k) / r), points))

    cases = []
    for h in (-9.0, -3.0, 0.5, 3.0, 8.0, 10.0):
        for k in (-9.5, 0.0, 3.0, 9.5):
            for sign, gap in ((1, 1e-12), (1, 0.05), (1, 0.3), (1, 0.9), (-1, 0.4), (-1, 0.075), (-1, 1e-8)):
                cases.append((h, k, (gap, 2.0 - gap) if sign > 0 else (2.0 - gap, gap)))
    h, k = np.array([c[0] for c in cases]), np.array([c[1] for c in cases])
    omr, opr = np.array([c[2][0] for c in cases]), np.array([c[2][1] for c in cases])
    rho = 0.5 * (opr - omr)
    P = bivariate_normal_upper(h, k, rho, omr, opr)
    expected = np.array([reference(*c[:2], *c[2]) for c in cases])
    scale = np.minimum(normal_cdf(-h), normal_cdf(-k))
    assert np.max(np.abs(P - expected)) <= 2e-16
    assert np.all(np.abs(P - expected) <= 1e-13 * scale), np.max(np.abs(P - expected) / scale)
    # The compiled scalar function: the same algorithm, operation by operation. Last-bit differences of
    # exp, erfc, sin, asin are amplified in the far tails by the cancellation among the terms of the
    # asymptotic expansion (coefficients ~ h k / 8): measured 17 eps of the scale at h = 10, k = 9.5; 64 eps.
    P_nb = np.array(
        [
            gaussian_numba.bivariate_normal_upper(*c, gaussian.GL_HALF_NODES, gaussian.GL_WEIGHTS)
            for c in zip(h, k, rho, omr, opr)
        ]
    )
    assert np.all(np.abs(P_nb - P) <= 64 * EPS * scale)


def test_bivariate_normal_against_owens_t():
    """Owen's formula with ``scipy.special.owens_t``: ``P(X < a, Y < b) = (Phi(a) + Phi(b)) / 2 - T(a, (b - rho a) /
    (a r)) - T(b, (a - rho b) / (b r)) - [a b < 0] / 2``, an independent algorithm (Patefield-Tandy), absolute
    accuracy ~1e-16: the two agree to 1e-15 on random thresholds and correlations."""
    rng = np.random.default_rng(3)
    h, k = rng.uniform(-6, 6, 2000), rng.uniform(-6, 6, 2000)
    rho = np.concatenate(
        [rng.uniform(-0.999, 0.999, 1500), rng.choice([-1, 1], 500) * (1 - 10.0 ** rng.uniform(-6, -1, 500))]
    )
    a, b = -h, -k  # P(X > h, Y > k) = P(X < -h, Y < -k)
    r = np.sqrt((1 - rho) * (1 + rho))
    owen = (
        0.5 * (normal_cdf(a) + normal_cdf(b))
        - owens_t(a, (b - rho * a) / (a * r))
        - owens_t(b, (a - rho * b) / (b * r))
        - 0.5 * (a * b < 0)
    )
    assert np.max(np.abs(bivariate_normal_upper(h, k, rho) - owen)) <= 1e-15


def test_target_construction_and_evaluation():
    rng = np.random.default_rng(8)
    d, k = 3, 2
    Q, A, c0 = rng.normal(size=(k, d, d)), rng.normal(size=(k, d)), rng.normal(size=k)
    TW, Tb, TV = rng.normal(size=(4, d)), rng.normal(size=4), rng.normal(size=(k, 4))
    target = GaussianTarget.from_pieces(d, k, quadratic=Q, linear=A, constant=c0, teacher=(TW, Tb, TV))
    assert (target.input_dim, target.output_dim, target.teacher_width) == (d, k, 4)
    assert np.array_equal(target.Q, 0.5 * (Q + np.swapaxes(Q, 1, 2)))  # the symmetric part
    x = rng.normal(size=(50, d))
    expected = np.einsum("pi,mij,pj->pm", x, Q, x) + x @ A.T + c0 + np.maximum(x @ TW.T + Tb, 0.0) @ TV.T
    assert np.allclose(evaluate_target(target, x), expected, rtol=1e-13, atol=1e-13)
    # rows are evaluated independently of each other
    assert evaluate_target(target, x[7:8]).tobytes() == evaluate_target(target, x)[7:8].tobytes()
    affine = GaussianTarget.from_pieces(2, linear=[1.0, -2.0], constant=0.5)  # k = 1 shorthands
    assert affine.teacher_width == 0 and np.all(affine.Q == 0.0)
    assert np.allclose(evaluate_target(affine, [[1.0, 1.0]]), [[-0.5]])
    with pytest.raises(ValueError, match="teacher.TW"):
        GaussianTarget.from_pieces(2, teacher=(np.ones((3, 3)), np.ones(3), np.ones(3)))
    with pytest.raises(ValueError, match="target.TV"):
        GaussianTarget.from_pieces(2, 2, teacher=(np.ones((3, 2)), np.ones(3), np.ones((1, 3))))
    with pytest.raises(ValueError, match="linear"):
        GaussianTarget.from_pieces(2, 2, linear=np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        GaussianTarget.from_pieces(2, constant=np.nan)


def test_bad_input_raises_value_error_naming_it():
    d, H, k = 2, 3, 1
    target = GaussianTarget.from_pieces(d, k, linear=[1.0, 0.0])
    theta = np.zeros(d * H + H + k * H + k)
    mean, cov = np.zeros(d), np.eye(d)
    for path in PATHS.values():
        for args, match in (
            ((theta[:-1], d, H, k, mean, cov, target), "theta"),
            ((np.full_like(theta, np.inf), d, H, k, mean, cov, target), "theta"),
            ((theta, d, 0, k, mean, cov, target), "H"),
            ((theta, d, H, k, np.zeros(3), cov, target), "mean"),
            ((theta, d, H, k, mean, np.array([[1.0, 2.0], [2.0, 1.0]]), target), "cov: not positive definite"),
            ((theta, d, H, k, mean, np.array([[1.0, 0.5], [0.0, 1.0]]), target), "cov: must be symmetric"),
            ((theta, d, H, k, mean, cov, "affine"), "target"),
            ((theta, d, H, 2, mean, cov, target), "target"),
        ):
            with pytest.raises(ValueError, match=match):
                path.risk_and_gradient(*args)
