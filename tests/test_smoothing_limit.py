"""G is the limit of exact gradients of smoothed risks (the definition of JR; MATH.md section 2).

relu is replaced by the shifted softplus ``R_r(z) = r^-1 log(1 + r^-1 exp(r z))``: ``R_r -> relu`` and
``R_r' = 1 / (1 + r exp(-r z)) -> 1_(0, inf)`` pointwise *including at z = 0* (``R_r'(0) = 1 / (1 + r)``),
which is the strict convention relu'(0) = 0 of G. (The plain softplus has ``R_r'(0) = 1/2`` for every
``r`` and converges to another value wherever a preactivation vanishes on a set of positive mass: here
the neuron with ``w = b = 0``; under a discrete measure, any kink sitting on an atom.)

The smoothed gradient is computed independently (``quadrature_reference.smoothed_gradient``:
differentiation under the integral, Gauss-Legendre on a mesh graded towards every kink). The
parameters are ``tables1d.special_theta``: kinks exactly at ``a``, at ``b`` and on a table knot,
coinciding kinks, kinks outside ``[a, b]``, ``w = 0`` neurons.
"""

from __future__ import annotations

import numpy as np
import pytest
from quadrature_reference import plain_softplus, smoothed_gradient
from tables1d import SPECIAL_H, case, special_theta

from reluflow.kernels import exact1d
from reluflow.kernels import exact1d_numba as _kernels1d

R_VALUES = (1e2, 1e3, 1e4, 1e5)
CASES = ["affine-uniform[-1,2]", "pl-triangular", "cubic-pwquadratic", "k2-pl,sine-pwquadratic"]


@pytest.mark.parametrize("name", CASES)
def test_generalized_gradient_is_the_limit_of_smoothed_gradients(name):
    c = case(name)
    H = SPECIAL_H
    theta = special_theta(c, np.random.default_rng(1))
    _, G = exact1d.risk_and_gradient(theta, c.table, H)
    _, G_numba = _kernels1d.risk_and_gradient(theta, c.table, H)
    # numba == numpy here too (few ulps; the full check is in test_exact1d.py)
    assert np.max(np.abs(G_numba - G)) <= 1e-14 * np.max(np.abs(G))
    size = np.max(np.abs(G))
    errors = []
    for r in R_VALUES:
        G_r = smoothed_gradient(c, theta, H, r)
        # the reference itself is converged: a finer rule changes it by rounding only
        assert np.max(np.abs(smoothed_gradient(c, theta, H, r, nodes=36) - G_r)) <= 1e-12 * size
        errors.append(np.max(np.abs(G_r - G)) / size)
    errors = np.array(errors)
    # |R_r - relu| <= log(r) / r and R_r' differs from the indicator on a layer of width ~ log(r) / r
    # around each kink, so |G_r - G| = O(log(r) / r): each decade divides the error by about
    # 10 ln(r) / ln(10 r) (6.7 to 8.3 here); measured 6 to 8. Require a factor 4 per decade ...
    assert np.all(errors[1:] <= errors[:-1] / 4), errors
    # ... a constant C in |G_r - G| <= C |G| log(r) / r that does not grow (within a factor 2) ...
    C = errors * np.array(R_VALUES) / np.log(R_VALUES)
    assert np.max(C) <= 2 * np.min(C), C
    # ... and a small error at r = 1e5 (measured 4e-5 .. 6e-4; log(1e5)/1e5 = 1.2e-4).
    assert errors[-1] <= 2e-3, errors


@pytest.mark.parametrize("name", ["affine-uniform[-1,2]", "k2-pl,sine-pwquadratic"])
def test_plain_softplus_converges_to_another_value_where_a_preactivation_vanishes(name):
    """Why the shifted softplus: with ``R_r'(0) = 1/2`` the neuron with ``w = b = 0`` counts as half
    active in the limit, so ``G_W, G_b`` of that neuron tend to half of their all-active values, not 0."""
    c = case(name)
    H = SPECIAL_H
    theta = special_theta(c, np.random.default_rng(1))
    _, G = exact1d.risk_and_gradient(theta, c.table, H)
    dead = 6  # tables1d.special_theta: (w, b) = (0, 0)
    assert theta[dead] == 0.0 and theta[H + dead] == 0.0
    assert G[dead] == 0.0 and G[H + dead] == 0.0
    G_shifted = smoothed_gradient(c, theta, H, 1e5)
    G_plain = smoothed_gradient(c, theta, H, 1e5, activation=plain_softplus)
    # The plain limit is 1/2 of 2 int x^j V_i . r p over all of [a, b]: the G of the same neuron made
    # active everywhere with b = 1e-300 (its contribution V b to N is below rounding).
    active = theta.copy()
    active[H + dead] = 1e-300
    _, G_active = exact1d.risk_and_gradient(active, c.table, H)
    expected = 0.5 * np.array([G_active[dead], G_active[H + dead]])
    plain = np.array([G_plain[dead], G_plain[H + dead]])
    shifted = np.array([G_shifted[dead], G_shifted[H + dead]])
    assert np.max(np.abs(expected)) >= 1e-2  # clearly not 0 ...
    # smoothing error at r = 1e5: below 2e-3 |G| (previous test)
    assert np.max(np.abs(plain - expected)) <= 2e-3 * np.max(np.abs(G))
    assert np.max(np.abs(shifted)) <= 2e-3 * np.max(np.abs(G))  # ... while R_r gives relu'(0) = 0
