"""Exact risk, generalized gradient and its Jacobian for inputs in two dimensions: the numpy reference path.

Problem (MATH.md sections 1, 2 and "Exact evaluation in two dimensions"). ``x = (x, y)`` in the square
``Q = [a, b]^2``; ``xt = (x, y, 1)``; neuron ``i`` has ``u_i = (w_i0, w_i1, b_i)`` and preactivation
``z_i = u_i . xt``; ``N(x) = c + V relu(z)``, ``r = N - f``, density ``p(x, y) = sum P[q, s] x^q y^s``
(not required to be normalized: ``L`` is the integral against ``p``). With the strict active sets
``I_i = {x in Q : z_i(x) > 0}`` (relu'(0) = 0) and the active-set integrals
``S[m, i] = int_{I_i} xt r_m p`` (3-vectors),

    L          = int_Q |r|^2 p
    G_W[i, a]  = 2 sum_m V[m, i] S[m, i][a]   (a = 0, 1),      G_b[i] = 2 sum_m V[m, i] S[m, i][2],
    G_V[m, i]  = 2 int_{I_i} z_i r_m p = 2 u_i . S[m, i],       G_c[m] = 2 int_Q r_m p.

The target is ``f_m(x) = sum T[m, q, s] x^q y^s + sum_l TV[m, l] relu(TW_l . x + Tb_l)
+ sum_s amp[s, m] sin(freq_s . x + phase_s)`` (:class:`PlanarProblemData`).

Construction (why two different ones). The lines of all neurons and teacher neurons, ``L_lines = H + Ht``,
cut ``Q`` into the cells of their arrangement; on a cell every active set is fixed, ``N`` and the teacher
part of ``f`` are affine, so every integrand is a polynomial (times sines).

- ``L`` and ``G``: the arrangement. It is built by inserting the lines one after the other, splitting every
  convex cell a line crosses into its two sides (one side test per cell vertex); each cell carries the
  bit vector of the sides it lies on. On each cell the residual ``r = A x + B - f`` is formed pointwise at
  the nodes of an exact Gauss rule on the cell's fan triangles and the cell moments
  ``rho_c = int_c |r|^2 p`` and ``m_c = int_c xt r p`` are accumulated; ``L = sum_c rho_c`` and
  ``S[:, i] = sum_{c in I_i} m_c``. Forming ``r`` before squaring keeps small risks resolved (as in d = 1):
  the pairwise form would expand ``|r|^2 = |N|^2 - 2 N . f + |f|^2`` into integrals over the pairwise active
  regions ``Q cap I_i cap I_j``, which cancel catastrophically when ``L << |f|^2`` (near convergence of a
  flow, the regime of JR Theorems 1.2-1.3). It is also the better constant: the arrangement has fewer
  polygons than the ``H^2 / 2`` pairs (measured: ``0.3 L_lines^2`` cells when every line passes through a
  uniform point of the square, ``0.05 L_lines^2`` for N(0, 1) parameters on ``[0, 1]^2``; 4 vertices per
  cell on average), and each cell is integrated once for all outputs and components, where the pairwise
  form integrates each pair and then sums ``H`` pairs per neuron. The construction costs
  ``O(L_lines * cells)`` side tests and the gather ``O(cells * H * k)`` additions: formally ``O(H^3)``, with
  small constants: at ``H = 16`` the quadrature on the cells dominates, at ``H = 64`` the cubic parts do
  (``benchmarks/bench_exact2d.py`` reports the measured growth).
- The Jacobian: pairwise. Its Gauss-Newton part needs ``T(i, j) = int_{I_i cap I_j} xt xt^T p`` for every
  pair; summing cell moments would cost ``O(cells * H^2) = O(H^4)``, while the ``H (H + 1) / 2`` convex
  polygons ``Q cap I_i cap I_j`` (the square clipped by two half-planes, at most 6 vertices) cost ``O(H^2)``.
  ``J`` has ``O(H^2 k^2)`` entries anyway, and its only residual integrals ``S`` are taken from the
  arrangement (residual first).

Polygon integrals. A convex polygon ``v_0 .. v_{n-1}`` (counterclockwise) is the union of its fan triangles
``(v_0, v_t, v_{t+1})``; on each, ``x = v_0 + s_u (v_t - v_0) + s_v (v_{t+1} - v_0)`` and
``int_T g = det(v_t - v_0, v_{t+1} - v_0) int_ref g``. On the reference triangle the collapsed
(Stroud conical product) rule ``s_u = s (1 - t), s_v = s t`` with ``n``-point Gauss-Jacobi(0, 1) in ``s``
and ``n``-point Gauss-Legendre in ``t`` (``n^2`` nodes, positive weights summing to 1/2) is exact for
polynomials of total degree ``<= 2 n - 1``. With ``D = max(1, deg T)`` (the residual's degree on a cell;
the network and teacher are affine there) and ``Dp = deg p`` (total degrees), ``|r|^2 p`` has degree
``2 D + Dp`` and ``xt r p`` at most that, so ``n = ceil((2 D + Dp + 1) / 2)`` points per direction make
``L`` and ``G`` exact up to rounding for polynomial and teacher targets; ``T(i, j)`` needs
``n = ceil((Dp + 3) / 2)``. The signed determinant is used, so a degenerate (sliver) triangle contributes
its signed, vanishing area.

Line terms of the Jacobian. ``G_{u_i} = int_{I_i} g_i``, ``g_i = 2 xt (V_i . r) p``, over a half-plane that
moves with ``u_i``: a perturbation ``delta u`` adds the strip ``-delta u . xt < z_i <= 0`` of normal width
``delta u . xt / |w_i|``, so besides the area terms (differentiating under the integral) ``J[u_i, u_i]``
contains the integral along the segment ``ell_i = {z_i = 0} cap Q``

    Lambda_i = int_{ell_i} 2 (V_i . r) p xt xt^T ds / |w_i|,

the d = 2 analogue of the kink term ``rho_i [xi^2, xi; xi, 1]`` of d = 1 (``jacobian1d``). ``G_V`` has no
line term (relu vanishes on the line) and the lines of the other neurons and of the teacher give none
(``r`` is continuous). On ``ell_i`` the residual is piecewise polynomial in the arc length with breaks where
the other lines cross it: ``ell_i`` is cut there and each piece is integrated by Gauss-Legendre with
``ceil((D + Dp + 3) / 2)`` points (the degree of ``(V_i . r) p xt xt^T``), the network and the teacher
evaluated pointwise (neuron ``i`` itself, which vanishes on its line, is left out). With
``E(i, j) = T(i, j) u_j = int_{I_i cap I_j} xt relu(z_j) p`` the Jacobian (the Hessian of ``L`` where it
exists; exactly symmetric as returned) is

    J[u_i, u_j]         = 2 (V_i . V_j) T(i, j) + delta_ij Lambda_i
    J[u_i, V[m, j]]     = 2 V[m, i] E(i, j) + 2 delta_ij S[m, i]
    J[u_i, c_m]         = 2 V[m, i] T(i, i) e_3
    J[V[m, i], V[m', j]] = 2 delta_mm' u_i . E(i, j)
    J[V[m, i], c_m']    = 2 delta_mm' u_i . T(i, i) e_3
    J[c_m, c_m']        = 2 delta_mm' int_Q p

(``e_3 = (0, 0, 1)``: ``T(i, i) e_3 = int_{I_i} xt p``). ``T`` and ``Lambda`` are continuous where lines
cross, coincide or pass through a corner (the segment's length goes to 0 there), so ``G`` is
differentiable at those points.

One-sided conventions (the value returned where ``G`` is not differentiable; finite, and the limit of
``J`` from one side, as in ``jacobian1d``):

- a line along an edge of ``Q``: no line term, i.e. the limit as the line leaves the square; ``Lambda_i``
  is taken over ``ell_i cap interior(Q)`` (a line touching ``Q`` in a corner only has none either, which
  there is the derivative: the segment's length vanishes);
- ``w_i = 0``: no line (for ``b_i != 0`` the line is far away nearby, so this is the true derivative);
  ``w_i = b_i = 0`` is the limit from ``b_i < 0``: a dead neuron, whose rows and columns are 0.

Degenerate cases, handled by one rule. A vertex ``v`` of a polygon is on the positive side of line ``j``
if ``z_j(v) > tol_j``, on the negative side if ``z_j(v) < -tol_j``, and on the line otherwise, with
``tol_j = 16 eps (|b_j| + (|w_j0| + |w_j1|) X)``, ``X = max(|a|, |b|)`` (a few times the rounding error of
``z_j`` at a computed vertex). A polygon is cut only if it has vertices strictly on both sides; otherwise it
lies on the positive side (active) if it has a vertex there, and is inactive if not (also when every
vertex is on the line: ``w = b = 0``, or a sliver along the line). This gives: ``w_i = 0``: ``z_i = b_i``
at every vertex, active everywhere iff ``b_i > 0``; lines outside ``Q``, through a corner or along an
edge: no cut, the side is decided by the other vertices; identical or opposite lines: the vertices on the
first line are on the second one, no sliver is cut, the cells on both sides get the right bits; parallel
lines: nothing special. Cutting a polygon keeps the vertices on the line in both pieces and adds the
crossing points ``v_k + t (v_{k+1} - v_k)``, ``t = z(v_k) / (z(v_k) - z(v_{k+1}))``, shared by both pieces.
Errors are confined to strips of width ``O(tol / |w|)`` along lines: ``O(eps)`` relative.

Sine terms are not polynomial: the same rules with ``n = max(n_polynomial, sine_order)`` points (per
direction on triangles, per piece on lines), set by the caller. Error bound: on a triangle ``T`` (or a
segment piece), for an integrand ``q(x) sin(omega . x + phi)`` with ``q`` a polynomial of total degree
``e <= 2 n - 1``, Taylor-expanding the sine about a point of ``T`` to degree ``2 n - 1 - e`` (integrated
exactly against ``q``) and bounding the remainder, with ``h_T`` the largest distance from that point
within ``T`` (at most the diameter) and the rule's positive weights summing to ``|T|``,

    |int_T - rule_T| <= 2 |T| max_T |q| (|omega| h_T)^(2 n - e) / (2 n - e)!.

In ``|r|^2 p`` the sines enter as ``q sin`` with ``e <= D + Dp`` and frequencies ``|freq_s|`` and, through
products of two sines, frequencies ``|freq_s +- freq_s'| <= 2 max |freq|`` with ``e = Dp``; in ``xt r p``
``e <= D + Dp + 1``. The total error is the sum over triangles. For example ``|omega| h_T = 1``, ``e = 3``
and ``n = 10`` give ``2 |T| max|q| / 17! ~ 6e-15 |T| max|q|``. The cells are not refined: for large
frequencies the caller raises ``sine_order``.

Batched over runs ``theta (M, n)`` and vectorized across runs and cells (cells padded per batch). Every sum
that could depend on the batch is taken sequentially along a row (``cumsum``, explicit loops over
triangles, nodes, neurons and outputs); padded cells and triangles contribute exact zeros at the end of
those sums. So each run's numbers are bitwise independent of the batch.
:mod:`reluflow.kernels.exact2d_numba` computes the same numbers per row in compiled code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import roots_jacobi

from reluflow.model.network import check_theta, n_params

__all__ = ["PlanarProblemData", "gauss_legendre", "gradient_jacobian", "risk_and_gradient", "triangle_rule"]

EPS = np.finfo(float).eps
#: relative width of the band in which a vertex counts as lying on a line (module docstring)
SIDE_TOL = 16.0 * EPS
#: elements of one (runs x cells x vertices) work array per chunk of runs
CHUNK_ELEMENTS = 2**20


# ----------------------------------------------------------------------------------------------------
# quadrature rules


@functools.lru_cache(maxsize=32)
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-point Gauss-Legendre nodes and weights on ``[-1, 1]`` (exact to degree ``2 n - 1``; read-only)."""
    nodes, weights = np.polynomial.legendre.leggauss(int(n))
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


@functools.lru_cache(maxsize=32)
def triangle_rule(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapsed Gauss rule on the reference triangle ``{s_u, s_v >= 0, s_u + s_v <= 1}``: ``(s_u, s_v, omega)``.

    ``n`` Gauss-Jacobi(alpha = 0, beta = 1) points ``s`` on ``[0, 1]`` (weight ``s``, the Jacobian of the
    collapse) times ``n`` Gauss-Legendre points ``t`` on ``[0, 1]``; ``s_u = s (1 - t)``, ``s_v = s t``.
    ``g(s (1 - t), s t)`` has degree ``<= D`` in ``s`` and in ``t`` when ``g`` has total degree ``D``, so the
    ``n^2``-point rule is exact for ``D <= 2 n - 1``; its weights are positive and sum to 1/2 (read-only).
    """
    xj, wj = roots_jacobi(int(n), 0.0, 1.0)  # weight (1 + x) on [-1, 1]
    s = 0.5 * (1.0 + xj)
    ws = 0.25 * wj  # int_0^1 g(s) s ds = 1/4 int_{-1}^1 g((1 + x) / 2) (1 + x) dx
    xl, wl = gauss_legendre(int(n))
    t = 0.5 * (1.0 + xl)
    wt = 0.5 * wl
    su = (s[:, None] * (1.0 - t[None, :])).ravel()
    sv = (s[:, None] * t[None, :]).ravel()
    omega = (ws[:, None] * wt[None, :]).ravel()
    for array in (su, sv, omega):
        array.setflags(write=False)
    return su, sv, omega


def _total_degree(coefficients: np.ndarray) -> int:
    """Largest ``q + s`` with a nonzero ``coefficients[..., q, s]`` (0 for an all-zero array)."""
    nonzero = np.any(coefficients.reshape((-1,) + coefficients.shape[-2:]) != 0, axis=0)
    q, s = np.nonzero(nonzero)
    return int(np.max(q + s)) if q.size else 0


# ----------------------------------------------------------------------------------------------------
# problem data


def _array(value, name: str, ndim: int, empty_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a read-only float64 array with ``ndim`` dimensions. For an optional field (``empty_shape``
    given), ``None`` or an empty value means "no terms": zeros of ``empty_shape`` when that is empty."""
    if value is None and empty_shape is None:
        raise ValueError(f"{name}: required")
    try:
        array = np.zeros(empty_shape) if value is None else np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: must be an array of numbers: {err}") from None
    if array.size == 0 and empty_shape is not None and 0 in empty_shape:
        array = np.zeros(empty_shape)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: entries must be finite")
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class PlanarProblemData:
    """Input law and target of a d = 2 problem on the square ``[a, b]^2``.

    Fields (arrays are copied to read-only float64):

    - ``domain = (a, b)``, ``a < b``;
    - ``density`` ``P (Qp, Sp)``: ``p(x, y) = sum_{q,s} P[q, s] x^q y^s`` (uniform law: ``[[1 / (b - a)^2]]``);
    - ``target_poly`` ``T (k, Qt, St)``: the polynomial part ``sum_{q,s} T[m, q, s] x^q y^s`` of ``f_m``;
    - ``teacher_W (Ht, 2)``, ``teacher_b (Ht,)``, ``teacher_V (k, Ht)``: the teacher part
      ``sum_l TV[m, l] relu(TW_l . x + Tb_l)`` (``None``: ``Ht = 0``);
    - ``sine_freq (S, 2)``, ``sine_phase (S,)``, ``sine_amp (S, k)``: the sine part
      ``sum_s amp[s, m] sin(freq_s . x + phase_s)`` (``None``: ``S = 0``);
    - ``sine_order``: Gauss points per direction used for the sine terms (required when ``S > 0``; the
      error bound is in the module docstring).
    """

    domain: tuple[float, float]
    density: np.ndarray
    target_poly: np.ndarray
    teacher_W: np.ndarray | None = None
    teacher_b: np.ndarray | None = None
    teacher_V: np.ndarray | None = None
    sine_freq: np.ndarray | None = None
    sine_phase: np.ndarray | None = None
    sine_amp: np.ndarray | None = None
    sine_order: int | None = None

    def __post_init__(self):
        try:
            a, b = (float(v) for v in self.domain)
        except (TypeError, ValueError):
            raise ValueError(f"domain: must be a pair (a, b) of numbers, got {self.domain!r}") from None
        if not (np.isfinite(a) and np.isfinite(b) and a < b):
            raise ValueError(f"domain: must satisfy a < b (finite), got {(a, b)}")
        object.__setattr__(self, "domain", (a, b))
        density = _array(self.density, "density", 2)
        if density.shape[0] < 1 or density.shape[1] < 1:
            raise ValueError(f"density: expected shape (Qp >= 1, Sp >= 1), got {density.shape}")
        target = _array(self.target_poly, "target_poly", 3)
        if min(target.shape) < 1:
            raise ValueError(f"target_poly: expected shape (k >= 1, Qt >= 1, St >= 1), got {target.shape}")
        k = target.shape[0]
        for group in (("teacher_W", "teacher_b", "teacher_V"), ("sine_freq", "sine_phase", "sine_amp")):
            given = [getattr(self, name) is not None for name in group]
            if any(given) and not all(given):
                raise ValueError(f"{group[0]}: {', '.join(group)} must be given together")
        tw = _array(self.teacher_W, "teacher_W", 2, (0, 2))
        tb = _array(self.teacher_b, "teacher_b", 1, (tw.shape[0],))
        tv = _array(self.teacher_V, "teacher_V", 2, (k, tw.shape[0]))
        if tw.shape[1] != 2:
            raise ValueError(f"teacher_W: expected shape (Ht, 2), got {tw.shape}")
        if tb.shape != (tw.shape[0],):
            raise ValueError(f"teacher_b: expected shape ({tw.shape[0]},), got {tb.shape}")
        if tv.shape != (k, tw.shape[0]):
            raise ValueError(f"teacher_V: expected shape ({k}, {tw.shape[0]}), got {tv.shape}")
        freq = _array(self.sine_freq, "sine_freq", 2, (0, 2))
        n_sines = freq.shape[0]
        phase = _array(self.sine_phase, "sine_phase", 1, (n_sines,))
        amp = _array(self.sine_amp, "sine_amp", 2, (n_sines, k))
        if freq.shape[1] != 2:
            raise ValueError(f"sine_freq: expected shape (S, 2), got {freq.shape}")
        if phase.shape != (n_sines,):
            raise ValueError(f"sine_phase: expected shape ({n_sines},), got {phase.shape}")
        if amp.shape != (n_sines, k):
            raise ValueError(f"sine_amp: expected shape ({n_sines}, {k}), got {amp.shape}")
        order = self.sine_order
        if order is not None and (isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)) or order < 1):
            raise ValueError(f"sine_order: must be a positive integer, got {order!r}")
        if n_sines > 0 and order is None:
            raise ValueError("sine_order: required when the target has sine terms (Gauss points per direction)")
        for name, value in (("density", density), ("target_poly", target), ("teacher_W", tw), ("teacher_b", tb),
                            ("teacher_V", tv), ("sine_freq", freq), ("sine_phase", phase), ("sine_amp", amp)):  # fmt: skip
            object.__setattr__(self, name, value)
        object.__setattr__(self, "sine_order", None if order is None else int(order))

    @classmethod
    def with_uniform_density(cls, domain, target_poly, **fields) -> PlanarProblemData:
        """The uniform law ``p = 1 / (b - a)^2`` on ``domain``; other fields as in the constructor."""
        a, b = domain
        return cls(domain, [[1.0 / (float(b) - float(a)) ** 2]], target_poly, **fields)

    @property
    def output_dim(self) -> int:
        return int(self.target_poly.shape[0])

    @property
    def n_teacher(self) -> int:
        return int(self.teacher_W.shape[0])

    @property
    def n_sines(self) -> int:
        return int(self.sine_freq.shape[0])

    @property
    def cell_points(self) -> int:
        """Gauss points per direction on the cell triangles: ``ceil((2 D + Dp + 1) / 2)`` (or ``sine_order``)."""
        degree_r = max(1, _total_degree(self.target_poly))
        n = (2 * degree_r + _total_degree(self.density) + 2) // 2
        return max(n, self.sine_order or 0) if self.n_sines else n

    @property
    def pair_points(self) -> int:
        """Gauss points per direction for ``T(i, j)`` (degree ``2 + Dp``): ``ceil((Dp + 3) / 2)``."""
        return (_total_degree(self.density) + 4) // 2

    @property
    def line_points(self) -> int:
        """Gauss-Legendre points per piece of a line segment: ``ceil((D + Dp + 3) / 2)`` (or ``sine_order``)."""
        degree_r = max(1, _total_degree(self.target_poly))
        n = (degree_r + _total_degree(self.density) + 4) // 2
        return max(n, self.sine_order or 0) if self.n_sines else n

    def density_at(self, x) -> np.ndarray:
        """``p`` at points ``x (P, 2)``; returns ``(P,)``."""
        x = _points(x)
        return _poly2(self.density, x[:, 0], x[:, 1])

    def target(self, x) -> np.ndarray:
        """``f`` at points ``x (P, 2)``; returns ``(P, k)``: polynomial, then teacher, then sine terms."""
        x = _points(x)
        out = np.empty((x.shape[0], self.output_dim))
        for m in range(self.output_dim):
            out[:, m] = _target_pointwise(self, m, x[:, 0], x[:, 1])
        return out


def _points(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x: expected shape (P, 2), got {x.shape}")
    return x


def _poly2(coefficients: np.ndarray, x, y):
    """``sum_{q,s} coefficients[..., q, s] x^q y^s``: Horner in ``y`` for each ``q``, then in ``x``."""
    n_q, n_s = coefficients.shape[-2:]
    value = None
    for q in range(n_q - 1, -1, -1):
        row = coefficients[..., q, n_s - 1]
        for s in range(n_s - 2, -1, -1):
            row = row * y + coefficients[..., q, s]
        value = row if value is None else value * x + row
    return value


def _sines(data: PlanarProblemData, m: int, x, y):
    """``sum_s amp[s, m] sin(freq_s0 x + freq_s1 y + phase_s)``, summed in order ``s = 0, 1, ...``."""
    total = np.zeros(np.broadcast(x, y).shape)
    for s in range(data.n_sines):
        total = total + data.sine_amp[s, m] * np.sin((data.sine_freq[s, 0] * x + data.sine_freq[s, 1] * y) + data.sine_phase[s])
    return total


def _target_pointwise(data: PlanarProblemData, m: int, x, y):
    """``f_m`` with the teacher evaluated pointwise (``relu`` of each teacher preactivation, in order)."""
    value = _poly2(data.target_poly[m], x, y)
    for l in range(data.n_teacher):
        z = data.teacher_b[l] + data.teacher_W[l, 0] * x + data.teacher_W[l, 1] * y
        value = value + data.teacher_V[m, l] * np.maximum(z, 0.0)
    return value + _sines(data, m, x, y)


# ----------------------------------------------------------------------------------------------------
# input checks and the lines of a batch


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def check_inputs(theta, H, k, data):
    """Validate the arguments: returns ``(theta2d (M, n) C-contiguous float64, batch shape, H, k)``.

    ``ValueError`` naming ``theta``, ``H`` or ``k`` for bad values; ``TypeError`` if ``data`` is not a
    :class:`PlanarProblemData`.
    """
    H = _positive_int(H, "H")
    k = _positive_int(k, "k")
    if not isinstance(data, PlanarProblemData):
        raise TypeError(f"data: must be a PlanarProblemData, got {type(data).__name__}")
    if data.output_dim != k:
        raise ValueError(f"k: {k} does not match the target's output dimension {data.output_dim}")
    theta = check_theta(theta, n_params(2, H, k))
    batch = theta.shape[:-1]
    return np.ascontiguousarray(theta.reshape(-1, theta.shape[-1]), dtype=np.float64), batch, H, k


def line_table(theta: np.ndarray, H: int, data: PlanarProblemData) -> tuple[np.ndarray, np.ndarray]:
    """Lines of every run: ``(M, H + Ht, 3)`` rows ``(w0, w1, b)`` (neurons, then teacher) and their ``tol``.

    ``tol_j = SIDE_TOL (|b_j| + (|w_j0| + |w_j1|) X)``, ``X = max(|a|, |b|)`` (module docstring).
    """
    M = theta.shape[0]
    Ht = data.n_teacher
    lines = np.empty((M, H + Ht, 3))
    lines[:, :H, 0] = theta[:, 0 : 2 * H : 2]
    lines[:, :H, 1] = theta[:, 1 : 2 * H : 2]
    lines[:, :H, 2] = theta[:, 2 * H : 3 * H]
    lines[:, H:, :2] = data.teacher_W
    lines[:, H:, 2] = data.teacher_b
    X = max(abs(data.domain[0]), abs(data.domain[1]))
    tol = SIDE_TOL * (np.abs(lines[..., 2]) + (np.abs(lines[..., 0]) + np.abs(lines[..., 1])) * X)
    return lines, tol


def _row_chunks(M: int, n_lines: int):
    """Slices of runs whose padded cell arrays stay below ``CHUNK_ELEMENTS`` elements."""
    max_cells = 1 + n_lines + n_lines * (n_lines - 1) // 2
    rows = max(1, CHUNK_ELEMENTS // (8 * max_cells))
    return [slice(start, min(start + rows, M)) for start in range(0, M, rows)]


# ----------------------------------------------------------------------------------------------------
# convex polygons: side tests, cutting, moments


def _split(vx, vy, nv, line, tol, negative: bool):
    """Cut convex polygons by a line (the rule of the module docstring), vectorized over leading axes.

    ``vx, vy (..., V)`` counterclockwise vertices (``nv (...)`` of them valid), ``line (..., 3)``, ``tol (...)``.
    Returns ``anypos, anyneg (...)`` and the positive piece ``(px, py, count)`` (vertices not strictly
    negative plus crossing points, in boundary order), and the negative piece when ``negative``.
    Pieces are only meaningful where ``anypos & anyneg``.
    """
    V = vx.shape[-1]
    index = np.arange(V)
    valid = index < nv[..., None]
    w0, w1, b = line[..., 0, None], line[..., 1, None], line[..., 2, None]
    s = b + w0 * vx + w1 * vy
    tol = tol[..., None]
    pos = valid & (s > tol)
    neg = valid & (s < -tol)
    anypos = np.any(pos, axis=-1)
    anyneg = np.any(neg, axis=-1)
    nxt = np.where(index + 1 < nv[..., None], index + 1, 0)
    s_n = np.take_along_axis(s, nxt, axis=-1)
    pos_n = np.take_along_axis(pos, nxt, axis=-1)
    neg_n = np.take_along_axis(neg, nxt, axis=-1)
    crossing = (pos & neg_n) | (neg & pos_n)
    with np.errstate(divide="ignore", invalid="ignore"):  # used only where the signs differ
        t = s / (s - s_n)
        cx = vx + t * (np.take_along_axis(vx, nxt, axis=-1) - vx)
        cy = vy + t * (np.take_along_axis(vy, nxt, axis=-1) - vy)
    xs = np.stack([vx, cx], axis=-1).reshape(vx.shape[:-1] + (2 * V,))
    ys = np.stack([vy, cy], axis=-1).reshape(vx.shape[:-1] + (2 * V,))

    def piece(keep):
        flags = np.stack([keep, crossing], axis=-1).reshape(keep.shape[:-1] + (2 * V,))
        count = np.sum(flags, axis=-1)
        width = max(int(np.max(count, initial=0)), 1)
        slot = np.where(flags, np.cumsum(flags, axis=-1) - 1, width)  # unflagged entries go to a dump slot
        out_x = np.zeros(flags.shape[:-1] + (width + 1,))
        out_y = np.zeros(flags.shape[:-1] + (width + 1,))
        np.put_along_axis(out_x, slot, np.where(flags, xs, 0.0), axis=-1)
        np.put_along_axis(out_y, slot, np.where(flags, ys, 0.0), axis=-1)
        return out_x[..., :width], out_y[..., :width], count

    positive = piece(valid & ~neg)
    return anypos, anyneg, positive, (piece(valid & ~pos) if negative else None)


def _pad(array: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad the last axis to ``width``."""
    extra = width - array.shape[-1]
    if extra <= 0:
        return array
    return np.concatenate([array, np.zeros(array.shape[:-1] + (extra,), dtype=array.dtype)], axis=-1)


def _clip_positive(vx, vy, nv, line, tol):
    """``polygon cap {z > 0}`` by the rule of the module docstring: the cut piece, the whole polygon, or empty."""
    anypos, anyneg, (px, py, count), _ = _split(vx, vy, nv, line, tol, negative=False)
    cut = anypos & anyneg
    width = max(vx.shape[-1], px.shape[-1])
    out_x = np.where(cut[..., None], _pad(px, width), _pad(vx, width))
    out_y = np.where(cut[..., None], _pad(py, width), _pad(vy, width))
    out_n = np.where(cut, count, np.where(anypos, nv, 0))
    return out_x, out_y, out_n


def _square(a: float, b: float, shape: tuple[int, ...]):
    """The square ``[a, b]^2`` (counterclockwise from ``(a, a)``) broadcast to ``shape``."""
    vx = np.broadcast_to(np.array([a, b, b, a]), shape + (4,)).copy()
    vy = np.broadcast_to(np.array([a, a, b, b]), shape + (4,)).copy()
    return vx, vy, np.full(shape, 4)


def _fan_nodes(vx, vy, nv, rule):
    """Nodes and weights of the collapsed rule on the fan triangles of every polygon.

    Yields, for each fan triangle ``t = 1 .. V - 2`` and node ``q`` (in that order), ``x, y`` and the weight
    ``omega_q det_t`` (0 where the triangle does not exist).
    """
    su, sv, omega = rule
    x0, y0 = vx[..., 0], vy[..., 0]
    for t in range(1, vx.shape[-1] - 1):
        ex1, ey1 = vx[..., t] - x0, vy[..., t] - y0
        ex2, ey2 = vx[..., t + 1] - x0, vy[..., t + 1] - y0
        det = np.where(t + 1 < nv, ex1 * ey2 - ey1 * ex2, 0.0)
        for q in range(omega.size):
            yield x0 + su[q] * ex1 + sv[q] * ex2, y0 + su[q] * ey1 + sv[q] * ey2, omega[q] * det


def _second_moments(vx, vy, nv, density, rule) -> np.ndarray:
    """``int xt xt^T p`` over polygons as 6 numbers ``(1, x, y, xx, xy, yy)``; shape ``(6,) + nv.shape``."""
    acc = np.zeros((6,) + nv.shape)
    for x, y, weight in _fan_nodes(vx, vy, nv, rule):
        wp = weight * _poly2(density, x, y)
        wx, wy = wp * x, wp * y
        acc[0] += wp
        acc[1] += wx
        acc[2] += wy
        acc[3] += wx * x
        acc[4] += wx * y
        acc[5] += wy * y
    return acc


# ----------------------------------------------------------------------------------------------------
# the arrangement: cells, cell moments, active-set integrals


def _arrangement(lines: np.ndarray, tol: np.ndarray, a: float, b: float):
    """Insert the lines of ``lines (M, L, 3)`` one by one into the square; returns ``vx, vy (M, C, V)``,
    ``nv (M, C)`` (0 for padding cells) and ``bits (M, C, L)`` (cell on the positive side of line ``j``).

    A cut cell keeps its index for its positive piece; the negative pieces of the cells cut by line ``j``
    are appended in the order of the cut cells (so the cell order of a run does not depend on the batch).
    """
    M, L = lines.shape[:2]
    vx, vy, nv = _square(a, b, (M, 1))
    bits = np.zeros((M, 1, L), dtype=bool)
    n_cells = np.ones(M, dtype=np.int64)
    for j in range(L):
        line = np.broadcast_to(lines[:, None, j, :], nv.shape + (3,))
        anypos, anyneg, (px, py, pn), (qx, qy, qn) = _split(vx, vy, nv, line, np.broadcast_to(tol[:, None, j], nv.shape), negative=True)
        cut = anypos & anyneg
        bits[:, :, j] = anypos
        if not np.any(cut):
            continue
        width = max(vx.shape[-1], px.shape[-1], qx.shape[-1])
        vx = np.where(cut[..., None], _pad(px, width), _pad(vx, width))
        vy = np.where(cut[..., None], _pad(py, width), _pad(vy, width))
        nv = np.where(cut, pn, nv)
        n_new = n_cells + np.sum(cut, axis=1)
        grow = int(np.max(n_new)) - nv.shape[1]
        if grow > 0:
            vx = np.concatenate([vx, np.zeros((M, grow, width))], axis=1)
            vy = np.concatenate([vy, np.zeros((M, grow, width))], axis=1)
            nv = np.concatenate([nv, np.zeros((M, grow), dtype=nv.dtype)], axis=1)
            bits = np.concatenate([bits, np.zeros((M, grow, L), dtype=bool)], axis=1)
        run, cell = np.nonzero(cut)
        dest = n_cells[run] + (np.cumsum(cut, axis=1) - 1)[run, cell]
        vx[run, dest] = _pad(qx, width)[run, cell]
        vy[run, dest] = _pad(qy, width)[run, cell]
        nv[run, dest] = qn[run, cell]
        bits[run, dest] = bits[run, cell]
        bits[run, dest, j] = False
        n_cells = n_new
    return vx, vy, nv, bits


def _sequential_sum(values: np.ndarray) -> np.ndarray:
    """Sum over the last axis, left to right (trailing zeros change nothing: batch independent)."""
    return np.cumsum(values, axis=-1)[..., -1]


def _cell_moments(theta, H, k, data):
    """Risk and active-set integrals of ``theta (M, n)`` from the arrangement.

    Returns ``risk (M,)``, ``S (M, k, H, 3)`` (``int_{I_i} xt r_m p``) and ``R (M, k, 3)`` (``int_Q xt r_m p``).
    """
    M = theta.shape[0]
    a, b = data.domain
    lines, tol = line_table(theta, H, data)
    vx, vy, nv, bits = _arrangement(lines, tol, a, b)
    C = nv.shape[1]
    Ht = data.n_teacher
    V = theta[:, 3 * H : 3 * H + k * H].reshape(M, k, H)
    c = theta[:, 3 * H + k * H :]

    # affine pieces on each cell: N_m = A0 x + A1 y + B, teacher part AT0 x + AT1 y + BT (active terms only,
    # added in neuron order)
    affine = []
    for m in range(k):
        A0 = np.zeros((M, C))
        A1 = np.zeros((M, C))
        B = np.broadcast_to(c[:, m, None], (M, C))
        for i in range(H):
            on = bits[:, :, i]
            A0 = A0 + np.where(on, (V[:, m, i] * lines[:, i, 0])[:, None], 0.0)
            A1 = A1 + np.where(on, (V[:, m, i] * lines[:, i, 1])[:, None], 0.0)
            B = B + np.where(on, (V[:, m, i] * lines[:, i, 2])[:, None], 0.0)
        T0 = np.zeros((M, C))
        T1 = np.zeros((M, C))
        TB = np.zeros((M, C))
        for l in range(Ht):
            on = bits[:, :, H + l]
            tv = data.teacher_V[m, l]
            T0 = T0 + np.where(on, tv * data.teacher_W[l, 0], 0.0)
            T1 = T1 + np.where(on, tv * data.teacher_W[l, 1], 0.0)
            TB = TB + np.where(on, tv * data.teacher_b[l], 0.0)
        affine.append((A0, A1, B, T0, T1, TB))

    # cell moments, residual first
    rho = np.zeros((M, C))
    mom = np.zeros((k, 3, M, C))
    for x, y, weight in _fan_nodes(vx, vy, nv, triangle_rule(data.cell_points)):
        wp = weight * _poly2(data.density, x, y)
        squared = None
        for m in range(k):
            A0, A1, B, T0, T1, TB = affine[m]
            f = (_poly2(data.target_poly[m], x, y) + ((T0 * x + T1 * y) + TB)) + _sines(data, m, x, y)
            r = ((A0 * x + A1 * y) + B) - f
            squared = r * r if squared is None else squared + r * r
            wr = wp * r
            mom[m, 0] += wr * x
            mom[m, 1] += wr * y
            mom[m, 2] += wr
        rho += wp * squared

    risk = _sequential_sum(rho)
    S = np.empty((M, k, H, 3))
    for i in range(H):
        on = bits[None, None, :, :, i]
        S[:, :, i, :] = np.moveaxis(_sequential_sum(np.where(on, mom, 0.0)), -1, 0)
    R = np.moveaxis(_sequential_sum(mom), -1, 0)
    return risk, S, R


def _gradient(theta, H, k, S, R) -> np.ndarray:
    """``G`` from the active-set integrals (module docstring), sums over outputs in order ``m = 0, 1, ...``."""
    M = theta.shape[0]
    V = theta[:, 3 * H : 3 * H + k * H].reshape(M, k, H)
    grad = np.empty_like(theta)
    dots = V[:, 0, :, None] * S[:, 0]
    for m in range(1, k):
        dots = dots + V[:, m, :, None] * S[:, m]  # (M, H, 3)
    grad[:, 0 : 2 * H : 2] = 2.0 * dots[..., 0]
    grad[:, 1 : 2 * H : 2] = 2.0 * dots[..., 1]
    grad[:, 2 * H : 3 * H] = 2.0 * dots[..., 2]
    w0, w1, b = theta[:, 0 : 2 * H : 2], theta[:, 1 : 2 * H : 2], theta[:, 2 * H : 3 * H]
    gv = 2.0 * ((w0[:, None] * S[..., 0] + w1[:, None] * S[..., 1]) + b[:, None] * S[..., 2])  # (M, k, H)
    grad[:, 3 * H : 3 * H + k * H] = gv.reshape(M, k * H)
    grad[:, 3 * H + k * H :] = 2.0 * R[..., 2]
    return grad


#: relative accuracy the default Gauss order of sine terms aims at (the bound of the module docstring)
SINE_ACCURACY = 1e-17


def default_sine_order(frequencies: np.ndarray, domain: tuple[float, float], degree: int) -> int:
    """Gauss points per direction that make the bound of the module docstring, ``2 (|omega| h)^m / m!`` with
    ``m = 2 n - e``, fall below :data:`SINE_ACCURACY` for the largest frequency of ``|r|^2`` (twice the largest
    target frequency, products of two sines), ``h`` the square's diagonal and ``e`` the degree of the rest."""
    a, b = domain
    x = 2.0 * float(np.max(np.sqrt(np.sum(np.square(frequencies), axis=1)), initial=0.0)) * np.sqrt(2.0) * (b - a)
    m, term = 1, 2.0 * x
    while term >= SINE_ACCURACY:
        m += 1
        term *= x / m
    return max(2, -(-(m + degree) // 2))


def planar_data(target, density: np.ndarray, domain: tuple[float, float], key: str = "target",
                sine_order: int | None = None) -> PlanarProblemData:
    """The kernel's data of a model target (:mod:`reluflow.model.targets`: ``affine``, ``polynomial``,
    ``relu_network``, ``sine`` and their ``sum``/``stack``) under the density ``density`` on ``domain^2``.
    Another kind raises :class:`~reluflow.model.validation.ConfigError` naming ``key``. The sines' Gauss order is
    ``sine_order`` or :func:`default_sine_order`."""
    from reluflow.model import targets as T
    from reluflow.model.validation import fail

    k = target.output_dim
    polys, teachers, sines = [], [], []

    def add(node, rows, path):
        if isinstance(node, T.Affine):
            P = np.zeros((k, 2, 2))
            P[rows, 0, 0] = node.intercept
            P[rows, 1, 0] = node.slope[:, 0]
            P[rows, 0, 1] = node.slope[:, 1]
            polys.append(P)
        elif isinstance(node, T.PolynomialTerms):
            degree = int(node.powers.max()) + 1
            P = np.zeros((k, degree, degree))
            for powers, coefficient in zip(node.powers, node.coefficients):
                P[rows, powers[0], powers[1]] += coefficient
            polys.append(P)
        elif isinstance(node, T.ReluNetwork):
            V = np.zeros((k, node.width))
            V[rows] = node.V
            teachers.append((node.W, node.b, V))
            P = np.zeros((k, 1, 1))
            P[rows, 0, 0] = node.c
            polys.append(P)
        elif isinstance(node, T.Sine):
            amplitude = np.zeros((1, k))
            amplitude[0, rows] = node.amplitude
            sines.append((node.frequency, node.phase, amplitude))
        elif isinstance(node, T.Sum):
            for t, term in enumerate(node.terms):
                add(term, rows, f"{path}.terms[{t}]")
        elif isinstance(node, T.Stack):
            for m, component in enumerate(node.components):
                add(component, [rows[m]], f"{path}.components[{m}]")
        else:
            fail(f"{path}.kind", f"{node.kind!r} is not evaluated exactly in two dimensions; use affine, polynomial, "
                                 f"relu_network, sine or their sum")

    add(target, list(range(k)), key)
    size = max([P.shape[1] for P in polys] + [1])
    poly = np.zeros((k, size, size))
    for P in polys:
        poly[:, : P.shape[1], : P.shape[2]] += P
    fields = {}
    if teachers:
        fields.update(teacher_W=np.concatenate([t[0] for t in teachers]), teacher_b=np.concatenate([t[1] for t in teachers]),
                      teacher_V=np.concatenate([t[2] for t in teachers], axis=1))
    if sines:
        frequencies = np.array([s[0] for s in sines])
        degree = _total_degree(poly) + _total_degree(np.asarray(density)[None])
        fields.update(sine_freq=frequencies, sine_phase=np.array([s[1] for s in sines]),
                      sine_amp=np.concatenate([s[2] for s in sines]),
                      sine_order=sine_order or default_sine_order(frequencies, domain, degree + 1))
    return PlanarProblemData(domain, density, poly, **fields)


def risk_and_gradient(theta, H: int, k: int, data: PlanarProblemData) -> tuple[np.ndarray, np.ndarray]:
    """Exact risk ``L`` and generalized gradient ``G`` of a d = 2 problem, batched over runs (numpy reference).

    Parameters
    ----------
    theta : (..., n) array, ``n = 2 H + H + k H + k``: ``W (H x 2, row-major) | b | V (k x H) | c``.
    H, k : hidden width and output dimension (``k`` must match ``data``).
    data : the :class:`PlanarProblemData` (domain, density, target).

    Returns ``risk (...)`` and ``grad (..., n)``. Mathematics, construction and conventions: module docstring.
    Raises ``ValueError`` naming the offending argument.
    """
    theta2d, batch, H, k = check_inputs(theta, H, k, data)
    M, n = theta2d.shape
    risk = np.empty(M)
    grad = np.empty((M, n))
    for rows in _row_chunks(M, H + data.n_teacher):
        chunk_risk, S, R = _cell_moments(theta2d[rows], H, k, data)
        risk[rows] = chunk_risk
        grad[rows] = _gradient(theta2d[rows], H, k, S, R)
    return risk.reshape(batch), grad.reshape(batch + (n,))


# ----------------------------------------------------------------------------------------------------
# Jacobian: pairwise moments and line terms


def _pair_moments(theta, H, data):
    """``T(i, j)`` moments ``(6, M, H, H)`` (symmetric in ``i, j``) and ``int_Q p``: square clipped by line
    ``i``, then by line ``j > i`` (``T(i, i)``: clipped by line ``i`` only)."""
    M = theta.shape[0]
    a, b = data.domain
    lines, tol = line_table(theta, H, data)
    rule = triangle_rule(data.pair_points)
    sx, sy, sn = _square(a, b, (1,))
    total = _second_moments(sx, sy, sn, data.density, rule)[0, 0]
    ix, iy, in_ = _clip_positive(*_square(a, b, (M, H)), lines[:, :H], tol[:, :H])  # (M, H, V)
    T = np.empty((6, M, H, H))
    T[:, :, np.arange(H), np.arange(H)] = _second_moments(ix, iy, in_, data.density, rule)
    for i in range(H - 1):
        others = slice(i + 1, H)
        shape = (M, H - 1 - i)
        jx, jy, jn = _clip_positive(
            np.broadcast_to(ix[:, i, None], shape + ix.shape[-1:]), np.broadcast_to(iy[:, i, None], shape + iy.shape[-1:]),
            np.broadcast_to(in_[:, i, None], shape), lines[:, others], tol[:, others],
        )  # fmt: skip
        moments = _second_moments(jx, jy, jn, data.density, rule)
        T[:, :, i, others] = moments
        T[:, :, others, i] = moments
    return T, total


def _segments(lines, tol, a, b):
    """Segments ``ell cap interior(Q)`` of ``lines (..., 3)``: endpoints ``(x0, y0, x1, y1)`` and whether
    the line enters the interior (the square is cut: corners strictly on both sides).

    The endpoints are the first two of: corners on the line and crossing points on the edges, taken
    counterclockwise from ``(a, a)`` (there are exactly two when the square is cut).
    """
    shape = lines.shape[:-1]
    vx, vy, _ = _square(a, b, shape)
    s = lines[..., 2, None] + lines[..., 0, None] * vx + lines[..., 1, None] * vy
    sgn_pos, sgn_neg = s > tol[..., None], s < -tol[..., None]
    cut = np.any(sgn_pos, axis=-1) & np.any(sgn_neg, axis=-1)
    on = ~sgn_pos & ~sgn_neg
    # candidates in boundary order: corner k if on the line, then the crossing point of edge (k, k + 1)
    nxt = np.array([1, 2, 3, 0])
    crossing = (sgn_pos & sgn_neg[..., nxt]) | (sgn_neg & sgn_pos[..., nxt])
    with np.errstate(divide="ignore", invalid="ignore"):  # used only where the signs differ
        t = s / (s - s[..., nxt])
        cx = vx + t * (vx[..., nxt] - vx)
        cy = vy + t * (vy[..., nxt] - vy)
    flags = np.stack([on, crossing], axis=-1).reshape(shape + (8,))
    xs = np.stack([vx, cx], axis=-1).reshape(shape + (8,))
    ys = np.stack([vy, cy], axis=-1).reshape(shape + (8,))
    rank = np.cumsum(flags, axis=-1)
    first = np.argmax(flags & (rank == 1), axis=-1)[..., None]
    second = np.argmax(flags & (rank == 2), axis=-1)[..., None]
    ends = [np.take_along_axis(arr, idx, axis=-1)[..., 0] for idx in (first, second) for arr in (xs, ys)]
    return ends, cut


def _line_terms(theta, H, k, data) -> np.ndarray:
    """``Lambda_i`` as 6 numbers ``(1, x, y, xx, xy, yy)`` of ``int 2 (V_i . r) p xt xt^T ds / |w_i|``: ``(6, M, H)``."""
    M = theta.shape[0]
    a, b = data.domain
    lines, tol = line_table(theta, H, data)
    L = lines.shape[1]
    V = theta[:, 3 * H : 3 * H + k * H].reshape(M, k, H)
    c = theta[:, 3 * H + k * H :]
    (x0, y0, x1, y1), cut = _segments(lines[:, :H], tol[:, :H], a, b)  # (M, H)
    nodes, weights = gauss_legendre(data.line_points)
    out = np.zeros((6, M, H))
    for i in range(H):
        if not np.any(cut[:, i]):
            continue
        # crossings of the other lines with the segment, as parameters tau in (0, 1); none: tau = 1
        s0 = lines[..., 2] + lines[..., 0] * x0[:, i, None] + lines[..., 1] * y0[:, i, None]  # (M, L)
        s1 = lines[..., 2] + lines[..., 0] * x1[:, i, None] + lines[..., 1] * y1[:, i, None]
        crosses = ((s0 > tol) & (s1 < -tol)) | ((s0 < -tol) & (s1 > tol))
        crosses[:, i] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = np.where(crosses, s0 / (s0 - s1), 1.0)
        breaks = np.concatenate([np.zeros((M, 1)), np.sort(tau, axis=1), np.ones((M, 1))], axis=1)  # (M, L + 2)
        mid = 0.5 * (breaks[:, :-1] + breaks[:, 1:])
        half = 0.5 * (breaks[:, 1:] - breaks[:, :-1])  # (M, L + 1)
        dx = (x1[:, i] - x0[:, i])[:, None]
        dy = (y1[:, i] - y0[:, i])[:, None]
        acc = np.zeros((6, M, L + 1))
        for q in range(nodes.size):
            tq = mid + half * nodes[q]
            x = x0[:, i, None] + tq * dx
            y = y0[:, i, None] + tq * dy
            v_dot_r = None
            for m in range(k):
                N = np.broadcast_to(c[:, m, None], x.shape)
                for j in range(H):
                    if j != i:
                        z = lines[:, j, 2, None] + lines[:, j, 0, None] * x + lines[:, j, 1, None] * y
                        N = N + V[:, m, j, None] * np.maximum(z, 0.0)
                term = V[:, m, i, None] * (N - _target_pointwise(data, m, x, y))
                v_dot_r = term if v_dot_r is None else v_dot_r + term
            g = (weights[q] * half) * (2.0 * v_dot_r * _poly2(data.density, x, y))
            gx, gy = g * x, g * y
            acc[0] += g
            acc[1] += gx
            acc[2] += gy
            acc[3] += gx * x
            acc[4] += gx * y
            acc[5] += gy * y
        w0, w1 = lines[:, i, 0], lines[:, i, 1]
        with np.errstate(divide="ignore", invalid="ignore"):  # w = 0 only where the line is not cut
            factor = np.sqrt((dx[:, 0] * dx[:, 0] + dy[:, 0] * dy[:, 0]) / (w0 * w0 + w1 * w1))
            out[:, :, i] = np.where(cut[:, i], factor * _sequential_sum(acc), 0.0)
    return out


def _moment_matrix(mom):
    """The 3x3 matrix ``int xt xt^T (...)`` from the 6 numbers ``(1, x, y, xx, xy, yy)``: ``(..., 3, 3)``."""
    one, x, y, xx, xy, yy = mom
    return np.stack([np.stack([xx, xy, x], -1), np.stack([xy, yy, y], -1), np.stack([x, y, one], -1)], -2)


def _u_index(H: int) -> np.ndarray:
    """Positions of ``(w_i0, w_i1, b_i)`` in ``theta``: ``(H, 3)``."""
    i = np.arange(H)
    return np.stack([2 * i, 2 * i + 1, 2 * H + i], axis=1)


def _assemble(theta, H, k, T, total, Lam, S) -> np.ndarray:
    """``J (M, n, n)`` from ``T (6, M, H, H)``, ``int_Q p``, ``Lambda (6, M, H)``, ``S (M, k, H, 3)``."""
    M, n = theta.shape
    u = np.stack([theta[:, 0 : 2 * H : 2], theta[:, 1 : 2 * H : 2], theta[:, 2 * H : 3 * H]], axis=-1)  # (M, H, 3)
    V = theta[:, 3 * H : 3 * H + k * H].reshape(M, k, H)
    TM = _moment_matrix(T)  # (M, H, H, 3, 3)
    Lm = _moment_matrix(Lam)  # (M, H, 3, 3)
    # E(i, j) = T(i, j) u_j (sum over the column index in order), P(i, j) = u_i . E(i, j) for i <= j
    E = TM[..., 0] * u[:, None, :, None, 0]
    for col in (1, 2):
        E = E + TM[..., col] * u[:, None, :, None, col]  # (M, i, j, 3)
    P = u[:, :, None, 0] * E[..., 0]
    for row in (1, 2):
        P = P + u[:, :, None, row] * E[..., row]
    upper = np.triu(np.ones((H, H), dtype=bool))
    P = np.where(upper, P, np.swapaxes(P, 1, 2))
    VV = V[:, 0, :, None] * V[:, 0, None, :]
    for m in range(1, k):
        VV = VV + V[:, m, :, None] * V[:, m, None, :]

    jac = np.zeros((M, n, n))
    ui = _u_index(H)
    diag = np.arange(H)
    # u-u block
    block = 2.0 * VV[..., None, None] * TM  # (M, i, j, 3, 3)
    block[:, diag, diag] += Lm
    jac[:, ui[:, :, None, None], ui[None, None, :, :]] = np.moveaxis(block, 3, 2)  # (M, i, a, j, b)
    off_c = 3 * H + k * H
    Td = TM[:, diag, diag]  # (M, i, 3, 3): T(i, i)
    for m in range(k):
        vm = 3 * H + m * H + np.arange(H)
        uv = 2.0 * V[:, m, :, None, None] * E  # (M, i, j, 3)
        uv[:, diag, diag] += 2.0 * S[:, m]
        jac[:, ui[:, :, None], vm[None, None, :]] = np.moveaxis(uv, 3, 2)  # (M, i, a, j)
        jac[:, vm[None, None, :], ui[:, :, None]] = np.moveaxis(uv, 3, 2)
        jac[:, vm[:, None], vm[None, :]] = 2.0 * P
        uc = 2.0 * V[:, m, :, None] * Td[..., 2]  # (M, i, 3)
        jac[:, ui, off_c + m] = uc
        jac[:, off_c + m, ui] = uc
        vc = 2.0 * ((u[..., 0] * Td[..., 0, 2] + u[..., 1] * Td[..., 1, 2]) + u[..., 2] * Td[..., 2, 2])
        jac[:, vm, off_c + m] = vc
        jac[:, off_c + m, vm] = vc
        jac[:, off_c + m, off_c + m] = 2.0 * total
    return jac


def gradient_jacobian(theta, H: int, k: int, data: PlanarProblemData) -> np.ndarray:
    """Jacobian ``dG/dtheta`` (the Hessian of ``L`` where it exists) of a d = 2 problem, batched (numpy).

    Same arguments as :func:`risk_and_gradient`; returns ``(..., n, n)``, exactly symmetric. The velocity
    ``-G`` of the gradient flow has Jacobian ``-J``. Formula (area and line terms) and the one-sided
    conventions at non-differentiable points: module docstring.
    """
    theta2d, batch, H, k = check_inputs(theta, H, k, data)
    M, n = theta2d.shape
    jac = np.empty((M, n, n))
    for rows in _row_chunks(M, H + data.n_teacher):
        part = theta2d[rows]
        _, S, _ = _cell_moments(part, H, k, data)
        T, total = _pair_moments(part, H, data)
        Lam = _line_terms(part, H, k, data)
        jac[rows] = _assemble(part, H, k, T, total, Lam, S)
    return jac.reshape(batch + (n, n))
