"""Classify certified end points: global minimum, local minimum, saddle, nonsmooth point, or not converged.

:func:`classify_end_points` takes a problem and the :class:`~reluflow.dynamics.certify.Certificate` of a batch
of runs (``theta*``, ``L(theta*)``, ``|G(theta*)|``) and labels each run by the first rule that applies
(MATH.md section 7):

1. ``not_converged``: ``theta*`` or ``L(theta*)`` is not finite, or ``|G(theta*)| > CRITICAL_GRAD_TOL``
   (also when ``|G(theta*)|`` is NaN): the certificate failed, nothing is claimed.
2. ``global_minimum``: ``L(theta*) < ZERO_RISK``. ``L >= 0``, so ``theta*`` attains the infimum up to the
   project's zero level (whether or not ``L`` is smooth there).
3. ``nonsmooth``: the Hessian of ``L`` does not exist at ``theta*``, or ``theta*`` is within the tolerances
   below of a point where it does not (:func:`nonsmooth_points`). No Hessian is guessed there.
4. ``saddle`` if ``lambda_min < -EIGENVALUE_RTOL * max |lambda|``, else ``local_minimum``, where ``lambda``
   runs over the eigenvalues of the Hessian restricted to the orthogonal complement of the ``H`` rescaling
   directions (:func:`restricted_spectrum`). ``local_minimum`` is the second-order necessary condition (no
   direction of negative curvature beyond the tolerance); a zero eigenvalue other than the rescaling ones
   leaves open a descent of higher order, which a second-order test cannot see.

``min_eigenvalue`` is ``lambda_min`` for every certified run where the Hessian is used (rule 4, and rule 2 at
smooth points), NaN otherwise.

**Rescaling directions.** ``(w_i, b_i, V[:, i]) -> (w_i / s, b_i / s, s V[:, i])`` leaves ``N`` unchanged, so
``L(T_s theta) = L(theta)``; at ``s = 1`` this gives ``G(theta) . r_i(theta) = 0`` for every ``theta``, with
``r_i = D_i theta = (-w_i, -b_i, V[:, i])`` on neuron ``i``'s block and 0 elsewhere, and differentiating once
more, ``H(theta) r_i = -D_i G(theta)``. At a critical point the ``r_i`` lie in the kernel of ``H``: ``H`` alone
is never definite there, and these zero eigenvalues say nothing about the type of the point. They are removed
exactly: the ``r_i`` have disjoint supports, so ``r_i / |r_i|`` is an orthonormal basis of their span, and a
Householder reflector per neuron block gives an orthonormal basis ``Q`` of its complement (neurons with
``r_i = 0`` keep their whole block). At ``theta*`` with ``|G| <= CRITICAL_GRAD_TOL`` the ``r_i`` are in the
kernel up to ``|H r_i| <= |G(theta*)|``.

**The Hessian used.** For ``d = 1`` with a density, the exact Jacobian of ``G``
(:meth:`~reluflow.problem.Problem.gradient_jacobian`, :mod:`reluflow.kernels.jacobian1d`): the Hessian of ``L``
wherever it exists, exactly symmetric, entries accurate to a few ulps of its scale; for a gaussian law the
exact Jacobian of :mod:`reluflow.kernels.gaussian` likewise. For discrete measures
(any ``d``) ``L`` is a polynomial of degree 4 in ``theta`` wherever no kink passes through a data point, and the
Hessian is central differences of ``G`` with steps ``h_j = FD_STEP max(1, |theta_j|)``, ``FD_STEP = eps^(1/3)``
(``G`` is cubic there: truncation ``h^2 |G'''| / 6`` balances cancellation ``eps |G| / h`` at ``~1e-10`` of the
scale of ``H``), symmetrized. Rule 3 makes sure that the difference stencil stays on one smooth piece.

**Where the Hessian does not exist** (rule 3, :func:`nonsmooth_points`). ``G`` of neuron ``i`` integrates over
its active set, whose boundary, the kink ``{x : w_i . x + b_i = 0}``, moves with ``(w_i, b_i)``:

- ``d = 1`` with a density ``p``: the kink term of the Hessian (``rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i|``,
  :mod:`reluflow.kernels.jacobian1d`) jumps where ``p`` or ``f`` jumps. The *singular points* are ``a`` and ``b``
  when ``p`` is non-zero there (``p = 0`` outside ``[a, b]``), and the table knots where ``p`` or ``f`` jumps
  (one-sided values of the table's pieces differing by more than ``JUMP_RTOL`` of the sum of their terms'
  magnitudes, that is, beyond the rounding of the pieces' coefficients). A neuron is on a singular point ``s`` if
  ``|w_i s + b_i| <= KINK_RTOL (b - a) |w_i|``: its kink lies within ``KINK_RTOL (b - a)`` of ``s``.
  Kinks at knots where ``p`` and ``f`` are continuous (the kinks of a ``relu_network`` teacher, slope changes
  of ``f``), and kinks that coincide with each other, are smooth points (the Jacobian is continuous there).
- discrete measures: ``G`` itself jumps when a kink crosses a data point ``x_p`` of positive weight. A neuron is
  on ``x_p`` if ``|w_i . x_p + b_i| <= 2 max(h_{b_i}, max_j h_{W_ij} |x_pj|)``: a step of the difference stencil
  (factor 2 for the rounding of the preactivation) could reach the kink.
- d = 2 with a density on the square ``Q``: a neuron's line through a corner of ``Q`` (within ``KINK_RTOL``
  times the side, measured along the line's normal), which includes lines along an edge.
- a gaussian law: coinciding kink hyperplanes of two neurons (``G`` is C^1 but not C^2 there), that is unit
  vectors ``u_i / |u_i|`` equal up to sign to ``1 - KINK_RTOL^2`` in ``|cos|``.
- both: ``w_i = 0`` and ``b_i = 0`` (the kink is undefined; ``V_i relu(w_i . x + b_i)`` is positively
  homogeneous of degree 2 near there, not quadratic). ``w_i = 0 != b_i`` is smooth: the neuron is constant on
  a neighbourhood (its kink is at infinity). A neuron with ``(w_i, b_i) != 0``, however small, is smooth too: the
  label is that of ``theta*``, whose Hessian then describes ``L`` on a ball of radius comparable to
  ``|(w_i, b_i)|`` only.

``KINK_RTOL`` is generous on purpose: calling a point nonsmooth only withholds a claim, while a Hessian read
next to a singular point may describe the wrong side of it.

Every run is handled on its own (the kernels' rows and the compiled eigenvalue loop are independent of the
batch), so the labels and ``min_eigenvalue`` of a run are the same bits whatever else is in the batch. The
eigenvalues come from a cyclic Jacobi iteration compiled here in a fixed order rather than LAPACK's ``syevd``
(whose blocked BLAS kernels sum in a CPU-dependent order): the same bits on every machine. Cost ``O(n^3)`` per run.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "CRITICAL_GRAD_TOL",
    "EIGENVALUE_RTOL",
    "END_POINTS",
    "END_POINT_DTYPE",
    "FD_STEP",
    "JUMP_RTOL",
    "KINK_RTOL",
    "ZERO_RISK",
    "classify_end_points",
    "hessians",
    "nonsmooth_points",
    "restricted_spectrum",
    "singular_points_1d",
]

#: the labels, in the order of the rules of the module docstring
END_POINTS = ("not_converged", "global_minimum", "nonsmooth", "saddle", "local_minimum")
#: fixed width, so that the array's dtype does not depend on which labels a batch happens to hold
END_POINT_DTYPE = "<U14"

#: a certificate counts as critical when |G(theta*)| <= this (also the scenarios' check of certificates,
#: reluflow.experiments.checks): Levenberg-Marquardt on the exact G stops at rounding level (|G| ~ 1e-14 .. 1e-12 for O(1) parameters), a
#: non-critical point near the end of a flow has |G| >= ~1e-6 at the horizons used; 1e-8 lies between the two.
CRITICAL_GRAD_TOL = 1e-8

#: the zero level of the risk (also the scenarios' "reached zero risk", reluflow.experiments.checks): six orders above the
#: rounding of the exact risk (~1e-16 of the O(1) squared scale) and far below every positive critical value
#: of the scenarios (alpha^2 / 972 ~ 4e-3).
ZERO_RISK = 1e-10

#: a kink within KINK_RTOL (b - a) of a singular point (d = 1, density) is on it. At a critical point whose kink
#: sits exactly on a singular point, moving the kink by delta (b - a) changes G by O(delta), or by O(delta^2) when
#: the neuron's outer weight vanishes too (a kink creeping to an end of [a, b]). A point certified with
#: |G| <= CRITICAL_GRAD_TOL = 1e-8 may thus lie up to delta ~ sqrt(1e-8) = 1e-4 from such a point.
KINK_RTOL = 1e-4

#: one-sided values of the density or the target at a table knot differ ("jump") when they differ by more
#: than this times the sum of the magnitudes of the two pieces' terms there: their rounding is ~1e-16 of that.
JUMP_RTOL = 1e-12

#: saddle when lambda_min < -EIGENVALUE_RTOL max |lambda| (restricted spectrum). The Hessian's entries err by
#: ~1e-16 (exact, d = 1) or ~1e-10 (central differences) of its scale, and theta* is a critical point only up
#: to |G| <= 1e-8, which moves the eigenvalues by O(1e-8) of the scale for O(1) third derivatives; 1e-6 is two
#: orders above all three.
EIGENVALUE_RTOL = 1e-6

_EPS = float(np.finfo(float).eps)

#: relative step of the central differences of G (discrete measures): eps^(1/3), see the module docstring
FD_STEP = float(np.cbrt(_EPS))


# ----------------------------------------------------------------------------------------------------
# the classification


def classify_end_points(problem, certificate) -> tuple[np.ndarray, np.ndarray]:
    """Label each certified end point; returns ``end_point (M,)`` (strings of :data:`END_POINTS`, dtype
    :data:`END_POINT_DTYPE`) and ``min_eigenvalue (M,)`` (NaN where no Hessian is used).

    ``certificate`` is a :class:`~reluflow.dynamics.certify.Certificate` (``theta (M, n)``, ``risk``,
    ``grad_norm``, ``distance``; the distance is not used). The rules are those of the module docstring.
    """
    theta = np.asarray(certificate.theta, dtype=float)
    risk = np.asarray(certificate.risk, dtype=float).reshape(-1)
    grad_norm = np.asarray(certificate.grad_norm, dtype=float).reshape(-1)
    if theta.ndim != 2 or theta.shape[1] != problem.n_params or not theta.shape[0] == risk.size == grad_norm.size:
        raise ValueError(
            f"certificate: theta must have shape (M, n_params = {problem.n_params}) and risk, grad_norm shape (M,), "
            f"got {theta.shape}, {risk.shape}, {grad_norm.shape}"
        )
    m = theta.shape[0]
    end_point = np.full(m, "not_converged", dtype=END_POINT_DTYPE)
    min_eigenvalue = np.full(m, np.nan)
    certified = np.all(np.isfinite(theta), axis=1) & np.isfinite(risk) & (grad_norm <= CRITICAL_GRAD_TOL)
    rows = np.flatnonzero(certified)
    if rows.size == 0:
        return end_point, min_eigenvalue
    smooth = ~nonsmooth_points(problem, theta[rows])
    zero = risk[rows] < ZERO_RISK
    end_point[rows] = np.where(zero, "global_minimum", np.where(smooth, "local_minimum", "nonsmooth"))
    use = rows[smooth]
    if use.size:
        spectra = [restricted_spectrum(problem.layout, theta[r], h) for r, h in zip(use, hessians(problem, theta[use]))]
        lowest = np.array([s[0] for s in spectra])
        radius = np.array([max(-s[0], s[-1]) for s in spectra])  # max |lambda| of an ascending spectrum
        min_eigenvalue[use] = lowest
        saddle = (lowest < -EIGENVALUE_RTOL * radius) & (risk[use] >= ZERO_RISK)
        end_point[use[saddle]] = "saddle"
    return end_point, min_eigenvalue


# ----------------------------------------------------------------------------------------------------
# where the Hessian exists


def singular_points_1d(table) -> np.ndarray:
    """The points of ``[a, b]`` where the density ``p`` (zero outside ``[a, b]``) or the target ``f`` of a
    :class:`~reluflow.model.piecewise.PiecewiseTable` jumps: ``a`` and ``b`` when ``p`` is non-zero there, and the
    interior knots where the one-sided values of ``p`` or of some ``f_m`` differ (rule: module docstring)."""
    knots = table.knots
    zero_density = np.zeros((1, table.density_poly.shape[1]))
    # the pieces left and right of every knot (the first and last row of `padded` are p = 0 outside [a, b])
    padded = np.concatenate([zero_density, table.density_poly, zero_density])
    p_left, p_scale_left = _one_sided(padded[:-1], knots)
    p_right, p_scale_right = _one_sided(padded[1:], knots)
    jumps = np.abs(p_left - p_right) > JUMP_RTOL * (p_scale_left + p_scale_right)
    # f matters inside only (p = 0 outside); the sine terms are continuous
    f_left, f_scale_left = _one_sided(table.target_poly[:-1], knots[1:-1])
    f_right, f_scale_right = _one_sided(table.target_poly[1:], knots[1:-1])
    jumps[1:-1] |= np.any(np.abs(f_left - f_right) > JUMP_RTOL * (f_scale_left + f_scale_right), axis=-1)
    return knots[jumps]


def _one_sided(coefficients: np.ndarray, x: np.ndarray):
    """``sum_q coefficients[j, ..., q] x_j^q`` and ``sum_q |coefficients[j, ..., q]| |x_j|^q`` (its rounding scale)."""
    powers = x.reshape((-1,) + (1,) * (coefficients.ndim - 1)) ** np.arange(coefficients.shape[-1])
    terms = coefficients * powers
    return np.sum(terms, axis=-1), np.sum(np.abs(terms), axis=-1)


def nonsmooth_points(problem, theta: np.ndarray) -> np.ndarray:
    """For each row of ``theta (M, n)``: whether some neuron is on a singular point (module docstring, rule 3)."""
    theta = np.asarray(theta, dtype=float)
    layout = problem.layout
    d, h = problem.input_dim, problem.width
    W = theta[:, layout.W].reshape(-1, h, d)
    b = theta[:, layout.b]
    undefined = np.any(np.all(W == 0.0, axis=2) & (b == 0.0), axis=1)
    if problem.table is not None:
        a, b_end = problem.domain
        s = singular_points_1d(problem.table)
        w = W[:, :, 0]
        gap = np.abs(w[:, :, None] * s + b[:, :, None])  # (M, H, S)
        on_point = np.any(gap <= KINK_RTOL * (b_end - a) * np.abs(w)[:, :, None], axis=(1, 2))
        return undefined | on_point
    if problem.planar is not None:
        # d = 2 on the square Q: the line terms integrate along the segment of w_i . x + b_i = 0 inside Q, whose
        # end points move along Q's edges; the Hessian does not exist where the line passes through a corner
        # of Q (the segment changes edges) or lies along an edge (a one-sided limit, reluflow.kernels.exact2d)
        a, b_end = problem.domain
        corners = np.array([[a, a], [a, b_end], [b_end, a], [b_end, b_end]])
        z = b[:, :, None] + np.sum(W[:, :, None, :] * corners[None, None], axis=3)  # (M, H, 4)
        scale = KINK_RTOL * (b_end - a) * np.sqrt(np.sum(W * W, axis=2))[:, :, None]
        on_corner = np.any((np.abs(z) <= scale) & (scale > 0), axis=(1, 2))
        return undefined | on_corner
    if problem.gaussian is not None:
        # a gaussian law has a smooth density on all of R^d: the Hessian exists unless two neurons' kink
        # hyperplanes coincide (G is then C^1 but not C^2, reluflow.kernels.gaussian), which is when their unit
        # vectors u_i / |u_i| agree up to a sign (parallel or anti-parallel hyperplanes with the same offset)
        u = np.concatenate([W, b[:, :, None]], axis=2)
        norms = np.sqrt(np.sum(u * u, axis=2))
        unit = np.divide(u, norms[:, :, None], out=np.zeros_like(u), where=norms[:, :, None] > 0)
        cosine = np.abs(np.sum(unit[:, :, None, :] * unit[:, None, :, :], axis=3))  # (M, H, H)
        live = (norms > 0)[:, :, None] & (norms > 0)[:, None, :] & ~np.eye(h, dtype=bool)[None]
        coincide = np.any(live & (cosine >= 1.0 - KINK_RTOL**2), axis=(1, 2))
        return undefined | coincide
    measure = problem.discrete_measure
    points = measure.points[measure.weights > 0]  # (P, d)
    on_point = np.zeros(theta.shape[0], dtype=bool)
    for row in range(theta.shape[0]):  # one run at a time: memory P H per run
        z = b[row] + np.sum(W[row][None, :, :] * points[:, None, :], axis=2)  # (P, H), sum over d in a fixed order
        reach_w = FD_STEP * np.maximum(1.0, np.abs(W[row]))[None, :, :] * np.abs(points)[:, None, :]  # (P, H, d)
        reach = np.maximum(FD_STEP * np.maximum(1.0, np.abs(b[row])), np.max(reach_w, axis=2))
        on_point[row] = np.any(np.abs(z) <= 2.0 * reach)
    return undefined | on_point


# ----------------------------------------------------------------------------------------------------
# the Hessian and its spectrum off the rescaling directions


def hessians(problem, theta: np.ndarray) -> np.ndarray:
    """The Hessian of ``L`` at each row of ``theta (M, n)``, ``(M, n, n)``, symmetric: the exact Jacobian of ``G``
    (d = 1 with a density), else symmetrized central differences of ``G`` (module docstring). Meaningful only at
    points that :func:`nonsmooth_points` does not flag."""
    theta = np.asarray(theta, dtype=float)
    if problem.has_jacobian:
        return problem.gradient_jacobian(theta)
    n = problem.n_params
    out = np.empty((theta.shape[0], n, n))
    for row in range(theta.shape[0]):  # 2 n shifted points per run, one batched call (rows are independent)
        steps = FD_STEP * np.maximum(1.0, np.abs(theta[row]))
        shifts = np.diag(steps)
        values = problem.generalized_gradient(np.concatenate([theta[row] + shifts, theta[row] - shifts]))
        jac = ((values[:n] - values[n:]) / (2.0 * steps)[:, None]).T  # column j: dG / dtheta_j
        out[row] = 0.5 * (jac + jac.T)
    return out


def restricted_spectrum(layout, theta: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of ``Q^T H Q``, ``Q`` an orthonormal basis of the orthogonal complement of the
    rescaling directions ``r_i = (-w_i, -b_i, V[:, i])`` at ``theta (n,)`` (module docstring; ``layout`` a
    :class:`~reluflow.model.network.ParameterLayout`). Size ``n - #{i : r_i != 0}``; deterministic bits."""
    blocks = np.concatenate([layout.neuron_blocks(), layout.outer_weights()], axis=1).astype(np.int64)  # (H, d+1+k)
    signs = np.concatenate([-np.ones(layout.input_dim + 1), np.ones(layout.output_dim)])
    return _restricted_spectrum(np.ascontiguousarray(hessian, dtype=float), np.asarray(theta, dtype=float), blocks,
                                signs, np.arange(layout.c.start, layout.c.stop, dtype=np.int64))


@njit(cache=True)
def _restricted_spectrum(hessian, theta, blocks, signs, free):
    n_neurons, size = blocks.shape
    n = hessian.shape[0]
    # columns of Q, each supported on one neuron block (or one coordinate of c): indices and values
    index = np.zeros((n, size), dtype=np.int64)
    value = np.zeros((n, size))
    length = np.zeros(n, dtype=np.int64)
    n_cols = 0
    for i in range(n_neurons):
        r = np.empty(size)
        for a in range(size):
            r[a] = signs[a] * theta[blocks[i, a]]
        norm = _norm(r)
        if norm == 0.0:  # no rescaling direction at this neuron: keep its whole block
            for a in range(size):
                index[n_cols, 0] = blocks[i, a]
                value[n_cols, 0] = 1.0
                length[n_cols] = 1
                n_cols += 1
            continue
        # Householder reflector P = I - v v^T / (1 + |r0|), v = r/|r| + sign(r0) e_0: P e_0 = -sign(r0) r/|r|,
        # so P's columns 1 .. size-1 are an orthonormal basis of the complement of r within the block
        v = r / norm
        sign = 1.0 if v[0] >= 0.0 else -1.0
        denominator = 1.0 + abs(v[0])
        v[0] += sign
        for j in range(1, size):
            for a in range(size):
                index[n_cols, a] = blocks[i, a]
                value[n_cols, a] = (1.0 if a == j else 0.0) - v[a] * v[j] / denominator
            length[n_cols] = size
            n_cols += 1
    for m in range(free.shape[0]):
        index[n_cols, 0] = free[m]
        value[n_cols, 0] = 1.0
        length[n_cols] = 1
        n_cols += 1
    hq = np.zeros((n, n_cols))  # H Q, each column a sum over the support in a fixed order
    for col in range(n_cols):
        for a in range(length[col]):
            j, q = index[col, a], value[col, a]
            for row in range(n):
                hq[row, col] += hessian[row, j] * q
    restricted = np.empty((n_cols, n_cols))  # Q^T H Q from its upper triangle: exactly symmetric
    for p in range(n_cols):
        for col in range(p, n_cols):
            acc = 0.0
            for a in range(length[p]):
                acc += value[p, a] * hq[index[p, a], col]
            restricted[p, col] = acc
            restricted[col, p] = acc
    return _jacobi_eigenvalues(restricted)


@njit(cache=True)
def _norm(x):
    """Euclidean norm, scaled against overflow, summed in order."""
    scale = 0.0
    for v in x:
        scale = max(scale, abs(v))
    if scale == 0.0:
        return 0.0
    total = 0.0
    for v in x:
        total += (v / scale) ** 2
    return scale * np.sqrt(total)


@njit(cache=True)
def _jacobi_eigenvalues(matrix):
    """Eigenvalues (ascending) of a symmetric matrix by the cyclic Jacobi method (Golub & Van Loan, *Matrix
    Computations*, 4th ed., algorithms 8.5.2-8.5.3), rotations in row order: a fixed sequence of operations.

    Each rotation annihilates ``A[p, q]`` with the stable choice of the smaller angle
    (``t = sign(theta) / (|theta| + sqrt(theta^2 + 1))``, ``theta = (A[q, q] - A[p, p]) / (2 A[p, q])``); sweeps stop
    when the off-diagonal part is below ``eps`` times the Frobenius norm, after which every eigenvalue is accurate
    to a few ``eps`` of the norm (Jacobi is backward stable). Convergence is quadratic: a handful of sweeps.
    """
    a = matrix.copy()
    n = a.shape[0]
    total = 0.0
    for p in range(n):
        for q in range(n):
            total += a[p, q] * a[p, q]
    threshold = _EPS * _EPS * total
    for _ in range(100):
        off = 0.0
        for p in range(n - 1):
            for q in range(p + 1, n):
                off += 2.0 * a[p, q] * a[p, q]
        if off <= threshold:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0)) if abs(theta) < 1e150 else 0.5 / abs(theta)
                if theta < 0.0:
                    t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                tau = s / (1.0 + c)
                a[p, p] -= t * apq
                a[q, q] += t * apq
                a[p, q] = 0.0
                a[q, p] = 0.0
                for r in range(n):
                    if r == p or r == q:
                        continue
                    arp, arq = a[r, p], a[r, q]
                    a[r, p] = arp - s * (arq + tau * arp)
                    a[p, r] = a[r, p]
                    a[r, q] = arq + s * (arp - tau * arq)
                    a[q, r] = a[r, q]
    return np.sort(np.diag(a).copy())
