"""Gaussian inputs through the public API: the measure's configuration, the targets it evaluates exactly, a
student equal to its teacher, and the flows (the kernels themselves are tested in test_gaussian_kernel.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reluflow
from reluflow.model.validation import ConfigError

TEACHER = {"kind": "relu_network", "inner_weights": [[1.0, 0.0, -0.5], [0.2, 1.0, 0.3]], "inner_biases": [0.1, -0.2],
           "outer_weights": [1.0, -0.5], "outer_bias": [0.3]}
BASE = {"network": {"input_dim": 3, "width": 2, "output_dim": 1}, "target": TEACHER,
        "measure": {"kind": "gaussian", "mean": [0.5, 0.0, -1.0],
                    "covariance": [[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]]}}


def config_with(path, value):
    import copy

    config = copy.deepcopy(BASE)
    node = config
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


BAD = [
    (("domain",), [0.0, 1.0], "domain"),
    (("measure", "covariance"), [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "measure.covariance"),
    (("measure", "covariance"), [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "measure.covariance"),
    (("measure", "covariance"), [[1.0, 0.0], [0.0, 1.0]], "measure.covariance"),
    (("measure", "mean"), [0.0, 0.0], "measure.mean"),
    (("measure", "scale"), 2.0, "measure.scale"),
    (("target",), {"kind": "sine", "frequency": [1.0, 0.0, 0.0]}, "target.kind"),
    (("target",), {"kind": "polynomial", "terms": [{"powers": [3, 0, 0], "coefficient": 1.0}]}, "target.kind"),
    (("target",), {"kind": "sum", "terms": [{"kind": "affine", "slope": [1.0, 0.0, 0.0]},
                                            {"kind": "sine", "frequency": [1.0, 0.0, 0.0]}]}, "target.terms[1].kind"),
]


@pytest.mark.parametrize("path,value,key", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_gaussian_configurations_name_the_key(path, value, key):
    with pytest.raises(ConfigError) as err:
        reluflow.Problem.from_config(config_with(path, value))
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_defaults_are_the_standard_normal_and_the_config_round_trips():
    problem = reluflow.Problem.from_config(config_with(("measure",), {"kind": "gaussian"}))
    assert problem.config["measure"] == {"kind": "gaussian", "mean": [0.0] * 3, "covariance": np.eye(3).tolist()}
    assert "domain" not in problem.config and problem.has_jacobian
    again = reluflow.Problem.from_config(problem.config)
    theta = np.random.default_rng(0).standard_normal((3, problem.n_params))
    assert np.array_equal(again.risk(theta), problem.risk(theta))


def test_a_student_equal_to_its_teacher_has_zero_risk_and_gradient():
    problem = reluflow.Problem.from_config(BASE)
    W, b, V, c = (np.asarray(TEACHER[k], float) for k in ("inner_weights", "inner_biases", "outer_weights", "outer_bias"))
    theta = np.concatenate([W.ravel(), b, V.ravel(), c])
    risk, grad = problem.risk_and_gradient(theta)
    # the closed form resolves the risk to ~eps times E(|N| + |f|)^2 (a few units here): 1e-13 is ~100 eps of it
    assert abs(risk) < 1e-13 and np.max(np.abs(grad)) < 1e-13


def test_quadratic_and_affine_terms_agree_with_a_monte_carlo_estimate():
    """f(x) = x_1^2 - 0.5 x_1 x_2 + 2 x_3 + 1 plus a teacher; the exact risk of a random student against a
    Monte Carlo estimate with 4e6 samples (within 5 standard errors)."""
    target = {"kind": "sum", "terms": [
        {"kind": "polynomial", "terms": [{"powers": [2, 0, 0], "coefficient": 1.0},
                                         {"powers": [1, 1, 0], "coefficient": -0.5},
                                         {"powers": [0, 0, 1], "coefficient": 2.0},
                                         {"powers": [0, 0, 0], "coefficient": 1.0}]},
        TEACHER]}
    problem = reluflow.Problem.from_config(config_with(("target",), target))
    theta = np.random.default_rng(3).standard_normal(problem.n_params)
    law, _ = problem.gaussian
    rng = np.random.default_rng(4)
    squares = []
    for _ in range(8):
        x = rng.multivariate_normal(law.mean, law.covariance, size=500_000)
        squares.append((problem.realization(theta, x) - problem.target(x)) ** 2)
    squares = np.concatenate(squares)
    estimate, error = squares.mean(), squares.std() / np.sqrt(squares.size)
    assert abs(problem.risk(theta) - estimate) <= 5 * error, (problem.risk(theta), estimate, error)


def test_the_stiff_flow_recovers_the_teacher_and_certifies_a_global_minimum():
    """Started near the teacher (relative perturbation 1e-2), the standard flow with the stiff solver and the exact
    Gaussian Jacobian returns to it: risk below the zero level, a certified critical point (|G| <= 1e-8),
    classified global_minimum, and the energy identity to the solver's tolerance."""
    problem = reluflow.Problem.from_config(BASE)
    W, b, V, c = (np.asarray(TEACHER[k], float) for k in ("inner_weights", "inner_biases", "outer_weights", "outer_bias"))
    teacher = np.concatenate([W.ravel(), b, V.ravel(), c])
    noise = np.random.default_rng(5).standard_normal((2, problem.n_params))
    theta0 = teacher * (1.0 + 1e-2 * noise)
    ds = reluflow.simulate(problem, theta0, t_max=1e4, solver="rodas4")
    assert ds["status"].values.tolist() == [0, 0]
    assert np.all(np.abs(ds["energy_residual"].values) <= 1e-6 * np.maximum(1.0, ds["initial_risk"].values[:, None]))
    assert np.all(ds["critical_grad_norm"].values <= 1e-8) and np.all(ds["risk"].values[:, -1] < 1e-10)
    assert ds["end_point"].values.tolist() == ["global_minimum", "global_minimum"]
