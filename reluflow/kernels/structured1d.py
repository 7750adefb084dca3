"""The linear systems of a stiff step for d = 1 in O(H log H) per run: ``(sigma I - J) x = r``.

A Rosenbrock step solves ``W u = r`` with ``W = sigma I - J`` (``sigma = 1 / (h gamma) > 0``, one per run) for
several right-hand sides, ``J`` the Jacobian of the flow's velocity: ``J = -dG/dtheta`` for the standard flow and
the Jacobian of ``-P G`` for the normalized flow (:mod:`reluflow.flows`). Formed densely, ``W`` costs ``O(H^2)``
to build and ``O(H^3)`` to factorize. This module factorizes it in ``O(H log H)`` (one sort, then linear work)
without forming any ``n x n`` matrix; below :func:`dense_below_width` neurons (20 for ``k = 1``) the dense path is
faster and is used.

Structure of the Hessian (notation of :mod:`reluflow.jacobian1d`; MATH.md, "The stiff step in O(H log H)").
Sort the neuron positions ``clip(xi_i, a, b)`` (``a`` when ``w_i = 0``): slot ``t = 0..H-1`` holds the neuron
``order[t]``, and segment ``g = 0..H`` is ``[pos_(g-1), pos_(g)]`` (``pos_(-1) = a``, ``pos_(H) = b``; segments of
zero length where positions coincide). A neuron that switches on (``w_i > 0``, or ``w_i = 0 < b_i``) in slot
``t`` is active on the segments ``g > t``, any other neuron on the segments ``g <= t``. On segment ``g`` the
derivative of ``N_m`` in a direction ``v`` is affine in ``x``, with slope and intercept

    u_g^m = sum_{i active on g} C_i^m v_i  +  (0, v_{c_m}),       C_i^m v_i = (V[m,i] v_w + w_i v_V[m],
                                                                              V[m,i] v_b + b_i v_V[m]),

``v_i = (v_{w_i}, v_{b_i}, v_{V[:, i]})``. Hence the Gauss-Newton part of ``dG/dtheta`` is
``2 sum_m int (dN_m v)(dN_m v') p = sum_{g, m} (u_g^m)^T M_g u'^m_g`` with the moment matrix
``M_g = 2 [[int_g x^2 p, int_g x p], [int_g x p, int_g p]]``, and the rest of ``dG/dtheta`` couples only the
parameters of one neuron: the block ``B_i`` on ``(w_i, b_i, V[:, i])`` with ``rho_i [[xi^2, xi], [xi, 1]]`` on
``(w_i, b_i)`` and ``2 S_1(i, m)``, ``2 S_0(i, m)`` between ``w_i``, ``b_i`` and ``V[m, i]``. So

    dG/dtheta = Phi^T M Phi + B,      W = D + Pi Phi^T M Phi,

``Phi`` the map ``v -> (u_g^m)``, ``M = diag(M_g)``; standard flow: ``Pi = I``, ``D = sigma I + B``; normalized
flow: ``Pi`` multiplies the rows of ``u_i = (w_i, b_i)`` by ``P_i = I - u_i u_i^T / |u_i|^2`` and
``D = sigma I + Pi B - Blk`` with the per-neuron block ``Blk_i = (u_i g^T - 2 s u_i u_i^T) / |u_i|^2 + s I``
(``g = G_{u_i}``, ``s = u_i . g / |u_i|^2``; :meth:`reluflow.flows.NormalizedFlow.jac`). ``D`` is block diagonal
with blocks of size ``2 + k`` (and ``sigma`` on ``c``).

The augmented system. ``Phi v`` is a prefix sum over slots (switch-on neurons and ``c``) plus a suffix sum
(switch-off neurons): ``u_g = L_g + R_g`` with ``L_g = L_{g-1} + [on, slot g-1] C v``, ``L_0 = (0, v_c)`` and
``R_g = R_{g+1} + [off, slot g] C v``, ``R_H = 0``. Its transpose applied to ``y_g = M_g u_g`` is a suffix sum
``Y_g = sum_{g' >= g} y_g'`` (read by switch-on neurons in slot ``t`` at ``g = t + 1``, and by ``c`` at 0) or a
prefix sum ``Z_g = sum_{g' <= g} y_g'`` (switch-off neurons at ``g = t``). With these as unknowns,
``W x = r`` is equivalent to the sparse system (per segment ``8 k`` chain unknowns, per slot ``2 + k``)

    D_i x_i + Pi_i C_i^T (Y_{t+1} or Z_t) = r_i,        sigma x_c + (intercepts of Y_0) = r_c,
    L_g - L_{g-1} - [on] C x = 0,     R_g - R_{g+1} - [off] C x = 0,
    Y_g - Y_{g+1} - M_g (L_g + R_g) = 0,     Z_g - Z_{g-1} - M_g (L_g + R_g) = 0,

whose Schur complement onto ``x`` is ``W`` (the chain blocks are unit triangular): it is singular exactly when
``W`` is, and it needs no inverse of ``M`` (singular for segments of zero length) or of ``D`` (singular when
``sigma`` meets an eigenvalue of a block). Unknowns ordered by segment (``[Y_g, L_g, R_g, x_g, Z_g]``) and
equations by their first column, it is a band matrix whose bandwidths depend on ``k`` only (``kl, ku = 6, 10``
for ``k = 1``, ``11, 18`` for ``k = 2``). Gaussian elimination with partial pivoting on the band (the algorithm of
LAPACK's ``gbtf2``) costs ``O(N kl (kl + ku))``, ``N = (9 k + 2) H + 9 k``, and each solve ``O(N (2 kl + ku))``;
both skip the band's structural zeros. Storage per run: ``N (2 kl + ku + 1)`` numbers, about 2 KB per neuron
for ``k = 1``.

Per-run quantities (``_structure``, after the sort): the slope and intercept of ``N`` on each segment (prefix and
suffix sums), then on each segment cut at the table's knots the Gauss-Legendre moments ``int x^s p``
(``s <= 2``) and, residual first as in :mod:`reluflow.exact1d`, ``int x^s r_m p`` (``s <= 1``); their prefix or
suffix sums are ``S_s(i, m)``; ``rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i|`` with ``N(xi_i)`` from the segment on
``I_i``'s side and ``p, f`` from that side, as :mod:`reluflow.jacobian1d` (whose one-sided conventions at kinks
on ``a``, ``b``, knots, and for ``w_i = 0`` are the same here, see its docstring). Cost per run: the sort, plus
``O((H + L) Q k)`` for the quadrature, plus the band factorization.

Accuracy. The structured solve is Gaussian elimination with partial pivoting of the augmented matrix, whose
entries are the same integrals as the dense Jacobian's (summed over segments instead of over the intersections of
active sets). Against ``numpy.linalg.solve`` of the dense ``W`` (``tests/test_structured1d.py``) its normwise
backward error was at most 1.4 ``eps`` and its forward error at most 2 ``eps cond(W)`` on every case tested
(degenerate kinks, jumps of ``p`` and ``f`` at kinks, ``k = 2``, sine targets, ``sigma`` from ``1e-8`` to
``1e8``, both flows), that is as accurate as the dense LU. Every run is processed on its own by the compiled
kernels (:mod:`reluflow.kernels._structured1d_kernel`), so its numbers are bitwise independent of the batch.
"""

from __future__ import annotations

import functools

import numpy as np

from reluflow.kernels import _structured1d_kernel as _kernel
from reluflow.kernels.exact1d import check_inputs
from reluflow.kernels.exact1d_numba import risk_and_gradient
from reluflow.kernels.jacobian1d import gradient_jacobian

__all__ = ["FLOWS", "METHODS", "ShiftedJacobianFactorization", "ShiftedSystem", "dense_below_width", "factorize",
           "jacobian_vector_product", "velocity_jacobian"]  # fmt: skip

FLOWS = ("standard", "normalized")
METHODS = ("auto", "structured", "dense")


def dense_below_width(output_dim: int) -> int:
    """The width below which ``method="auto"`` factorizes densely: the measured crossover.

    ``benchmarks/bench_structured1d.py`` (``M = 8`` runs, factorization and 6 solves): the structured path is
    faster from ``H = 20`` on for ``k = 1`` and from ``H = 32`` on for ``k = 2`` and ``k = 3`` (its cost per neuron
    grows like ``k^3``, the dense cost like ``(2 + k)^3 H^3``). Below that the difference is under a millisecond.
    """
    return 20 if output_dim == 1 else 32


def _check_flow(flow: str) -> bool:
    """``True`` for the normalized flow; ``ValueError`` naming ``flow`` for an unknown name."""
    if flow not in FLOWS:
        raise ValueError(f"flow: must be one of {list(FLOWS)}, got {flow!r}")
    return flow == "normalized"


@functools.lru_cache(maxsize=32)
def _band_layout(H: int, k: int) -> tuple[np.ndarray, int, int]:
    """Row of every equation of the augmented system and its bandwidths ``kl, ku`` (a function of ``H, k``).

    Equations are sorted by their first column (ties by last column, then by name), so that the ``t``-th row
    starts near column ``t``: ``kl = max(row - first)``, ``ku = max(last - row)``.
    """
    extent = _kernel.equation_extents(H, k)
    first, last = extent[:, 0], extent[:, 1]
    rows = np.lexsort((np.arange(first.size), last, first))
    row_of = np.empty(first.size, np.int64)
    row_of[rows] = np.arange(first.size)
    kl = int(np.max(row_of - first))
    ku = int(np.max(last - row_of))
    row_of.setflags(write=False)
    return row_of, kl, ku


def velocity_jacobian(theta, table, width: int, flow: str = "standard") -> np.ndarray:
    """The dense ``J (..., n, n)`` of the velocity: ``-dG/dtheta`` or the Jacobian of ``-P G`` (normalized).

    ``dG/dtheta`` from :func:`reluflow.jacobian1d.gradient_jacobian`, ``G`` from the compiled exact kernel; the
    projection as in :meth:`reluflow.flows.NormalizedFlow.jac`: the rows of ``u_i = (w_i, b_i)`` are
    ``-P_i dG/dtheta`` plus ``(u_i g^T - 2 s u_i u_i^T) / |u_i|^2 + s I`` in the ``(u_i, u_i)`` block
    (``g = G_{u_i}``, ``s = u_i . g / |u_i|^2``), unchanged (``-dG/dtheta``) where ``u_i = 0``.
    """
    normalized = _check_flow(flow)
    jac_g = gradient_jacobian(theta, table, width)
    if not normalized:
        return -jac_g
    H = int(width)
    grad = risk_and_gradient(theta, table, H)[1]
    idx = np.stack([np.arange(H), H + np.arange(H)], axis=1)  # (H, 2): w_i, b_i
    u = np.asarray(theta, dtype=float)[..., idx]
    gu = grad[..., idx]
    uu = np.sum(u * u, axis=-1)
    inv = np.divide(1.0, uu, out=np.zeros_like(uu), where=uu > 0)
    s = np.sum(gu * u, axis=-1) * inv
    rows = jac_g[..., idx, :]
    along = np.einsum("...hq,...hqn->...hn", u, rows) * inv[..., None]
    out = -jac_g
    out[..., idx, :] = -(rows - u[..., None] * along[..., None, :])
    block = (u[..., :, None] * gu[..., None, :] - 2.0 * s[..., None, None] * u[..., :, None] * u[..., None, :]) \
        * inv[..., None, None] + s[..., None, None] * np.eye(2)
    out[..., idx[:, :, None], idx[:, None, :]] += block
    return out


class ShiftedJacobianFactorization:
    """A factorization of ``W = sigma I - J`` for a batch of runs (made by :func:`factorize`).

    Attributes
    ----------
    ok : (...) bool array, False where ``W`` is singular (a zero pivot); :meth:`solve` returns NaN there.
    method : ``"structured"`` (the augmented band system) or ``"dense"`` (LU of the dense ``W``).
    n : the number of parameters.
    """

    def __init__(self, method: str, batch: tuple, n: int, ok: np.ndarray, solve_rows):
        self.method = method
        self.n = n
        self._batch = batch
        self.ok = ok.reshape(batch)
        self._solve_rows = solve_rows

    def solve(self, rhs) -> np.ndarray:
        """``W^{-1} rhs`` for ``rhs (..., n)`` with the batch shape of ``theta``; each run's row on its own."""
        rhs = np.asarray(rhs, dtype=float)
        if rhs.shape != self._batch + (self.n,):
            raise ValueError(f"rhs: expected shape {self._batch + (self.n,)}, got {rhs.shape}")
        rhs2d = np.ascontiguousarray(rhs.reshape(-1, self.n))
        out = np.empty_like(rhs2d)
        self._solve_rows(rhs2d, out)
        return out.reshape(rhs.shape)


class ShiftedSystem:
    """The structured factorization of ``W = sigma I - J`` as a reusable object, for a stiff solver's step loop.

    Made once per problem (``arrays`` the checked :class:`~reluflow.kernels.exact1d.TableArrays`, ``width`` = H,
    ``flow`` as in :func:`factorize`); :meth:`factor` factorizes the systems of a batch of runs into buffers
    kept between calls (no per-call validation or allocation), :meth:`solve` solves with the last factors.
    Arithmetic: that of :func:`factorize` with ``method="structured"`` (the same kernels), so the same numbers.
    """

    def __init__(self, arrays, width: int, flow: str = "standard"):
        self.normalized = _check_flow(flow)
        self.arrays = arrays
        self.H = int(width)
        self.k = arrays.output_dim
        self.n = (2 + self.k) * self.H + self.k
        self.row_of, self.kl, self.ku = _band_layout(self.H, self.k)
        self._nodes = np.array(arrays.nodes)
        self._weights = np.array(arrays.weights)
        self._capacity = 0
        self._m = 0

    def _reserve(self, m: int) -> None:
        if m <= self._capacity:
            return
        N = self.row_of.size
        self.band = np.empty((m, N, 2 * self.kl + self.ku + 1))
        self.piv, self.u_first, self.l_count = (np.empty((m, N), dtype=np.int64) for _ in range(3))
        self.order = np.empty((m, self.H), dtype=np.int64)
        self.ok = np.empty(m, dtype=np.bool_)
        self._capacity = m

    def factor(self, theta2d: np.ndarray, sigma1d: np.ndarray) -> np.ndarray:
        """Factorize ``sigma1d[r] I - J(theta2d[r])`` for every row (C-contiguous float64 ``(m, n)``, finite,
        and ``(m,)`` positive); returns ``ok (m,)``, False where ``W`` is singular."""
        m = theta2d.shape[0]
        self._reserve(m)
        self._m = m
        a = self.arrays
        _kernel.factor_rows(
            theta2d, sigma1d, self.H, a.knots, a.target_poly, a.sines, a.density_poly, self._nodes, self._weights,
            self.normalized, self.row_of, self.kl, self.ku, self.band[:m], self.piv[:m], self.u_first[:m],
            self.l_count[:m], self.order[:m], self.ok[:m],
        )  # fmt: skip
        return self.ok[:m]

    def solve(self, rhs2d: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[r] = W_r^{-1} rhs2d[r]`` with the factors of the last :meth:`factor` (NaN where not ok)."""
        m = self._m
        _kernel.solve_rows(self.band[:m], self.piv[:m], self.u_first[:m], self.l_count[:m], self.order[:m],
                           self.ok[:m], self.row_of, self.kl, self.ku, self.H, self.k, rhs2d, out)
        return out


def factorize(theta, sigma, table, width: int, flow: str = "standard", method: str = "auto") -> ShiftedJacobianFactorization:
    """Factorize ``W = sigma I - J`` for every run of a d = 1 problem.

    Parameters
    ----------
    theta : (..., n) parameters, ``n = 2 H + k H + k`` (MATH.md section 1 layout).
    sigma : (...) positive finite shifts (a scalar is broadcast), ``1 / (h gamma)`` in a Rosenbrock step.
    table : the problem's :class:`~reluflow.piecewise.PiecewiseTable`.
    width : ``H``.
    flow : ``"standard"`` (``J = -dG/dtheta``) or ``"normalized"`` (``J`` the Jacobian of ``-P G``).
    method : ``"structured"`` (the augmented band system, O(H log H) per run), ``"dense"`` (LU of the dense
        ``W``, O(H^3)) or ``"auto"`` (dense below :func:`dense_below_width` neurons, else structured).

    Returns
    -------
    A :class:`ShiftedJacobianFactorization` with ``.solve(rhs)`` and ``.ok``. Raises ``ValueError`` naming
    ``theta``, ``sigma``, ``width``, ``flow``, ``method`` or the ``table`` field on bad input.
    """
    normalized = _check_flow(flow)
    if method not in METHODS:
        raise ValueError(f"method: must be one of {list(METHODS)}, got {method!r}")
    theta2d, batch, H, arrays = check_inputs(theta, table, width)
    M, n = theta2d.shape
    try:
        sigma1d = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma, dtype=float), batch).reshape(M))
    except ValueError:
        raise ValueError(f"sigma: must broadcast to the batch shape {batch} of theta, got shape {np.shape(sigma)}") from None
    if not np.all(np.isfinite(sigma1d) & (sigma1d > 0)):
        raise ValueError("sigma: entries must be finite and positive")
    ok = np.empty(M, dtype=np.bool_)
    k = arrays.output_dim
    if method == "dense" or (method == "auto" and H < dense_below_width(k)):
        jac = np.ascontiguousarray(velocity_jacobian(theta2d, table, H, flow))
        lu = np.empty((M, n, n))
        piv = np.empty((M, n), dtype=np.int64)
        _kernel.dense_factor_rows(jac, sigma1d, lu, piv, ok)
        return ShiftedJacobianFactorization(
            "dense", batch, n, ok, lambda rhs, out: _kernel.dense_solve_rows(lu, piv, ok, rhs, out)
        )
    row_of, kl, ku = _band_layout(H, k)
    N = row_of.size
    band = np.empty((M, N, 2 * kl + ku + 1))
    piv, u_first, l_count = (np.empty((M, N), dtype=np.int64) for _ in range(3))
    order = np.empty((M, H), dtype=np.int64)
    _kernel.factor_rows(
        theta2d, sigma1d, H, arrays.knots, arrays.target_poly, arrays.sines, arrays.density_poly,
        np.array(arrays.nodes), np.array(arrays.weights), normalized, row_of, kl, ku, band, piv, u_first, l_count,
        order, ok,
    )  # fmt: skip
    return ShiftedJacobianFactorization(
        "structured", batch, n, ok,
        lambda rhs, out: _kernel.solve_rows(band, piv, u_first, l_count, order, ok, row_of, kl, ku, H, k, rhs, out),
    )  # fmt: skip


def jacobian_vector_product(theta, v, table, width: int, flow: str = "standard") -> np.ndarray:
    """``J v`` for ``theta, v (..., n)``, ``J`` the Jacobian of the velocity, in O(H log H) per run.

    ``J v = -(Pi (Phi^T M Phi + B) v - Blk v)`` (module docstring; ``Pi = I``, ``Blk = 0`` for the standard
    flow), by the prefix and suffix sums over the sorted segments: no matrix is formed.
    """
    normalized = _check_flow(flow)
    theta2d, batch, H, arrays = check_inputs(theta, table, width)
    n = theta2d.shape[1]
    v = np.asarray(v, dtype=float)
    if v.shape != batch + (n,):
        raise ValueError(f"v: expected shape {batch + (n,)}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("v: entries must be finite")
    out = np.empty_like(theta2d)
    _kernel.jvp_rows(
        theta2d, np.ascontiguousarray(v.reshape(-1, n)), H, arrays.knots, arrays.target_poly, arrays.sines,
        arrays.density_poly, np.array(arrays.nodes), np.array(arrays.weights), normalized, out,
    )  # fmt: skip
    return out.reshape(batch + (n,))
