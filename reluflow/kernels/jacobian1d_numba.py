"""Exact Jacobian of the d = 1 generalized gradient: the compiled per-row kernel (fast path).

Same mathematics, conventions and algorithm as :mod:`reluflow.kernels.jacobian1d` (read its docstring): every active
set is an interval ``[lo_i, hi_i]``; the cumulative moments ``F_s(x) = int_a^x t^s p`` (s = 0, 1, 2) and
``Phi_{s,m}(x) = int_a^x t^s f_m p`` (s = 0, 1) at the neuron positions give ``T_s(i, j)`` over
``I_i cap I_j`` as differences, hence the interior terms; the kink term ``rho_i`` uses ``r(xi_i)`` and
``p(xi_i)`` from the active side. Differences from the numpy path are only in the order of floating-point
operations (sums over neurons and nodes run sequentially here), so the two agree to a few ulps of the
scale of ``J``, not bitwise.

:func:`_rows` loops over rows serially and every row's arithmetic depends on that row only (no data
dependent choice but selections), so each row is bitwise independent of the batch it is computed in. Each
row is done in two phases: per-neuron and per-pair quantities (``T_s``, ``V_i . V_j``, ``E_1``, ``E_2``,
``P``) into small buffers, then ``J`` written in row-major order, every entry and its mirror image from the
same expression on the same operands: ``J`` is exactly symmetric. Measured cost (``benchmarks/
bench_jacobian1d.py``, M = 256, H = 16): about 6 times one risk + gradient evaluation of the batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gradient_jacobian_rows", "kernel_arguments"]

# IEEE semantics for x / 0 (the kink of a neuron with w = 0 is never used), no ZeroDivisionError branch.
_JIT = dict(cache=True, error_model="numpy")
# the helpers called per row or in inner loops: inlined at the numba IR level (as calls, with their many array
# arguments, they cost more than a small row's arithmetic: ~10x for the small ones)
_JIT_INLINE = dict(_JIT, inline="always")


def kernel_arguments(arrays) -> tuple:
    """The table's part of the arguments of the compiled Jacobian kernel ``_rows``, from checked ``TableArrays``:
    ``(knots, target_poly, sines, density_poly, nodes, weights)``."""
    return (arrays.knots, arrays.target_poly, arrays.sines, arrays.density_poly, np.array(arrays.nodes),
            np.array(arrays.weights))


def gradient_jacobian_rows(theta2d: np.ndarray, H: int, arrays) -> np.ndarray:
    """``J (M, n, n)`` for validated ``theta2d (M, n)`` (C-contiguous float64) and ``TableArrays``."""
    M, n = theta2d.shape
    jac = np.empty((M, n, n))
    _rows(theta2d, H, *kernel_arguments(arrays), jac)
    return jac


@njit(**_JIT_INLINE)
def _interval_right(knots, x):
    """The table interval ``l`` with ``knots[l] <= x < knots[l + 1]`` (clipped to ``[0, L - 1]``)."""
    lo = 0
    hi = knots.shape[0]
    while lo < hi:  # first index with knots[idx] > x
        mid = (lo + hi) // 2
        if knots[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return min(max(lo - 1, 0), knots.shape[0] - 2)


@njit(**_JIT_INLINE)
def _interval_left(knots, x):
    """The table interval ``l`` with ``knots[l] < x <= knots[l + 1]`` (clipped to ``[0, L - 1]``)."""
    lo = 0
    hi = knots.shape[0]
    while lo < hi:  # first index with knots[idx] >= x
        mid = (lo + hi) // 2
        if knots[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return min(max(lo - 1, 0), knots.shape[0] - 2)


@njit(**_JIT_INLINE)
def _density(density_poly, l, x):
    degree = density_poly.shape[1] - 1
    value = density_poly[l, degree]
    for p in range(degree - 1, -1, -1):
        value = value * x + density_poly[l, p]
    return value


@njit(**_JIT_INLINE)
def _target(target_poly, sines, l, m, x):
    degree = target_poly.shape[2] - 1
    value = target_poly[l, m, degree]
    for p in range(degree - 1, -1, -1):
        value = value * x + target_poly[l, m, p]
    for s in range(sines.shape[0]):
        value = value + sines[s, m, 0] * np.sin(sines[s, m, 1] * x + sines[s, m, 2])
    return value


@njit(**_JIT_INLINE)
def _density_moments(l, lo, hi, density_poly, nodes, weights):
    """``(int_lo^hi p, int_lo^hi t p, int_lo^hi t^2 p)`` by Gauss-Legendre, ``[lo, hi]`` inside interval ``l``.

    (Scalar accumulators: writing partial sums into output arrays inside the node loop was ~10x slower.)
    """
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    p0 = 0.0
    p1 = 0.0
    p2 = 0.0
    for q in range(nodes.shape[0]):
        x = mid + half * nodes[q]
        wp = weights[q] * _density(density_poly, l, x)
        p0 += wp
        p1 += wp * x
        p2 += wp * x * x
    return half * p0, half * p1, half * p2


@njit(**_JIT_INLINE)
def _target_moments(l, m, lo, hi, target_poly, sines, density_poly, nodes, weights):
    """``(int_lo^hi f_m p, int_lo^hi t f_m p)`` by Gauss-Legendre, ``[lo, hi]`` inside interval ``l``."""
    mid = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    f0 = 0.0
    f1 = 0.0
    for q in range(nodes.shape[0]):
        x = mid + half * nodes[q]
        wfp = weights[q] * _density(density_poly, l, x) * _target(target_poly, sines, l, m, x)
        f0 += wfp
        f1 += wfp * x
    return half * f0, half * f1


@njit(**_JIT_INLINE)
def _cumulative_at(x, knots, target_poly, sines, density_poly, nodes, weights, knot_p, knot_f, out_p, out_f):
    """``F_s(x)`` into ``out_p (3,)`` and ``Phi_{s,m}(x)`` into ``out_f (2, k)``: knot sums + partial interval."""
    l = _interval_right(knots, x)
    lo = knots[l]
    p0, p1, p2 = _density_moments(l, lo, x, density_poly, nodes, weights)
    out_p[0] = knot_p[0, l] + p0
    out_p[1] = knot_p[1, l] + p1
    out_p[2] = knot_p[2, l] + p2
    for m in range(out_f.shape[1]):
        f0, f1 = _target_moments(l, m, lo, x, target_poly, sines, density_poly, nodes, weights)
        out_f[0, m] = knot_f[0, l, m] + f0
        out_f[1, m] = knot_f[1, l, m] + f1


@njit(**_JIT)
def _rows(theta, H, knots, target_poly, sines, density_poly, nodes, weights, jac_out):
    """Fill ``jac_out (M, n, n)`` row by row (serial: deterministic per row)."""
    M = theta.shape[0]
    k = target_poly.shape[1]
    n_intervals = knots.shape[0] - 1
    # cumulative moments at the knots: whole intervals summed from a (a function of the table only)
    knot_p = np.zeros((3, n_intervals))
    knot_f = np.zeros((2, n_intervals, k))
    for l in range(n_intervals - 1):
        p0, p1, p2 = _density_moments(l, knots[l], knots[l + 1], density_poly, nodes, weights)
        knot_p[0, l + 1] = knot_p[0, l] + p0
        knot_p[1, l + 1] = knot_p[1, l] + p1
        knot_p[2, l + 1] = knot_p[2, l] + p2
        for m in range(k):
            f0, f1 = _target_moments(l, m, knots[l], knots[l + 1], target_poly, sines, density_poly, nodes, weights)
            knot_f[0, l + 1, m] = knot_f[0, l, m] + f0
            knot_f[1, l + 1, m] = knot_f[1, l, m] + f1
    end_p = np.empty(3)
    end_f = np.empty((2, k))
    _cumulative_at(knots[n_intervals], knots, target_poly, sines, density_poly, nodes, weights, knot_p, knot_f, end_p, end_f)
    # work arrays
    pos_p = np.empty(3)
    pos_f = np.empty((2, k))
    switches_on = np.empty(H, np.bool_)
    inside = np.empty(H, np.bool_)
    lo = np.empty(H)
    hi = np.empty(H)
    xi = np.empty(H)
    F_lo = np.empty((3, H))
    F_hi = np.empty((3, H))
    T_diag = np.empty((3, H))
    U = np.empty((2, H, k))
    S = np.empty((2, k, H))
    rho = np.empty(H)
    pair = np.empty((7, H, H))
    for row in range(M):
        finite = True  # a non-finite row (a solver's overflowing trial state) gets NaN, never garbage indices
        for p in range(theta.shape[1]):
            if not np.isfinite(theta[row, p]):
                finite = False
        if not finite:
            jac_out[row] = np.nan
            continue
        _row(theta[row], H, knots, target_poly, sines, density_poly, nodes, weights, knot_p, knot_f, end_p, end_f,
             pos_p, pos_f, switches_on, inside, lo, hi, xi, F_lo, F_hi, T_diag, U, S, rho, pair, jac_out[row])  # fmt: skip


@njit(**_JIT_INLINE)
def _row(theta, H, knots, target_poly, sines, density_poly, nodes, weights, knot_p, knot_f, end_p, end_f,
         pos_p, pos_f, switches_on, inside, lo, hi, xi, F_lo, F_hi, T_diag, U, S, rho, pair, jac):  # fmt: skip
    """``J`` of one parameter vector ``theta (n,)`` into ``jac (n, n)``.

    Two phases: the per-neuron and per-pair quantities into small buffers (``pair[0..2] = T_0, T_1, T_2``,
    ``pair[3] = V_i . V_j``, ``pair[4] = E_1(i, j)``, ``pair[5] = E_2(i, j)``, ``pair[6] = P(i, j)``), then ``J``
    written row by row, every entry and its mirror image from the same expression on the same operands.
    """
    k = target_poly.shape[1]
    n_intervals = knots.shape[0] - 1
    a = knots[0]
    b_end = knots[n_intervals]
    off_V = 2 * H
    off_c = 2 * H + k * H

    # --- 1. active intervals [lo_i, hi_i]; cumulative moments there ----------------------------------
    for i in range(H):
        w = theta[i]
        b = theta[H + i]
        kink = -b / w
        on = (w > 0.0) or ((w == 0.0) and (b > 0.0))
        nonzero = w != 0.0
        position = min(max(kink, a), b_end) if nonzero else a
        switches_on[i] = on
        inside[i] = nonzero and (kink > a) and (kink < b_end)
        xi[i] = kink if inside[i] else a
        lo[i] = position if on else a
        hi[i] = b_end if on else position
        _cumulative_at(position, knots, target_poly, sines, density_poly, nodes, weights, knot_p, knot_f, pos_p, pos_f)
        nonempty = hi[i] > lo[i]
        for s in range(3):
            F_lo[s, i] = pos_p[s] if on else 0.0
            F_hi[s, i] = end_p[s] if on else pos_p[s]
            T_diag[s, i] = F_hi[s, i] - F_lo[s, i] if nonempty else 0.0
        for s in range(2):
            for m in range(k):
                Phi_lo = pos_f[s, m] if on else 0.0
                Phi_hi = end_f[s, m] if on else pos_f[s, m]
                U[s, i, m] = Phi_hi - Phi_lo if nonempty else 0.0

    # --- 2. pair quantities: T_s(i, j) = F_s(min(hi_i, hi_j)) - F_s(max(lo_i, lo_j)) (bitwise symmetric)
    for i in range(H):
        wi = theta[i]
        bi = theta[H + i]
        for j in range(i, H):
            wj = theta[j]
            bj = theta[H + j]
            nonempty = min(hi[i], hi[j]) > max(lo[i], lo[j])
            right_is_i = hi[i] <= hi[j]
            left_is_i = lo[i] >= lo[j]
            for s in range(3):
                upper = F_hi[s, i] if right_is_i else F_hi[s, j]
                lower = F_lo[s, i] if left_is_i else F_lo[s, j]
                value = upper - lower if nonempty else 0.0
                pair[s, i, j] = value
                pair[s, j, i] = value
            T0 = pair[0, i, j]
            T1 = pair[1, i, j]
            T2 = pair[2, i, j]
            VV = theta[off_V + i] * theta[off_V + j]
            for m in range(1, k):
                VV = VV + theta[off_V + m * H + i] * theta[off_V + m * H + j]
            pair[3, i, j] = VV
            pair[3, j, i] = VV
            pair[4, i, j] = wj * T1 + bj * T0  # E_1(i, j) = int_{I_i} phi_j p
            pair[4, j, i] = wi * T1 + bi * T0
            pair[5, i, j] = wj * T2 + bj * T1  # E_2(i, j) = int_{I_i} x phi_j p
            pair[5, j, i] = wi * T2 + bi * T1
            value = (wi * wj) * T2 + (wi * bj + bi * wj) * T1 + (bi * bj) * T0  # P(i, j) = int phi_i phi_j p
            pair[6, i, j] = value
            pair[6, j, i] = value

    # --- 3. S_s(i, m) = c_m T_s(i) + sum_j V[m, j] E_{s+1}(i, j) - U_s(i, m) ----------------------------
    for m in range(k):
        for i in range(H):
            acc0 = 0.0
            acc1 = 0.0
            for j in range(H):
                v = theta[off_V + m * H + j]
                acc0 += v * pair[4, i, j]
                acc1 += v * pair[5, i, j]
            S[0, m, i] = (theta[off_c + m] * T_diag[0, i] + acc0) - U[0, i, m]
            S[1, m, i] = (theta[off_c + m] * T_diag[1, i] + acc1) - U[1, i, m]

    # --- 4. kink term rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i| (active-side limits of p and f) ------
    for i in range(H):
        if not inside[i]:
            rho[i] = 0.0
            continue
        x = xi[i]
        l = _interval_right(knots, x) if switches_on[i] else _interval_left(knots, x)
        v_dot_r = 0.0
        for m in range(k):
            network = theta[off_c + m]
            for j in range(H):
                pre = theta[j] * x + theta[H + j]
                if j != i and pre > 0.0:  # neuron i itself is 0 at its own kink
                    network += theta[off_V + m * H + j] * pre
            v_dot_r += theta[off_V + m * H + i] * (network - _target(target_poly, sines, l, m, x))
        rho[i] = 2.0 * v_dot_r * _density(density_poly, l, x) / abs(theta[i])

    # --- 5. write J row by row (mirror entries use the same expression) --------------------------------
    total = 2.0 * end_p[0]
    for i in range(H):  # rows w_i and b_i
        rw = i
        rb = H + i
        for j in range(H):
            vv2 = 2.0 * pair[3, i, j]
            jac[rw, j] = vv2 * pair[2, i, j] + (rho[i] * xi[i] * xi[i] if j == i else 0.0)
            jac[rw, H + j] = vv2 * pair[1, i, j] + (rho[i] * xi[i] if j == i else 0.0)
            jac[rb, j] = vv2 * pair[1, i, j] + (rho[i] * xi[i] if j == i else 0.0)
            jac[rb, H + j] = vv2 * pair[0, i, j] + (rho[i] if j == i else 0.0)
        for m in range(k):
            v2 = 2.0 * theta[off_V + m * H + i]
            for j in range(H):
                jac[rw, off_V + m * H + j] = v2 * pair[5, i, j] + (2.0 * S[1, m, i] if j == i else 0.0)
                jac[rb, off_V + m * H + j] = v2 * pair[4, i, j] + (2.0 * S[0, m, i] if j == i else 0.0)
            jac[rw, off_c + m] = v2 * T_diag[1, i]
            jac[rb, off_c + m] = v2 * T_diag[0, i]
    for m in range(k):  # rows V[m, i]
        for i in range(H):
            r = off_V + m * H + i
            wi = theta[i]
            bi = theta[H + i]
            for j in range(H):
                v2 = 2.0 * theta[off_V + m * H + j]
                jac[r, j] = v2 * pair[5, j, i] + (2.0 * S[1, m, i] if j == i else 0.0)
                jac[r, H + j] = v2 * pair[4, j, i] + (2.0 * S[0, m, i] if j == i else 0.0)
            for m2 in range(k):
                for j in range(H):
                    jac[r, off_V + m2 * H + j] = 2.0 * pair[6, i, j] if m2 == m else 0.0
            for m2 in range(k):
                jac[r, off_c + m2] = 2.0 * (wi * T_diag[1, i] + bi * T_diag[0, i]) if m2 == m else 0.0
    for m in range(k):  # rows c_m
        r = off_c + m
        for j in range(H):
            v2 = 2.0 * theta[off_V + m * H + j]
            jac[r, j] = v2 * T_diag[1, j]
            jac[r, H + j] = v2 * T_diag[0, j]
        for m2 in range(k):
            for j in range(H):
                jac[r, off_V + m2 * H + j] = 2.0 * (theta[j] * T_diag[1, j] + theta[H + j] * T_diag[0, j]) if m2 == m else 0.0
        for m2 in range(k):
            jac[r, off_c + m2] = total if m2 == m else 0.0
