"""Compiled per-run kernels of :mod:`reluflow.kernels.structured1d` (read its docstring for the mathematics).

Every driver loops over runs serially and each run's arithmetic reads that run's inputs only, in a fixed
order: results are bitwise independent of the batch. Per run:

- :func:`_structure`: the sort of the neuron positions and everything the Hessian needs, in O(H log H + (H + L) Q k):
  slot order, piece moments of the density per segment, the integrals ``S_s(i, m)``, the kink terms ``rho_i``
  and the neuron components ``G_w, G_b`` of the gradient (the normalized flow's projection needs them);
- :func:`_assemble`: the augmented banded system (or, with ``structure=True``, only the column extent of
  each equation, from which the row order and the bandwidths are fixed once per ``(H, k)``);
- :func:`_band_factor`, :func:`_band_profile`, :func:`_band_solve`: Gaussian elimination with partial pivoting on a
  band matrix (the algorithm of LAPACK ``dgbtf2`` / ``dgbtrs``), storage ``band[col, kl + ku + row - col]``;
- :func:`_apply_w`: ``W v`` by the same chains (for the Jacobian-vector product, ``sigma = 0``);
- :func:`factor_rows`, :func:`solve_rows`, :func:`jvp_rows`: the batched drivers of the above;
- :func:`dense_factor_rows`, :func:`dense_solve_rows`: the small-width path, partial-pivoting LU of the dense ``W``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from reluflow.kernels.dense_lu import lu_factor_shifted, lu_solve_into

# the table's density and target on an interval: the exact Jacobian's own compiled helpers
from reluflow.kernels.jacobian1d_numba import _density, _interval_left, _interval_right, _target

# IEEE semantics for -b / 0 (the kink of a neuron with w = 0 is never used), no ZeroDivisionError branch.
_JIT = {"cache": True, "error_model": "numpy"}
_JIT_INLINE = {**_JIT, "inline": "always"}


# ----------------------------------------------------------------------------------------------------------
# per-run structure
# ----------------------------------------------------------------------------------------------------------


@njit(**_JIT)
def _structure(th, H, knots, target_poly, sines, density_poly, nodes, weights,
               pos, order, on, inside, xi, moments, S, rho, grad_u, slope, intercept, resid, cum, node_x, node_wp):  # fmt: skip
    """Fill the per-run arrays for ``th (n,)``.

    Outputs: ``order (H,)`` the neuron in each slot (positions ascending, ties by index); ``on (H,)``;
    ``inside (H,)``: the kink is strictly inside ``(a, b)``; ``xi (H,)`` that kink, else 0; ``moments (3, H + 1)``:
    ``int x^s p`` over each segment; ``S (2, k, H)``: ``S_s(i, m)``; ``rho (H,)``; ``grad_u (2, H)``:
    ``G_w[i], G_b[i]``. Work: ``pos (H,)``, ``slope, intercept (k, H + 1)`` (of ``N_m`` on each segment),
    ``resid (2, k, H + 1)`` (``int x^s r_m p`` over each segment), ``cum (2, H + 2)``, ``node_x, node_wp (Q,)``.
    """
    k = target_poly.shape[1]
    n_int = knots.shape[0] - 1
    a = knots[0]
    b_end = knots[n_int]
    off_V = 2 * H
    off_c = off_V + k * H
    n_nodes = nodes.shape[0]

    # --- 1. events: every neuron switches on (w > 0, or w = 0 < b) or off at clip(xi, a, b) (a if w = 0)
    for i in range(H):
        w = th[i]
        b = th[H + i]
        kink = -b / w
        nonzero = w != 0.0
        on[i] = (w > 0.0) or ((w == 0.0) and (b > 0.0))
        inside[i] = nonzero and (kink > a) and (kink < b_end)
        xi[i] = kink if inside[i] else 0.0
        pos[i] = min(max(kink, a), b_end) if nonzero else a
    order[:] = np.argsort(pos, kind="mergesort")  # stable: O(H log H), the only superlinear step

    # --- 2. slope and intercept of N_m on segment g: switch-off neurons in slots >= g (summed from the
    # right), then c and the switch-on neurons in slots < g (from the left)
    for m in range(k):
        row_V = off_V + m * H
        run_s = 0.0
        run_b = 0.0
        slope[m, H] = 0.0
        intercept[m, H] = 0.0
        for g in range(H - 1, -1, -1):
            i = order[g]
            if not on[i]:
                v = th[row_V + i]
                run_s += v * th[i]
                run_b += v * th[H + i]
            slope[m, g] = run_s
            intercept[m, g] = run_b
        run_s = 0.0
        run_b = th[off_c + m]
        for g in range(H + 1):
            if g > 0:
                i = order[g - 1]
                if on[i]:
                    v = th[row_V + i]
                    run_s += v * th[i]
                    run_b += v * th[H + i]
            slope[m, g] = run_s + slope[m, g]
            intercept[m, g] = run_b + intercept[m, g]

    # --- 3. moments of each segment, cut at the table's knots; Gauss-Legendre on every sub-piece, residual
    # first (r = A x + B - f at the nodes, as reluflow.exact1d)
    l = 0
    for g in range(H + 1):
        lo = a if g == 0 else pos[order[g - 1]]
        hi = b_end if g == H else pos[order[g]]
        for s in range(3):
            moments[s, g] = 0.0
        for m in range(k):
            resid[0, m, g] = 0.0
            resid[1, m, g] = 0.0
        x0 = lo
        while True:
            while l < n_int - 1 and knots[l + 1] <= x0:
                l += 1
            x1 = hi if l == n_int - 1 else min(hi, knots[l + 1])
            if x1 > x0:
                mid = 0.5 * (x0 + x1)
                half = 0.5 * (x1 - x0)
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
                for q in range(n_nodes):
                    x = mid + half * nodes[q]
                    wp = weights[q] * _density(density_poly, l, x)
                    node_x[q] = x
                    node_wp[q] = wp
                    p0 += wp
                    p1 += wp * x
                    p2 += wp * x * x
                moments[0, g] += half * p0
                moments[1, g] += half * p1
                moments[2, g] += half * p2
                for m in range(k):
                    acc0 = 0.0
                    acc1 = 0.0
                    for q in range(n_nodes):
                        x = node_x[q]
                        r = slope[m, g] * x + intercept[m, g] - _target(target_poly, sines, l, m, x)
                        acc0 += node_wp[q] * r
                        acc1 += node_wp[q] * r * x
                    resid[0, m, g] += half * acc0
                    resid[1, m, g] += half * acc1
            if x1 >= hi:
                break
            x0 = x1

    # --- 4. S_s(i, m) = int_{I_i} x^s r_m p: suffix sums (switch-on: segments > slot) or prefix sums
    # (switch-off: segments <= slot)
    for s in range(2):
        for m in range(k):
            cum[0, 0] = 0.0
            for g in range(H + 1):
                cum[0, g + 1] = cum[0, g] + resid[s, m, g]
            cum[1, H + 1] = 0.0
            for g in range(H, -1, -1):
                cum[1, g] = cum[1, g + 1] + resid[s, m, g]
            for t in range(H):
                i = order[t]
                S[s, m, i] = cum[1, t + 1] if on[i] else cum[0, t + 1]

    # --- 5. kink terms rho_i = 2 (V_i . r(xi_i)) p(xi_i) / |w_i| (kinks inside (a, b); p, f from the active
    # side; N(xi_i) from the active-side segment, N being continuous) and G_w, G_b
    for t in range(H):
        i = order[t]
        if not inside[i]:
            rho[i] = 0.0
        else:
            x = xi[i]
            if on[i]:
                g = t + 1
                l = _interval_right(knots, x)
            else:
                g = t
                l = _interval_left(knots, x)
            v_dot_r = 0.0
            for m in range(k):
                r = slope[m, g] * x + intercept[m, g] - _target(target_poly, sines, l, m, x)
                v_dot_r += th[off_V + m * H + i] * r
            rho[i] = 2.0 * v_dot_r * _density(density_poly, l, x) / abs(th[i])
        gw = 0.0
        gb = 0.0
        for m in range(k):
            v = th[off_V + m * H + i]
            gw += v * S[1, m, i]
            gb += v * S[0, m, i]
        grad_u[0, i] = 2.0 * gw
        grad_u[1, i] = 2.0 * gb


# ----------------------------------------------------------------------------------------------------------
# per-neuron blocks
# ----------------------------------------------------------------------------------------------------------


@njit(**_JIT_INLINE)
def _neuron_blocks(th, H, i, sigma, normalized, xi, rho, S, grad_u, D, Q):
    """The local block ``D (2 + k, 2 + k)`` and the coupling ``Q (2 + k, 2 k)`` of neuron ``i``.

    Order of the neuron's unknowns: ``w_i, b_i, V[0, i] .. V[k - 1, i]``; of the segment quantities: ``2 m``
    (slope of output ``m``), ``2 m + 1`` (its intercept). Standard flow: ``D = sigma I + B_i``, ``Q = C_i^T``.
    Normalized flow (``|u_i| > 0``): the rows of ``u_i = (w_i, b_i)`` of ``B_i`` and ``C_i^T`` are multiplied by
    ``P_i = I - u_i u_i^T / |u_i|^2`` and ``D`` loses ``(u_i g^T - 2 s u_i u_i^T) / |u_i|^2 + s I`` in that
    block (``g = (G_w[i], G_b[i])``, ``s = u_i . g / |u_i|^2``).
    """
    k = S.shape[1]
    w = th[i]
    b = th[H + i]
    for p in range(2 + k):
        for q in range(2 + k):
            D[p, q] = 0.0
        for q in range(2 * k):
            Q[p, q] = 0.0
    r = rho[i]
    x = xi[i]
    D[0, 0] = r * x * x
    D[0, 1] = r * x
    D[1, 0] = r * x
    D[1, 1] = r
    for m in range(k):
        v = th[2 * H + m * H + i]
        D[0, 2 + m] = 2.0 * S[1, m, i]
        D[2 + m, 0] = 2.0 * S[1, m, i]
        D[1, 2 + m] = 2.0 * S[0, m, i]
        D[2 + m, 1] = 2.0 * S[0, m, i]
        Q[0, 2 * m] = v
        Q[1, 2 * m + 1] = v
        Q[2 + m, 2 * m] = w
        Q[2 + m, 2 * m + 1] = b
    if normalized:
        uu = w * w + b * b
        if uu > 0.0:
            for q in range(2 + k):
                along = (w * D[0, q] + b * D[1, q]) / uu
                D[0, q] -= w * along
                D[1, q] -= b * along
            for q in range(2 * k):
                along = (w * Q[0, q] + b * Q[1, q]) / uu
                Q[0, q] -= w * along
                Q[1, q] -= b * along
            gw = grad_u[0, i]
            gb = grad_u[1, i]
            s = (w * gw + b * gb) / uu
            D[0, 0] -= (w * gw - 2.0 * s * w * w) / uu + s
            D[0, 1] -= (w * gb - 2.0 * s * w * b) / uu
            D[1, 0] -= (b * gw - 2.0 * s * b * w) / uu
            D[1, 1] -= (b * gb - 2.0 * s * b * b) / uu + s
    for p in range(2 + k):
        D[p, p] += sigma


# ----------------------------------------------------------------------------------------------------------
# the augmented system: layout, assembly, banded LU
# ----------------------------------------------------------------------------------------------------------
# Unknowns (columns): x_c (k), then for every segment g = 0..H the block [Y_g, L_g, R_g, x_g, Z_g] (2k, 2k, 2k,
# 2 + k, 2k; no x_H). Equation e is named after "its" unknown e; the row that holds it is row_of[e].


@njit(**_JIT_INLINE)
def _col_y(k, g, c):
    return k + g * (9 * k + 2) + c


@njit(**_JIT_INLINE)
def _col_l(k, g, c):
    return k + g * (9 * k + 2) + 2 * k + c


@njit(**_JIT_INLINE)
def _col_r(k, g, c):
    return k + g * (9 * k + 2) + 4 * k + c


@njit(**_JIT_INLINE)
def _col_x(k, g, j):
    return k + g * (9 * k + 2) + 6 * k + j


@njit(**_JIT_INLINE)
def _col_z(k, g, c, H):
    return k + g * (9 * k + 2) + 6 * k + (k + 2 if g < H else 0) + c


@njit(**_JIT)
def n_unknowns(H, k):
    """Size of the augmented system: ``k + (9 k + 2) H + 8 k``."""
    return k + (9 * k + 2) * H + 8 * k


@njit(**_JIT_INLINE)
def _put(band, kv, row_of, extent, structure, e, col, value):
    if structure:
        extent[e, 0] = min(extent[e, 0], col)
        extent[e, 1] = max(extent[e, 1], col)
    else:
        band[col, kv + row_of[e] - col] += value


@njit(**_JIT_INLINE)
def _put_c(band, kv, row_of, extent, structure, e, th, H, i, x0, c, sign):
    """``sign * (C_i x_i)[c]`` into equation ``e``; ``x_i`` starts at column ``x0``."""
    m = c // 2
    v = th[2 * H + m * H + i]
    if c % 2 == 0:  # slope: V[m, i] x_w + w_i x_V[m]
        _put(band, kv, row_of, extent, structure, e, x0, sign * v)
        _put(band, kv, row_of, extent, structure, e, x0 + 2 + m, sign * th[i])
    else:  # intercept: V[m, i] x_b + b_i x_V[m]
        _put(band, kv, row_of, extent, structure, e, x0 + 1, sign * v)
        _put(band, kv, row_of, extent, structure, e, x0 + 2 + m, sign * th[H + i])


# inlined into its two callers, each passing a constant ``structure``: compiled with the flag as a variable, the
# branches in every _put made the assembly 3x slower (measured)
@njit(**_JIT_INLINE)
def _assemble(th, H, k, sigma, normalized, structure, order, on, xi, rho, S, grad_u, moments, band, kv, row_of,
              extent, D, Q):  # fmt: skip
    """The augmented system of the module docstring of :mod:`reluflow.kernels.structured1d` into ``band``.

    With ``structure=True`` nothing is written to ``band``: ``extent[e] = (first, last)`` column of equation ``e``
    for the union of the patterns of switch-on and switch-off neurons (the pattern for every ``theta``).
    """
    for m in range(k):  # sigma x_c + (intercept part of Y_0) = r_c
        _put(band, kv, row_of, extent, structure, m, m, sigma)
        _put(band, kv, row_of, extent, structure, m, _col_y(k, 0, 2 * m + 1), 1.0)
    for g in range(H + 1):
        m0 = moments[0, g]
        m1 = moments[1, g]
        m2 = moments[2, g]
        for c in range(2 * k):
            m = c // 2
            # L_g - L_{g-1} - [switch-on neuron in slot g - 1] C x = 0;  L_0 - C_c x_c = 0
            e = _col_l(k, g, c)
            _put(band, kv, row_of, extent, structure, e, e, 1.0)
            if g == 0:
                if c % 2 == 1:
                    _put(band, kv, row_of, extent, structure, e, m, -1.0)
            else:
                _put(band, kv, row_of, extent, structure, e, _col_l(k, g - 1, c), -1.0)
                i = order[g - 1]
                if structure or on[i]:
                    _put_c(band, kv, row_of, extent, structure, e, th, H, i, _col_x(k, g - 1, 0), c, -1.0)
            # R_g - R_{g+1} - [switch-off neuron in slot g] C x = 0;  R_H = 0
            e = _col_r(k, g, c)
            _put(band, kv, row_of, extent, structure, e, e, 1.0)
            if g < H:
                _put(band, kv, row_of, extent, structure, e, _col_r(k, g + 1, c), -1.0)
                i = order[g]
                if structure or not on[i]:
                    _put_c(band, kv, row_of, extent, structure, e, th, H, i, _col_x(k, g, 0), c, -1.0)
            # Y_g - Y_{g+1} - M_g (L_g + R_g) = 0 and Z_g - Z_{g-1} - M_g (L_g + R_g) = 0, per output m with
            # M_g = 2 [[int x^2 p, int x p], [int x p, int p]] acting on (slope, intercept)
            m_slope = 2.0 * (m2 if c % 2 == 0 else m1)
            m_intercept = 2.0 * (m1 if c % 2 == 0 else m0)
            for which in range(2):
                if which == 0:
                    e = _col_y(k, g, c)
                    other = _col_y(k, g + 1, c) if g < H else -1
                else:
                    e = _col_z(k, g, c, H)
                    other = _col_z(k, g - 1, c, H) if g > 0 else -1
                _put(band, kv, row_of, extent, structure, e, e, 1.0)
                if other >= 0:
                    _put(band, kv, row_of, extent, structure, e, other, -1.0)
                _put(band, kv, row_of, extent, structure, e, _col_l(k, g, 2 * m), -m_slope)
                _put(band, kv, row_of, extent, structure, e, _col_l(k, g, 2 * m + 1), -m_intercept)
                _put(band, kv, row_of, extent, structure, e, _col_r(k, g, 2 * m), -m_slope)
                _put(band, kv, row_of, extent, structure, e, _col_r(k, g, 2 * m + 1), -m_intercept)
        if g < H:  # D_i x_i + Q_i (Y_{g+1} if switch-on, Z_g if switch-off) = r_i
            i = order[g]
            if not structure:
                _neuron_blocks(th, H, i, sigma, normalized, xi, rho, S, grad_u, D, Q)
            for j in range(2 + k):
                e = _col_x(k, g, j)
                for j2 in range(2 + k):
                    _put(band, kv, row_of, extent, structure, e, _col_x(k, g, j2), D[j, j2])
                for c in range(2 * k):
                    if structure or on[i]:
                        _put(band, kv, row_of, extent, structure, e, _col_y(k, g + 1, c), Q[j, c])
                    if structure or not on[i]:
                        _put(band, kv, row_of, extent, structure, e, _col_z(k, g, c, H), Q[j, c])


@njit(**_JIT)
def equation_extents(H, k):
    """``(N, 2)``: first and last column of every equation of the augmented system (any ``theta``)."""
    N = n_unknowns(H, k)
    extent = np.empty((N, 2), np.int64)
    extent[:, 0] = N
    extent[:, 1] = -1
    th = np.zeros(2 * H + k * H + k)
    order = np.arange(H)
    on = np.zeros(H, np.bool_)
    _assemble(th, H, k, 0.0, False, True, order, on, np.zeros(H), np.zeros(H), np.zeros((2, k, H)),
              np.zeros((2, H)), np.zeros((3, H + 1)), np.zeros((1, 1)), 0, np.zeros(N, np.int64), extent,
              np.zeros((2 + k, 2 + k)), np.zeros((2 + k, 2 * k)))  # fmt: skip
    return extent


@njit(**_JIT)
def _band_factor(band, kl, ku, piv):
    """In-place LU with partial pivoting of the band matrix in ``band (N, 2 kl + ku + 1)`` (LAPACK ``dgbtf2``).

    ``A[row, col]`` is stored at ``band[col, kl + ku + row - col]``; the first ``kl`` entries of each column are
    room for the fill of the row interchanges. Returns False at a zero (or non-finite) pivot: ``A`` is singular.
    """
    N = band.shape[0]
    kv = kl + ku
    ju = 0
    nonzero = np.empty(max(kl, 1), np.int64)
    for j in range(N):
        km = min(kl, N - 1 - j)
        jp = 0
        big = abs(band[j, kv])
        for t in range(1, km + 1):
            v = abs(band[j, kv + t])
            if v > big:
                big = v
                jp = t
        piv[j] = j + jp
        if not (big > 0.0 and big < np.inf):
            return False
        ju = max(ju, min(j + ku + jp, N - 1))
        if jp != 0:
            for c in range(j, ju + 1):
                tmp = band[c, kv + j - c]
                band[c, kv + j - c] = band[c, kv + j + jp - c]
                band[c, kv + j + jp - c] = tmp
        # multipliers; only the nonzero ones update (most of the band is structurally zero: skipping exact
        # zeros changes no result for finite entries)
        pivot = band[j, kv]
        count = 0
        for t in range(1, km + 1):
            if band[j, kv + t] != 0.0:
                band[j, kv + t] /= pivot
                nonzero[count] = t
                count += 1
        if count > 0:
            for c in range(j + 1, ju + 1):
                f = band[c, kv + j - c]
                if f != 0.0:
                    for s in range(count):
                        t = nonzero[s]
                        band[c, kv + j + t - c] -= band[j, kv + t] * f
    return True


@njit(**_JIT)
def _band_profile(band, kl, ku, u_first, l_count):
    """Where the factors of :func:`_band_factor` are nonzero: ``U[j - kv + u_first[j] : j, j]`` holds the nonzeros of
    column ``j`` above the diagonal, ``band[j, kv + 1 : kv + 1 + l_count[j]]`` its nonzero multipliers. (Most of the
    band is structurally zero; skipping exact zeros in :func:`_band_solve` changes no result for finite entries.)"""
    N = band.shape[0]
    kv = kl + ku
    for j in range(N):
        first = kv
        for o in range(kv):
            if band[j, o] != 0.0:
                first = o
                break
        u_first[j] = first
        count = 0
        for t in range(1, min(kl, N - 1 - j) + 1):
            if band[j, kv + t] != 0.0:
                count = t
        l_count[j] = count


@njit(**_JIT)
def _band_solve(band, kl, ku, piv, u_first, l_count, x):
    """Solve ``A x = rhs`` in place (``x`` holds ``rhs``) from the factors of :func:`_band_factor` (``dgbtrs``)
    and their profile (:func:`_band_profile`)."""
    N = band.shape[0]
    kv = kl + ku
    for j in range(N):
        p = piv[j]
        if p != j:
            tmp = x[j]
            x[j] = x[p]
            x[p] = tmp
        xj = x[j]
        if xj != 0.0:
            for t in range(1, l_count[j] + 1):
                x[j + t] -= band[j, kv + t] * xj
    for j in range(N - 1, -1, -1):
        x[j] /= band[j, kv]
        xj = x[j]
        if xj != 0.0:
            for i in range(max(0, j - kv + u_first[j]), j):
                x[i] -= band[j, kv + i - j] * xj


# ----------------------------------------------------------------------------------------------------------
# W v through the chains
# ----------------------------------------------------------------------------------------------------------


@njit(**_JIT)
def _apply_w(th, H, sigma, normalized, order, on, xi, rho, S, grad_u, moments, v, out, chain, D, Q):
    """``out = W v`` with ``W = sigma I + Pi (Phi^T M Phi + B) - Blk`` (``Pi``, ``Blk``: normalized flow only).

    ``chain (4, 2 k, H + 1)``: ``L_g, R_g`` (the features of ``v`` on segment ``g``, from the left and from
    the right), then ``Y_g = sum_{g' >= g} M_g' u_g'`` and ``Z_g = sum_{g' <= g} M_g' u_g'``.
    """
    k = S.shape[1]
    off_V = 2 * H
    off_c = off_V + k * H
    for c in range(2 * k):
        chain[0, c, 0] = 0.0
    for m in range(k):
        chain[0, 2 * m + 1, 0] = v[off_c + m]  # C_c v_c
    for g in range(1, H + 1):
        i = order[g - 1]
        for m in range(k):
            add_s = 0.0
            add_b = 0.0
            if on[i]:
                V = th[off_V + m * H + i]
                vV = v[off_V + m * H + i]
                add_s = V * v[i] + th[i] * vV
                add_b = V * v[H + i] + th[H + i] * vV
            chain[0, 2 * m, g] = chain[0, 2 * m, g - 1] + add_s
            chain[0, 2 * m + 1, g] = chain[0, 2 * m + 1, g - 1] + add_b
    for c in range(2 * k):
        chain[1, c, H] = 0.0
    for g in range(H - 1, -1, -1):
        i = order[g]
        for m in range(k):
            add_s = 0.0
            add_b = 0.0
            if not on[i]:
                V = th[off_V + m * H + i]
                vV = v[off_V + m * H + i]
                add_s = V * v[i] + th[i] * vV
                add_b = V * v[H + i] + th[H + i] * vV
            chain[1, 2 * m, g] = chain[1, 2 * m, g + 1] + add_s
            chain[1, 2 * m + 1, g] = chain[1, 2 * m + 1, g + 1] + add_b
    for g in range(H + 1):  # y_g = M_g u_g into chain[2]
        m0 = moments[0, g]
        m1 = moments[1, g]
        m2 = moments[2, g]
        for m in range(k):
            alpha = chain[0, 2 * m, g] + chain[1, 2 * m, g]
            beta = chain[0, 2 * m + 1, g] + chain[1, 2 * m + 1, g]
            chain[2, 2 * m, g] = 2.0 * (m2 * alpha + m1 * beta)
            chain[2, 2 * m + 1, g] = 2.0 * (m1 * alpha + m0 * beta)
    for c in range(2 * k):
        acc = 0.0
        for g in range(H + 1):
            acc += chain[2, c, g]
            chain[3, c, g] = acc
        acc = 0.0
        for g in range(H, -1, -1):
            acc += chain[2, c, g]
            chain[2, c, g] = acc
    for m in range(k):
        out[off_c + m] = sigma * v[off_c + m] + chain[2, 2 * m + 1, 0]
    for t in range(H):
        i = order[t]
        _neuron_blocks(th, H, i, sigma, normalized, xi, rho, S, grad_u, D, Q)
        for j in range(2 + k):
            acc = D[j, 0] * v[i] + D[j, 1] * v[H + i]
            for m in range(k):
                acc += D[j, 2 + m] * v[off_V + m * H + i]
            for c in range(2 * k):
                acc += Q[j, c] * (chain[2, c, t + 1] if on[i] else chain[3, c, t])
            index = i if j == 0 else (H + i if j == 1 else off_V + (j - 2) * H + i)
            out[index] = acc


# ----------------------------------------------------------------------------------------------------------
# batched drivers (serial over runs)
# ----------------------------------------------------------------------------------------------------------


@njit(**_JIT)
def _work(H, k, n_nodes):
    return (np.empty(H), np.empty(H, np.int64), np.empty(H, np.bool_), np.empty(H, np.bool_), np.empty(H),
            np.empty((3, H + 1)), np.empty((2, k, H)), np.empty(H), np.empty((2, H)), np.empty((k, H + 1)),
            np.empty((k, H + 1)), np.empty((2, k, H + 1)), np.empty((2, H + 2)), np.empty(n_nodes),
            np.empty(n_nodes), np.empty((2 + k, 2 + k)), np.empty((2 + k, 2 * k)))  # fmt: skip


@njit(**_JIT)
def factor_rows(theta, sigma, H, knots, target_poly, sines, density_poly, nodes, weights, normalized, row_of, kl, ku,
                band, piv, u_first, l_count, order_out, ok):  # fmt: skip
    """Assemble and factorize the augmented system of every run: ``band (M, N, 2 kl + ku + 1)``, ``piv``,
    ``u_first``, ``l_count (M, N)`` (:func:`_band_profile`), ``order_out (M, H)`` (the neuron in each slot), ``ok (M,)``."""
    M = theta.shape[0]
    k = target_poly.shape[1]
    (pos, order, on, inside, xi, moments, S, rho, grad_u, slope, intercept, resid, cum, node_x, node_wp, D,
     Q) = _work(H, k, nodes.shape[0])  # fmt: skip
    extent = np.empty((1, 2), np.int64)
    for r in range(M):
        th = theta[r]
        _structure(th, H, knots, target_poly, sines, density_poly, nodes, weights, pos, order, on, inside, xi,
                   moments, S, rho, grad_u, slope, intercept, resid, cum, node_x, node_wp)  # fmt: skip
        order_out[r] = order
        band[r] = 0.0
        _assemble(th, H, k, sigma[r], normalized, False, order, on, xi, rho, S, grad_u, moments, band[r], kl + ku,
                  row_of, extent, D, Q)  # fmt: skip
        ok[r] = _band_factor(band[r], kl, ku, piv[r])
        if ok[r]:
            _band_profile(band[r], kl, ku, u_first[r], l_count[r])


@njit(**_JIT)
def solve_rows(band, piv, u_first, l_count, order, ok, row_of, kl, ku, H, k, rhs, out):
    """``out[r] = W_r^{-1} rhs[r]`` from the factors of :func:`factor_rows` (NaN where ``ok[r]`` is False)."""
    M = rhs.shape[0]
    N = band.shape[1]
    off_V = 2 * H
    off_c = off_V + k * H
    z = np.empty(N)
    for r in range(M):
        if not ok[r]:
            out[r] = np.nan
            continue
        z[:] = 0.0
        for m in range(k):
            z[row_of[m]] = rhs[r, off_c + m]
        for g in range(H):
            i = order[r, g]
            z[row_of[_col_x(k, g, 0)]] = rhs[r, i]
            z[row_of[_col_x(k, g, 1)]] = rhs[r, H + i]
            for m in range(k):
                z[row_of[_col_x(k, g, 2 + m)]] = rhs[r, off_V + m * H + i]
        _band_solve(band[r], kl, ku, piv[r], u_first[r], l_count[r], z)
        for m in range(k):
            out[r, off_c + m] = z[m]
        for g in range(H):
            i = order[r, g]
            out[r, i] = z[_col_x(k, g, 0)]
            out[r, H + i] = z[_col_x(k, g, 1)]
            for m in range(k):
                out[r, off_V + m * H + i] = z[_col_x(k, g, 2 + m)]


@njit(**_JIT)
def jvp_rows(theta, vectors, H, knots, target_poly, sines, density_poly, nodes, weights, normalized, out):
    """``out[r] = J_r vectors[r]``, ``J`` the Jacobian of the velocity (``-W`` at ``sigma = 0``)."""
    M = theta.shape[0]
    k = target_poly.shape[1]
    (pos, order, on, inside, xi, moments, S, rho, grad_u, slope, intercept, resid, cum, node_x, node_wp, D,
     Q) = _work(H, k, nodes.shape[0])  # fmt: skip
    chain = np.empty((4, 2 * k, H + 1))
    for r in range(M):
        th = theta[r]
        _structure(th, H, knots, target_poly, sines, density_poly, nodes, weights, pos, order, on, inside, xi,
                   moments, S, rho, grad_u, slope, intercept, resid, cum, node_x, node_wp)  # fmt: skip
        _apply_w(th, H, 0.0, normalized, order, on, xi, rho, S, grad_u, moments, vectors[r], out[r], chain, D, Q)
        for p in range(out.shape[1]):
            out[r, p] = -out[r, p]


@njit(**_JIT)
def dense_factor_rows(jac, sigma, lu, piv, ok):
    """``lu[r] = LU(sigma[r] I - jac[r])`` with partial pivoting; ``ok[r]`` False at a zero or non-finite pivot
    (:func:`reluflow.kernels.dense_lu.lu_factor_shifted`)."""
    lu_factor_shifted(jac, sigma, lu, piv, ok)


@njit(**_JIT)
def dense_solve_rows(lu, piv, ok, rhs, out):
    """``out[r] = (P L U)^{-1} rhs[r]`` from :func:`dense_factor_rows` (NaN where ``ok[r]`` is False)."""
    for r in range(rhs.shape[0]):
        if ok[r]:
            lu_solve_into(lu[r : r + 1], piv[r : r + 1], rhs[r : r + 1], out[r : r + 1])
        else:
            out[r, :] = np.nan
