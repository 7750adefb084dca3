"""Exact d = 2 risk, generalized gradient and Jacobian: compiled per-row kernels (fast path).

Same mathematics, construction, conventions and floating-point operations as :mod:`reluflow.kernels.exact2d`
(read its docstring): per row, the lines (neurons, then teacher) are inserted one by one into the square,
every convex cell crossed by a line being split into its two sides by the same side rule and the same
crossing-point formula; the residual is formed at the nodes of the collapsed Gauss rule on each cell's fan
triangles; the cell moments are summed over cells in cell order. For the Jacobian, the pairwise polygons
``Q cap I_i cap I_j`` and the line terms along each neuron's segment are computed as in the numpy path.

What differs from the numpy path is only where it cannot matter for the value: cells are visited one by one
instead of padded to the batch (padding adds exact zeros there), a neuron's terms enter a cell's sums as
products with its 0/1 side bit instead of ``where(bit, term, 0)`` (adding ``+-0`` changes no sum), the
crossings on a segment are sorted by an insertion sort of the actual crossings (the numpy path sorts
sentinels ``tau = 1`` along, which give zero-length pieces at the end), and ``sin`` comes from the C library
rather than numpy's own vectorized implementation. The two paths agree to a few ulps of the natural scale
(measured: bitwise, up to the sign of zeros).

Rows are processed serially and every loop runs in a fixed order, so a row's numbers do not depend on the
batch. Compiled with ``cache=True`` and without ``fastmath`` (no reassociation, no contraction to FMA).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from reluflow.kernels.exact2d import (
    PlanarProblemData,
    _second_moments,
    _square,
    check_inputs,
    gauss_legendre,
    line_table,
    triangle_rule,
)

__all__ = ["gradient_jacobian", "risk_and_gradient"]

# IEEE semantics for x / 0 (never used: divisions only where the signs differ), no ZeroDivisionError branch.
_JIT = {"cache": True, "error_model": "numpy"}


def _data_arrays(data: PlanarProblemData):
    teacher = (data.teacher_W, data.teacher_b, data.teacher_V)
    sines = (data.sine_freq, data.sine_phase, data.sine_amp)
    return data.density, data.target_poly, teacher, sines


def _cell_moments(theta2d, H, k, data):
    M = theta2d.shape[0]
    lines, tol = line_table(theta2d, H, data)
    density, target, teacher, sines = _data_arrays(data)
    su, sv, omega = triangle_rule(data.cell_points)
    risk = np.empty(M)
    S = np.empty((M, k, H, 3))
    R = np.empty((M, k, 3))
    a, b = data.domain
    _arrangement_rows(theta2d, H, k, lines, tol, a, b, density, target, teacher[2], sines[0], sines[1], sines[2],
                      np.array(su), np.array(sv), np.array(omega), risk, S, R)  # fmt: skip
    return risk, S, R, lines, tol


def risk_and_gradient(theta, H: int, k: int, data: PlanarProblemData) -> tuple[np.ndarray, np.ndarray]:
    """Exact risk and generalized gradient of a d = 2 problem (compiled per-row kernel).

    Same signature, validation and results as :func:`reluflow.kernels.exact2d.risk_and_gradient`:
    ``theta (..., n)``, ``n = 2 H + H + k H + k`` -> ``risk (...)``, ``grad (..., n)``.
    """
    theta2d, batch, H, k = check_inputs(theta, H, k, data)
    M, n = theta2d.shape
    risk, S, R, _, _ = _cell_moments(theta2d, H, k, data)
    grad = np.empty((M, n))
    _gradient_rows(theta2d, H, k, S, R, grad)
    return risk.reshape(batch), grad.reshape(batch + (n,))


def gradient_jacobian(theta, H: int, k: int, data: PlanarProblemData) -> np.ndarray:
    """Jacobian ``dG/dtheta`` of a d = 2 problem (compiled per-row kernel), exactly symmetric.

    Same signature, validation and results as :func:`reluflow.kernels.exact2d.gradient_jacobian`.
    """
    theta2d, batch, H, k = check_inputs(theta, H, k, data)
    M, n = theta2d.shape
    _, S, _, lines, tol = _cell_moments(theta2d, H, k, data)
    density, target, teacher, sines = _data_arrays(data)
    su, sv, omega = triangle_rule(data.pair_points)
    a, b = data.domain
    total = float(_second_moments(*_square(a, b, (1,)), density, (su, sv, omega))[0, 0])
    nodes, weights = gauss_legendre(data.line_points)
    jac = np.empty((M, n, n))
    _jacobian_rows(theta2d, H, k, lines, tol, a, b, density, target, teacher[2], sines[0], sines[1], sines[2],
                   np.array(su), np.array(sv), np.array(omega), np.array(nodes), np.array(weights), total, S, jac)  # fmt: skip
    return jac.reshape(batch + (n, n))


# ----------------------------------------------------------------------------------------------------
# pointwise helpers (inlined)


@njit(inline="always", **_JIT)
def _poly2(coefficients, x, y):
    """``sum coefficients[q, s] x^q y^s``: Horner in ``y`` for each ``q``, then in ``x`` (as the numpy path)."""
    n_q, n_s = coefficients.shape
    value = 0.0
    for q in range(n_q - 1, -1, -1):
        row = coefficients[q, n_s - 1]
        for s in range(n_s - 2, -1, -1):
            row = row * y + coefficients[q, s]
        value = row if q == n_q - 1 else value * x + row
    return value


@njit(inline="always", **_JIT)
def _sines(freq, phase, amp, m, x, y):
    total = 0.0
    for s in range(freq.shape[0]):
        total = total + amp[s, m] * np.sin((freq[s, 0] * x + freq[s, 1] * y) + phase[s])
    return total


@njit(**_JIT)
def _grow(vx, vy, nv, bits, rows, cols):
    """Copies of the cell arrays with at least ``rows`` cells and ``cols`` vertices per cell."""
    new_rows = max(rows, vx.shape[0])
    new_cols = max(cols, vx.shape[1])
    nx = np.zeros((new_rows, new_cols))
    ny = np.zeros((new_rows, new_cols))
    nn = np.zeros(new_rows, np.int64)
    nb = np.zeros((new_rows, bits.shape[1]))
    nx[: vx.shape[0], : vx.shape[1]] = vx
    ny[: vy.shape[0], : vy.shape[1]] = vy
    nn[: nv.shape[0]] = nv
    nb[: bits.shape[0]] = bits
    return nx, ny, nn, nb


@njit(**_JIT)
def _clip_positive(vx, vy, n, w0, w1, b, tol, out_x, out_y):
    """``polygon cap {z > 0}`` by the side rule: writes the piece to ``out_x, out_y``, returns its vertex count."""
    anypos = False
    anyneg = False
    for v in range(n):
        s = b + w0 * vx[v] + w1 * vy[v]
        if s > tol:
            anypos = True
        elif s < -tol:
            anyneg = True
    if not anypos:
        return 0
    if not anyneg:
        for v in range(n):
            out_x[v] = vx[v]
            out_y[v] = vy[v]
        return n
    count = 0
    for v in range(n):
        v1 = v + 1 if v + 1 < n else 0
        s0 = b + w0 * vx[v] + w1 * vy[v]
        s1 = b + w0 * vx[v1] + w1 * vy[v1]
        if not s0 < -tol:
            out_x[count] = vx[v]
            out_y[count] = vy[v]
            count += 1
        if (s0 > tol and s1 < -tol) or (s0 < -tol and s1 > tol):
            t = s0 / (s0 - s1)
            out_x[count] = vx[v] + t * (vx[v1] - vx[v])
            out_y[count] = vy[v] + t * (vy[v1] - vy[v])
            count += 1
    return count


@njit(**_JIT)
def _second_moments_polygon(vx, vy, n, density, su, sv, omega, out):
    """``out[0:6] = int (1, x, y, xx, xy, yy) p`` over the polygon (fan triangles, collapsed rule)."""
    for e in range(6):
        out[e] = 0.0
    for t in range(1, n - 1):
        ex1 = vx[t] - vx[0]
        ey1 = vy[t] - vy[0]
        ex2 = vx[t + 1] - vx[0]
        ey2 = vy[t + 1] - vy[0]
        det = ex1 * ey2 - ey1 * ex2
        for q in range(omega.shape[0]):
            x = vx[0] + su[q] * ex1 + sv[q] * ex2
            y = vy[0] + su[q] * ey1 + sv[q] * ey2
            wp = (omega[q] * det) * _poly2(density, x, y)
            wx = wp * x
            wy = wp * y
            out[0] += wp
            out[1] += wx
            out[2] += wy
            out[3] += wx * x
            out[4] += wx * y
            out[5] += wy * y


# ----------------------------------------------------------------------------------------------------
# risk and gradient


@njit(**_JIT)
def _arrangement_rows(theta, H, k, lines, tol, a, b, density, target, TV, freq, phase, amp, su, sv, omega,
                      risk_out, S_out, R_out):  # fmt: skip
    """Per row: the arrangement, the cell moments, ``risk``, ``S (k, H, 3)`` and ``R (k, 3)``."""
    M = theta.shape[0]
    L = lines.shape[1]
    Ht = L - H
    off_V = 3 * H
    off_c = 3 * H + k * H
    cap_cells = 1 + L + L * (L - 1) // 2  # cells of L lines in general position
    cap_vertices = L + 5  # a convex cell has at most one edge per line and per side of the square
    vx = np.zeros((cap_cells, cap_vertices))
    vy = np.zeros((cap_cells, cap_vertices))
    nv = np.zeros(cap_cells, np.int64)
    bits = np.zeros((cap_cells, L))  # 1.0 on the positive side of line j, else 0.0 (multiplied, not branched on)
    side = np.empty(cap_vertices)
    px = np.empty(2 * cap_vertices)
    py = np.empty(2 * cap_vertices)
    qx = np.empty(2 * cap_vertices)
    qy = np.empty(2 * cap_vertices)
    A0 = np.empty(k)
    A1 = np.empty(k)
    B = np.empty(k)
    T0 = np.empty(k)
    T1 = np.empty(k)
    TB = np.empty(k)
    r = np.empty(k)
    mom = np.empty((k, 3))
    VW0 = np.empty((k, H))  # V[m, i] w_i0, V[m, i] w_i1, V[m, i] b_i
    VW1 = np.empty((k, H))
    VB = np.empty((k, H))
    S_cell = np.empty((k, 3, H))  # running sums over the cells of I_i, contiguous in i

    for row in range(M):
        th = theta[row]
        # --- the arrangement: insert the lines one by one -------------------------------------------------
        vx[0, 0], vx[0, 1], vx[0, 2], vx[0, 3] = a, b, b, a
        vy[0, 0], vy[0, 1], vy[0, 2], vy[0, 3] = a, a, b, b
        nv[0] = 4
        n_cells = 1
        for j in range(L):
            w0 = lines[row, j, 0]
            w1 = lines[row, j, 1]
            bj = lines[row, j, 2]
            tj = tol[row, j]
            for cell in range(n_cells):  # the cells existing before line j (new ones are appended)
                n = nv[cell]
                anypos = False
                anyneg = False
                for v in range(n):
                    s = bj + w0 * vx[cell, v] + w1 * vy[cell, v]
                    side[v] = s
                    if s > tj:
                        anypos = True
                    elif s < -tj:
                        anyneg = True
                if not (anypos and anyneg):
                    bits[cell, j] = 1.0 if anypos else 0.0
                    continue
                n_pos = 0
                n_neg = 0
                for v in range(n):
                    v1 = v + 1 if v + 1 < n else 0
                    s0 = side[v]
                    s1 = side[v1]
                    pos0 = s0 > tj
                    neg0 = s0 < -tj
                    if not neg0:
                        px[n_pos] = vx[cell, v]
                        py[n_pos] = vy[cell, v]
                        n_pos += 1
                    if not pos0:
                        qx[n_neg] = vx[cell, v]
                        qy[n_neg] = vy[cell, v]
                        n_neg += 1
                    if (pos0 and s1 < -tj) or (neg0 and s1 > tj):
                        frac = s0 / (s0 - s1)
                        cx = vx[cell, v] + frac * (vx[cell, v1] - vx[cell, v])
                        cy = vy[cell, v] + frac * (vy[cell, v1] - vy[cell, v])
                        px[n_pos] = cx
                        py[n_pos] = cy
                        n_pos += 1
                        qx[n_neg] = cx
                        qy[n_neg] = cy
                        n_neg += 1
                if n_cells + 1 > vx.shape[0] or max(n_pos, n_neg) > vx.shape[1]:  # beyond general position
                    vx, vy, nv, bits = _grow(vx, vy, nv, bits, 2 * vx.shape[0], max(n_pos, n_neg) + 4)
                for v in range(n_pos):
                    vx[cell, v] = px[v]
                    vy[cell, v] = py[v]
                nv[cell] = n_pos
                new = n_cells
                for v in range(n_neg):
                    vx[new, v] = qx[v]
                    vy[new, v] = qy[v]
                nv[new] = n_neg
                for l in range(j):
                    bits[new, l] = bits[cell, l]
                bits[new, j] = 0.0
                bits[cell, j] = 1.0
                n_cells += 1
                if side.shape[0] < vx.shape[1]:  # the work buffers follow a grown vertex capacity
                    side = np.empty(vx.shape[1])
                    px = np.empty(2 * vx.shape[1])
                    py = np.empty(2 * vx.shape[1])
                    qx = np.empty(2 * vx.shape[1])
                    qy = np.empty(2 * vx.shape[1])
            # (cells appended while inserting line j are not visited again for line j)

        # --- cell moments, residual first; sums over cells in cell order ----------------------------------
        # Active terms enter as products with the 0/1 bits: adding v * 0.0 = +-0 changes no sum, so the
        # values are those of the numpy path's where(bit, v, 0), without unpredictable branches.
        for m in range(k):
            for i in range(H):
                vmi = th[off_V + m * H + i]
                VW0[m, i] = vmi * th[2 * i]
                VW1[m, i] = vmi * th[2 * i + 1]
                VB[m, i] = vmi * th[2 * H + i]
            for e in range(3):
                R_out[row, m, e] = 0.0
                for i in range(H):
                    S_cell[m, e, i] = 0.0
        risk = 0.0
        for cell in range(n_cells):
            on = bits[cell]
            for m in range(k):
                a0 = 0.0
                a1 = 0.0
                bb = th[off_c + m]
                for i in range(H):
                    a0 = a0 + VW0[m, i] * on[i]
                    a1 = a1 + VW1[m, i] * on[i]
                    bb = bb + VB[m, i] * on[i]
                A0[m] = a0
                A1[m] = a1
                B[m] = bb
                t0 = 0.0
                t1 = 0.0
                tb = 0.0
                for l in range(Ht):
                    tv = TV[m, l]
                    t0 = t0 + (tv * lines[row, H + l, 0]) * on[H + l]
                    t1 = t1 + (tv * lines[row, H + l, 1]) * on[H + l]
                    tb = tb + (tv * lines[row, H + l, 2]) * on[H + l]
                T0[m] = t0
                T1[m] = t1
                TB[m] = tb
                for e in range(3):
                    mom[m, e] = 0.0
            rho = 0.0
            n = nv[cell]
            x0 = vx[cell, 0]
            y0 = vy[cell, 0]
            for t in range(1, n - 1):
                ex1 = vx[cell, t] - x0
                ey1 = vy[cell, t] - y0
                ex2 = vx[cell, t + 1] - x0
                ey2 = vy[cell, t + 1] - y0
                det = ex1 * ey2 - ey1 * ex2
                for q in range(omega.shape[0]):
                    x = x0 + su[q] * ex1 + sv[q] * ex2
                    y = y0 + su[q] * ey1 + sv[q] * ey2
                    wp = (omega[q] * det) * _poly2(density, x, y)
                    squared = 0.0
                    for m in range(k):
                        f = (_poly2(target[m], x, y) + ((T0[m] * x + T1[m] * y) + TB[m])) + _sines(
                            freq, phase, amp, m, x, y
                        )
                        r[m] = ((A0[m] * x + A1[m] * y) + B[m]) - f
                        squared = r[m] * r[m] if m == 0 else squared + r[m] * r[m]
                        wr = wp * r[m]
                        mom[m, 0] += wr * x
                        mom[m, 1] += wr * y
                        mom[m, 2] += wr
                    rho += wp * squared
            risk += rho
            for m in range(k):
                for e in range(3):
                    R_out[row, m, e] += mom[m, e]
                    me = mom[m, e]
                    acc = S_cell[m, e]
                    for i in range(H):  # independent accumulators, contiguous: vectorizes
                        acc[i] += me * on[i]
        for m in range(k):
            for i in range(H):
                for e in range(3):
                    S_out[row, m, i, e] = S_cell[m, e, i]
        risk_out[row] = risk


@njit(**_JIT)
def _gradient_rows(theta, H, k, S, R, grad_out):
    """``G`` from ``S (M, k, H, 3)`` and ``R (M, k, 3)`` (the numpy path's ``_gradient``)."""
    off_V = 3 * H
    off_c = 3 * H + k * H
    for row in range(theta.shape[0]):
        th = theta[row]
        g = grad_out[row]
        for i in range(H):
            d0 = th[off_V + i] * S[row, 0, i, 0]
            d1 = th[off_V + i] * S[row, 0, i, 1]
            d2 = th[off_V + i] * S[row, 0, i, 2]
            for m in range(1, k):
                v = th[off_V + m * H + i]
                d0 = d0 + v * S[row, m, i, 0]
                d1 = d1 + v * S[row, m, i, 1]
                d2 = d2 + v * S[row, m, i, 2]
            g[2 * i] = 2.0 * d0
            g[2 * i + 1] = 2.0 * d1
            g[2 * H + i] = 2.0 * d2
            for m in range(k):
                s = S[row, m, i]
                g[off_V + m * H + i] = 2.0 * ((th[2 * i] * s[0] + th[2 * i + 1] * s[1]) + th[2 * H + i] * s[2])
        for m in range(k):
            g[off_c + m] = 2.0 * R[row, m, 2]


# ----------------------------------------------------------------------------------------------------
# Jacobian


@njit(**_JIT)
def _line_term(th, H, k, i, lines_row, tol_row, a, b, density, target, TV, freq, phase, amp, nodes, weights,
               tau, out):  # fmt: skip
    """``out[0:6] = Lambda_i`` (``(1, x, y, xx, xy, yy)``), 0 if line ``i`` does not enter the open square."""
    for e in range(6):
        out[e] = 0.0
    w0 = lines_row[i, 0]
    w1 = lines_row[i, 1]
    bi = lines_row[i, 2]
    ti = tol_row[i]
    cx = (a, b, b, a)
    cy = (a, a, b, b)
    anypos = False
    anyneg = False
    for corner in range(4):
        s = bi + w0 * cx[corner] + w1 * cy[corner]
        if s > ti:
            anypos = True
        elif s < -ti:
            anyneg = True
    if not (anypos and anyneg):
        return
    # endpoints: the first two of (corner on the line, crossing point of the next edge), counterclockwise
    ends_x = np.zeros(2)
    ends_y = np.zeros(2)
    found = 0
    for corner in range(4):
        nxt = corner + 1 if corner < 3 else 0
        s0 = bi + w0 * cx[corner] + w1 * cy[corner]
        s1 = bi + w0 * cx[nxt] + w1 * cy[nxt]
        if not (s0 > ti or s0 < -ti) and found < 2:
            ends_x[found] = cx[corner]
            ends_y[found] = cy[corner]
            found += 1
        if ((s0 > ti and s1 < -ti) or (s0 < -ti and s1 > ti)) and found < 2:
            t = s0 / (s0 - s1)
            ends_x[found] = cx[corner] + t * (cx[nxt] - cx[corner])
            ends_y[found] = cy[corner] + t * (cy[nxt] - cy[corner])
            found += 1
    x0 = ends_x[0]
    y0 = ends_y[0]
    dx = ends_x[1] - x0
    dy = ends_y[1] - y0
    # crossings of the other lines, sorted (insertion sort)
    n_tau = 0
    for j in range(lines_row.shape[0]):
        if j == i:
            continue
        s0 = lines_row[j, 2] + lines_row[j, 0] * x0 + lines_row[j, 1] * y0
        s1 = lines_row[j, 2] + lines_row[j, 0] * ends_x[1] + lines_row[j, 1] * ends_y[1]
        tj = tol_row[j]
        if (s0 > tj and s1 < -tj) or (s0 < -tj and s1 > tj):
            value = s0 / (s0 - s1)
            pos = n_tau
            while pos > 0 and tau[pos - 1] > value:
                tau[pos] = tau[pos - 1]
                pos -= 1
            tau[pos] = value
            n_tau += 1
    tau[n_tau] = 1.0
    off_V = 3 * H
    off_c = 3 * H + k * H
    lo = 0.0
    acc = np.zeros(6)
    for piece in range(n_tau + 1):
        hi = tau[piece]
        mid = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        for e in range(6):
            acc[e] = 0.0
        for q in range(nodes.shape[0]):
            tq = mid + half * nodes[q]
            x = x0 + tq * dx
            y = y0 + tq * dy
            v_dot_r = 0.0
            for m in range(k):
                N = th[off_c + m]
                for j in range(H):
                    if j != i:
                        z = lines_row[j, 2] + lines_row[j, 0] * x + lines_row[j, 1] * y
                        N = N + th[off_V + m * H + j] * max(z, 0.0)
                f = _poly2(target[m], x, y)
                for l in range(TV.shape[1]):
                    z = lines_row[H + l, 2] + lines_row[H + l, 0] * x + lines_row[H + l, 1] * y
                    f = f + TV[m, l] * max(z, 0.0)
                f = f + _sines(freq, phase, amp, m, x, y)
                term = th[off_V + m * H + i] * (N - f)
                v_dot_r = term if m == 0 else v_dot_r + term
            g = (weights[q] * half) * (2.0 * v_dot_r * _poly2(density, x, y))
            gx = g * x
            gy = g * y
            acc[0] += g
            acc[1] += gx
            acc[2] += gy
            acc[3] += gx * x
            acc[4] += gx * y
            acc[5] += gy * y
        for e in range(6):
            out[e] += acc[e]
        lo = hi
    factor = np.sqrt((dx * dx + dy * dy) / (w0 * w0 + w1 * w1))
    for e in range(6):
        out[e] = factor * out[e]


@njit(inline="always", **_JIT)
def _entry(T6, a, c):
    """Entry ``(a, c)`` of ``int xt xt^T (...)`` from the 6 numbers ``(1, x, y, xx, xy, yy)``."""
    if a == 2 and c == 2:
        return T6[0]
    if a == 2 or c == 2:
        return T6[1] if a + c == 2 else T6[2]  # (x, 1) / (1, x): x;  (y, 1) / (1, y): y
    if a == 0 and c == 0:
        return T6[3]
    if a == 1 and c == 1:
        return T6[5]
    return T6[4]


@njit(**_JIT)
def _jacobian_rows(theta, H, k, lines, tol, a, b, density, target, TV, freq, phase, amp, su, sv, omega, nodes,
                   weights, total, S, jac_out):  # fmt: skip
    """Per row: ``T(i, j)`` by clipping, ``Lambda_i`` along the segments, then ``J`` (numpy path's ``_assemble``)."""
    M = theta.shape[0]
    L = lines.shape[1]
    off_V = 3 * H
    off_c = 3 * H + k * H
    T = np.empty((6, H, H))
    Lam = np.empty((6, H))
    E = np.empty((H, H, 3))
    P = np.empty((H, H))
    VV = np.empty((H, H))
    u = np.empty((H, 3))
    sq_x = np.array([a, b, b, a])
    sq_y = np.array([a, a, b, b])
    ix = np.empty(16)
    iy = np.empty(16)
    jx = np.empty(16)
    jy = np.empty(16)
    mom = np.empty(6)
    tau = np.empty(L + 1)
    ui = np.empty((H, 3), np.int64)
    for i in range(H):
        ui[i, 0] = 2 * i
        ui[i, 1] = 2 * i + 1
        ui[i, 2] = 2 * H + i
    for row in range(M):
        th = theta[row]
        jac = jac_out[row]
        for i in range(H):
            u[i, 0] = th[2 * i]
            u[i, 1] = th[2 * i + 1]
            u[i, 2] = th[2 * H + i]
        # --- T(i, j): square cap I_i, then cap I_j ----------------------------------------------------------
        for i in range(H):
            n_i = _clip_positive(
                sq_x, sq_y, 4, lines[row, i, 0], lines[row, i, 1], lines[row, i, 2], tol[row, i], ix, iy
            )
            _second_moments_polygon(ix, iy, n_i, density, su, sv, omega, mom)
            for e in range(6):
                T[e, i, i] = mom[e]
            for j in range(i + 1, H):
                n_ij = _clip_positive(
                    ix, iy, n_i, lines[row, j, 0], lines[row, j, 1], lines[row, j, 2], tol[row, j], jx, jy
                )
                _second_moments_polygon(jx, jy, n_ij, density, su, sv, omega, mom)
                for e in range(6):
                    T[e, i, j] = mom[e]
                    T[e, j, i] = mom[e]
            _line_term(th, H, k, i, lines[row], tol[row], a, b, density, target, TV, freq, phase, amp, nodes, weights,
                       tau, mom)  # fmt: skip
            for e in range(6):
                Lam[e, i] = mom[e]
        # --- E(i, j) = T(i, j) u_j, P(i, j) = u_i . E(i, j) (i <= j), V_i . V_j ------------------------------
        for i in range(H):
            for j in range(H):
                for e in range(3):
                    E[i, j, e] = (_entry(T[:, i, j], e, 0) * u[j, 0] + _entry(T[:, i, j], e, 1) * u[j, 1]) + _entry(
                        T[:, i, j], e, 2
                    ) * u[j, 2]
                vv = th[off_V + i] * th[off_V + j]
                for m in range(1, k):
                    vv = vv + th[off_V + m * H + i] * th[off_V + m * H + j]
                VV[i, j] = vv
        for i in range(H):
            for j in range(i, H):
                P[i, j] = (u[i, 0] * E[i, j, 0] + u[i, 1] * E[i, j, 1]) + u[i, 2] * E[i, j, 2]
                P[j, i] = P[i, j]
        # --- assemble (every entry and its mirror from one value) ---------------------------------------------
        jac[:, :] = 0.0
        for i in range(H):
            for j in range(H):
                for e in range(3):
                    for f in range(3):
                        value = 2.0 * VV[i, j] * _entry(T[:, i, j], e, f)
                        if i == j:
                            value = value + _entry(Lam[:, i], e, f)
                        jac[ui[i, e], ui[j, f]] = value
        for m in range(k):
            for i in range(H):
                vmi = th[off_V + m * H + i]
                for j in range(H):
                    col = off_V + m * H + j
                    for e in range(3):
                        value = 2.0 * vmi * E[i, j, e]
                        if i == j:
                            value = value + 2.0 * S[row, m, i, e]
                        jac[ui[i, e], col] = value
                        jac[col, ui[i, e]] = value
                    jac[off_V + m * H + i, col] = 2.0 * P[i, j]
                for e in range(3):
                    value = 2.0 * vmi * _entry(T[:, i, i], e, 2)
                    jac[ui[i, e], off_c + m] = value
                    jac[off_c + m, ui[i, e]] = value
                value = 2.0 * (
                    (u[i, 0] * _entry(T[:, i, i], 0, 2) + u[i, 1] * _entry(T[:, i, i], 1, 2))
                    + u[i, 2] * _entry(T[:, i, i], 2, 2)
                )
                jac[off_V + m * H + i, off_c + m] = value
                jac[off_c + m, off_V + m * H + i] = value
            jac[off_c + m, off_c + m] = 2.0 * total
