"""Exact risk and generalized gradient of a d = 1 problem: the pure-numpy, batched reference path.

Mathematics (MATH.md sections 2-3). For ``theta = (w, b, V, c)`` (``w, b`` in ``R^H``, ``V`` in
``R^{k x H}``, ``c`` in ``R^k``), ``N(x) = c + V relu(w x + b)`` and the residual ``r = N - f``,

    L(theta)    = int_a^b |r(x)|^2 p(x) dx
    G_W[i]      = 2 sum_m V[m, i] S1_{i,m},    G_b[i] = 2 sum_m V[m, i] S0_{i,m},
    G_V[m, i]   = 2 (w_i S1_{i,m} + b_i S0_{i,m}),    G_c[m] = 2 int_a^b r_m p dx,

where ``S0_{i,m} = int_{I_i} r_m p dx`` and ``S1_{i,m} = int_{I_i} x r_m p dx`` over the strict active set
``I_i = {x in [a, b] : w_i x + b_i > 0}`` (relu'(0) = 0). ``I_i`` is ``(xi_i, b]`` if ``w_i > 0`` and
``[a, xi_i)`` if ``w_i < 0``, with the kink ``xi_i = -b_i / w_i``; for ``w_i = 0`` it is ``[a, b]`` if
``b_i > 0`` and empty otherwise. (``G_V = 2 int_{I_i} (w_i x + b_i) r p`` since ``relu(w_i x + b_i)`` is
``w_i x + b_i`` on ``I_i`` and 0 elsewhere.)

Algorithm ("residual first"). Cut ``[a, b]`` at the kinks inside it and at the table's knots. On each
piece of this merged partition the set of active neurons is fixed, so ``N(x) = A x + B`` with
``A = sum_{i active} V[:, i] w_i`` and ``B = c + sum_{i active} V[:, i] b_i``; the target and the
density are the table's polynomials (plus sines). The residual ``r = A x + B - f`` is formed pointwise
at the ``Q = table.quad_nodes`` Gauss-Legendre nodes ``x = mid + half t_q`` of the piece and the piece
moments

    rho_j = int_j |r|^2 p,   m0_j = int_j r p,   m1_j = int_j x r p     (vectors over outputs)

are accumulated. Forming ``r`` before squaring keeps tiny risks resolved: ``|r|^2`` is never the
difference of ``|N|^2 - 2 N.f + |f|^2``, which would cancel catastrophically when ``L ~ 1e-18``.
The rule is exact (to rounding) when ``2 Q - 1`` is at least the degree of ``|r|^2 p`` and of ``x r p``
(checked here for the polynomial part) and accurate to rounding for the sine terms of a table whose
intervals satisfy ``|omega| * width <= 1``.

Every neuron switches state at one event: a neuron with ``w_i > 0`` (or ``w_i = 0 < b_i``) switches on
at ``clip(xi_i, a, b)`` (at ``a`` when ``w_i = 0``), and is active on the pieces to the right of its
event; any other neuron switches off at ``clip(xi_i, a, b)`` (at ``a`` when ``w_i = 0``, i.e. never
active) and is active on the pieces to its left. The neuron events and the ``L + 1`` knots are sorted
together (per row); pieces between equal positions have zero length and contribute exactly 0.
``A`` and ``B`` on piece ``j`` are the prefix sum of the switch-on contributions of events ``<= j`` plus
the suffix sum of the switch-off contributions of events ``> j``: each piece sums only neurons active
on it (no add-then-subtract residue). ``S0_i, S1_i`` are suffix sums (switch-on neurons) or prefix
sums (switch-off neurons) of ``m0, m1`` over pieces, each accumulated sequentially.

Cost per run: one sort of ``H + L + 1`` events plus ``(H + L) Q k`` work. Every reduction runs along a
row (``cumsum``, explicit loops over nodes and outputs), so each run's numbers are bitwise independent
of the batch it is computed in. :mod:`reluflow.kernels.exact1d_numba` gives the same numbers (to a few ulps of the
natural scale) from a compiled per-row kernel; this module is its reference.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from reluflow.model.network import check_theta, n_params
from reluflow.model.piecewise import PiecewiseTable

__all__ = ["risk_and_gradient", "risk_and_gradient_rows", "TableArrays", "prepare", "gauss_legendre",
           "required_quad_nodes"]


@functools.lru_cache(maxsize=64)
def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``t_q`` and weights ``omega_q`` of the ``n``-point Gauss-Legendre rule on ``[-1, 1]`` (read-only).

    ``int_lo^hi g(x) dx = half * sum_q omega_q g(mid + half t_q)`` exactly for polynomials of degree
    ``<= 2 n - 1`` (``mid = (lo + hi) / 2``, ``half = (hi - lo) / 2``).
    """
    nodes, weights = np.polynomial.legendre.leggauss(int(n))
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def _effective_degree(coefficients: np.ndarray) -> int:
    """Highest power with a nonzero coefficient on any interval (0 for an all-zero array)."""
    nonzero = np.flatnonzero(np.any(coefficients.reshape(-1, coefficients.shape[-1]) != 0, axis=0))
    return int(nonzero[-1]) if nonzero.size else 0


def required_quad_nodes(table: PiecewiseTable) -> int:
    """Fewest Gauss-Legendre nodes per piece that integrate the polynomial part of the data exactly.

    With target degree ``Dt`` and density degree ``Dp``, on a piece ``r`` has degree ``D = max(1, Dt)``
    (the network is affine), so ``|r|^2 p`` has degree ``2 D + Dp`` and ``x r p`` degree ``1 + D + Dp <=
    2 D + Dp``; ``Q`` nodes are exact up to degree ``2 Q - 1``. Sine terms need more nodes: that is the
    table builder's business (``quad_nodes`` is taken as given when it is at least this number).
    """
    degree_r = max(1, _effective_degree(np.asarray(table.target_poly, dtype=float)))
    degree_p = _effective_degree(np.asarray(table.density_poly, dtype=float))
    return (2 * degree_r + degree_p + 2) // 2  # ceil((2 D + Dp + 1) / 2)


class TableArrays(NamedTuple):
    """A :class:`PiecewiseTable` as plain float64 C-contiguous arrays plus its Gauss-Legendre rule."""

    knots: np.ndarray  # (L + 1,)
    target_poly: np.ndarray  # (L, k, Dt + 1), increasing powers of the global x
    sines: np.ndarray  # (S, k, 3): amplitude, angular frequency, phase
    density_poly: np.ndarray  # (L, Dp + 1)
    nodes: np.ndarray  # (Q,) Gauss-Legendre nodes on [-1, 1]
    weights: np.ndarray  # (Q,)

    @property
    def output_dim(self) -> int:
        return int(self.target_poly.shape[1])


def prepare(table: PiecewiseTable) -> TableArrays:
    """Check ``table`` and return its arrays (``ValueError`` naming the offending field)."""
    if not isinstance(table, PiecewiseTable):
        raise ValueError(f"table: must be a reluflow.model.piecewise.PiecewiseTable, got {type(table).__name__}")
    arrays = {}
    for name in ("knots", "target_poly", "sines", "density_poly"):
        try:
            arrays[name] = np.ascontiguousarray(getattr(table, name), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"table.{name}: must be an array of numbers: {err}") from None
        if not np.all(np.isfinite(arrays[name])):
            raise ValueError(f"table.{name}: entries must be finite")
    knots, target_poly, sines, density_poly = (arrays[n] for n in ("knots", "target_poly", "sines", "density_poly"))
    if knots.ndim != 1 or knots.size < 2:
        raise ValueError(f"table.knots: must be a 1-D array of at least 2 points, got shape {knots.shape}")
    if not np.all(np.diff(knots) > 0):
        raise ValueError("table.knots: must be strictly increasing")
    n_intervals = knots.size - 1
    if target_poly.ndim != 3 or target_poly.shape[0] != n_intervals or target_poly.shape[1] < 1 or target_poly.shape[2] < 1:
        raise ValueError(f"table.target_poly: expected shape (L = {n_intervals}, k >= 1, degree + 1 >= 1), got {target_poly.shape}")
    k = target_poly.shape[1]
    if sines.size == 0:
        sines = np.zeros((0, k, 3))
    if sines.ndim != 3 or sines.shape[1:] != (k, 3):
        raise ValueError(f"table.sines: expected shape (S, k = {k}, 3), got {sines.shape}")
    if density_poly.ndim != 2 or density_poly.shape[0] != n_intervals or density_poly.shape[1] < 1:
        raise ValueError(f"table.density_poly: expected shape (L = {n_intervals}, degree + 1 >= 1), got {density_poly.shape}")
    quad_nodes = table.quad_nodes
    if isinstance(quad_nodes, (bool, np.bool_)) or not isinstance(quad_nodes, (int, np.integer)) or quad_nodes < 1:
        raise ValueError(f"table.quad_nodes: must be a positive integer, got {quad_nodes!r}")
    needed = required_quad_nodes(table)
    if quad_nodes < needed:
        raise ValueError(
            f"table.quad_nodes: {quad_nodes} Gauss-Legendre nodes are not exact for this table's polynomial data; "
            f"at least {needed} are needed"
        )
    nodes, weights = gauss_legendre(int(quad_nodes))
    return TableArrays(knots, target_poly, sines, density_poly, nodes, weights)


def check_width(width) -> int:
    """``width`` as a positive ``int`` (``ValueError`` naming it otherwise)."""
    if isinstance(width, (bool, np.bool_)) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width: must be a positive integer, got {width!r}")
    return int(width)


def check_inputs(theta, table: PiecewiseTable, width):
    """Validate the arguments of ``risk_and_gradient``.

    Returns ``(theta2d, batch_shape, H, arrays)`` with ``theta2d`` a C-contiguous float64 ``(M, n)``
    array, ``n = 2 H + k H + k`` (MATH.md section 1 with ``d = 1``).
    """
    H = check_width(width)
    arrays = prepare(table)
    theta = check_theta(theta, n_params(1, H, arrays.output_dim))
    batch = theta.shape[:-1]
    theta2d = np.ascontiguousarray(theta.reshape(-1, theta.shape[-1]), dtype=np.float64)
    return theta2d, batch, H, arrays


def risk_and_gradient(theta, table: PiecewiseTable, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact risk ``L`` and generalized gradient ``G`` of a d = 1 problem, batched over runs (numpy).

    Parameters
    ----------
    theta : (..., n) array, ``n = 2 H + k H + k``: ``w (H) | b (H) | V (k x H, row-major) | c (k)``.
    table : the problem's :class:`~reluflow.model.piecewise.PiecewiseTable` (target, density, knots).
    width : the number ``H`` of hidden neurons.

    Returns
    -------
    risk : (...) array, ``L(theta)``.
    grad : (..., n) array, ``G(theta)`` in the layout of ``theta``.

    See the module docstring for the mathematics and the algorithm.
    """
    theta2d, batch, H, arrays = check_inputs(theta, table, width)
    risk, grad = _rows(theta2d, H, arrays)
    return risk.reshape(batch), grad.reshape(batch + (theta2d.shape[1],))


def risk_and_gradient_rows(theta2d: np.ndarray, H: int, arrays: TableArrays) -> tuple[np.ndarray, np.ndarray]:
    """``risk (M,)``, ``grad (M, n)`` of a validated float64 ``theta2d (M, n)`` with prepared ``arrays``
    (:func:`prepare`, done once per table by the caller): the algorithm without the per-call checks."""
    return _rows(theta2d, H, arrays)


def _horner(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_p coefficients[..., p] x**p`` by Horner's rule (``coefficients`` broadcast against ``x``)."""
    value = coefficients[..., -1]
    for power in range(coefficients.shape[-1] - 2, -1, -1):
        value = value * x + coefficients[..., power]
    return value


def neuron_events(theta: np.ndarray, H: int, k: int, a: float, b_end: float):
    """Blocks and switching events of ``theta (M, n)`` (MATH.md section 1 layout).

    Returns ``w, bias (M, H)``, ``V (M, k, H)``, ``c (M, k)``, the kinks ``xi = -b / w`` (inf or NaN
    where ``w = 0``), their positions ``clip(xi, a, b)`` (``a`` when ``w = 0``) and whether each
    neuron switches on there (``w > 0``, or ``w = 0 < b``: active everywhere) or off.
    """
    M = theta.shape[0]
    w = theta[:, :H]
    bias = theta[:, H : 2 * H]
    V = theta[:, 2 * H : 2 * H + k * H].reshape(M, k, H)
    c = theta[:, 2 * H + k * H :]
    with np.errstate(divide="ignore", invalid="ignore"):
        kink = -bias / w
    position = np.where(w != 0, np.clip(kink, a, b_end), a)
    switches_on = (w > 0) | ((w == 0) & (bias > 0))
    return w, bias, V, c, kink, position, switches_on


def _rows(theta: np.ndarray, H: int, arrays: TableArrays) -> tuple[np.ndarray, np.ndarray]:
    """The algorithm of the module docstring on ``theta (M, n)``; returns ``risk (M,)``, ``grad (M, n)``."""
    knots, target_poly, sines, density_poly, nodes, weights = arrays
    M = theta.shape[0]
    k = target_poly.shape[1]
    n_intervals = knots.size - 1
    a, b_end = knots[0], knots[-1]

    # --- events: one per neuron, then the knots; sorted per row ------------------------------------
    w, bias, V, c, kink, position, switches_on = neuron_events(theta, H, k, a, b_end)
    n_events = H + n_intervals + 1
    event_x = np.concatenate([position, np.broadcast_to(knots, (M, n_intervals + 1))], axis=1)
    order = np.argsort(event_x, axis=1, kind="stable")  # per-row sort: batch independent
    xs = np.take_along_axis(event_x, order, axis=1)  # (M, E), xs[:, 0] = a, xs[:, -1] = b

    # --- slope A and intercept B of N on each piece j = [xs_j, xs_{j+1}] ---------------------------
    zeros_knots = np.zeros((M, k, n_intervals + 1))
    on = switches_on[:, None, :]
    sorted_order = np.broadcast_to(order[:, None, :], (M, k, n_events))

    def sorted_events(values):  # (M, k, H) neuron values -> (M, k, E) in event order (knots carry 0)
        return np.take_along_axis(np.concatenate([values, zeros_knots], axis=2), sorted_order, axis=2)

    slope = V * w[:, None, :]
    intercept = V * bias[:, None, :]
    on_slope = np.cumsum(sorted_events(np.where(on, slope, 0.0)), axis=2)  # events <= j
    on_intercept = np.cumsum(sorted_events(np.where(on, intercept, 0.0)), axis=2)
    off_slope = np.cumsum(sorted_events(np.where(on, 0.0, slope))[..., ::-1], axis=2)[..., ::-1]  # events >= j
    off_intercept = np.cumsum(sorted_events(np.where(on, 0.0, intercept))[..., ::-1], axis=2)[..., ::-1]
    A = on_slope[..., :-1] + off_slope[..., 1:]  # (M, k, P), P = E - 1 pieces
    B = (c[:, :, None] + on_intercept[..., :-1]) + off_intercept[..., 1:]

    # --- table interval of each piece: (number of knots among events <= j) - 1 ----------------------
    is_knot = order >= H
    interval = np.clip(np.cumsum(is_knot, axis=1)[:, :-1] - 1, 0, n_intervals - 1)  # (M, P)
    coef_target = np.moveaxis(target_poly[interval], 2, 1)  # (M, k, P, Dt + 1)
    coef_density = density_poly[interval]  # (M, P, Dp + 1)

    # --- Gauss-Legendre on each piece, residual first ----------------------------------------------
    left, right = xs[:, :-1], xs[:, 1:]
    mid = 0.5 * (left + right)
    half = 0.5 * (right - left)
    acc_risk = np.zeros_like(mid)
    acc_m0 = np.zeros_like(A)
    acc_m1 = np.zeros_like(A)
    for q in range(nodes.size):
        x = mid + half * nodes[q]  # (M, P)
        xk = x[:, None, :]
        sine_sum = np.zeros_like(A)
        for s in range(sines.shape[0]):
            amplitude, omega, phase = sines[s, :, 0], sines[s, :, 1], sines[s, :, 2]
            sine_sum = sine_sum + amplitude[:, None] * np.sin(omega[:, None] * xk + phase[:, None])
        target = _horner(coef_target, xk) + sine_sum  # (M, k, P)
        density = _horner(coef_density, x)  # (M, P)
        residual = A * xk + B - target  # (M, k, P)
        squared = residual[:, 0] * residual[:, 0]
        for m in range(1, k):
            squared = squared + residual[:, m] * residual[:, m]
        weighted = weights[q] * density
        acc_risk += weighted * squared
        weighted_residual = weighted[:, None, :] * residual
        acc_m0 += weighted_residual
        acc_m1 += weighted_residual * xk
    risk_piece = half * acc_risk  # (M, P)
    m0 = half[:, None, :] * acc_m0  # (M, k, P)
    m1 = half[:, None, :] * acc_m1

    # --- prefix / suffix sums over pieces; per-neuron active-set integrals --------------------------
    risk = np.cumsum(risk_piece, axis=1)[:, -1]  # sequential, left to right

    def prefix(values):  # out[..., j] = sum of pieces < j (E entries)
        out = np.zeros(values.shape[:-1] + (n_events,))
        np.cumsum(values, axis=-1, out=out[..., 1:])
        return out

    def suffix(values):  # out[..., j] = sum of pieces >= j (E entries)
        out = np.zeros(values.shape[:-1] + (n_events,))
        out[..., :-1] = np.cumsum(values[..., ::-1], axis=-1)[..., ::-1]
        return out

    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n_events), order.shape), axis=1)
    neuron_event = np.broadcast_to(rank[:, None, :H], (M, k, H))  # event index of each neuron
    pre0, pre1 = prefix(m0), prefix(m1)
    S0 = np.where(on, np.take_along_axis(suffix(m0), neuron_event, axis=2), np.take_along_axis(pre0, neuron_event, axis=2))
    S1 = np.where(on, np.take_along_axis(suffix(m1), neuron_event, axis=2), np.take_along_axis(pre1, neuron_event, axis=2))

    grad = np.empty_like(theta)
    dot1 = V[:, 0] * S1[:, 0]
    dot0 = V[:, 0] * S0[:, 0]
    for m in range(1, k):
        dot1 = dot1 + V[:, m] * S1[:, m]
        dot0 = dot0 + V[:, m] * S0[:, m]
    grad[:, :H] = 2.0 * dot1
    grad[:, H : 2 * H] = 2.0 * dot0
    grad[:, 2 * H : 2 * H + k * H] = (2.0 * (w[:, None, :] * S1 + bias[:, None, :] * S0)).reshape(M, k * H)
    grad[:, 2 * H + k * H :] = 2.0 * pre0[..., -1]
    return risk, grad
