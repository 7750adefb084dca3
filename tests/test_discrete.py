"""Risk and generalized gradient for discrete measures against an independent plain-Python loop over points
and neurons, with kinks exactly on data points, dead neurons and w = 0; against central finite differences
at a generic point; and as the limit of gradients of smooth activations (JR's definition of G)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from reluflow.kernels import discrete
from reluflow.model.network import n_params, preactivations, unpack
from reluflow.problem import Problem

# Comparison with the loop: both sides sum the same terms in different orders, so they differ by at most
# ~P eps times the sum of the absolute values of the terms (P <= 64 here: ~1e-14). 1e-12 of that scale.
LOOP_RTOL = 1e-12


def loop_reference(theta, points, weights, values, d, H, k):
    """``L``, ``G`` and, per component, the sum of |summands| (the scale of rounding), by plain loops.

    Written from MATH.md section 2 with the index layout of section 1, independently of reluflow.
    """
    theta = [float(t) for t in theta]
    W = [[theta[i * d + j] for j in range(d)] for i in range(H)]
    b = [theta[d * H + i] for i in range(H)]
    V = [[theta[d * H + H + m * H + i] for i in range(H)] for m in range(k)]
    c = [theta[d * H + H + k * H + m] for m in range(k)]
    n = d * H + H + k * H + k
    grad, scale = [0.0] * n, [0.0] * n
    risk = risk_scale = 0.0

    def add(index, term):
        grad[index] += term
        scale[index] += abs(term)

    for p in range(len(weights)):
        x, wp = [float(v) for v in points[p]], float(weights[p])
        z = [sum(W[i][j] * x[j] for j in range(d)) + b[i] for i in range(H)]
        act = [zi > 0 for zi in z]  # strict: relu'(0) = 0
        hidden = [zi if a else 0.0 for zi, a in zip(z, act)]
        r = [c[m] + sum(V[m][i] * hidden[i] for i in range(H)) - float(values[p][m]) for m in range(k)]
        for m in range(k):
            risk += wp * r[m] ** 2
            risk_scale += abs(wp * r[m] ** 2)
        for i in range(H):
            back = sum(V[m][i] * r[m] for m in range(k))
            if act[i]:
                for j in range(d):
                    add(i * d + j, 2 * wp * back * x[j])
                add(d * H + i, 2 * wp * back)
            for m in range(k):
                add(d * H + H + m * H + i, 2 * wp * hidden[i] * r[m])
        for m in range(k):
            add(d * H + H + k * H + m, 2 * wp * r[m])
    return risk, np.array(grad), risk_scale, np.array(scale)


def assert_matches_loop(theta_rows, points, weights, values, H):
    d, k = points.shape[1], values.shape[1]
    risk, grad = discrete.risk_and_gradient(theta_rows, points, weights, values, H)
    assert risk.shape == (theta_rows.shape[0],) and grad.shape == theta_rows.shape
    for row in range(theta_rows.shape[0]):
        ref_risk, ref_grad, risk_scale, grad_scale = loop_reference(theta_rows[row], points, weights, values, d, H, k)
        assert abs(risk[row] - ref_risk) <= LOOP_RTOL * risk_scale + 1e-300
        assert np.all(np.abs(grad[row] - ref_grad) <= LOOP_RTOL * grad_scale + 1e-300), (grad[row], ref_grad)
    return risk, grad


@pytest.mark.parametrize("d, H, k", [(1, 1, 1), (1, 5, 1), (1, 3, 2), (2, 4, 1), (3, 3, 2), (2, 1, 3)])
def test_generic_points_against_loop(d, H, k):
    rng = np.random.default_rng(100 * d + 10 * H + k)
    P = 37
    points = rng.uniform(-1.0, 2.0, (P, d))
    weights = rng.dirichlet(np.ones(P))
    values = rng.standard_normal((P, k))
    theta = rng.standard_normal((5, n_params(d, H, k)))
    assert_matches_loop(theta, points, weights, values, H)


def kink_case_1d():
    """d = 1, dyadic data: every preactivation below is computed exactly, several are exactly zero."""
    points = np.array([[0.0], [0.25], [0.5], [0.75], [1.0]])
    weights = np.array([0.125, 0.25, 0.25, 0.25, 0.125])
    values = np.array([[0.5], [-1.0], [0.25], [2.0], [-0.75]])
    # (w, b): kink at 0.25; kink at 0.5 (active to the left); dead on [0, 1]; w = 0 always on; w = 0 never on;
    # w = 0, b = 0 (z = 0 everywhere: never on); kink at 0 with the neuron active nowhere on [0, 1]
    w = np.array([4.0, -2.0, 1.0, 0.0, 0.0, 0.0, -1.0])
    b = np.array([-1.0, 1.0, -5.0, 0.5, -0.5, 0.0, 0.0])
    V = np.array([[1.5, -0.75, 2.0, 0.5, -1.25, 3.0, 1.0]])
    c = np.array([0.25])
    theta = np.concatenate([w, b, V.ravel(), c])
    zero_at = {0: [1], 1: [2], 5: [0, 1, 2, 3, 4], 6: [0]}  # neuron -> points where z == 0 exactly
    return points, weights, values, theta[None, :], zero_at


def kink_case_2d():
    """d = 2 on the dyadic grid {0, 1/4, ..., 1}^2 with k = 2 outputs."""
    g = np.arange(5) / 4.0
    points = np.array([[x0, x1] for x0 in g for x1 in g])
    weights = np.full(25, 1 / 25)
    values = np.stack([points[:, 0] - points[:, 1] ** 2, np.sin(3 * points[:, 0])], axis=1)
    W = np.array([[1.0, 1.0], [2.0, -1.0], [0.0, 0.0], [0.0, 0.0], [-1.0, -1.0], [0.0, 1.0]])
    b = np.array([-0.5, 0.0, 1.0, 0.0, -0.25, -0.75])
    V = np.array([[1.0, -2.0, 0.5, 4.0, 3.0, -1.5], [0.25, 1.0, -1.0, 2.0, -3.0, 0.5]])
    c = np.array([0.5, -0.25])
    theta = np.concatenate([W.ravel(), b, V.ravel(), c])
    return points, weights, values, theta[None, :]


def test_kinks_on_data_points_dead_neurons_and_zero_weights_1d():
    points, weights, values, theta, zero_at = kink_case_1d()
    H = 7
    W, b, V, c = unpack(theta[0], 1, H, 1)
    z = preactivations(W, b, points)
    for i, ps in zero_at.items():  # the kinks really sit on the data points (exact zeros)
        assert np.all(z[ps, i] == 0.0)
    risk, grad = assert_matches_loop(theta, points, weights, values, H)
    g_w, g_b, g_v, g_c = unpack(grad[0], 1, H, 1)
    # hand check of the strict active set for neuron 0 (kink at 0.25): only x = 0.5, 0.75, 1 count
    residual = c[0] + np.sum(V[0] * np.maximum(z, 0.0), axis=1) - values[:, 0]
    on = points[:, 0] > 0.25
    assert g_b[0] == pytest.approx(2 * np.sum((weights * V[0, 0] * residual)[on]), rel=1e-14)
    assert g_w[0, 0] == pytest.approx(2 * np.sum((weights * V[0, 0] * residual * points[:, 0])[on]), rel=1e-14)
    # neuron 1 (kink at 0.5, active to the left): x = 0, 0.25
    on = points[:, 0] < 0.5
    assert g_b[1] == pytest.approx(2 * np.sum((weights * V[0, 1] * residual)[on]), rel=1e-14)
    # dead, never-active and z = 0 neurons get exactly zero gradient
    for i in (2, 4, 5, 6):
        assert g_w[i, 0] == 0.0 and g_b[i] == 0.0 and g_v[0, i] == 0.0
    # w = 0, b > 0: active everywhere, G_w = 2 sum_p w_p v r_p x_p
    assert g_w[3, 0] == pytest.approx(2 * np.sum(weights * V[0, 3] * residual * points[:, 0]), rel=1e-14)
    assert risk[0] == pytest.approx(np.sum(weights * residual**2), rel=1e-14)


def test_kinks_on_data_points_2d():
    points, weights, values, theta = kink_case_2d()
    H = 6
    W, b, _, _ = unpack(theta[0], 2, H, 2)
    z = preactivations(W, b, points)
    assert np.sum(z[:, 0] == 0) == 3 and np.sum(z[:, 1] == 0) == 3 and np.all(z[:, 3] == 0)
    assert_matches_loop(theta, points, weights, values, H)


def test_generic_point_against_central_differences():
    """Central differences of L: truncation ~h^2 |L'''| ~ 1e-10, rounding ~eps L / h ~ 1e-11, so 1e-7 of
    max(1, |G|) is a loose bound that a wrong component (an error of order |G|) cannot meet."""
    rng = np.random.default_rng(5)
    d, H, k, P = 2, 4, 2, 40
    points = rng.uniform(0.0, 1.0, (P, d))
    weights = rng.dirichlet(np.ones(P))
    values = rng.standard_normal((P, k))
    h = 1e-5
    theta = rng.standard_normal(n_params(d, H, k))
    W, b, _, _ = unpack(theta, d, H, k)
    # generic: no preactivation changes sign within the step (so L is smooth on the stencil)
    assert np.min(np.abs(preactivations(W, b, points))) > 100 * h * (1 + d)
    _, grad = discrete.risk_and_gradient(theta[None], points, weights, values, H)
    fd = np.empty_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        up, _ = discrete.risk_and_gradient((theta + e)[None], points, weights, values, H)
        down, _ = discrete.risk_and_gradient((theta - e)[None], points, weights, values, H)
        fd[j] = (up[0] - down[0]) / (2 * h)
    np.testing.assert_allclose(grad[0], fd, rtol=0, atol=1e-7 * max(1.0, np.max(np.abs(grad))))


def smooth_gradient(theta, points, weights, values, d, H, k, activation, derivative):
    """The true gradient of the risk of the network with relu replaced by a smooth ``activation``."""
    W, b, V, c = unpack(theta, d, H, k)
    z = b[None, :] + points @ W.T  # (P, H)
    s, ds = activation(z), derivative(z)
    r = c[None, :] + s @ V.T - values  # (P, k)
    back = (weights[:, None] * r) @ V  # (P, H): w_p V[:, i] . r_p
    g_w = 2 * (back * ds).T @ points
    g_b = 2 * np.sum(back * ds, axis=0)
    g_v = 2 * (weights[:, None] * r).T @ s
    g_c = 2 * np.sum(weights[:, None] * r, axis=0)
    return np.concatenate([g_w.ravel(), g_b, g_v.ravel(), g_c])


def test_generalized_gradient_is_the_limit_of_smooth_gradients_at_kinks():
    """JR: G = lim grad L_r for R_r -> relu with R_r' -> 1_(0, inf) pointwise (so R_r'(0) -> 0).

    ``R_r(z) = log(1 + exp(r z - sqrt(r))) / r`` has ``R_r'(0) = expit(-sqrt r) -> 0`` and
    ``|R_r - relu| = O(1/sqrt r)``: at parameters with kinks exactly on data points the smooth gradients
    converge to G like 1/sqrt(r). The plain softplus (``R_r'(0) = 1/2``) converges elsewhere, so the
    check distinguishes the relu'(0) = 0 convention.
    """
    for points, weights, values, theta, H in (kink_case_1d()[:4] + (7,), kink_case_2d() + (6,)):
        d, k = points.shape[1], values.shape[1]
        _, grad = discrete.risk_and_gradient(theta, points, weights, values, H)
        G = grad[0]
        errors = []
        for r in (1e2, 1e4, 1e6, 1e8):
            shifted = smooth_gradient(theta[0], points, weights, values, d, H, k,
                                      lambda z, r=r: np.logaddexp(0.0, r * z - math.sqrt(r)) / r,
                                      lambda z, r=r: expit(r * z - math.sqrt(r)))
            errors.append(np.max(np.abs(shifted - G)))
        assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
        assert errors[-1] < 1e-3 * max(1.0, np.max(np.abs(G))), errors
        # O(1/sqrt r): each factor 100 in r divides the error by ~10
        assert errors[-1] < 0.02 * errors[1], errors
        softplus = smooth_gradient(theta[0], points, weights, values, d, H, k,
                                   lambda z: np.logaddexp(0.0, 1e8 * z) / 1e8, lambda z: expit(1e8 * z))
        assert np.max(np.abs(softplus - G)) > 1e-2


def test_chunking_and_batch_do_not_change_rows():
    rng = np.random.default_rng(11)
    d, H, k, P = 2, 5, 2, 30
    points = rng.uniform(0, 1, (P, d))
    weights = rng.dirichlet(np.ones(P))
    values = rng.standard_normal((P, k))
    theta = rng.standard_normal((9, n_params(d, H, k)))
    risk, grad = discrete.risk_and_gradient(theta, points, weights, values, H)
    for chunk in (1, P * H, 3 * P * H, 10**9):
        r2, g2 = discrete.risk_and_gradient(theta, points, weights, values, H, chunk_elements=chunk)
        assert np.array_equal(risk, r2) and np.array_equal(grad, g2)
    for row in range(theta.shape[0]):
        r1, g1 = discrete.risk_and_gradient(theta[row : row + 1], points, weights, values, H)
        assert r1[0] == risk[row] and np.array_equal(g1[0], grad[row])


def test_problem_with_data_measure_uses_the_discrete_path():
    points = [[0.0], [0.25], [0.5], [0.75], [1.0]]
    weights = [0.125, 0.25, 0.25, 0.25, 0.125]
    problem = Problem.from_config({
        "network": {"input_dim": 1, "width": 7, "output_dim": 1},
        "domain": [0.0, 1.0],
        "target": {"kind": "abs", "center": 0.5, "scale": 2.0},
        "measure": {"kind": "data", "points": points, "weights": weights},
    })
    _, _, _, theta, _ = kink_case_1d()
    values = np.array([[2 * abs(p[0] - 0.5)] for p in points])
    ref_risk, ref_grad, risk_scale, grad_scale = loop_reference(theta[0], np.array(points), np.array(weights), values, 1, 7, 1)
    risk, grad = problem.risk_and_gradient(theta[0])
    assert risk.shape == () and grad.shape == (problem.n_params,)
    assert abs(risk - ref_risk) <= LOOP_RTOL * risk_scale
    assert np.all(np.abs(grad - ref_grad) <= LOOP_RTOL * grad_scale)


def test_a_fine_discrete_measure_converges_to_the_exact_d1_kernel_at_the_midpoint_rates():
    """The discrete measure of ``n`` midpoints of ``[0, 1]`` (weights ``1/n``) integrates like the composite
    midpoint rule: ``L`` (integrand continuous and piecewise smooth: kinks cost O(h^2) each) with error
    O(n^-2), ``G`` (integrands with jumps at the kinks, each costing O(h)) with error O(n^-1). Fitted on
    n = 2^8 .. 2^14 the log-log slopes must be those rates to within 0.25 (kinks at random positions
    relative to the grid make the error oscillate around its trend, hence the fitted slope and the margin);
    the exact kernel is the d = 1 closed form, independent of the discrete code."""
    config = {"network": {"input_dim": 1, "width": 5, "output_dim": 1}, "domain": [0.0, 1.0],
              "target": {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.3}}
    exact = Problem.from_config({**config, "measure": {"kind": "uniform"}})
    theta = np.random.default_rng(11).standard_normal((4, exact.n_params))
    theta[:, :5] = np.abs(theta[:, :5]) + 0.5  # kinks -b/w inside [0, 1] for some neurons
    theta[:, 5:10] = -theta[:, :5] * np.random.default_rng(12).uniform(0.1, 0.9, (4, 5))
    risk, grad = exact.risk_and_gradient(theta)
    sizes = 2 ** np.arange(8, 15)
    risk_err, grad_err = [], []
    for n in sizes:
        points = ((np.arange(n) + 0.5) / n).tolist()
        midpoint = Problem.from_config({**config, "measure": {"kind": "data", "points": points}})
        r, g = midpoint.risk_and_gradient(theta)
        risk_err.append(np.max(np.abs(r - risk) / risk))
        grad_err.append(np.max(np.linalg.norm(g - grad, axis=-1) / np.linalg.norm(grad, axis=-1)))
    risk_slope = np.polyfit(np.log(sizes), np.log(risk_err), 1)[0]
    grad_slope = np.polyfit(np.log(sizes), np.log(grad_err), 1)[0]
    assert abs(risk_slope + 2.0) <= 0.25, (risk_slope, risk_err)
    assert abs(grad_slope + 1.0) <= 0.25, (grad_slope, grad_err)
    assert risk_err[-1] < 1e-7 and grad_err[-1] < 1e-3  # and the finest is close
