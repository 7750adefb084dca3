"""Classified end points (reluflow.dynamics.classify, MATH.md section 7), at points whose type is derived here.

Affine target ``f = alpha x + beta``, uniform law on ``[a, b]`` unless said otherwise, ``Var X = (b - a)^2 / 12``:

- a student equal to a ``relu_network`` teacher: ``L = 0``, a global minimum;
- ``H = 2`` on ``[0, 1]`` (MATH.md section 5, ``L = alpha^2 / 972``): a saddle (its restricted Hessian has two
  negative eigenvalues; the kink terms of the moving kinks make it so);
- ``H = 1``, a dead neuron whose kink lies strictly outside ``[a, b]`` (or ``w = 0 > b``) and the best constant
  ``c = beta + alpha (a + b) / 2``: ``L = alpha^2 (b - a)^2 / 12``. On a neighbourhood the neuron stays dead, so
  ``L`` depends on ``c`` alone there and is minimal: a true (non-strict) **local minimum**. The Hessian is
  ``diag(0, 0, 0, 2)``, restricted spectrum ``{0, 0, 2}``;
- the same with the kink exactly at ``b``: **nonsmooth**. Moving the kink inside switches the neuron on near ``b``
  where ``r(b) = -alpha (b - a) / 2 != 0``, and the risk falls although the one-sided Hessian returned there is
  the PSD ``diag(0, 0, 0, 2)``: reading it would call a non-minimum a minimum;
- ``H = 1`` with a live constant neuron and no outer weight, ``(w, b, v) = (0, 1, 0)``, same ``c``: the same risk,
  but a **saddle**. Off the rescaling direction ``(0, -1, 0, 0)`` the Hessian on ``(w, v, c)`` is
  ``[[0, q, 0], [q, 2, 2], [0, 2, 2]]`` with ``q = 2 int x r p = -2 alpha Var X`` (``H_ww = 2 v^2 T_2 = 0``,
  ``H_wv = 2 S_1``, ``H_vv = 2 int b^2 p``, ``H_vc = 2 b``, ``H_cc = 2``), whose determinant ``-2 q^2`` is negative.
  The same holds for a discrete law (``Var X`` the discrete variance), which exercises the difference Hessian.
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics.certify import Certificate, polish_critical_points
from reluflow.dynamics.classify import (
    CRITICAL_GRAD_TOL,
    EIGENVALUE_RTOL,
    END_POINT_DTYPE,
    END_POINTS,
    _jacobi_eigenvalues,
    classify_end_points,
    hessians,
    nonsmooth_points,
    restricted_spectrum,
    singular_points_1d,
)
from reluflow.model.network import pack
from reluflow.model.piecewise import PiecewiseTable

ALPHA, BETA = 2.0, -1.0
TEACHER = {"kind": "relu_network", "inner_weights": [4.0, -2.0, -1.0, 0.0, 1.0], "inner_biases": [-1.0, 1.2, 0.9, 0.3, 1.5],
           "outer_weights": [1.5, -0.7, 2.0, 0.4, -1.0], "outer_bias": [0.1]}  # kinks 0.25, 0.6, 0.9; -1.5 outside


def problem_of(target, width, domain=(0.0, 1.0), measure=None, output_dim=1):
    return Problem.from_config({"network": {"width": width, "output_dim": output_dim}, "domain": list(domain),
                                "target": target, "measure": measure or {"kind": "uniform"}})


def affine(width, domain=(0.0, 1.0), measure=None):
    return problem_of({"kind": "affine", "slope": ALPHA, "intercept": BETA}, width, domain, measure)


def certificate_at(problem, theta):
    """The certificate of points taken as they are (no polishing): their own risk and |G|."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    risk, grad = problem.risk_and_gradient(theta)
    return Certificate(theta=theta, risk=risk, grad_norm=np.linalg.norm(grad, axis=1), distance=np.zeros(len(theta)))


def classify_points(problem, theta):
    return classify_end_points(problem, certificate_at(problem, theta))


def complement_basis(problem, theta):
    """An orthonormal basis of the complement of the rescaling directions by numpy's QR (independent of the
    Householder blocks of the module)."""
    directions = rescaling_directions(problem, theta)
    directions = directions[np.linalg.norm(directions, axis=1) > 0]
    q, _ = np.linalg.qr(np.concatenate([directions.T, np.eye(problem.n_params)], axis=1))
    return q[:, len(directions):problem.n_params]


def rescaling_directions(problem, theta):
    """``r_i = (-w_i, -b_i, V[:, i])`` on neuron i's block, as rows ``(H, n)``."""
    layout = problem.layout
    out = np.zeros((problem.width, problem.n_params))
    for i, (u, v) in enumerate(zip(layout.neuron_blocks(), layout.outer_weights())):
        out[i, u] = -theta[u]
        out[i, v] = theta[v]
    return out


H2_POINT = np.array([-1.0, 1.0, 2 / 3, -1 / 3, -2 / 3 * ALPHA, 2 / 3 * ALPHA, BETA + ALPHA / 2])


def test_the_end_point_names():
    assert set(END_POINTS) == {"global_minimum", "local_minimum", "saddle", "nonsmooth", "not_converged"}
    assert all(np.array(END_POINTS, dtype=END_POINT_DTYPE).astype(object) == np.array(END_POINTS, dtype=object))


# ----------------------------------------------------------------------------------------------------
# the derived points


def test_student_equal_to_the_teacher_is_a_global_minimum():
    problem = problem_of(TEACHER, 5)
    teacher = pack(np.array(TEACHER["inner_weights"])[:, None], TEACHER["inner_biases"], [TEACHER["outer_weights"]],
                   TEACHER["outer_bias"])
    certificate = polish_critical_points(problem, teacher[None])
    assert certificate.risk[0] <= 1e-28
    end_point, min_eigenvalue = classify_end_points(problem, certificate)
    assert end_point.tolist() == ["global_minimum"]
    # a smooth point (kinks at continuous knots of f only): its Hessian is PSD off the rescaling directions
    assert min_eigenvalue[0] >= -1e-12


def test_teacher_in_two_dimensions_with_a_discrete_law_is_a_global_minimum():
    teacher = {"kind": "relu_network", "inner_weights": [[1.0, -1.0], [0.5, 2.0]], "inner_biases": [0.2, -1.0],
               "outer_weights": [[1.0, -2.0]], "outer_bias": [0.5]}
    problem = Problem.from_config({"network": {"input_dim": 2, "width": 2}, "domain": [-1.0, 1.0], "target": teacher,
                                   "measure": {"kind": "qmc", "n_points": 128}})
    theta = pack(np.array(teacher["inner_weights"]), teacher["inner_biases"], teacher["outer_weights"], teacher["outer_bias"])
    assert classify_points(problem, theta)[0].tolist() == ["global_minimum"]


@pytest.mark.parametrize("alpha, beta", [(2.0, -1.0), (1.0, 0.0), (-3.0, 0.5)])
def test_the_h2_critical_point_is_a_saddle(alpha, beta):
    problem = problem_of({"kind": "affine", "slope": alpha, "intercept": beta}, 2)
    theta = np.array([-1.0, 1.0, 2 / 3, -1 / 3, -2 / 3 * alpha, 2 / 3 * alpha, beta + alpha / 2])
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["saddle"]
    # independent: numpy's symmetric eigensolver on the Hessian in a QR basis of the complement
    basis = complement_basis(problem, theta)
    hessian = problem.gradient_jacobian(theta)
    reference = np.linalg.eigvalsh(basis.T @ hessian @ basis)
    assert reference[0] < 0 and reference[1] < 0  # two directions of descent
    assert abs(min_eigenvalue[0] - reference[0]) <= 1e-13 * np.max(np.abs(reference))
    # the curvature along the eigenvector, by second differences of the risk alone
    vector = basis @ np.linalg.eigh(basis.T @ hessian @ basis)[1][:, 0]
    h = 1e-4
    second = (problem.risk(theta + h * vector) - 2 * problem.risk(theta) + problem.risk(theta - h * vector)) / h**2
    assert second == pytest.approx(reference[0], rel=1e-4)  # O(h^2) and rounding eps L / h^2 ~ 1e-10


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-1.0, 2.0)])
@pytest.mark.parametrize("w, bias", [(1.0, "right of b"), (-2.0, "left of a"), (0.0, -1.0)])
def test_dead_neuron_with_its_kink_outside_is_a_local_minimum(a, b, w, bias):
    bias = {"right of b": -w * (b + 0.5), "left of a": -w * (a - 0.5)}.get(bias, bias)
    problem = affine(1, (a, b))
    theta = np.array([w, bias, 0.7, BETA + ALPHA * (a + b) / 2])
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["local_minimum"]
    assert problem.risk(theta) == pytest.approx(ALPHA**2 * (b - a) ** 2 / 12, rel=1e-13)
    assert abs(min_eigenvalue[0]) <= 1e-15  # restricted spectrum {0, 0, 2}
    # it is one: no point of a ball (radius < the kink's distance to [a, b] in parameter space) is lower
    rng = np.random.default_rng(5)
    steps = rng.standard_normal((2000, 4)) * 10.0 ** rng.uniform(-8, -1.5, (2000, 1))
    assert np.all(problem.risk(theta + steps) >= problem.risk(theta) - 1e-15)


def test_dead_neuron_with_its_kink_at_the_end_is_nonsmooth_and_no_minimum():
    problem = affine(1)
    theta = np.array([1.0, -1.0, 0.7, BETA + ALPHA / 2])  # kink at b = 1: active on (1, 1], empty
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["nonsmooth"] and np.isnan(min_eigenvalue[0])
    # the one-sided Hessian the kernel returns there is PSD off the rescaling direction ...
    assert restricted_spectrum(problem.layout, theta, problem.gradient_jacobian(theta))[0] >= 0.0
    # ... yet moving the kink inside lowers the risk: r(1) = -alpha / 2 < 0 and the neuron adds 0.7 (x - 1 + delta)
    for delta in (1e-6, 1e-4, 1e-2):
        assert problem.risk(theta + [0.0, delta, 0.0, 0.0]) < problem.risk(theta)


def test_zero_neuron_is_nonsmooth():
    problem = affine(1)
    for v in (0.0, 0.7):
        end_point, _ = classify_points(problem, [0.0, 0.0, v, BETA + ALPHA / 2])
        assert end_point.tolist() == ["nonsmooth"]


def live_constant_neuron_matrix(var_x):
    q = -2.0 * ALPHA * var_x
    return np.array([[0.0, q, 0.0], [q, 2.0, 2.0], [0.0, 2.0, 2.0]])


def test_live_constant_neuron_without_outer_weight_is_a_saddle():
    problem = affine(1)
    theta = np.array([0.0, 1.0, 0.0, BETA + ALPHA / 2])
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["saddle"]
    expected = np.linalg.eigvalsh(live_constant_neuron_matrix(1.0 / 12.0))[0]
    assert min_eigenvalue[0] == pytest.approx(expected, rel=1e-13)


def test_live_constant_neuron_with_a_discrete_law_is_a_saddle():
    """The difference Hessian (discrete law): error ~1e-10 of its scale (module docstring), so 1e-8 relative."""
    points = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    problem = affine(1, measure={"kind": "data", "points": points.tolist()})
    theta = np.array([0.0, 1.0, 0.0, BETA + ALPHA / 2])
    assert problem.has_jacobian is False
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["saddle"]
    expected = np.linalg.eigvalsh(live_constant_neuron_matrix(np.var(points)))[0]
    assert min_eigenvalue[0] == pytest.approx(expected, rel=1e-8)


def test_non_critical_and_non_finite_points_are_not_converged():
    problem = affine(2)
    rng = np.random.default_rng(2)
    theta = np.concatenate([rng.standard_normal((3, 7)), H2_POINT[None]])
    end_point, min_eigenvalue = classify_points(problem, theta)
    assert end_point.tolist() == ["not_converged"] * 3 + ["saddle"]
    assert np.all(np.isnan(min_eigenvalue[:3]))
    broken = Certificate(theta=np.stack([H2_POINT, np.full(7, np.nan), H2_POINT]), risk=np.array([ALPHA**2 / 972, np.nan, np.nan]),
                         grad_norm=np.array([np.nan, np.nan, 0.0]), distance=np.zeros(3))
    assert classify_end_points(problem, broken)[0].tolist() == ["not_converged"] * 3
    # the tolerance itself: a certificate just above it fails, just below it passes
    cert = certificate_at(problem, H2_POINT)
    above = Certificate(theta=cert.theta, risk=cert.risk, grad_norm=np.array([2 * CRITICAL_GRAD_TOL]), distance=cert.distance)
    below = Certificate(theta=cert.theta, risk=cert.risk, grad_norm=np.array([CRITICAL_GRAD_TOL]), distance=cert.distance)
    assert classify_end_points(problem, above)[0].tolist() == ["not_converged"]
    assert classify_end_points(problem, below)[0].tolist() == ["saddle"]


def test_kink_exactly_at_the_domain_end_with_positive_risk_is_nonsmooth():
    """f = x^2 on [0, 1], H = 1, (w, b) = (1, 0): the kink sits at a = 0 and N = c + v x on [0, 1]; the best affine
    fit v = 1, c = -1/6 leaves r orthogonal to 1 and x, so G = 0, with L = 1/180. The Jacobian really is
    discontinuous there: the kink term 2 v r(0) p(0) / |w| = -1/3 appears as soon as the kink moves inside."""
    problem = problem_of({"kind": "polynomial", "coefficients": [0.0, 0.0, 1.0]}, 1)
    theta = np.array([1.0, 0.0, 1.0, -1.0 / 6.0])
    certificate = certificate_at(problem, theta)
    assert certificate.grad_norm[0] <= 1e-15 and certificate.risk[0] == pytest.approx(1 / 180, rel=1e-13)
    assert classify_end_points(problem, certificate)[0].tolist() == ["nonsmooth"]
    inside, outside = (problem.gradient_jacobian(theta + [0.0, s, 0.0, 0.0]) for s in (-1e-9, 1e-9))
    assert inside[1, 1] - outside[1, 1] == pytest.approx(-1.0 / 3.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# the rule for nonsmooth points


def test_singular_points_of_tables():
    assert singular_points_1d(affine(1).table).tolist() == [0.0, 1.0]  # uniform: p jumps to 0 at both ends
    assert singular_points_1d(affine(1, measure={"kind": "triangular", "mode": 0.3}).table).tolist() == []
    assert singular_points_1d(affine(1, measure={"kind": "triangular", "mode": 0.0}).table).tolist() == [0.0]
    jump = {"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0], "coefficients": [[0.5], [1.5]]}
    assert singular_points_1d(affine(1, measure=jump).table).tolist() == [0.0, 0.5, 1.0]
    # p = 4x, then 4 - 4x: continuous at its knot 0.5 and zero at both ends; with the teacher, f is continuous at
    # its kinks 0.25, 0.6, 0.9 (knots of the table too)
    continuous = {"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0], "coefficients": [[0.0, 4.0], [4.0, -4.0]]}
    assert singular_points_1d(problem_of(TEACHER, 1, measure=continuous).table).tolist() == []
    # a target that jumps (built by hand: no configured kind does) at 0.5, where p > 0
    table = PiecewiseTable(np.array([0.0, 0.5, 1.0]), np.array([[[0.0, 1.0]], [[1.0, 1.0]]]), np.zeros((0, 1, 3)),
                           np.array([[0.0, 4.0], [4.0, -4.0]]), 2)
    assert singular_points_1d(table).tolist() == [0.5]


def test_nonsmooth_rule_in_one_dimension():
    jump = {"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0], "coefficients": [[0.5], [1.5]]}
    problem = problem_of(TEACHER, 1, measure=jump)
    kink_at = lambda x, w=2.0: [w, -w * x, 1.0, 0.0]  # noqa: E731
    rows = np.array([
        kink_at(0.5), kink_at(0.5 + 0.99e-4), kink_at(0.5 - 1.01e-4),  # density jump: on, within, beyond KINK_RTOL
        kink_at(0.25), kink_at(0.6, -3.0),  # teacher kinks (f continuous): smooth
        kink_at(0.0), kink_at(1.0, -1.0),  # the ends (p > 0 there)
        [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0],  # w = 0 != b smooth; w = b = 0 not
        kink_at(-3.0), kink_at(0.3),
    ])
    expected = [True, True, False, False, False, True, True, False, False, True, False, False]
    assert nonsmooth_points(problem, rows).tolist() == expected


def test_nonsmooth_rule_for_discrete_laws_follows_the_difference_stencil():
    problem = affine(1, measure={"kind": "data", "points": [0.0, 0.5, 1.0]})
    step = np.cbrt(np.finfo(float).eps)
    rows = np.array([
        [1.0, -0.5, 1.0, 0.0],  # through the data point 0.5
        [1.0, -0.5 - 1.5 * step, 1.0, 0.0],  # a stencil step of b reaches it (the rule's factor 2)
        [1.0, -0.5 - 3 * step, 1.0, 0.0],  # beyond
        [1.0, -0.25, 1.0, 0.0],  # between data points
        [0.0, 0.0, 0.3, 0.0],
    ])
    assert nonsmooth_points(problem, rows).tolist() == [True, True, False, False, True]


# ----------------------------------------------------------------------------------------------------
# the Hessian and the rescaling directions


SMOOTH_PROBLEMS = {
    "affine-uniform": lambda: affine(3),
    "teacher-jump-density": lambda: problem_of(TEACHER, 3, measure={"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0],
                                                                   "coefficients": [[0.5], [1.5]]}),
    "sine-triangular-k2": lambda: problem_of({"kind": "stack", "components": [{"kind": "sine", "frequency": 5.0},
                                                                              {"kind": "abs", "center": 0.4}]},
                                             3, measure={"kind": "triangular", "mode": 0.3}, output_dim=2),
}


@pytest.mark.parametrize("name", sorted(SMOOTH_PROBLEMS))
def test_exact_hessian_against_central_differences_of_g(name):
    """At random points (no kink near a singular point: checked), central differences of G with h = 1e-6 err by
    h^2 |G'''| ~ 1e-12 plus eps |G| / h ~ 1e-10 of the scale: 1e-7 of max(1, max |H|) is safe and would catch any
    wrong term (each is O(1))."""
    problem = SMOOTH_PROBLEMS[name]()
    theta = np.random.default_rng(8).standard_normal((3, problem.n_params))
    assert not np.any(nonsmooth_points(problem, theta))
    exact = hessians(problem, theta)
    h = 1e-6
    for row in range(3):
        shifts = h * np.eye(problem.n_params)
        g = problem.generalized_gradient(np.concatenate([theta[row] + shifts, theta[row] - shifts]))
        differences = ((g[: problem.n_params] - g[problem.n_params :]) / (2 * h)).T
        assert np.max(np.abs(exact[row] - differences)) <= 1e-7 * max(1.0, np.max(np.abs(exact[row])))
        np.testing.assert_array_equal(exact[row], exact[row].T)


def discrete_hessian(problem, theta):
    """The Hessian of L = sum_p w_p |r_p|^2 for a discrete law, d = k = 1, away from kinks at data points, from
    its definition: 2 sum_p w_p (grad N_p grad N_p^T + r_p Hess N_p), Hess N_p nonzero only in the (u_i, v_i)
    blocks, where d^2 (v relu(w x + b)) / d(w, b) dv = 1[active] (x, 1)."""
    H = problem.width
    w, b, v, c = theta[:H], theta[H:2 * H], theta[2 * H:3 * H], theta[3 * H]
    measure = problem.discrete_measure
    out = np.zeros((problem.n_params, problem.n_params))
    for x, weight in zip(measure.points[:, 0], measure.weights):
        z = w * x + b
        active = (z > 0).astype(float)
        r = c + np.sum(v * np.maximum(z, 0)) - problem.target(np.array([x]))[0]
        grad = np.concatenate([v * active * x, v * active, np.maximum(z, 0), [1.0]])
        second = np.zeros_like(out)
        for i in range(H):
            second[i, 2 * H + i] = second[2 * H + i, i] = active[i] * x
            second[H + i, 2 * H + i] = second[2 * H + i, H + i] = active[i]
        out += 2 * weight * (np.outer(grad, grad) + r * second)
    return out


def test_difference_hessian_of_a_discrete_law_against_its_formula():
    problem = affine(3, measure={"kind": "gauss_legendre", "n_per_dim": 9})
    theta = np.random.default_rng(9).standard_normal((4, problem.n_params))
    assert not np.any(nonsmooth_points(problem, theta))
    for row, hessian in enumerate(hessians(problem, theta)):
        reference = discrete_hessian(problem, theta[row])
        assert np.max(np.abs(hessian - reference)) <= 1e-8 * max(1.0, np.max(np.abs(reference)))


def test_rescaling_directions_satisfy_the_identity_at_smooth_points():
    """H r_i = -D_i G exactly (module docstring), so at any smooth point, with D_i G = (-G_u_i, G_V_i)."""
    problem = SMOOTH_PROBLEMS["sine-triangular-k2"]()
    theta = np.random.default_rng(10).standard_normal((3, problem.n_params))
    layout = problem.layout
    for row, hessian in enumerate(hessians(problem, theta)):
        grad = problem.generalized_gradient(theta[row])
        for i, r in enumerate(rescaling_directions(problem, theta[row])):
            expected = np.zeros(problem.n_params)
            expected[layout.neuron_blocks()[i]] = grad[layout.neuron_blocks()[i]]
            expected[layout.outer_weights()[i]] = -grad[layout.outer_weights()[i]]
            scale = np.max(np.abs(hessian)) * np.linalg.norm(r)
            assert np.max(np.abs(hessian @ r - expected)) <= 1e-12 * scale


def polished_runs():
    """Random starts on a sine target with a triangular density, polished to certified critical points."""
    problem = problem_of({"kind": "sine", "frequency": 6.0, "amplitude": 0.8}, 3, measure={"kind": "triangular"})
    start = np.random.default_rng(12).standard_normal((4, problem.n_params))
    return problem, polish_critical_points(problem, start)


def test_rescaling_directions_lie_in_the_kernel_at_certified_critical_points():
    """|H r_i| = |D_i G| <= |G(theta*)|: at certified points (|G| <= 1e-8) that bounds it; the computed product
    adds rounding of ~1e-15 of max |H| |r_i|."""
    problem, certificate = polished_runs()
    points = [(problem, theta, g) for theta, g in zip(certificate.theta, certificate.grad_norm) if g <= CRITICAL_GRAD_TOL]
    assert len(points) >= 3
    h2 = affine(2)
    points.append((h2, H2_POINT, certificate_at(h2, H2_POINT).grad_norm[0]))
    teacher = problem_of(TEACHER, 5)
    theta = pack(np.array(TEACHER["inner_weights"])[:, None], TEACHER["inner_biases"], [TEACHER["outer_weights"]],
                 TEACHER["outer_bias"])
    points.append((teacher, theta, certificate_at(teacher, theta).grad_norm[0]))
    for prob, theta, grad_norm in points:
        hessian = prob.gradient_jacobian(theta)
        for r in rescaling_directions(prob, theta):
            bound = grad_norm + 1e-14 * np.max(np.abs(hessian)) * np.linalg.norm(r)
            assert np.linalg.norm(hessian @ r) <= bound


def test_restricted_spectrum_against_an_independent_basis_and_batch_independence():
    problem, certificate = polished_runs()
    end_point, min_eigenvalue = classify_end_points(problem, certificate)
    assert set(end_point) <= set(END_POINTS) and end_point.dtype == np.dtype(END_POINT_DTYPE)
    for row in range(len(end_point)):
        theta = certificate.theta[row]
        if end_point[row] in ("saddle", "local_minimum"):
            basis = complement_basis(problem, theta)
            reference = np.linalg.eigvalsh(basis.T @ problem.gradient_jacobian(theta) @ basis)
            assert abs(min_eigenvalue[row] - reference[0]) <= 1e-12 * np.max(np.abs(reference))
            assert (end_point[row] == "saddle") == (reference[0] < -EIGENVALUE_RTOL * np.max(np.abs(reference)))
        single = Certificate(theta=certificate.theta[[row]], risk=certificate.risk[[row]],
                             grad_norm=certificate.grad_norm[[row]], distance=certificate.distance[[row]])
        alone = classify_end_points(problem, single)
        assert alone[0][0] == end_point[row]
        np.testing.assert_array_equal(alone[1], min_eigenvalue[[row]])  # the same bits (NaN equal to NaN)


def test_jacobi_eigenvalues_against_lapack():
    """Jacobi is backward stable: eigenvalues within a few eps of the Frobenius norm (1e-14 leaves room)."""
    rng = np.random.default_rng(13)
    for n in (1, 2, 5, 17, 40):
        a = rng.standard_normal((n, n))
        for matrix in (a + a.T, a @ a.T, np.diag(np.repeat([1.0, -2.0, 0.0], n)[:n]), np.zeros((n, n))):
            got = _jacobi_eigenvalues(matrix)
            assert np.all(np.diff(got) >= 0)
            assert np.max(np.abs(got - np.linalg.eigvalsh(matrix))) <= 1e-14 * max(1.0, np.linalg.norm(matrix))
