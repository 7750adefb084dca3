"""Exact Jacobian ``dG/dtheta`` of the generalized gradient of a d = 1 problem (the Hessian of ``L``).

A stiff solver for the gradient flow ``theta' = -G(theta)`` needs the Jacobian of its velocity,
``-dG/dtheta``; :func:`gradient_jacobian` returns ``J = dG/dtheta`` (batched, exact for piecewise-polynomial
data), so that a flow's ``jac`` is ``-gradient_jacobian(theta, table, width)``.

Mathematics (MATH.md sections 1-3, ``d = 1``). ``theta = (w, b, V, c)``, ``w, b`` in ``R^H``, ``V`` in
``R^{k x H}``, ``c`` in ``R^k``; ``N(x) = c + V relu(w x + b)``, residual ``r = N - f``, density ``p`` on
``[a, b]``. Neuron ``i`` is active on the strict set ``I_i = {x in [a, b] : w_i x + b_i > 0}``, an interval:
``(xi_i, b]`` if ``w_i > 0``, ``[a, xi_i)`` if ``w_i < 0`` (kink ``xi_i = -b_i / w_i``, clipped to ``[a, b]``),
``[a, b]`` if ``w_i = 0 < b_i`` and empty if ``w_i = 0 >= b_i`` (the active sets of
:mod:`reluflow.kernels.exact1d`). Write ``phi_i = relu(w_i x + b_i)``, ``V_i = V[:, i]``,
``V_i . V_j = sum_m V[m, i] V[m, j]`` and

    T_s(i, j) = int_{I_i cap I_j} x^s p dx   (s = 0, 1, 2),      T_s(i) = T_s(i, i),   T_0 = int_a^b p dx,
    S_s(i, m) = int_{I_i} x^s r_m p dx       (s = 0, 1),
    E_1(i, j) = int_{I_i} phi_j p dx = w_j T_1(i, j) + b_j T_0(i, j),
    E_2(i, j) = int_{I_i} x phi_j p dx = w_j T_2(i, j) + b_j T_1(i, j),
    P(i, j)   = int phi_i phi_j p dx = w_i w_j T_2(i, j) + (w_i b_j + b_i w_j) T_1(i, j) + b_i b_j T_0(i, j).

Wherever ``G`` is differentiable its Jacobian (symmetric: the Hessian of ``L``) is

    J[w_i, w_j]       = 2 (V_i . V_j) T_2(i, j) + delta_ij rho_i xi_i^2
    J[w_i, b_j]       = 2 (V_i . V_j) T_1(i, j) + delta_ij rho_i xi_i
    J[b_i, b_j]       = 2 (V_i . V_j) T_0(i, j) + delta_ij rho_i
    J[w_i, V[m, j]]   = 2 V[m, i] E_2(i, j) + 2 delta_ij S_1(i, m)
    J[b_i, V[m, j]]   = 2 V[m, i] E_1(i, j) + 2 delta_ij S_0(i, m)
    J[w_i, c_m]       = 2 V[m, i] T_1(i),          J[b_i, c_m] = 2 V[m, i] T_0(i)
    J[V[m, i], V[m', j]] = 2 delta_mm' P(i, j),    J[V[m, i], c_m'] = 2 delta_mm' (w_i T_1(i) + b_i T_0(i))
    J[c_m, c_m']      = 2 delta_mm' T_0

and the transposed blocks. The terms without ``rho`` come from differentiating under the integral: ``r``
through the features ``dN_m/dtheta`` (``V[m, i] 1_{I_i} x``, ``V[m, i] 1_{I_i}``, ``phi_i e_m``, ``e_m``: the
Gauss-Newton part ``2 int (dN/dtheta)^T (dN/dtheta) p``) and the explicit factors ``V_i`` of ``G_w, G_b`` and
``relu(w_i x + b_i)`` of ``G_V`` (the ``S`` terms, ``2 sum_m int r_m d^2 N_m p``). The ``rho`` terms come from
the moving kink: ``G_w[i] = int_{I_i} g``, ``g = 2 x (V_i . r) p``, and ``d/dtheta`` of the integral over
``(xi_i, b]`` (``[a, xi_i)``) is ``-g(xi_i) dxi_i/dtheta`` (``+g(xi_i) dxi_i/dtheta``), with
``dxi_i/dw_i = b_i / w_i^2 = -xi_i / w_i`` and ``dxi_i/db_i = -1 / w_i``; both signs give

    rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i|     if a < xi_i < b (w_i != 0),    rho_i = 0 otherwise.

``G_V`` has no kink term (``relu`` vanishes at the kink); ``r`` is continuous, so the kinks of the other
neurons give none either. The Jacobian is continuous where two interior kinks coincide (``T_s`` and
``r(xi_i)`` are continuous there), so ``G`` is differentiable there too.

Non-differentiable points: the value returned is finite and is the one-sided derivative (the limit of
``J`` from one side) given by the active sets above:

- kink exactly at ``a`` or ``b``: no kink term, i.e. the limit from the side where the kink lies outside
  ``[a, b]`` (``I_i`` then stays ``[a, b]`` or empty);
- kink at a table knot where ``p`` or ``f`` jumps: ``p(xi_i)`` and ``f(xi_i)`` in ``rho_i`` are the limits from
  inside ``I_i`` (from the right if ``w_i > 0``, from the left if ``w_i < 0``): the derivative for
  perturbations that shrink ``I_i`` (the limit of ``J`` as the kink moves into its former active set);
- ``w_i = 0``: no kink term (for ``b_i != 0`` the kink is outside ``[a, b]`` nearby, so this is the true
  derivative); ``w_i = b_i = 0`` is the limit from ``b_i < 0``: a dead neuron, whose rows and columns are 0.

Algorithm (no sort; every reduction runs along a row, so each row is bitwise independent of the batch).
With ``F_s(x) = int_a^x t^s p dt`` and ``Phi_{s,m}(x) = int_a^x t^s f_m p dt`` (the table's cumulative
moments at its knots plus a Gauss-Legendre rule with the table's ``quad_nodes`` points on the partial
interval ``[knot_l, x]``: exact for polynomial data because ``t^2 p`` and ``t f p`` have degree at most
that of ``|r|^2 p``), every active set being an interval ``[lo_i, hi_i]`` gives
``T_s(i, j) = F_s(min(hi_i, hi_j)) - F_s(max(lo_i, lo_j))`` (0 if the intersection is empty) and
``S_s(i, m) = c_m T_s(i) + sum_j V[m, j] (w_j T_{s+1}(i, j) + b_j T_s(i, j)) - (Phi_{s,m}(hi_i) - Phi_{s,m}(lo_i))``.
Each entry then has absolute rounding error ``O(eps)`` times the scale of ``J`` (differences of cumulative
moments over ``[a, b]``). ``J`` is assembled from bitwise-symmetric expressions, so it is exactly symmetric.
Cost per row ``O(H (H k + Q (Dt + Dp + S k)))`` plus the ``n^2`` output.

Two implementations: this module's vectorized numpy code (``backend="numpy"``, the reference) and the
compiled per-row kernel :mod:`reluflow.kernels.jacobian1d_numba` (``backend="numba"``, the default, several times
faster); they agree to a few ulps of the scale of ``J``.
"""

from __future__ import annotations

import numpy as np

from reluflow.kernels.exact1d import check_inputs, neuron_events

__all__ = ["gradient_jacobian", "gradient_jacobian_rows"]


BACKENDS = ("numba", "numpy")


def gradient_jacobian(theta, table, width: int, backend: str = "numba") -> np.ndarray:
    """Jacobian ``dG/dtheta`` (the Hessian of ``L``) of the exact d = 1 generalized gradient, batched.

    Parameters
    ----------
    theta : (..., n) array, ``n = 2 H + k H + k``: ``w (H) | b (H) | V (k x H, row-major) | c (k)``.
    table : the problem's :class:`~reluflow.model.piecewise.PiecewiseTable` (target, density, knots).
    width : the number ``H`` of hidden neurons.
    backend : ``"numba"`` (compiled per-row kernel, :mod:`reluflow.kernels.jacobian1d_numba`, the default) or
        ``"numpy"`` (this module's vectorized reference); they agree to a few ulps of the scale of ``J``.

    Returns
    -------
    (..., n, n) array ``J[r, s] = dG_r / dtheta_s`` (symmetric). The velocity of the gradient flow
    ``-G`` has Jacobian ``-J``. Formula and one-sided conventions at non-differentiable points: module
    docstring. Raises ``ValueError`` naming ``theta``, ``width`` or the ``table`` field on bad input.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {list(BACKENDS)}, got {backend!r}")
    theta2d, batch, H, arrays = check_inputs(theta, table, width)
    n = theta2d.shape[1]
    return gradient_jacobian_rows(theta2d, H, arrays, backend).reshape(batch + (n, n))


def gradient_jacobian_rows(theta2d: np.ndarray, H: int, arrays, backend: str = "numba") -> np.ndarray:
    """``J (M, n, n)`` of a validated C-contiguous float64 ``theta2d (M, n)`` with prepared ``TableArrays``
    (:func:`reluflow.kernels.exact1d.prepare`, done once per table by the caller); no per-call checks."""
    if backend == "numba":
        from reluflow.kernels.jacobian1d_numba import gradient_jacobian_rows as compiled_rows

        return compiled_rows(theta2d, H, arrays)
    return _rows(theta2d, H, arrays)


def _horner(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_p coefficients[..., p] x**p`` (``coefficients`` broadcast against ``x``)."""
    value = coefficients[..., -1]
    for power in range(coefficients.shape[-1] - 2, -1, -1):
        value = value * x + coefficients[..., power]
    return value


def _target(target_poly, sines, interval, x):
    """``f(x)`` for points ``x (...)`` on the table intervals ``interval (...)``; returns ``(..., k)``."""
    xk = x[..., None]
    value = _horner(target_poly[interval], xk)  # (..., k)
    for s in range(sines.shape[0]):
        value = value + sines[s, :, 0] * np.sin(sines[s, :, 1] * xk + sines[s, :, 2])
    return value


def _cumulative_moments(arrays, x):
    """``F_s(x)`` (s = 0, 1, 2; shape ``(3,) + x.shape``) and ``Phi_{s,m}(x)`` (``(2,) + x.shape + (k,)``).

    ``F_s(x) = int_a^x t^s p dt`` and ``Phi_{s,m}(x) = int_a^x t^s f_m p dt`` for ``x`` in ``[a, b]``: the
    sum over the whole table intervals left of ``x`` (sequential, from ``a``) plus the Gauss-Legendre rule on
    ``[knot_l, x]``, ``l`` the interval with ``knot_l <= x < knot_{l+1}`` (the last one for ``x = b``).
    ``F_s(a) = 0`` exactly.
    """
    knots, target_poly, sines, density_poly, nodes, weights = arrays
    n_intervals = knots.size - 1

    def partial(interval, lo, hi):  # Gauss-Legendre on [lo, hi] inside table interval `interval`
        mid = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        acc_p = np.zeros((3,) + lo.shape)
        acc_f = np.zeros((2,) + lo.shape + (target_poly.shape[1],))
        coef_density = density_poly[interval]
        for q in range(nodes.size):
            xq = mid + half * nodes[q]
            wp = weights[q] * _horner(coef_density, xq)
            wfp = wp[..., None] * _target(target_poly, sines, interval, xq)
            acc_p[0] += wp
            acc_p[1] += wp * xq
            acc_p[2] += wp * xq * xq
            acc_f[0] += wfp
            acc_f[1] += wfp * xq[..., None]
        return half * acc_p, half[..., None] * acc_f

    # whole intervals: cumulative sums from a (a function of the table only)
    all_intervals = np.arange(n_intervals)
    whole_p, whole_f = partial(all_intervals, knots[:-1], knots[1:])
    at_knot_p = np.zeros((3, n_intervals))
    at_knot_f = np.zeros((2, n_intervals) + whole_f.shape[2:])
    np.cumsum(whole_p[:, :-1], axis=1, out=at_knot_p[:, 1:])
    np.cumsum(whole_f[:, :-1], axis=1, out=at_knot_f[:, 1:])

    interval = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, n_intervals - 1)
    part_p, part_f = partial(interval, knots[interval], x)
    return at_knot_p[:, interval] + part_p, at_knot_f[:, interval] + part_f


def _rows(theta: np.ndarray, H: int, arrays) -> np.ndarray:
    """The module docstring's formula on ``theta (M, n)``; returns ``J (M, n, n)``."""
    knots, target_poly, sines, density_poly, nodes, weights = arrays
    M, n = theta.shape
    k = target_poly.shape[1]
    n_intervals = knots.size - 1
    a, b_end = knots[0], knots[-1]

    # --- active intervals [lo_i, hi_i] (the events of exact1d: clip(xi, a, b), a when w = 0) --------
    w, bias, V, c, kink, position, switches_on = neuron_events(theta, H, k, a, b_end)
    inside = (w != 0) & (kink > a) & (kink < b_end)
    lo = np.where(switches_on, position, a)
    hi = np.where(switches_on, b_end, position)

    # --- cumulative moments at the positions and at b ------------------------------------------------
    F_pos, Phi_pos = _cumulative_moments(arrays, position)  # (3, M, H), (2, M, H, k)
    F_end, Phi_end = _cumulative_moments(arrays, np.array([b_end]))  # (3, 1), (2, 1, k)
    F_lo = np.where(switches_on, F_pos, 0.0)
    F_hi = np.where(switches_on, F_end[:, :, None], F_pos)
    Phi_lo = np.where(switches_on[..., None], Phi_pos, 0.0)
    Phi_hi = np.where(switches_on[..., None], Phi_end[:, :, None, :], Phi_pos)

    # --- T_s(i, j) over I_i cap I_j: bitwise symmetric in (i, j) (ties pick equal values) -------------
    lo_i, lo_j = lo[:, :, None], lo[:, None, :]
    hi_i, hi_j = hi[:, :, None], hi[:, None, :]
    nonempty = np.minimum(hi_i, hi_j) > np.maximum(lo_i, lo_j)  # (M, H, H)
    left_is_i = lo_i >= lo_j
    right_is_i = hi_i <= hi_j
    T = np.where(
        nonempty,
        np.where(right_is_i, F_hi[:, :, :, None], F_hi[:, :, None, :])
        - np.where(left_is_i, F_lo[:, :, :, None], F_lo[:, :, None, :]),
        0.0,
    )  # (3, M, H, H)
    T_diag = np.where(hi > lo, F_hi - F_lo, 0.0)  # (3, M, H): T_s(i) (equals the diagonal of T)
    U = np.where((hi > lo)[..., None], Phi_hi - Phi_lo, 0.0)  # (2, M, H, k): int_{I_i} x^s f_m p

    # --- S_s(i, m) = int_{I_i} x^s r_m p ---------------------------------------------------------------
    wj = w[:, None, None, :]  # (M, 1, 1, H) over j
    bj = bias[:, None, None, :]
    Vj = V[:, :, None, :]  # (M, k, 1, H)
    S = np.empty((2, M, k, H))
    for s in range(2):
        network_part = np.sum(Vj * (wj * T[s + 1][:, None] + bj * T[s][:, None]), axis=-1)  # (M, k, H)
        S[s] = (c[:, :, None] * T_diag[s][:, None, :] + network_part) - np.moveaxis(U[s], 2, 1)

    # --- kink term rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i| for kinks inside (a, b) -----------------
    xi = np.where(inside, kink, a)
    # the table interval on the active side of the kink: right of it (w > 0) or left of it (w < 0)
    interval_right = np.clip(np.searchsorted(knots, xi, side="right") - 1, 0, n_intervals - 1)
    interval_left = np.clip(np.searchsorted(knots, xi, side="left") - 1, 0, n_intervals - 1)
    interval_active = np.where(switches_on, interval_right, interval_left)
    density_at = _horner(density_poly[interval_active], xi)  # (M, H)
    target_at = _target(target_poly, sines, interval_active, xi)  # (M, H, k)
    pre = w[:, None, :] * xi[:, :, None] + bias[:, None, :]  # (M, i, j): w_j xi_i + b_j
    relu_other = np.where(np.eye(H, dtype=bool), 0.0, np.maximum(pre, 0.0))  # neuron i is 0 at its own kink
    network_at = c[:, :, None] + np.sum(V[:, :, None, :] * relu_other[:, None, :, :], axis=-1)  # (M, k, i)
    residual_at = network_at - np.moveaxis(target_at, 2, 1)  # (M, k, H)
    v_dot_r = V[:, 0] * residual_at[:, 0]
    for m in range(1, k):
        v_dot_r = v_dot_r + V[:, m] * residual_at[:, m]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(inside, 2.0 * v_dot_r * density_at / np.abs(w), 0.0)  # (M, H)

    # --- assemble ------------------------------------------------------------------------------------
    VV = V[:, 0, :, None] * V[:, 0, None, :]
    for m in range(1, k):
        VV = VV + V[:, m, :, None] * V[:, m, None, :]  # (M, H, H), V_i . V_j, bitwise symmetric
    E1 = wj[:, 0] * T[1] + bj[:, 0] * T[0]  # (M, i, j) = int_{I_i} phi_j p
    E2 = wj[:, 0] * T[2] + bj[:, 0] * T[1]  # int_{I_i} x phi_j p
    wi, bi = w[:, :, None], bias[:, :, None]
    P = (wi * wj[:, 0]) * T[2] + (wi * bj[:, 0] + bi * wj[:, 0]) * T[1] + (bi * bj[:, 0]) * T[0]

    diag = np.arange(H)
    jac = np.zeros((M, n, n))
    sw, sb = slice(0, H), slice(H, 2 * H)
    jac[:, sw, sw] = 2.0 * VV * T[2]
    jac[:, sw, sb] = 2.0 * VV * T[1]
    jac[:, sb, sb] = 2.0 * VV * T[0]
    jac[:, diag, diag] += rho * xi * xi
    jac[:, diag, H + diag] += rho * xi
    jac[:, H + diag, H + diag] += rho
    off_c = 2 * H + k * H
    for m in range(k):
        sv = slice(2 * H + m * H, 2 * H + (m + 1) * H)
        Vm = V[:, m, :, None]  # V[m, i] over rows i
        jac[:, sw, sv] = 2.0 * Vm * E2
        jac[:, sb, sv] = 2.0 * Vm * E1
        jac[:, diag, 2 * H + m * H + diag] += 2.0 * S[1][:, m]
        jac[:, H + diag, 2 * H + m * H + diag] += 2.0 * S[0][:, m]
        jac[:, sv, sv] = 2.0 * P
        jac[:, sw, off_c + m] = 2.0 * V[:, m] * T_diag[1]
        jac[:, sb, off_c + m] = 2.0 * V[:, m] * T_diag[0]
        jac[:, sv, off_c + m] = 2.0 * (w * T_diag[1] + bias * T_diag[0])
        jac[:, off_c + m, off_c + m] = 2.0 * F_end[0, 0]
    # lower triangle of blocks: the transposes (J is a Hessian); the diagonal blocks are symmetric already
    blocks = [sw, sb] + [slice(2 * H + m * H, 2 * H + (m + 1) * H) for m in range(k)] + [slice(off_c, n)]
    for first in range(len(blocks)):
        for second in range(first + 1, len(blocks)):
            jac[:, blocks[second], blocks[first]] = np.swapaxes(jac[:, blocks[first], blocks[second]], 1, 2)
    return jac
