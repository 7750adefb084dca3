"""The exact d = 2 risk, generalized gradient and Jacobian (``reluflow.kernels.exact2d``, ``exact2d_numba``).

What is checked, and against what (nothing here uses the kernels' arrangement, clipping or quadrature):

- ``L`` and ``G`` against adaptive two-dimensional quadrature of the defining formulas (MATH.md section 2):
  ``scipy.integrate.quad_vec`` in ``x`` with the breakpoints of the outer integrand (vertices of the lines,
  lines meeting ``y = a, b``) passed as ``points=``, and in ``y`` an adaptive bisection Gauss-Legendre
  started on the pieces between the lines (the breakpoints at that ``x``), to relative 1e-11, with
  parameters containing every degenerate configuration (``special_theta``) and random ones; uniform and
  non-uniform densities; polynomial, teacher and sine targets; one and two outputs;
- ``G`` as the limit of exact gradients of smoothed risks (relu -> shifted softplus), the d = 2 version of
  ``test_smoothing_limit.py``;
- ``J`` against central differences of ``G`` at generic points, the one-sided convention at a line along an
  edge (one-sided differences on both sides, the jump against ``quad`` along the edge), exact identities;
- numba == numpy to a few ulps of the natural scale; bitwise batch independence;
- the exact uniform risk against the ``qmc`` discrete measure: the fitted convergence rate of the RMS
  error over scramblings, and unbiasedness.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
import pytest
from numpy.polynomial.polynomial import polyval2d
from scipy.integrate import quad, quad_vec
from scipy.special import expit

from reluflow.kernels import discrete, exact2d, exact2d_numba
from reluflow.kernels.exact2d import PlanarProblemData
from reluflow.model.measures import discrete_measure

EPS = np.finfo(float).eps
RG = {"numpy": exact2d.risk_and_gradient, "numba": exact2d_numba.risk_and_gradient}
JAC = {"numpy": exact2d.gradient_jacobian, "numba": exact2d_numba.gradient_jacobian}


def n_params(H, k):
    return 3 * H + k * H + k


def unpack(theta, H, k):
    return (theta[: 2 * H].reshape(H, 2), theta[2 * H : 3 * H], theta[3 * H : 3 * H + k * H].reshape(k, H),
            theta[3 * H + k * H :])  # fmt: skip


# ---- problems -----------------------------------------------------------------------------------------


def problem(name: str) -> PlanarProblemData:
    """Three problems: polynomial target under the uniform law on [0, 1]^2 (k = 1); polynomial + teacher
    under a quadratic density on [-1, 2]^2 (k = 1); polynomial + teacher + sines, two outputs, same density."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    density = np.array([[0.2, 0.05, 0.0], [0.1, 0.06, 0.0], [0.02, 0.0, 0.0]])  # positive on [-1, 2]^2
    if name == "poly-uniform":
        return PlanarProblemData.with_uniform_density((0.0, 1.0), rng.normal(size=(1, 3, 3)))
    teacher = {"teacher_W": [[1.25, -0.75], [0.5, 1.0]], "teacher_b": [0.25, -0.5]}
    if name == "teacher-quadratic":
        return PlanarProblemData((-1.0, 2.0), density, rng.normal(size=(1, 2, 2)), teacher_V=[[1.5, -2.0]], **teacher)
    if name == "k2-teacher,sine-quadratic":
        # sine error bound (exact2d docstring): cells of diameter <= 3 sqrt 2, |omega| <= 2 |freq| = 2.1:
        # (2.1 * 4.3)^(2n - 2) / (2n - 2)! < 1e-17 for n = 28
        return PlanarProblemData((-1.0, 2.0), density, rng.normal(size=(2, 2, 2)), teacher_V=[[1.5, -2.0], [0.5, 1.0]],
                                 sine_freq=[[0.75, -0.5], [0.25, 1.0]], sine_phase=[0.3, -1.1],
                                 sine_amp=[[0.8, -0.4], [0.3, 0.6]], sine_order=28, **teacher)  # fmt: skip
    raise KeyError(name)


PROBLEMS = ["poly-uniform", "teacher-quadratic", "k2-teacher,sine-quadratic"]
SPECIAL_H = 12


def special_theta(data: PlanarProblemData, rng) -> np.ndarray:
    """``SPECIAL_H = 12`` neurons in every degenerate configuration (dyadic numbers: the lines are exact):
    0, 1: through the corners (a, a), (b, a), 1 parallel to 7; 2: along the edge x = b, active inside; 3: along the edge
    y = a, active outside (never active); 4: outside the square, active everywhere; 5: w = 0 < b; 6: w = b = 0
    (dead); 7: generic; 8: the line of 7 (same orientation); 9: the line of 7 (opposite orientation);
    10: the diagonal through (a, b) and (b, a); 11: the line of the problem's first teacher neuron if it has
    one (then coinciding with a teacher line), else generic."""
    a, b = data.domain
    k = data.output_dim
    H = SPECIAL_H

    def dyadic(size=None):
        value = rng.integers(4, 13, size=size) / 8.0
        return value * rng.choice([-1.0, 1.0], size=size)

    W = np.zeros((H, 2))
    bias = np.zeros(H)
    point = a + (b - a) * rng.integers(2, 7, size=2) / 8.0
    W[7] = dyadic(2)
    bias[7] = -(W[7] @ point)
    W[0], W[1] = dyadic(2), 0.5 * W[7]
    for i, (cx, cy) in enumerate([(a, a), (b, a)]):
        bias[i] = -(W[i, 0] * cx + W[i, 1] * cy)
    s = abs(dyadic())
    W[2], bias[2] = (-s, 0.0), s * b
    W[3], bias[3] = (0.0, -s), s * a
    W[4] = (s, 0.5 * s)
    bias[4] = -(W[4, 0] * (a - 0.5 * (b - a)) + W[4, 1] * a)  # zero at x = a - (b - a) / 2, y = a: outside, w > 0
    W[5], bias[5] = (0.0, 0.0), 0.75
    W[6], bias[6] = (0.0, 0.0), 0.0
    W[8], bias[8] = 2.0 * W[7], 2.0 * bias[7]
    W[9], bias[9] = -0.5 * W[7], -0.5 * bias[7]
    W[10] = s * np.array([1.0, 1.0]) * rng.choice([-1.0, 1.0])
    bias[10] = -W[10, 0] * (a + b)
    if data.n_teacher:
        W[11], bias[11] = 0.5 * data.teacher_W[0], 0.5 * data.teacher_b[0]
    else:
        W[11], bias[11] = dyadic(2), dyadic()
    V = rng.normal(size=(k, H))
    c = rng.normal(size=k)
    return np.concatenate([W.ravel(), bias, V.ravel(), c])


def random_theta(data: PlanarProblemData, H: int, rng, size=None) -> np.ndarray:
    """Generic parameters: lines through a uniform point of the square with a uniform direction, ``|w|``
    in [0.5, 2]; ``V``, ``c`` standard normal."""
    a, b = data.domain
    k = data.output_dim
    shape = () if size is None else (size,)
    angle = rng.uniform(0.0, 2.0 * np.pi, shape + (H,))
    radius = rng.uniform(0.5, 2.0, shape + (H,))
    W = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    point = rng.uniform(a, b, shape + (H, 2))
    bias = -np.sum(W * point, axis=-1)
    rest = rng.normal(size=shape + (k * H + k,))
    return np.concatenate([W.reshape(shape + (2 * H,)), bias, rest], axis=-1)


# ---- independent pointwise formulas ---------------------------------------------------------------------


def target(data: PlanarProblemData, x, y) -> np.ndarray:
    """``f`` at points (``x, y`` of shape ``(P,)``): ``polyval2d``, the teacher by matrix products, sines."""
    f = np.stack([polyval2d(x, y, data.target_poly[m]) for m in range(data.output_dim)], axis=-1)
    if data.n_teacher:
        f = f + np.maximum(np.outer(x, data.teacher_W[:, 0]) + np.outer(y, data.teacher_W[:, 1]) + data.teacher_b, 0.0) @ data.teacher_V.T
    for s in range(data.n_sines):
        f = f + np.outer(np.sin(data.sine_freq[s, 0] * x + data.sine_freq[s, 1] * y + data.sine_phase[s]), data.sine_amp[s])
    return f


def density(data: PlanarProblemData, x, y) -> np.ndarray:
    return polyval2d(x, y, data.density)


def all_lines(data, W, bias):
    lines = [(W[i, 0], W[i, 1], bias[i]) for i in range(len(bias))]
    return lines + [(data.teacher_W[l, 0], data.teacher_W[l, 1], data.teacher_b[l]) for l in range(data.n_teacher)]


def outer_breakpoints(lines, a, b) -> list[float]:
    """Where ``x -> int g(x, y) dy`` may be non-smooth: lines meeting ``y = a`` or ``y = b``, and the
    intersections of two lines inside the square."""
    points = set()
    for w0, w1, c in lines:
        if w0 != 0:
            points.update(x for x in (-(c + w1 * a) / w0, -(c + w1 * b) / w0) if a < x < b)
    for p in range(len(lines)):
        for q in range(p + 1, len(lines)):
            (a0, a1, ac), (b0, b1, bc) = lines[p], lines[q]
            det = a0 * b1 - a1 * b0
            if det != 0:
                x, y = (a1 * bc - ac * b1) / det, (ac * b0 - a0 * bc) / det
                if a < x < b and a <= y <= b:
                    points.add(x)
    return sorted(points)


GL20 = np.polynomial.legendre.leggauss(20)


def adaptive_gauss(f, breaks, atol_per_length):
    """``int f`` over ``[breaks[0], breaks[-1]]`` for ``f(y (P,)) -> (P, 2 C)``: ``C`` components followed by
    ``C`` bounds of their absolute rounding errors (an integrand such as ``(|N| + |f|)^2 p`` for ``|r|^2 p``).
    On each interval, 20-point Gauss-Legendre on it and on its two halves; accepted (the halves' sum) when
    they agree within ``atol_per_length * length`` plus the rounding level ``100 eps int bound`` of the
    interval, for every component, else bisected. Started on the pieces between breakpoints, polynomial
    pieces are accepted at once; sines are refined. Returns the ``C`` integrals."""
    nodes, weights = GL20
    lo, hi = np.asarray(breaks[:-1], float), np.asarray(breaks[1:], float)
    lo, hi = lo[hi > lo], hi[hi > lo]
    total = 0.0
    for _ in range(50):
        if lo.size == 0:
            return total
        if lo.size > 10_000:
            break
        mid = 0.5 * (lo + hi)
        left, right = np.concatenate([lo, lo, mid]), np.concatenate([hi, mid, hi])
        half = 0.5 * (right - left)
        values = f((0.5 * (left + right)[:, None] + half[:, None] * nodes).ravel()).reshape(left.size, nodes.size, -1)
        integrals = np.einsum("ipc,p->ic", values, weights) * half[:, None]
        C = integrals.shape[1] // 2
        n = lo.size
        whole, halves = integrals[:n, :C], integrals[n : 2 * n, :C] + integrals[2 * n :, :C]
        allowed = atol_per_length * (hi - lo)[:, None] + 100 * EPS * integrals[:n, C:]
        ok = np.all(np.abs(whole - halves) <= allowed, axis=1)
        total = total + np.sum(halves[ok], axis=0)
        lo, hi = np.concatenate([lo[~ok], mid[~ok]]), np.concatenate([mid[~ok], hi[~ok]])
    raise RuntimeError("adaptive_gauss did not converge")


def reference(data: PlanarProblemData, theta: np.ndarray, H: int, epsrel: float = 1e-13):
    """``L``, ``G`` and per-component error scales of the defining formulas by nested adaptive quadrature.

    Integrand (a vector): ``|r|^2 p`` and the ``G`` integrands of MATH.md section 2 with the strict
    indicator ``z > 0``, then bounds of their rounding errors: ``(|N| + |f|)^2 p`` and the ``G`` integrands
    with every factor replaced by its absolute value and ``r`` by ``|N| + |f|`` (the scales: a floating-point
    evaluation of a component errs by a few ulps of its scale). Every component is first sized by a 64 x 64
    tensor Gauss rule (the integral of its absolute value, to a few percent; for the bounds, that is the
    returned scale); the inner integrals are accurate to ``0.1 epsrel`` of the size per unit area (or to
    their rounding level), and the outer ``quad_vec`` (max norm over components normalized by their sizes)
    to ``epsrel``: each returned component is accurate to ~``epsrel`` times its size.
    """
    k = data.output_dim
    a, b = data.domain
    W, bias, V, c = unpack(theta, H, k)
    lines = all_lines(data, W, bias)
    n = theta.size

    def integrand(y, x):
        x = np.full_like(y, x)
        z = np.outer(x, W[:, 0]) + np.outer(y, W[:, 1]) + bias  # (P, H)
        relu = np.maximum(z, 0.0)
        N = c + relu @ V.T
        f = target(data, x, y)
        r, s = N - f, np.abs(N) + np.abs(f)
        active = (z > 0.0).astype(float)  # strict: relu'(0) = 0
        vr, vs = active * (r @ V), active * (s @ np.abs(V))
        P = y.size
        out = np.empty((P, 2 * n + 2))
        out[:, 0] = np.sum(r * r, axis=1)
        out[:, n + 1] = np.sum(s * s, axis=1)
        g, scale = out[:, 1 : n + 1], out[:, n + 2 :]
        g[:, 0 : 2 * H : 2], g[:, 1 : 2 * H : 2], g[:, 2 * H : 3 * H] = 2 * x[:, None] * vr, 2 * y[:, None] * vr, 2 * vr
        g[:, 3 * H : 3 * H + k * H] = 2 * (relu[:, None, :] * r[:, :, None]).reshape(P, k * H)
        g[:, 3 * H + k * H :] = 2 * r
        scale[:, 0 : 2 * H : 2], scale[:, 1 : 2 * H : 2] = 2 * np.abs(x)[:, None] * vs, 2 * np.abs(y)[:, None] * vs
        scale[:, 2 * H : 3 * H] = 2 * vs
        magnitude = active * (np.abs(np.outer(x, W[:, 0])) + np.abs(np.outer(y, W[:, 1])) + np.abs(bias))
        scale[:, 3 * H : 3 * H + k * H] = 2 * (magnitude[:, None, :] * s[:, :, None]).reshape(P, k * H)
        scale[:, 3 * H + k * H :] = 2 * s
        return out * density(data, x, y)[:, None]

    t, wt = np.polynomial.legendre.leggauss(64)
    grid = 0.5 * (a + b) + 0.5 * (b - a) * t
    size = sum(w * (np.abs(integrand(grid, x)).T @ wt) for x, w in zip(grid, wt)) * (0.5 * (b - a)) ** 2
    size = np.where(size > 0, size, 1.0)  # components that vanish identically (dead neurons)
    atol = 0.1 * epsrel * size[: n + 1] / (b - a) ** 2

    def inner(x):
        points = sorted(t for t in {-(c0 + w0 * x) / w1 for w0, w1, c0 in lines if w1 != 0} if a < t < b)
        return adaptive_gauss(lambda y: integrand(y, x), [a, *points, b], atol) / size[: n + 1]

    value = quad_vec(inner, a, b, epsabs=epsrel, epsrel=0.0, norm="max", points=outer_breakpoints(lines, a, b) or None,
                     limit=5000)[0] * size[: n + 1]  # fmt: skip
    return value[0], value[1:], size[n + 2 :]


# ---- smoothed risks --------------------------------------------------------------------------------------


def shifted_softplus(z, r):
    """``R_r(z) = r^-1 log(1 + r^-1 exp(r z))``, ``R_r'(z) = 1 / (1 + r exp(-r z))`` and the center
    ``log(r) / r`` of the transition. ``R_r -> relu`` and ``R_r' -> 1_(0, inf)`` pointwise including at 0
    (``R_r'(0) = 1 / (1 + r)``): the strict convention of G (``test_smoothing_limit.py``)."""
    t = r * z - math.log(r)
    return np.logaddexp(0.0, t) / r, expit(t), math.log(r) / r


def plain_softplus(z, r):
    """``log(1 + exp(r z)) / r``, its derivative (1/2 at 0) and the center 0."""
    t = r * z
    return np.logaddexp(0.0, t) / r, expit(t), 0.0


def _graded_offsets(width: float, span: float) -> np.ndarray:
    """``0`` and ``+- width 2^j`` up to ``span``: around a center, a mesh on which a function that varies on the
    scale ``width`` there (and is analytic elsewhere) is resolved by a Gauss rule per cell."""
    steps = width * 2.0 ** np.arange(max(1, math.ceil(math.log2(span / width)) + 1))
    return np.concatenate([-steps[::-1], [0.0], steps])


def smoothed_gradient(data, theta, H, r, activation=shifted_softplus, nodes=8):
    """Exact gradient of ``L_r(theta) = int |c + V R_r(W x + b) - f|^2 p``, differentiated under the integral
    (``dN/dW[i, j] = V_i R_r'(z_i) x_j``, ``dN/db_i = V_i R_r'(z_i)``, ``dN/dV[m, i] = R_r(z_i) e_m``) and
    integrated by nested Gauss-Legendre, ``nodes`` points per cell.

    Inner (``y``) mesh at each ``x``: graded around the transition ``z_j = center`` of every neuron (width
    ``1 / (r |w_j1|)``), plus the teacher's kinks. Outer (``x``) mesh: graded around transitions with
    ``w_j1 = 0`` (vertical layers, width ``1 / (r |w_j0|)``), cut at the outer breakpoints of the transition
    and teacher lines, cells at most ``(b - a) / 8`` long. Where two layers cross, or a layer meets
    ``y = a, b``, the inner integral varies on the scale ``1 / r`` over an amplitude ``O(1 / r)``: left
    unresolved, that costs ``O(r^-2)``, far below the ``O(log(r) / r)`` being measured.
    """
    k = data.output_dim
    a, b = data.domain
    W, bias, V, c = unpack(theta, H, k)
    center = activation(np.zeros(1), r)[2]
    moving = np.flatnonzero(W[:, 1] != 0)  # transitions z_i = center crossing the verticals x = const
    vertical = np.flatnonzero((W[:, 1] == 0) & (W[:, 0] != 0))
    transitions = [(W[i, 0], W[i, 1], bias[i] - center) for i in np.concatenate([moving, vertical])]
    teacher = [(data.teacher_W[l, 0], data.teacher_W[l, 1], data.teacher_b[l]) for l in range(data.n_teacher)]
    mesh_x = [np.linspace(a, b, 9), outer_breakpoints(transitions + teacher, a, b)]
    for i in vertical:
        mesh_x.append((center - bias[i]) / W[i, 0] + _graded_offsets(1.0 / (r * abs(W[i, 0])), b - a))
    mesh_x = np.unique(np.clip(np.concatenate(mesh_x), a, b))
    t, wt = np.polynomial.legendre.leggauss(nodes)
    xs = (0.5 * (mesh_x[1:] + mesh_x[:-1])[:, None] + 0.5 * (mesh_x[1:] - mesh_x[:-1])[:, None] * t).ravel()
    wxs = (0.5 * (mesh_x[1:] - mesh_x[:-1])[:, None] * wt).ravel()

    # inner meshes for all x at once: graded points around each moving transition, teacher kinks, a, b
    offsets = [_graded_offsets(1.0 / (r * abs(W[i, 1])), b - a) for i in moving]
    columns = [((center - bias[i]) - W[i, 0] * xs)[:, None] / W[i, 1] + off for i, off in zip(moving, offsets)]
    columns += [(-(tb + tw[0] * xs) / tw[1])[:, None] for tw, tb in zip(data.teacher_W, data.teacher_b) if tw[1] != 0]
    mesh_y = np.sort(np.clip(np.concatenate([np.full((xs.size, 1), a), np.full((xs.size, 1), b), *columns], axis=1), a, b), axis=1)
    G = np.zeros(theta.size)
    for rows in np.array_split(np.arange(xs.size), max(1, mesh_y.size * nodes // 200_000)):
        lo, hi = mesh_y[rows, :-1], mesh_y[rows, 1:]  # zero-length cells (clipped points) contribute nothing
        y = (0.5 * (lo + hi)[..., None] + 0.5 * (hi - lo)[..., None] * t).ravel()
        x = np.repeat(xs[rows], lo.shape[1] * nodes)
        weight = (wxs[rows, None, None] * 0.5 * (hi - lo)[..., None] * wt).ravel() * density(data, x, y)
        z = np.outer(x, W[:, 0]) + np.outer(y, W[:, 1]) + bias
        R, dR, _ = activation(z, r)
        residual = c + R @ V.T - target(data, x, y)
        back = dR * (residual @ V)  # R_r'(z_i) V_i . r
        G[0 : 2 * H : 2] += 2 * (weight * x) @ back
        G[1 : 2 * H : 2] += 2 * (weight * y) @ back
        G[2 * H : 3 * H] += 2 * weight @ back
        G[3 * H : 3 * H + k * H] += (2 * np.einsum("p,pi,pm->mi", weight, R, residual)).ravel()
        G[3 * H + k * H :] += 2 * weight @ residual
    return G


# ---- risk and G against adaptive quadrature --------------------------------------------------------------


def _case(name, params):
    data = problem(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{params}".encode()))
    if params == "special":
        return data, SPECIAL_H, special_theta(data, rng)
    return data, 6, random_theta(data, 6, rng)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("params", ["special", "random"])
def test_risk_and_gradient_match_adaptive_quadrature(name, params):
    data, H, theta = _case(name, params)
    risk_ref, grad_ref, scale = reference(data, theta, H)
    assert risk_ref > 0 and np.max(np.abs(grad_ref)) > 0.1  # a non-trivial configuration
    for path, fn in RG.items():
        risk, grad = fn(theta, H, data.output_dim, data)
        # Requirement: relative 1e-11. The reference is accurate to ~1e-13 of each component's size
        # (``reference``); measured errors are 1e-16 .. 3e-15. L integrates a nonnegative function, so its
        # relative error is meaningful as is.
        assert abs(risk - risk_ref) <= 1e-11 * risk_ref, (path, risk, risk_ref)
        # Each G component relative to its scale (the accuracy any floating-point evaluation can have) and
        # to max |G|; dead neurons have exactly zero components (their scale is the placeholder 1).
        err = np.abs(grad - grad_ref)
        assert np.all(err <= 1e-11 * scale), (path, np.max(err / scale))
        assert np.max(err) <= 1e-11 * np.max(np.abs(grad_ref)), path
    if params == "special":  # the never-active neurons 3 and 6: exactly zero W, b and V components
        dead = [6, 7, 2 * H + 3, 2 * H + 6] + [3 * H + m * H + i for m in range(data.output_dim) for i in (3, 6)]
        assert np.all(grad[dead] == 0.0)


# ---- G is the limit of smoothed gradients ---------------------------------------------------------------


def test_generalized_gradient_is_the_limit_of_smoothed_gradients():
    """The d = 2 version of ``test_smoothing_limit.py``: every degenerate configuration of ``special_theta``
    (corners, edges, outside, w = 0, w = b = 0, identical and opposite lines, a line on a teacher line),
    two outputs, teacher and sine target, quadratic density."""
    data = problem("k2-teacher,sine-quadratic")
    H = SPECIAL_H
    theta = special_theta(data, np.random.default_rng(1))
    G = exact2d_numba.risk_and_gradient(theta, H, data.output_dim, data)[1]
    size = np.max(np.abs(G))
    r_values = np.array([1e2, 1e3, 1e4])
    errors = np.array([np.max(np.abs(smoothed_gradient(data, theta, H, r) - G)) / size for r in r_values])
    # The reference is converged: 12 instead of 8 nodes per cell changes it by 1e-13 |G| at r = 1e4 (measured
    # when this test was written, with the fully graded outer mesh agreeing to 4 digits).
    # |R_r - relu| <= log(r) / r and R_r' differs from the indicator in a layer of width ~log(r) / (r |w|)
    # along each line: |G_r - G| = O(log(r) / r), a factor 10 ln(r) / ln(10 r) = 6.7 .. 7.5 per decade here
    # (measured 6.4 and 7.5). Require 4 per decade ...
    assert np.all(errors[1:] <= errors[:-1] / 4), errors
    # ... a constant in |G_r - G| <= C |G| log(r) / r that does not grow (measured 0.72 .. 0.76) ...
    C = errors * r_values / np.log(r_values)
    assert np.max(C) <= 2 * np.min(C), C
    # ... and a small error at r = 1e4 (measured 7e-4; log(1e4) / 1e4 = 9e-4).
    assert errors[-1] <= 2e-3, errors


def test_plain_softplus_converges_to_another_value_where_a_preactivation_vanishes():
    """With ``R_r'(0) = 1/2`` the neuron with ``w = b = 0`` counts as half active in the limit: its ``W, b``
    components tend to half of those of the same neuron active everywhere, while ``G`` (and the shifted
    softplus) give 0."""
    data = problem("teacher-quadratic")
    H = SPECIAL_H
    theta = special_theta(data, np.random.default_rng(1))
    dead = 6
    assert theta[2 * dead] == theta[2 * dead + 1] == theta[2 * H + dead] == 0.0
    rows = [2 * dead, 2 * dead + 1, 2 * H + dead]
    G = exact2d.risk_and_gradient(theta, H, 1, data)[1]
    assert np.all(G[rows] == 0.0)
    active = theta.copy()
    active[2 * H + dead] = 1e-300  # active everywhere; its contribution V b to N is below rounding
    expected = 0.5 * exact2d.risk_and_gradient(active, H, 1, data)[1][rows]
    r = 1e4
    plain = smoothed_gradient(data, theta, H, r, activation=plain_softplus)[rows]
    shifted = smoothed_gradient(data, theta, H, r)[rows]
    size = np.max(np.abs(G))
    assert np.max(np.abs(expected)) >= 1e-2 * size  # clearly not 0 (measured 9e-2) ...
    # smoothing error at r = 1e4: below 2e-3 |G| (previous test; measured 8e-7 and 2e-5 here)
    assert np.max(np.abs(plain - expected)) <= 2e-3 * size
    assert np.max(np.abs(shifted)) <= 2e-3 * size  # ... while R_r gives relu'(0) = 0


# ---- the Jacobian ------------------------------------------------------------------------------------------


def fd_jacobian(theta, H, data, h_rel=1e-6, columns=None):
    """Central differences ``(G(theta + h e_s) - G(theta - h e_s)) / 2 h``, ``h = h_rel max(1, |theta_s|)``,
    for the columns ``s`` (all by default); ``J[r, s] = dG_r / dtheta_s``."""
    n = theta.size
    columns = np.arange(n) if columns is None else np.asarray(columns)
    h = h_rel * np.maximum(1.0, np.abs(theta[columns]))
    steps = np.zeros((columns.size, n))
    steps[np.arange(columns.size), columns] = h
    G = exact2d_numba.risk_and_gradient(np.concatenate([theta + steps, theta - steps]), H, data.output_dim, data)[1]
    return ((G[: columns.size] - G[columns.size :]) / (2.0 * h[:, None])).T


@pytest.mark.parametrize("name", PROBLEMS)
def test_jacobian_matches_central_differences_at_generic_points(name):
    data = problem(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()) + 1)
    H = 5
    k = data.output_dim
    theta = random_theta(data, H, rng, size=3)
    for path, fn in JAC.items():
        J = fn(theta, H, k, data)
        assert np.array_equal(J, np.swapaxes(J, 1, 2)), path  # exactly symmetric by construction
        for row in range(len(theta)):
            scale = np.max(np.abs(J[row]))
            # h = 1e-6 (relative): truncation h^2 |G'''| / 6 ~ 1e-12 and rounding ~ eps |G| / h ~ 1e-10
            # relative to max |J|; measured <= 2e-9. At generic points no line crosses a vertex, a corner
            # or another line's intersection with the boundary within +-h, so J is smooth on the stencil.
            # 1e-7 leaves a 50x margin; a missing term is O(1e-2) or more (next assertion).
            assert np.max(np.abs(fd_jacobian(theta[row], H, data) - J[row])) <= 1e-7 * scale, (path, row)
    # the line terms are material here: omitting them would fail the comparison above by far
    Lam = exact2d._line_terms(theta, H, k, data)
    assert np.max(np.abs(Lam)) >= 1e-2 * np.max(np.abs(J))


def test_jacobian_at_degenerate_points_where_G_is_differentiable():
    """Columns of the parameters of the neurons whose lines pass through corners, coincide with each other
    or with a teacher line, are the diagonal, lie outside or have ``w = 0 < b``: ``G`` is differentiable in
    those directions and ``J`` continuous, though only Lipschitz where lines coincide (``T(i, j)`` over the
    smaller of two half-planes): central differences err by ``O(h)`` there."""
    data = problem("k2-teacher,sine-quadratic")
    H, k = SPECIAL_H, data.output_dim
    theta = special_theta(data, np.random.default_rng(3))
    neurons = [0, 1, 4, 5, 7, 8, 9, 10, 11]
    columns = [col for i in neurons for col in (2 * i, 2 * i + 1, 2 * H + i)]
    columns += [3 * H + m * H + i for m in range(k) for i in range(H)] + [3 * H + k * H + m for m in range(k)]
    J = exact2d.gradient_jacobian(theta, H, k, data)
    fd = fd_jacobian(theta, H, data, columns=columns)
    # J has kinks at coinciding lines: the central difference errs by ~h |J'| / 2 ~ 1e-6 max |J| (measured
    # 1e-7); 1e-5 leaves a 100x margin and is still far below a missing or wrong term (>= 1e-2).
    assert np.max(np.abs(fd - J[:, columns])) <= 1e-5 * np.max(np.abs(J))


def edge_line_term(data, theta, H, i):
    """``int 2 (V_i . r) p xt ds / |w_i|`` along the edge ``x = a`` (neuron ``i``'s line): ``scipy.integrate.quad``
    of the network, target and density evaluated pointwise, breakpoints where other lines cross the edge."""
    a, b = data.domain
    k = data.output_dim
    W, bias, V, c = unpack(theta, H, k)
    lines = all_lines(data, W, bias)
    points = sorted(y for w0, w1, c0 in lines if w1 != 0 for y in [-(c0 + w0 * a) / w1] if a < y < b)

    def integrand(y, component):
        x, yy = np.array([a]), np.array([y])
        z = W[:, 0] * a + W[:, 1] * y + bias
        z[i] = 0.0  # on the line
        r = c + V @ np.maximum(z, 0.0) - target(data, x, yy)[0]
        return 2 * (V[:, i] @ r) * density(data, x, yy)[0] * (a, y, 1.0)[component] / np.hypot(*W[i])

    return np.array([quad(integrand, a, b, args=(comp,), points=points or None, epsabs=0, epsrel=1e-13, limit=200)[0]
                     for comp in range(3)])  # fmt: skip


@pytest.mark.parametrize("path", list(JAC))
def test_one_sided_convention_at_a_line_along_an_edge(path):
    """Neuron 0's line is the edge ``x = a``, active inside: ``G`` is not differentiable in ``b_0``. ``J`` is
    the derivative from the side where the line leaves the square (no line term); from the other side the
    derivative has the line term along the edge, which jumps in the ``u_0`` rows only."""
    data = problem("k2-teacher,sine-quadratic")
    a = data.domain[0]
    k = data.output_dim
    H = 4
    theta = random_theta(data, H, np.random.default_rng(5))
    theta[0:2], theta[2 * H] = (1.25, 0.0), -1.25 * a  # z_0 = 1.25 (x - a)
    J = JAC[path](theta, H, k, data)
    col = 2 * H
    h = 1e-5
    steps = np.outer([0.0, 1.0, 2.0, -1.0, -2.0], np.eye(theta.size)[col]) * h
    G = exact2d_numba.risk_and_gradient(theta + steps, H, k, data)[1]
    forward = (-3 * G[0] + 4 * G[1] - G[2]) / (2 * h)  # b_0 up: the line leaves the square
    backward = (3 * G[0] - 4 * G[3] + G[4]) / (2 * h)  # b_0 down: the line enters it
    scale = np.max(np.abs(J))
    # second-order one-sided differences on the smooth side: error ~h^2 |G'''| + eps |G| / h ~ 1e-10 max |J|
    # (measured 3e-10); 1e-7 as for the central differences
    assert np.max(np.abs(forward - J[:, col])) <= 1e-7 * scale
    jump = np.zeros_like(forward)
    jump[[0, 1, 2 * H]] = edge_line_term(data, theta, H, 0)
    assert np.max(np.abs(jump)) >= 1e-2 * scale  # the convention matters here
    assert np.max(np.abs(backward - J[:, col] - jump)) <= 1e-7 * scale


@pytest.mark.parametrize("params", ["special", "random"])
def test_exact_identities(params):
    """relu is positively homogeneous: ``u_i . G_{u_i} = V_i . G_{V_i}`` (both are ``2 int_{I_i} z_i V_i . r
    p``), and ``L`` is invariant under ``(u_i, V_i) -> (u_i / s, s V_i)``; differentiating ``G . zeta_i = 0``,
    ``zeta_i = (-u_i, V_i)``, once more: ``J zeta_i = (G_{u_i}, -G_{V_i})`` on neuron i, 0 elsewhere (no
    differences; the line term drops out since ``xt . u_i = 0`` on the line)."""
    data, H, theta = _case("k2-teacher,sine-quadratic", params)
    k = data.output_dim
    theta = np.atleast_2d(theta)
    if params == "special":  # differentiable there: not the edge lines (2, 3) nor w = b = 0 (6)
        keep = [0, 1, 4, 5, 7, 8, 9, 10, 11]
    else:
        keep = list(range(H))
    risk, G = exact2d.risk_and_gradient(theta, H, k, data)
    J = exact2d.gradient_jacobian(theta, H, k, data)
    W, bias, V, _ = unpack(theta[0], H, k)
    for i in keep:
        u_idx = [2 * i, 2 * i + 1, 2 * H + i]
        v_idx = [3 * H + m * H + i for m in range(k)]
        # both sides: sums of terms bounded by 2 |V_i|_1 |u_i|_1 X sqrt(L int p) (Cauchy-Schwarz): a few eps of it
        X = max(abs(data.domain[0]), abs(data.domain[1]), 1.0)
        bound = 2 * np.abs(V[:, i]).sum() * (np.abs(W[i]).sum() + abs(bias[i])) * X * np.sqrt(risk[0] * 10.0)
        assert abs(theta[0, u_idx] @ G[0, u_idx] - V[:, i] @ G[0, v_idx]) <= 64 * EPS * bound
        zeta = np.zeros(theta.shape[1])
        zeta[u_idx], zeta[v_idx] = -theta[0, u_idx], theta[0, v_idx]
        expected = np.zeros_like(zeta)
        expected[u_idx], expected[v_idx] = G[0, u_idx], -G[0, v_idx]
        # n terms of size max|J| |theta| each with ~1 ulp error: 1e-12 n max|J| |theta| is > 100x that
        tol = 1e-12 * theta.shape[1] * np.max(np.abs(J)) * np.max(np.abs(theta))
        assert np.max(np.abs(J[0] @ zeta - expected)) <= tol, i


# ---- numba == numpy, batch independence ---------------------------------------------------------------


def _batch(data, rng):
    """Special rows (every degenerate configuration) and generic rows, ``H = SPECIAL_H``."""
    special = np.stack([special_theta(data, rng) for _ in range(6)])
    return np.concatenate([special, random_theta(data, SPECIAL_H, rng, size=10)])


def natural_scales(data, theta, H):
    """Per row ``Lambda = |c|_1 + sum_i |V_i|_1 (|w_i|_1 X + |b_i|) + max |f|_1`` (``X = max(|a|, |b|)``), a bound
    of ``|N| + |f|`` on the square, and per ``G`` component ``Lambda`` times the factor multiplying ``r`` in
    its integrand (``2 |V_i|_1 X``, ``2 |V_i|_1``, ``2 (|w_i|_1 X + |b_i|)``, 2) times ``int |p|``. Rounding
    errors of any evaluation are multiples of eps times these bounds."""
    k = data.output_dim
    a, b = data.domain
    X = max(abs(a), abs(b))
    grid = np.linspace(a, b, 101)
    gx, gy = (v.ravel() for v in np.meshgrid(grid, grid))
    F = np.max(np.abs(target(data, gx, gy)).sum(axis=1))
    t, wt = np.polynomial.legendre.leggauss(8)
    nodes = 0.5 * (a + b) + 0.5 * (b - a) * t
    mass = (0.5 * (b - a)) ** 2 * np.sum(np.outer(wt, wt) * np.abs(density(data, *np.meshgrid(nodes, nodes))))
    W = theta[:, : 2 * H].reshape(-1, H, 2)
    bias = theta[:, 2 * H : 3 * H]
    V1 = np.abs(theta[:, 3 * H : 3 * H + k * H].reshape(-1, k, H)).sum(axis=1)
    c1 = np.abs(theta[:, 3 * H + k * H :]).sum(axis=1)
    u1 = np.abs(W).sum(axis=2) * X + np.abs(bias)
    lam = c1 + np.sum(V1 * u1, axis=1) + F
    per_u = np.stack([2 * V1 * X, 2 * V1 * X], axis=2).reshape(-1, 2 * H)
    grad = np.concatenate([per_u, 2 * V1, np.tile(2 * u1, k), np.full((len(theta), k), 2.0)], axis=1)
    return lam, grad * lam[:, None] * mass, mass


@pytest.mark.parametrize("name", PROBLEMS)
def test_numba_equals_numpy_to_a_few_ulps_of_the_natural_scale(name):
    data = problem(name)
    k = data.output_dim
    theta = _batch(data, np.random.default_rng(7))
    H = SPECIAL_H
    risk_np, grad_np = exact2d.risk_and_gradient(theta, H, k, data)
    risk_nb, grad_nb = exact2d_numba.risk_and_gradient(theta, H, k, data)
    lam, grad_scale, mass = natural_scales(data, theta, H)
    # The two paths run the same floating-point operations in the same order; they may differ only through
    # sin (numpy's vectorized implementation vs the C library, a few ulps). Either forms r with an error of a
    # few eps Lambda, so |dL| <= 2 sqrt(L int p) (few eps Lambda) (Cauchy-Schwarz) and |dG_j| <= few eps
    # grad_scale_j. Measured: bitwise equal. 8 eps leaves room while any difference in the cells is O(1).
    assert np.all(np.abs(risk_nb - risk_np) <= 8 * EPS * 2 * lam * np.sqrt(risk_np * mass))
    assert np.all(np.abs(grad_nb - grad_np) <= 8 * EPS * grad_scale)
    J_np = exact2d.gradient_jacobian(theta, H, k, data)
    J_nb = exact2d_numba.gradient_jacobian(theta, H, k, data)
    # every entry of J is a few operations on moments that both paths compute identically (same remark
    # on sin): 8 eps of the row's scale max |J| (measured: bitwise equal)
    assert np.all(np.abs(J_nb - J_np) <= 8 * EPS * np.max(np.abs(J_np), axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("path", list(RG))
def test_rows_are_bitwise_independent_of_the_batch(path):
    # (a lower sine order than the problem's: accuracy is not the point here, and the numpy path is slow
    # with 28^2 nodes per triangle)
    data = dataclasses.replace(problem("k2-teacher,sine-quadratic"), sine_order=6)
    k = data.output_dim
    H = SPECIAL_H
    rng = np.random.default_rng(11)
    theta = _batch(data, rng)
    rg, jac = RG[path], JAC[path]
    risk, grad = rg(theta, H, k, data)
    J = jac(theta[:6], H, k, data)
    for row in (0, 3, 7, len(theta) - 1):  # alone, as a 1-D vector
        r1, g1 = rg(theta[row], H, k, data)
        assert r1.shape == () and g1.shape == theta[row].shape
        assert r1.tobytes() == risk[row].tobytes() and g1.tobytes() == grad[row].tobytes()
    for row in (0, 5):
        assert jac(theta[row], H, k, data).tobytes() == J[row].tobytes()
    perm = rng.permutation(len(theta))
    mixed = np.concatenate([theta[perm], theta[:3]])  # other order, other size, duplicates
    r2, g2 = rg(mixed, H, k, data)
    assert r2[: len(theta)].tobytes() == risk[perm].tobytes()
    assert g2[: len(theta)].tobytes() == grad[perm].tobytes()
    r3, g3 = rg(theta.reshape(2, -1, theta.shape[-1]), H, k, data)  # leading batch shape kept
    assert r3.shape == (2, len(theta) // 2) and g3.shape == (2, len(theta) // 2, theta.shape[-1])
    assert r3.ravel().tobytes() == risk.tobytes()
    J3 = jac(np.concatenate([theta[5:6], theta[:6]]), H, k, data)
    assert J3[1:].tobytes() == J.tobytes() and J3[0].tobytes() == J[5].tobytes()


# ---- against the qmc discrete measure ------------------------------------------------------------------


def test_qmc_risk_converges_to_the_exact_risk_at_the_scrambled_net_rate():
    """The ``qmc`` measure (scrambled Sobol', equal weights) with ``N = 2^m`` points, ``R = 64`` scramblings:
    its risk is an unbiased estimate of the exact uniform risk (each scrambled point is uniform), and the RMS
    error over scramblings falls like ``N^-alpha``. The integrand ``|r|^2`` is Lipschitz and piecewise
    polynomial (kinks along the lines): of bounded Hardy-Krause variation, so ``alpha >= 1`` (scrambled-net
    error ``o(N^-1)``); and scrambled nets cannot beat ``N^-3/2`` (up to logs) on any integrand that is not
    a polynomial of degree < 1 in some variable, so ``alpha <= 1.5``. The fitted ``alpha`` carries the
    regression's standard error ``se`` (about 0.03 here); the assertion is ``1 - 3 se <= alpha <= 1.5 + 3 se``.
    Measured: alpha = 1.47 (1.32 .. 1.48 over four networks)."""
    data = problem("poly-uniform")  # uniform law on [0, 1]^2: the qmc measure maps [0, 1)^2 onto it
    H = 6
    theta = random_theta(data, H, np.random.default_rng(100))
    exact = exact2d_numba.risk_and_gradient(theta, H, 1, data)[0]
    R, ms = 64, np.arange(6, 16)
    errors = np.empty((ms.size, R))
    for row, m in enumerate(ms):
        for seed in range(R):
            spec = {"kind": "qmc", "n_points": 2**m, "method": "sobol", "seed": seed, "scrambled": True}
            measure = discrete_measure(spec, 2, data.domain)
            values = target(data, measure.points[:, 0], measure.points[:, 1])
            errors[row, seed] = discrete.risk_and_gradient(theta[None], measure.points, measure.weights, values, H)[0][0] - exact
    rms = np.sqrt(np.mean(errors**2, axis=1))
    # unbiased: |mean error| <= 4 standard errors of the mean at every N (10 tests: false alarms ~1e-3)
    assert np.all(np.abs(errors.mean(axis=1)) <= 4 * rms / np.sqrt(R)), errors.mean(axis=1) / (rms / np.sqrt(R))
    log_n = ms * np.log(2.0)
    (slope, _), residuals, *_ = np.polyfit(log_n, np.log(rms), 1, full=True)
    se = np.sqrt(residuals[0] / (ms.size - 2) / np.sum((log_n - log_n.mean()) ** 2))
    alpha = -slope
    assert 1.0 - 3 * se <= alpha <= 1.5 + 3 * se, (alpha, se)
    assert rms[-1] <= 1e-5 * exact  # and it does converge to the exact value (measured 2.4e-6 / 2.7)


# ---- small risks, rules, input checks ------------------------------------------------------------------


@pytest.mark.parametrize("path", list(RG))
@pytest.mark.parametrize("delta", [1e-6, 1e-9])
def test_tiny_risks_are_resolved(path, delta):
    """``f = 1.7 x - 0.4 y + 0.3`` on [0, 1]^2 (uniform); neurons with lines along the edges ``x = 0`` and
    ``y = 0``, active inside, ``V = (1.7, -0.4)``, ``c = 0.3 + delta``: ``r = delta`` exactly, ``L = delta^2``
    (down to 1e-18), ``G_c = 2 delta``."""
    data = PlanarProblemData.with_uniform_density((0.0, 1.0), [[[0.3, -0.4], [1.7, 0.0]]])
    theta = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.7, -0.4, 0.3 + delta])
    risk, grad = RG[path](theta, 2, 1, data)
    # r = N - f is formed with an error of a few eps |f| <= 1e-15 (and 0.3 + delta carries 1e-16): relative
    # error of r <= 1e-15 / delta, of L twice that. Expanding |N|^2 - 2 N f + |f|^2 would make errors of
    # 1e-16 absolute: 100 x L at delta = 1e-9.
    assert abs(risk - delta**2) <= 4 * (1e-15 / delta) * delta**2
    assert abs(grad[-1] - 2 * delta) <= 4e-15


def test_triangle_rule_is_exact_to_its_degree():
    """``int_ref x^p y^q = p! q! / (p + q + 2)!`` on the reference triangle for ``p + q <= 2 n - 1``, and not
    beyond (``x^(2n)``): the degree claimed in the module docstring is the rule's true degree."""
    for n in range(1, 8):
        su, sv, omega = exact2d.triangle_rule(n)
        assert np.all(omega > 0) and abs(np.sum(omega) - 0.5) <= 4 * EPS
        for p in range(2 * n):
            for q in range(2 * n - p):
                exact = math.factorial(p) * math.factorial(q) / math.factorial(p + q + 2)
                assert abs(np.sum(omega * su**p * sv**q) - exact) <= 64 * EPS * exact, (n, p, q)
        exact = math.factorial(2 * n) / math.factorial(2 * n + 2)
        assert abs(np.sum(omega * su ** (2 * n)) - exact) > 1e-10 * exact  # >> the 64 eps above (measured >= 1e-7)


@pytest.mark.parametrize("path", list(RG))
def test_bad_input_raises(path):
    rg, jac = RG[path], JAC[path]
    data = problem("teacher-quadratic")
    theta = np.zeros(n_params(3, 1))
    for fn in (rg, jac):
        with pytest.raises(ValueError, match="^theta"):
            fn(theta[:-1], 3, 1, data)
        bad = theta.copy()
        bad[2] = np.nan
        with pytest.raises(ValueError, match="^theta"):
            fn(bad, 3, 1, data)
        for width in (0, 2.5, True):
            with pytest.raises(ValueError, match="^H"):
                fn(theta, width, 1, data)
        with pytest.raises(ValueError, match="^k"):
            fn(np.zeros(n_params(3, 2)), 3, 2, data)
        with pytest.raises(TypeError, match="^data"):
            fn(theta, 3, 1, "not data")
    target_poly = [[[0.0]]]
    for kwargs, key in [
        ({"domain": (1.0, 0.0)}, "domain"),
        ({"density": [1.0]}, "density"),
        ({"target_poly": [[1.0]]}, "target_poly"),
        ({"teacher_W": [[1.0, 0.0]]}, "teacher_W"),
        ({"teacher_W": [[1.0, 0.0]], "teacher_b": [0.0, 1.0], "teacher_V": [[1.0]]}, "teacher_b"),
        ({"teacher_W": [[1.0, 0.0]], "teacher_b": [0.0], "teacher_V": [[1.0, 2.0]]}, "teacher_V"),
        ({"sine_freq": [[1.0, 0.0]], "sine_phase": [0.0], "sine_amp": [[1.0]]}, "sine_order"),
        ({"sine_freq": [[1.0, 0.0]], "sine_phase": [0.0], "sine_amp": [[1.0, 1.0]], "sine_order": 4}, "sine_amp"),
        ({"sine_order": 0}, "sine_order"),
        ({"density": [[np.inf]]}, "density"),
    ]:
        fields = {"domain": (0.0, 1.0), "density": [[1.0]], "target_poly": target_poly} | kwargs
        with pytest.raises(ValueError, match=f"^{key}"):
            PlanarProblemData(**fields)


def test_problem_data_evaluators():
    """``target`` and ``density_at`` against the independent formulas of this file."""
    data = problem("k2-teacher,sine-quadratic")
    rng = np.random.default_rng(2)
    x = rng.uniform(-1.0, 2.0, size=(50, 2))
    assert np.allclose(data.target(x), target(data, x[:, 0], x[:, 1]), rtol=1e-14, atol=1e-13)
    assert np.allclose(data.density_at(x), density(data, x[:, 0], x[:, 1]), rtol=1e-14, atol=1e-15)


def test_empty_batch():
    data = problem("teacher-quadratic")
    n = n_params(3, 1)
    for path, rg in RG.items():
        risk, grad = rg(np.zeros((0, n)), 3, 1, data)
        assert risk.shape == (0,) and grad.shape == (0, n)
        assert JAC[path](np.zeros((0, n)), 3, 1, data).shape == (0, n, n)
