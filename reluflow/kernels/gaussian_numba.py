"""Exact risk, generalized gradient and Jacobian for Gaussian inputs: compiled per-run kernels.

Same mathematics, same formulas and the same order of floating-point operations as the numpy reference
:mod:`reluflow.kernels.gaussian` (read its module docstring): whitening ``x = mean + L u``; per neuron
``s, e, h, Phi(h), phi(h)``; per pair ``(p, q)`` the bivariate expectations ``P, M1, K, CR`` by the branch
that applies (generic: Genz's bivariate normal probability; parallel; anti-parallel; constant neuron); the
sums ``S0, S1, S2``; the gradient ``G = T^T G'`` and the Jacobian ``J = T^T J' T``. Runs are processed one
after the other and every loop runs in a fixed order, so each run's numbers are bitwise independent of
the batch. The two paths differ only where the platform's ``exp``, ``erfc``, ``sin`` and ``asin`` differ
from numpy's and scipy's (a last-bit difference, possibly amplified by the cancellations the numpy
module's docstring describes), so they agree to a few ulps of the natural scale, not bitwise.

Compiled with ``@njit(cache=True)`` and without fast-math (IEEE semantics; ``error_model="numpy"``: no
exception branch on divisions, whose zero denominators are excluded by the branches anyway).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from reluflow.kernels.gaussian import (
    BVN_SWITCH,
    CONSTANT_NEURON_H,
    GL_HALF_NODES,
    GL_WEIGHTS,
    INV_FOUR_PI,
    INV_SQRT_2PI,
    PARALLEL_R,
    SQRT1_2,
    SQRT_2PI,
    TWO_PI,
    check_inputs,
)

__all__ = ["bivariate_normal_upper", "gradient_jacobian", "risk_and_gradient"]

# kinds of a pair (p, q)
GENERIC, PARALLEL, ANTI, CONSTANT = 0, 1, 2, 3


# ---- special functions ----------------------------------------------------------------------------------


@njit(cache=True)
def ncdf(x):
    return 0.5 * math.erfc(-SQRT1_2 * x)


@njit(cache=True)
def npdf(x):
    return INV_SQRT_2PI * math.exp(-0.5 * (x * x))


@njit(cache=True, error_model="numpy")
def bivariate_normal_upper(h, k, rho, omr, opr, half_nodes, weights):
    """``P(X > h, Y > k)``, correlation ``rho`` in (-1, 1), ``omr = 1 - rho``, ``opr = 1 + rho`` accurate.

    The algorithm of :func:`reluflow.kernels.gaussian.bivariate_normal_upper` (Genz, two 20-point panels),
    operation by operation; ``half_nodes``, ``weights``: ``GL_HALF_NODES``, ``GL_WEIGHTS``.
    """
    if abs(rho) < BVN_SWITCH:
        hs = 0.5 * (h * h + k * k)
        hk = h * k
        half_asr = 0.5 * math.asin(rho)
        acc = 0.0
        for panel in (0.0, 1.0):
            for i in range(half_nodes.shape[0]):
                sn = math.sin(half_asr * (panel + half_nodes[i]))
                acc = acc + weights[i] * math.exp((sn * hk - hs) / (1.0 - sn * sn))
        return acc * (half_asr * INV_FOUR_PI) + ncdf(-h) * ncdf(-k)
    negative = rho < 0.0
    if negative:
        k = -k
    hk = h * k
    as_ = omr * opr
    a = math.sqrt(as_)
    bs = (h - k) * (h - k)
    c = (4.0 - hk) / 8.0
    d = (12.0 - hk) / 16.0
    asr = -(bs / as_ + hk) / 2.0
    bvn = a * math.exp(asr) * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_ * as_ / 5.0)
    if hk > -100.0:
        b = math.sqrt(bs)
        bvn = bvn - math.exp(-hk / 2.0) * SQRT_2PI * ncdf(-b / a) * b * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0)
    half_a = 0.5 * a
    acc = 0.0
    for panel in (0.0, 1.0):
        for i in range(half_nodes.shape[0]):
            x = half_a * (panel + half_nodes[i])
            xs = x * x
            rs = math.sqrt(1.0 - xs)
            asr_x = -(bs / xs + hk) / 2.0
            sp = 1.0 + c * xs * (1.0 + d * xs)
            opr_s = 1.0 + rs
            ep = math.exp(asr_x - hk * xs / (2.0 * opr_s * opr_s)) / rs
            acc = acc + weights[i] * (ep - math.exp(asr_x) * sp)
    wedge = -(bvn + (0.5 * half_a) * acc) / TWO_PI
    if negative:
        lo, hi = h, k
        if hi > lo:
            if lo >= 0.0:
                interval = ncdf(-lo) - ncdf(-hi)
            elif hi <= 0.0:
                interval = ncdf(hi) - ncdf(lo)
            else:
                interval = 1.0 - ncdf(lo) - ncdf(-hi)
        else:
            interval = 0.0
        out = -wedge + interval
    else:
        out = wedge + ncdf(-max(h, k))
    return min(max(out, 0.0), 1.0)


# ---- per-run building blocks ----------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _neurons(
    theta,
    d,
    H,
    k,
    L,
    mean,
    teacher_a,
    teacher_beta,
    TV,
    gamma0,
    a,
    beta,
    C,
    gamma,
    s,
    e,
    h,
    constant,
    Phi,
    PhiC,
    phi,
    psi,
    R0,
):
    """Fill the per-neuron arrays of one run (``gaussian.neurons``)."""
    N = beta.shape[0]
    dH = d * H
    for i in range(H):
        for kk in range(d):
            acc = L[kk, kk] * theta[i * d + kk]
            for l in range(kk + 1, d):
                acc = acc + L[l, kk] * theta[i * d + l]
            a[i, kk] = acc
        acc = theta[dH + i]
        for j in range(d):
            acc = acc + mean[j] * theta[i * d + j]
        beta[i] = acc
    for t in range(N - H):
        for kk in range(d):
            a[H + t, kk] = teacher_a[t, kk]
        beta[H + t] = teacher_beta[t]
    for m in range(k):
        for i in range(H):
            C[m, i] = theta[dH + H + m * H + i]
        for t in range(N - H):
            C[m, H + t] = -TV[m, t]
        gamma[m] = theta[dH + H + k * H + m] - gamma0[m]
    for p in range(N):
        s2 = a[p, 0] * a[p, 0]
        for j in range(1, d):
            s2 = s2 + a[p, j] * a[p, j]
        sp = math.sqrt(s2)
        s[p] = sp
        const = not (sp > 0.0) or abs(beta[p]) > CONSTANT_NEURON_H * sp
        constant[p] = const
        if const:
            for j in range(d):
                e[p, j] = 0.0
            h[p] = 0.0
            Phi[p] = 1.0 if beta[p] > 0.0 else 0.0
            PhiC[p] = 0.0 if beta[p] > 0.0 else 1.0
            phi[p] = 0.0
            psi[p] = 0.0
            R0[p] = max(beta[p], 0.0)
        else:
            for j in range(d):
                e[p, j] = a[p, j] / sp
            hp = beta[p] / sp
            h[p] = hp
            Phi[p] = ncdf(hp)
            PhiC[p] = ncdf(-hp)
            phi[p] = npdf(hp)
            psi[p] = phi[p] + hp * Phi[p]
            R0[p] = sp * psi[p]


@njit(cache=True, error_model="numpy")
def _pairs(d, e, s, h, constant, Phi, PhiC, phi, psi, R0, half_nodes, weights, jacobian,
           P, M1, K, CR, Dn, kind, pos, omr_a, opr_a, mu_p, mu_q, nu_p, nu_q, lam, Phi_t, phi_t_over_r):  # fmt: skip
    """Fill the pair arrays of one run (``gaussian.pairs``); ``K`` and the generic ``P`` for ``p <= q``, mirrored."""
    N = s.shape[0]
    for p in range(N):
        for q in range(N):
            rho = e[p, 0] * e[q, 0]
            for j in range(1, d):
                rho = rho + e[p, j] * e[q, j]
            dj = e[q, 0] - e[p, 0]
            sj = e[q, 0] + e[p, 0]
            omr_d = dj * dj
            opr_s = sj * sj
            for j in range(1, d):
                dj = e[q, j] - e[p, j]
                sj = e[q, j] + e[p, j]
                omr_d = omr_d + dj * dj
                opr_s = opr_s + sj * sj
            omr_d = 0.5 * omr_d
            opr_s = 0.5 * opr_s
            positive = rho >= 0.0
            omr = omr_d if positive else 2.0 - opr_s
            opr = 2.0 - omr_d if positive else opr_s
            r = math.sqrt(omr * opr)
            pos[p, q] = positive
            omr_a[p, q] = omr
            opr_a[p, q] = opr
            hp, hq = h[p], h[q]
            sp, sq = s[p], s[q]
            phip, phiq = phi[p], phi[q]
            Phip, Phiq = Phi[p], Phi[q]
            if constant[p] or constant[q]:
                kd = CONSTANT
            elif r > PARALLEL_R:
                kd = GENERIC
            elif positive:
                kd = PARALLEL
            else:
                kd = ANTI
            kind[p, q] = kd
            Phi_t[p, q] = 0.0
            phi_t_over_r[p, q] = 0.0
            if kd == GENERIC:
                if positive:
                    c_pq = (hq - hp) + omr * hp
                    c_qp = (hp - hq) + omr * hq
                else:
                    c_pq = (hq + hp) - opr * hp
                    c_qp = (hp + hq) - opr * hq
                t_pq = c_pq / r
                t_qp = c_qp / r
                Phi_tpq = ncdf(t_pq)
                Phi_tqp = ncdf(t_qp)
                phi_tpq = npdf(t_pq)
                # P is symmetric: evaluated for p <= q (the loops reach (q, p) first when q < p)
                pp = bivariate_normal_upper(-hp, -hq, rho, omr, opr, half_nodes, weights) if p <= q else P[q, p]
                P[p, q] = pp
                M1[p, q] = sq * (rho * phip * Phi_tpq + phiq * Phi_tqp + hq * pp)
                if p <= q:
                    K[p, q] = (
                        sp
                        * sq
                        * ((rho + hp * hq) * pp + hq * phip * Phi_tpq + hp * phiq * Phi_tqp + r * phip * phi_tpq)
                    )
                CR[p, q] = sq * (r * phi_tpq + c_pq * Phi_tpq)
                if jacobian:
                    phiq_Phiq = phiq * Phi_tqp
                    mu_p[p, q] = phip * Phi_tpq
                    mu_q[p, q] = phiq_Phiq
                    nu_p[p, q] = hp * phip * Phi_tpq
                    nu_q[p, q] = hq * phiq_Phiq
                    lam[p, q] = phip * phi_tpq / r
                    Phi_t[p, q] = Phi_tpq
                    phi_t_over_r[p, q] = phi_tpq / r
            elif kd == PARALLEL:
                p_is_min = hp <= hq
                m_ = hp if p_is_min else hq
                big = hq if p_is_min else hp
                Phi_m = Phip if p_is_min else Phiq
                phi_m = phip if p_is_min else phiq
                psi_m = psi[p] if p_is_min else psi[q]
                P[p, q] = Phi_m
                M1[p, q] = sq * (psi_m + (hq - m_) * Phi_m)
                if p <= q:
                    M2_m = (1.0 + m_ * m_) * Phi_m + m_ * phi_m
                    K[p, q] = sp * sq * (M2_m + (big - m_) * psi_m)
                CR[p, q] = sq * max(hq - hp, 0.0)
                if jacobian:
                    mu_p[p, q] = phi_m
                    mu_q[p, q] = 0.0
                    nu_p[p, q] = m_ * phi_m
                    nu_q[p, q] = 0.0
                    lam[p, q] = 0.0
            elif kd == ANTI:
                nonempty = hp + hq > 0.0
                if nonempty:
                    if hp <= 0.0:
                        pp = Phip - PhiC[q]
                    elif hq <= 0.0:
                        pp = Phiq - PhiC[p]
                    else:
                        pp = 1.0 - PhiC[p] - PhiC[q]
                    P[p, q] = pp
                    M1[p, q] = sq * (hq * pp + phiq - phip)
                    if p <= q:
                        K[p, q] = sp * sq * ((hp * hq - 1.0) * pp + hq * phip + hp * phiq)
                else:
                    P[p, q] = 0.0
                    M1[p, q] = 0.0
                    if p <= q:
                        K[p, q] = 0.0
                CR[p, q] = sq * max(hq + hp, 0.0)
                if jacobian:
                    mu_p[p, q] = phip - phiq if nonempty else 0.0
                    mu_q[p, q] = 0.0
                    nu_p[p, q] = hp * phip + hq * phiq if nonempty else 0.0
                    nu_q[p, q] = 0.0
                    lam[p, q] = 0.0
            else:
                P[p, q] = Phip * Phiq
                M1[p, q] = Phip * R0[q]
                if p <= q:
                    K[p, q] = R0[p] * R0[q]
                CR[p, q] = 0.0 if constant[p] else R0[q]
                if jacobian:
                    mu_p[p, q] = phip * Phiq
                    mu_q[p, q] = phiq * Phip
                    nu_p[p, q] = Phiq * (hp * phip)
                    nu_q[p, q] = Phip * (hq * phiq)
                    lam[p, q] = 0.0
            Dn[p, q] = phip * CR[p, q]
    for p in range(N):
        for q in range(p):
            K[p, q] = K[q, p]


@njit(cache=True)
def _polynomial(e, gamma_m, alpha_m, B_m, trace_B_m, p, Be):
    """``ae = alpha_m.e_p``, ``Be = B_m e_p`` (into ``Be``), ``Bee = e_p^T B_m e_p``; returns ``(g, ae, Bee)``."""
    d = e.shape[1]
    for i in range(d):
        acc = B_m[i, 0] * e[p, 0]
        for j in range(1, d):
            acc = acc + B_m[i, j] * e[p, j]
        Be[i] = acc
    ae = alpha_m[0] * e[p, 0]
    Bee = e[p, 0] * Be[0]
    for j in range(1, d):
        ae = ae + alpha_m[j] * e[p, j]
        Bee = Bee + e[p, j] * Be[j]
    return gamma_m + trace_B_m, ae, Bee


@njit(cache=True)
def _sums(d, H, k, a, C, gamma, s, e, h, Phi, phi, R0, alpha, B, trace_B, trace_B2, P, M1, K, Dn, S0, S1, S2, Er, Be):
    """Risk of one run and the sums ``S0, S1, S2, Er`` (``gaussian.sums``)."""
    N = s.shape[0]
    EPR = np.empty(N)
    risk = 0.0
    for m in range(k):
        for q in range(N):
            g, ae, Bee = _polynomial(e, gamma[m], alpha[m], B[m], trace_B[m], q, Be)
            EPR[q] = g * R0[q] + (s[q] * ae) * Phi[q] + (s[q] * Bee) * phi[q]
        g = gamma[m] + trace_B[m]
        alpha2 = 0.0
        for j in range(d):
            alpha2 += alpha[m, j] * alpha[m, j]
        acc = g * g + alpha2 + 2.0 * trace_B2[m]
        for q in range(N):
            inner = 2.0 * EPR[q]
            for p in range(N):
                inner = inner + C[m, p] * K[p, q]
            acc = acc + C[m, q] * inner
        risk = acc if m == 0 else risk + acc
        for i in range(H):
            g, ae, Bee = _polynomial(e, gamma[m], alpha[m], B[m], trace_B[m], i, Be)
            hi, phii, Phii = h[i], phi[i], Phi[i]
            s0 = g * Phii + ae * phii - (Bee * hi) * phii
            f1 = phii * (g - hi * ae + (hi * hi - 1.0) * Bee)
            for j in range(d):
                S1[m, i, j] = f1 * e[i, j] + Phii * alpha[m, j] + (2.0 * phii) * Be[j]
            s2 = EPR[i]
            for q in range(N):
                cq = C[m, q]
                s0 = s0 + cq * M1[i, q]
                for j in range(d):
                    S1[m, i, j] = S1[m, i, j] + cq * (e[i, j] * Dn[i, q] + a[q, j] * P[i, q])
                s2 = s2 + cq * K[i, q]
            S0[m, i] = s0
            S2[m, i] = s2
        er = gamma[m] + trace_B[m]
        for q in range(N):
            er = er + C[m, q] * R0[q]
        Er[m] = er
    return risk


@njit(cache=True)
def _unwhiten(L, mean, X, row, d, H):
    """``T^T`` on the neuron blocks of the vector ``X[row]`` (in place): ``w_i <- L a_i + mean beta_i``."""
    dH = d * H
    tmp = np.empty(d)
    for i in range(H):
        for l in range(d):
            acc = L[l, 0] * X[row, i * d]
            for kk in range(1, l + 1):
                acc = acc + L[l, kk] * X[row, i * d + kk]
            tmp[l] = acc + mean[l] * X[row, dH + i]
        for l in range(d):
            X[row, i * d + l] = tmp[l]


@njit(cache=True, error_model="numpy")
def _rows(theta, d, H, k, jacobian, L, mean, teacher_a, teacher_beta, TV, alpha, B, gamma0, trace_B, trace_B2,
          half_nodes, weights, risk_out, grad_out, jac_out):  # fmt: skip
    """Risk and gradient (and the Jacobian if ``jacobian``) of every row of ``theta (M, n)``, one row at a time."""
    M, n = theta.shape
    N = H + teacher_beta.shape[0]
    dH = d * H
    oV = dH + H
    oc = dH + H + k * H
    a = np.empty((N, d))
    beta = np.empty(N)
    C = np.empty((k, N))
    gamma = np.empty(k)
    s = np.empty(N)
    e = np.empty((N, d))
    h = np.empty(N)
    constant = np.empty(N, dtype=np.bool_)
    Phi = np.empty(N)
    PhiC = np.empty(N)
    phi = np.empty(N)
    psi = np.empty(N)
    R0 = np.empty(N)
    P = np.empty((N, N))
    M1 = np.empty((N, N))
    K = np.empty((N, N))
    CR = np.empty((N, N))
    Dn = np.empty((N, N))
    kind = np.empty((N, N), dtype=np.int64)
    pos = np.empty((N, N), dtype=np.bool_)
    omr = np.empty((N, N))
    opr = np.empty((N, N))
    mu_p = np.empty((N, N))
    mu_q = np.empty((N, N))
    nu_p = np.empty((N, N))
    nu_q = np.empty((N, N))
    lam = np.empty((N, N))
    Phi_t = np.empty((N, N))
    phi_t_over_r = np.empty((N, N))
    S0 = np.empty((k, H))
    S1 = np.empty((k, H, d))
    S2 = np.empty((k, H))
    Er = np.empty(k)
    Be = np.empty(d)
    gvec = np.empty((1, n))  # G' of the neuron blocks, then T^T in place
    for row in range(M):
        th = theta[row]
        _neurons(
            th,
            d,
            H,
            k,
            L,
            mean,
            teacher_a,
            teacher_beta,
            TV,
            gamma0,
            a,
            beta,
            C,
            gamma,
            s,
            e,
            h,
            constant,
            Phi,
            PhiC,
            phi,
            psi,
            R0,
        )
        _pairs(d, e, s, h, constant, Phi, PhiC, phi, psi, R0, half_nodes, weights, jacobian,
               P, M1, K, CR, Dn, kind, pos, omr, opr, mu_p, mu_q, nu_p, nu_q, lam, Phi_t, phi_t_over_r)  # fmt: skip
        risk_out[row] = _sums(
            d, H, k, a, C, gamma, s, e, h, Phi, phi, R0, alpha, B, trace_B, trace_B2, P, M1, K, Dn, S0, S1, S2, Er, Be
        )
        # gradient: G_beta = 2 sum_m V[m,i] S0[m,i], g_a likewise, then T^T
        for i in range(H):
            gb = C[0, i] * S0[0, i]
            for m in range(1, k):
                gb = gb + C[m, i] * S0[m, i]
            gvec[0, dH + i] = 2.0 * gb
            for j in range(d):
                ga = C[0, i] * S1[0, i, j]
                for m in range(1, k):
                    ga = ga + C[m, i] * S1[m, i, j]
                gvec[0, i * d + j] = 2.0 * ga
        _unwhiten(L, mean, gvec, 0, d, H)
        for t in range(dH + H):
            grad_out[row, t] = gvec[0, t]
        for m in range(k):
            for i in range(H):
                grad_out[row, oV + m * H + i] = 2.0 * S2[m, i]
            grad_out[row, oc + m] = 2.0 * Er[m]
        if jacobian:
            _jacobian(d, H, k, L, mean, alpha, B, trace_B, a, C, gamma, s, e, h, constant, Phi, phi, R0, P, M1, K, CR, Dn,
                      kind, pos, omr, opr, mu_p, mu_q, nu_p, nu_q, lam, Phi_t, phi_t_over_r, S0, S1, Be, jac_out[row])  # fmt: skip


@njit(cache=True, error_model="numpy")
def _jacobian(d, H, k, L, mean, alpha, B, trace_B, a, C, gamma, s, e, h, constant, Phi, phi, R0, P, M1, K, CR, Dn,
              kind, pos, omr, opr, mu_p, mu_q, nu_p, nu_q, lam, Phi_t, phi_t_over_r, S0, S1, Be, J):  # fmt: skip
    """``J = T^T J' T`` of one run into ``J (n, n)`` (``gaussian.whitened_jacobian``, ``kink_terms``)."""
    n = J.shape[0]
    N = s.shape[0]
    dH = d * H
    oV = dH + H
    oc = dH + H + k * H
    for r_ in range(n):
        for c_ in range(n):
            J[r_, c_] = 0.0
    ee = np.empty((d, d))
    Sp1 = np.empty(d)
    k1 = np.empty(d)
    k2 = np.empty((d, d))
    vq = np.empty(d)
    mq = np.empty(d)
    # --- Gauss-Newton blocks and S terms (upper triangle of the block partition) --------------------------
    for i in range(H):
        for j in range(H):
            vv = C[0, i] * C[0, j]
            for m in range(1, k):
                vv = vv + C[m, i] * C[m, j]
            two_vv = 2.0 * vv
            # W(i, j) = P I - nu_p e_i e_i^T - nu_q e_j e_j^T + lam X
            for r_ in range(d):
                for c_ in range(d):
                    eye = 1.0 if r_ == c_ else 0.0
                    Eii = e[i, r_] * e[i, c_]
                    Ejj = e[j, r_] * e[j, c_]
                    if pos[i, j]:
                        dr = e[j, r_] - e[i, r_]
                        dc = e[j, c_] - e[i, c_]
                        X = omr[i, j] * (Eii + Ejj) - dr * dc
                    else:
                        sr = e[j, r_] + e[i, r_]
                        sc = e[j, c_] + e[i, c_]
                        X = sr * sc - opr[i, j] * (Eii + Ejj)
                    W = P[i, j] * eye - nu_p[i, j] * Eii - nu_q[i, j] * Ejj + lam[i, j] * X
                    J[i * d + r_, j * d + c_] = two_vv * W
                J[i * d + r_, dH + j] = two_vv * (mu_p[i, j] * e[i, r_] + mu_q[i, j] * e[j, r_])
            J[dH + i, dH + j] = two_vv * P[i, j]
            for m in range(k):
                two_v = 2.0 * C[m, i]
                for r_ in range(d):
                    J[i * d + r_, oV + m * H + j] = two_v * (e[i, r_] * Dn[i, j] + a[j, r_] * P[i, j])
                J[dH + i, oV + m * H + j] = two_v * M1[i, j]
                J[oV + m * H + i, oV + m * H + j] = 2.0 * K[i, j]
        for m in range(k):
            two_v = 2.0 * C[m, i]
            for r_ in range(d):
                J[i * d + r_, oV + m * H + i] = J[i * d + r_, oV + m * H + i] + 2.0 * S1[m, i, r_]
                J[i * d + r_, oc + m] = two_v * (e[i, r_] * phi[i])
            J[dH + i, oV + m * H + i] = J[dH + i, oV + m * H + i] + 2.0 * S0[m, i]
            J[dH + i, oc + m] = two_v * Phi[i]
            J[oV + m * H + i, oc + m] = 2.0 * R0[i]
    for m in range(k):
        J[oc + m, oc + m] = 2.0
    # --- kink terms (2 phi_i / s_i) E[(1, u, u u^T) V_i.r | z_i = 0] --------------------------------------
    for i in range(H):
        if constant[i]:
            continue
        hi = h[i]
        for r_ in range(d):
            for c_ in range(d):
                ee[r_, c_] = e[i, r_] * e[i, c_]
        k0 = 0.0
        for m in range(k):
            g, ae, Bee = _polynomial(e, gamma[m], alpha[m], B[m], trace_B[m], i, Be)
            EP = g - hi * ae + (hi * hi - 1.0) * Bee
            for r_ in range(d):
                Sp1[r_] = (alpha[m, r_] - ae * e[i, r_]) - (2.0 * hi) * (Be[r_] - Bee * e[i, r_])
            Vm = C[m, i]
            k0 = Vm * EP if m == 0 else k0 + Vm * EP
            for r_ in range(d):
                EuP = (-hi * EP) * e[i, r_] + Sp1[r_]
                k1[r_] = Vm * EuP if m == 0 else k1[r_] + Vm * EuP
                for c_ in range(d):
                    S_rc = (1.0 if r_ == c_ else 0.0) - ee[r_, c_]
                    SBS = B[m, r_, c_] - e[i, r_] * Be[c_] - Be[r_] * e[i, c_] + Bee * ee[r_, c_]
                    EuuP = (
                        ((hi * hi) * ee[r_, c_] + S_rc) * EP
                        - hi * (e[i, r_] * Sp1[c_] + Sp1[r_] * e[i, c_])
                        + 2.0 * SBS
                    )
                    k2[r_, c_] = Vm * EuuP if m == 0 else k2[r_, c_] + Vm * EuuP
        for q in range(N):
            vc = C[0, i] * C[0, q]
            for m in range(1, k):
                vc = vc + C[m, i] * C[m, q]
            cr = CR[i, q]
            sq = s[q]
            for r_ in range(d):
                if kind[i, q] == GENERIC:
                    if pos[i, q]:
                        vq[r_] = (e[q, r_] - e[i, r_]) + omr[i, q] * e[i, r_]
                    else:
                        vq[r_] = (e[q, r_] + e[i, r_]) - opr[i, q] * e[i, r_]
                else:
                    vq[r_] = 0.0
                mq[r_] = (sq * Phi_t[i, q]) * vq[r_]
            k0 = k0 + vc * cr
            f_phi = sq * phi_t_over_r[i, q]
            for r_ in range(d):
                cu = (-hi * cr) * e[i, r_] + mq[r_]
                k1[r_] = k1[r_] + vc * cu
                for c_ in range(d):
                    eye = 1.0 if r_ == c_ else 0.0
                    cuu = (
                        cr * (eye + (hi * hi - 1.0) * ee[r_, c_])
                        - hi * (e[i, r_] * mq[c_] + mq[r_] * e[i, c_])
                        + f_phi * (vq[r_] * vq[c_])
                    )
                    k2[r_, c_] = k2[r_, c_] + vc * cuu
        factor = 2.0 * phi[i] / s[i]
        for r_ in range(d):
            for c_ in range(d):
                J[i * d + r_, i * d + c_] = J[i * d + r_, i * d + c_] + factor * k2[r_, c_]
            J[i * d + r_, dH + i] = J[i * d + r_, dH + i] + factor * k1[r_]
        J[dH + i, dH + i] = J[dH + i, dH + i] + factor * k0
    # --- mirror, then T^T J' T (columns, then rows), then mirror the upper triangle ------------------------
    for r_ in range(n):
        for c_ in range(r_):
            J[r_, c_] = J[c_, r_]
    for r_ in range(n):
        _unwhiten(L, mean, J, r_, d, H)  # row r_ of J' T
    Z = J.T.copy()  # Z = (J' T)^T
    for r_ in range(n):
        _unwhiten(L, mean, Z, r_, d, H)  # Z = (J' T)^T T = (T^T J' T)^T
    for r_ in range(n):
        for c_ in range(n):
            J[r_, c_] = Z[c_, r_] if r_ <= c_ else Z[r_, c_]


# ---- public entry points -------------------------------------------------------------------------------------


def _call(theta, d, H, k, mean, cov, target, jacobian):
    theta2d, batch, prep = check_inputs(theta, d, H, k, mean, cov, target)
    M, n = theta2d.shape
    risk = np.empty(M)
    grad = np.empty((M, n))
    jac = np.empty((M, n, n)) if jacobian else np.empty((M, 0, 0))
    _rows(
        theta2d, d, H, k, jacobian, prep.L, prep.mean, prep.teacher_a, prep.teacher_beta, prep.TV, prep.alpha, prep.B,
        prep.gamma0, prep.trace_B, prep.trace_B2, GL_HALF_NODES, GL_WEIGHTS, risk, grad, jac,
    )  # fmt: skip
    return batch, n, risk, grad, jac


def risk_and_gradient(theta, d: int, H: int, k: int, mean, cov, target) -> tuple[np.ndarray, np.ndarray]:
    """Exact risk and generalized gradient for Gaussian inputs (compiled per-run kernel).

    Same signature, validation and results (to a few ulps) as
    :func:`reluflow.kernels.gaussian.risk_and_gradient`: ``theta (..., n)`` -> ``risk (...)``, ``grad (..., n)``.
    """
    batch, n, risk, grad, _ = _call(theta, d, H, k, mean, cov, target, False)
    return risk.reshape(batch), grad.reshape(batch + (n,))


def gradient_jacobian(theta, d: int, H: int, k: int, mean, cov, target) -> np.ndarray:
    """Jacobian ``dG/dtheta`` for Gaussian inputs (compiled per-run kernel): the numbers of
    :func:`reluflow.kernels.gaussian.gradient_jacobian` (to a few ulps), ``(..., n, n)``, exactly symmetric."""
    batch, n, _, _, jac = _call(theta, d, H, k, mean, cov, target, True)
    return jac.reshape(batch + (n, n))
