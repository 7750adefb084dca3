"""LSODA's two families in Nordsieck form, Adams and BDF: their coefficients and the step's compiled pieces.

Why. A gradient flow's transient at a tight tolerance is smooth and not stiff: an Adams method of order up to
12 takes its steps with one or two evaluations of ``f`` each, where a Runge-Kutta pair of order 5 spends six
and a Rosenbrock method five to eight plus a Jacobian. Past it, near a critical point, the flow is stiff, and
where it still moves slowly (an algebraic approach to a degenerate limit) the step is limited by accuracy over
many decades of ``t``: there the backward differentiation formulas (BDF) take two evaluations per step and keep
one factorized Jacobian over many steps, where a Rosenbrock method needs a Jacobian, a factorization and five
to eight evaluations every step. LSODA (Petzold 1983) runs Adams until stability, not accuracy, limits the
step, then BDF; :mod:`reluflow.dynamics.compiled_lsoda` is that driver on the compiled d = 1 field.

The methods (Hindmarsh's LSODE; Radhakrishnan & Hindmarsh 1993, ch. 3). The history of a run is the Nordsieck
array ``z_j = h^j y^(j) / j!``, ``j = 0 .. q``, of the interpolating polynomial at the current time ``t_n``
(``q`` the order, ``h`` the step). A step predicts by Taylor's rule, ``z^(0) = P z`` with the Pascal matrix
``P_ij = C(j, i)``, and corrects along a fixed vector ``l`` of the method and order:

    z_n = z^(0) + e l,    e chosen so that  z_n[1] = h f(z_n[0])     (l_1 = 1)

For the Adams vector this is the Adams-Moulton formula of order ``q`` (the correction keeps the value at
``t_(n-1)`` and the derivatives at the ``q - 1`` points before: ``Lambda(-1) = 0``, ``Lambda'(-k) = 0`` for
``Lambda(x) = sum l_j x^j``), for the BDF vector the BDF of order ``q`` (it keeps the values at the ``q``
previous points, ``Lambda(-k) = 0``); both in the fixed-leading-coefficient form: after a change of ``h`` the
array is rescaled, ``z_j <- r^j z_j``, and ``h`` is then held for ``q + 1`` steps. ``e`` is found by
functional iteration ``e <- h f(z^(0)_0 + l_0 e) - z^(0)_1`` for Adams, by the chord Newton iteration with
``I - h l_0 J`` for BDF (up to three evaluations; convergence is tested with the estimated contraction). The
local error of the step is ``e / t_2(q)``; with ``t_1(q)`` and ``t_3(q)`` the same constants for orders
``q - 1`` and ``q + 1`` (from ``z_q`` and from the change of ``e`` between steps) the step ratio at each of the
three orders follows, and the largest wins (by at least 10 %). The constants are LSODE's ``elco`` and ``tesco``
(:func:`adams_coefficients`, :func:`bdf_coefficients`, computed from their definitions).

Stability. The contraction of Adams' corrector iteration, ``rate = |Delta_2| / |Delta_1|``, measures
``|h l_0 J|`` along the step, so ``|J| ~ rate / (h l_0)`` costs a second evaluation of ``f`` and nothing else.
The Adams methods' stability regions are bounded, ``h |lambda| <= s(q)`` with LSODA's table ``s`` (0.5 at
order 1, 0.025 at order 12, :data:`STABILITY_BOUND`), and the step is never proposed beyond it. Where the BDF
of the same order would take a step :data:`STIFF_RATIO` times longer (the Adams error estimate turned into the
BDF's by the ratio of their error constants; the BDF has no stability bound on a gradient flow's real
spectrum), the run is stiff.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from reluflow.dynamics.solvers.power import c_pow

__all__ = ["adams_coefficients", "bdf_coefficients", "MAX_ORDER", "MAX_BDF_ORDER", "STABILITY_BOUND", "STIFF_RATIO",
           "MAX_CORRECTIONS"]

#: the highest order (LSODE's Adams methods: 12)
MAX_ORDER = 12
#: the highest order of the backward differentiation formulas (LSODE: 5)
MAX_BDF_ORDER = 5
#: corrector evaluations per attempt (LSODE's MAXCOR)
MAX_CORRECTIONS = 3
#: ``h |lambda|`` an order-q Adams step stays within, q = 1 .. 12 (LSODA's SM1)
STABILITY_BOUND = np.array([0.5, 0.575, 0.55, 0.45, 0.35, 0.25, 0.2, 0.15, 0.1, 0.075, 0.05, 0.025])
#: a run is stiff when the BDF would take a step this many times the Adams one (LSODA's RATIO)
STIFF_RATIO = 5.0


def adams_coefficients() -> tuple[np.ndarray, np.ndarray]:
    """``(el, tesco)``: ``el[q - 1, j]`` the corrector vector ``l_j`` of order ``q`` (``j = 0 .. q``, ``l_1 =
    1``), ``tesco[q - 1]`` the error constants ``(t_1, t_2, t_3)`` of orders ``q - 1, q, q + 1`` as seen from
    order ``q`` (LSODE's ``elco``, ``tesco``; zero where an order does not exist)."""
    el = np.zeros((MAX_ORDER, MAX_ORDER + 1))
    tesco = np.zeros((MAX_ORDER, 3))
    el[0, 0] = el[0, 1] = 1.0
    tesco[0] = (0.0, 2.0, 0.0)
    tesco[1, 0] = 1.0
    pc = np.zeros(MAX_ORDER)  # coefficients of p(x) = (x + 1) ... (x + q - 1), lowest first
    pc[0] = 1.0
    rqfac = 1.0
    for q in range(2, MAX_ORDER + 1):
        rq1fac = rqfac
        rqfac = rqfac / q
        # p(x) <- p(x) (x + q - 1)
        pc[q - 1] = 0.0
        for i in range(q - 1, 0, -1):
            pc[i] = pc[i - 1] + (q - 1) * pc[i]
        pc[0] = (q - 1) * pc[0]
        # the integrals over [-1, 0] of p(x) and of x p(x)
        pint = pc[0]
        xpin = pc[0] / 2.0
        sign = 1.0
        for i in range(1, q):
            sign = -sign
            pint += sign * pc[i] / (i + 1)
            xpin += sign * pc[i] / (i + 2)
        el[q - 1, 0] = pint * rq1fac
        el[q - 1, 1] = 1.0
        for i in range(1, q):
            el[q - 1, i + 1] = rq1fac * pc[i] / (i + 1)
        ragq = 1.0 / (rqfac * xpin)
        tesco[q - 1, 1] = ragq
        if q < MAX_ORDER:
            tesco[q, 0] = ragq * rqfac / (q + 1)
        tesco[q - 2, 2] = ragq
    return el, tesco


def bdf_coefficients() -> tuple[np.ndarray, np.ndarray]:
    """``(el, tesco)`` of the backward differentiation formulas of orders 1 to :data:`MAX_BDF_ORDER` in the same
    Nordsieck form (LSODE's ``elco``, ``tesco`` for its stiff methods): ``l`` from the polynomial ``(x + 1)
    ... (x + q)`` scaled to ``l_1 = 1``; the test constants ``t_1 = 1 / (q - 1)!``, ``t_2 = (q + 1) / l_0``,
    ``t_3 = (q + 2) / l_0``."""
    el = np.zeros((MAX_BDF_ORDER, MAX_BDF_ORDER + 1))
    tesco = np.zeros((MAX_BDF_ORDER, 3))
    pc = np.zeros(MAX_BDF_ORDER + 1)
    pc[0] = 1.0
    rq1fac = 1.0
    for q in range(1, MAX_BDF_ORDER + 1):
        # p(x) <- p(x) (x + q)
        pc[q] = 0.0
        for i in range(q, 0, -1):
            pc[i] = pc[i - 1] + q * pc[i]
        pc[0] = q * pc[0]
        el[q - 1, : q + 1] = pc[: q + 1] / pc[1]
        el[q - 1, 1] = 1.0
        tesco[q - 1] = (rq1fac, (q + 1) / el[q - 1, 0], (q + 2) / el[q - 1, 0])
        rq1fac = rq1fac / q
    return el, tesco


EL, TESCO = adams_coefficients()
BDF_EL, BDF_TESCO = bdf_coefficients()
#: the error constants ``t_2(q) l_q`` of the two families at equal order (LSODA's CM1, CM2): their ratio turns
#: an Adams error estimate into the BDF one of the same step, for the switch
ADAMS_CM = TESCO[:, 1] * EL[np.arange(MAX_ORDER), np.arange(1, MAX_ORDER + 1)]
BDF_CM = BDF_TESCO[:, 1] * BDF_EL[np.arange(MAX_BDF_ORDER), np.arange(1, MAX_BDF_ORDER + 1)]


# The pieces take a batch's arrays and a run's index, not a run's views: in the compiled loops every view is a
# reference count, an atomic operation, and a third of the solve's time went there at H = 1.


@njit(cache=True, error_model="numpy", inline="always")
def weighted_rms(z, i, j, scale):
    """``sqrt(mean((z[i, j] / scale[i])^2))``: the weighted RMS norm of entry ``j`` of run ``i``'s history."""
    N = z.shape[2]
    acc = 0.0
    for c in range(N):
        x = z[i, j, c] / scale[i, c]
        acc += x * x
    return np.sqrt(acc / N)


@njit(cache=True, error_model="numpy", inline="always")
def predict(z, i, q):
    """``z[i] <- P z[i]`` (Taylor's rule on run ``i``'s Nordsieck array, orders ``0 .. q``), in place."""
    N = z.shape[2]
    for k in range(q):
        for j in range(q - 1, k - 1, -1):
            for c in range(N):
                z[i, j, c] += z[i, j + 1, c]


@njit(cache=True, error_model="numpy", inline="always")
def rescale(z, i, q, ratio):
    """``z[i, j] <- ratio^j z[i, j]``, ``j = 1 .. q``: the array of the same polynomial for the step ``ratio h``."""
    N = z.shape[2]
    r = 1.0
    for j in range(1, q + 1):
        r *= ratio
        for c in range(N):
            z[i, j, c] *= r


@njit(cache=True, error_model="numpy", inline="always")
def interpolate(z, i, q, s, out):
    """``out = sum_j z[i, j] s^j``: run ``i``'s polynomial at ``t_n + s h`` (``-1 <= s <= 0`` within the last
    step)."""
    N = z.shape[2]
    for c in range(N):
        v = z[i, q, c]
        for j in range(q - 1, -1, -1):
            v = v * s + z[i, j, c]
        out[c] = v


@njit(cache=True, error_model="numpy", inline="always")
def step_ratio(err, exponent, bias):
    """LSODE's ratio ``1 / (bias err^exponent + 1e-6 bias)`` for a scaled error ``err`` (1: at tolerance)."""
    return 1.0 / (bias * c_pow(err, exponent) + 1e-6 * bias)
