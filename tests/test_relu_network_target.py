"""The ``relu_network`` (teacher) target: a student equal to the teacher has zero risk, the d = 1 risk of any
student equals adaptive quadrature of the defining integral, d > 1 values equal a direct numpy formula, and bad
configurations are refused naming the key."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from quadrature_reference import risk_and_gradient_reference
from scipy.integrate import IntegrationWarning
from tables1d import Case

from reluflow import Problem
from reluflow.model.network import pack
from reluflow.model.targets import parse_target
from reluflow.model.validation import ConfigError

# kinks -b/w at 0.25, 0.6 and 0.9 inside [0, 1], -1.5 outside; neuron 3 (w = 0) is the constant relu(0.3)
TEACHER_1D = {
    "kind": "relu_network",
    "inner_weights": [4.0, -2.0, -1.0, 0.0, 1.0],
    "inner_biases": [-1.0, 1.2, 0.9, 0.3, 1.5],
    "outer_weights": [1.5, -0.7, 2.0, 0.4, -1.0],
    "outer_bias": [0.1],
}
DENSITIES = [
    {"kind": "uniform"},
    {"kind": "triangular", "mode": 0.3},
    # jumps at 0.6, one of the teacher's kinks: the table's knots merge
    {"kind": "piecewise_polynomial", "knots": [0.0, 0.6, 1.0], "coefficients": [[0.5], [0.0, 2.0 / 0.64 * 0.7]]},
]


def teacher_theta(teacher: dict, d: int) -> np.ndarray:
    W = np.array(teacher["inner_weights"], dtype=float).reshape(-1, d)
    V = np.array(teacher["outer_weights"], dtype=float).reshape(-1, W.shape[0])
    return pack(W, np.array(teacher["inner_biases"], dtype=float), V, np.array(teacher["outer_bias"], dtype=float))


def problem_1d(teacher=TEACHER_1D, width=5, measure=None, backend="numba", output_dim=1):
    config = {"network": {"width": width, "output_dim": output_dim}, "domain": [0.0, 1.0], "target": teacher,
              "measure": measure or {"kind": "uniform"}}
    return Problem.from_config(config, backend=backend)


def test_density_example_integrates_to_one():
    # 0.5 * 0.6 + int_0.6^1 (2 / 0.64 * 0.7) x dx = 0.3 + (0.7 / 0.64) (1 - 0.36) = 0.3 + 0.7
    problem_1d(measure=DENSITIES[2])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("measure", DENSITIES, ids=[m["kind"] for m in DENSITIES])
def test_student_equal_to_the_teacher_has_zero_risk(backend, measure):
    """Exactness: the table cuts [a, b] at the teacher's kinks, so every piece's integrand is the square of the
    difference of two equal affine functions, each computed with a few roundings: |r| ~ 1e-16 |f|, L ~ 1e-32.
    1e-28 is four orders above that and far below any genuine misfit (a 1e-6 change of one weight gives ~1e-13)."""
    problem = problem_1d(measure=measure, backend=backend)
    theta = teacher_theta(TEACHER_1D, 1)
    risk, grad = problem.risk_and_gradient(theta)
    assert risk <= 1e-28
    assert np.max(np.abs(grad)) <= 1e-14
    moved = theta.copy()
    moved[0] += 1e-6
    assert problem.risk(moved) > 1e-16  # the check above could fail


def test_wider_student_with_silent_extra_neurons_has_zero_risk():
    """Extra neurons with zero outer weight, or dead on [a, b], do not change the realization."""
    problem = problem_1d(width=7)
    t = teacher_theta(TEACHER_1D, 1)
    w, b, v, c = t[:5], t[5:10], t[10:15], t[15:]
    theta = np.concatenate([w, [0.3, 1.0], b, [0.2, -2.0], v, [0.0, 5.0], c])  # extra 5: zero V; extra 6: dead
    assert problem.risk(theta) <= 1e-28


def teacher_formula(x: float) -> np.ndarray:
    """TEACHER_1D written out: 0.1 + 1.5 relu(4x - 1) - 0.7 relu(1.2 - 2x) + 2 relu(0.9 - x) + 0.4 relu(0.3) - relu(x + 1.5)."""
    relu = lambda z: max(z, 0.0)  # noqa: E731
    return np.array([0.1 + 1.5 * relu(4 * x - 1) - 0.7 * relu(1.2 - 2 * x) + 2.0 * relu(0.9 - x) + 0.4 * 0.3
                     - relu(x + 1.5)])


DENSITY_FORMULAS = [
    lambda x: 1.0,
    lambda x: 2 * x / 0.3 if x <= 0.3 else 2 * (1 - x) / 0.7,
    lambda x: 0.5 if x < 0.6 else 2.0 / 0.64 * 0.7 * x,
]


@pytest.mark.parametrize("index", range(3), ids=[m["kind"] for m in DENSITIES])
def test_risk_and_gradient_against_adaptive_quadrature(index):
    """Random students of width 3: the exact kernel against tests/quadrature_reference.py (scipy.quad of the
    definitions of L and G, split at every kink and knot, with the teacher and the density written out). Tolerances
    as in tests/test_exact1d.py: 1e-12 relative for L, 1e-12 of each component's integrand scale for G."""
    problem = problem_1d(width=3, measure=DENSITIES[index])
    reference_case = Case("teacher", problem.table, teacher_formula, DENSITY_FORMULAS[index])
    theta = np.random.default_rng(11).standard_normal((3, problem.n_params))
    risk, grad = problem.risk_and_gradient(theta)
    for row in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntegrationWarning)  # QUADPACK's roundoff flag at epsrel 1.2e-14
            risk_ref, grad_ref, scale = risk_and_gradient_reference(reference_case, theta[row], 3)
        assert abs(risk[row] - risk_ref) <= 1e-12 * risk_ref
        assert np.all(np.abs(grad[row] - grad_ref) <= 1e-12 * scale)


def test_two_outputs_and_discrete_measure_in_two_dimensions():
    teacher = {"kind": "relu_network", "inner_weights": [[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]],
               "inner_biases": [0.2, -1.0, 0.3], "outer_weights": [[1.0, -2.0, 1.0], [0.0, 0.5, 3.0]],
               "outer_bias": [0.5, -0.5]}
    problem = Problem.from_config({"network": {"input_dim": 2, "width": 3, "output_dim": 2}, "domain": [-1.0, 1.0],
                                   "target": teacher, "measure": {"kind": "qmc", "n_points": 256}})
    x = np.random.default_rng(3).uniform(-1.0, 1.0, (50, 2))
    W, b = np.array(teacher["inner_weights"]), np.array(teacher["inner_biases"])
    V, c = np.array(teacher["outer_weights"]), np.array(teacher["outer_bias"])
    direct = c + np.maximum(x @ W.T + b, 0.0) @ V.T  # the definition, as matrix products
    np.testing.assert_allclose(problem.target(x), direct, rtol=0, atol=1e-14 * (1 + np.max(np.abs(direct))))
    theta = teacher_theta(teacher, 2)
    np.testing.assert_array_equal(problem.realization(theta, x), problem.target(x))  # the same arithmetic
    assert problem.risk(theta) == 0.0


def test_normalized_mapping_round_trips_and_flat_forms_are_matrices():
    target, normalized = parse_target(TEACHER_1D, "target", 1, (0.0, 1.0))
    assert normalized["inner_weights"] == [[x] for x in TEACHER_1D["inner_weights"]]
    assert normalized["outer_weights"] == [TEACHER_1D["outer_weights"]]
    again, normalized_again = parse_target(normalized, "target", 1, (0.0, 1.0))
    assert normalized_again == normalized
    x = np.linspace(-0.5, 1.5, 41)[:, None]
    np.testing.assert_array_equal(target.evaluate(x), again.evaluate(x))
    np.testing.assert_array_equal(target.breakpoints(0.0, 1.0), [0.25, 0.6, 0.9])


def bad(**changes):
    raw = dict(TEACHER_1D)
    raw.update(changes)
    return raw


BAD = [
    ("target.inner_weights", bad(inner_weights=[])),
    ("target.inner_weights", bad(inner_weights=[[1.0, 2.0]] * 5)),  # 2 columns for d = 1
    ("target.inner_weights[2]", bad(inner_weights=[4.0, -2.0, math.nan, 0.0, 1.0])),
    ("target.inner_biases", bad(inner_biases=[1.0, 2.0])),
    ("target.inner_biases[4]", bad(inner_biases=[-1.0, 1.2, 0.9, 0.3, math.inf])),
    ("target.outer_weights", bad(outer_weights=[1.0, 2.0, 3.0])),
    ("target.outer_weights", bad(outer_weights=[[1.0] * 4, [2.0] * 4])),
    ("target.outer_weights[0][1]", bad(outer_weights=[[1.0, "x", 1.0, 1.0, 1.0]])),
    ("target.outer_bias", bad(outer_bias=[0.1, 0.2])),  # k = 1 from outer_weights
    ("target.outer_bias", bad(outer_bias=0.1)),
    ("target.outer_bias", {k: v for k, v in TEACHER_1D.items() if k != "outer_bias"}),
    ("target.inner_wieghts", bad(inner_wieghts=[1.0])),
]


@pytest.mark.parametrize("key, raw", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_teachers_name_the_key(key, raw):
    with pytest.raises(ConfigError, match="^" + key.replace("[", r"\[").replace("]", r"\]") + ": "):
        problem_1d(teacher=raw)


def test_flat_inner_weights_are_refused_for_two_inputs_and_outputs_must_match():
    flat = {"kind": "relu_network", "inner_weights": [1.0, 2.0], "inner_biases": [0.0, 0.0], "outer_weights": [1.0, 1.0],
            "outer_bias": [0.0]}
    with pytest.raises(ConfigError, match=r"^target\.inner_weights: a flat list is only accepted for input_dim = 1"):
        Problem.from_config({"network": {"input_dim": 2, "width": 2}, "target": flat, "measure": {"kind": "qmc", "n_points": 8}})
    with pytest.raises(ConfigError, match=r"^target: has 1 output\(s\) but network.output_dim = 2"):
        problem_1d(output_dim=2)
