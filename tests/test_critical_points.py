"""The critical points of MATH.md section 5 (affine target f = alpha x + beta, uniform law).

- H = 1 on a general [a, b]: a dead neuron and the best constant c = beta + alpha (a + b) / 2 give G = 0
  and L = Var(alpha X) = alpha^2 (b - a)^2 / 12 (JR Theorem 1.3's natural threshold);
- H = 2 on [0, 1]: neurons (w, b, v) = (-1, 2/3, -2/3 alpha) and (1, -1/3, 2/3 alpha), c = beta + alpha/2
  give G = 0 and L = alpha^2 / 972 (a positive-risk critical point for JR Theorem 1.2).

Tolerances: the parameters are exact up to one rounding each (2/3, alpha/2, ...), so G at the
rounded point is a few eps times |alpha| (the Hessian is O(alpha) on these scales): |G| < 1e-14 is
the issue's bound (measured <= 7e-16 here). The risks are exact for polynomial data up to a few
rounding errors per piece (at most 3 pieces): relative 1e-13.
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow.kernels import exact1d
from reluflow.kernels import exact1d_numba as _kernels1d
from reluflow.model.piecewise import PiecewiseTable

PATHS = {"numpy": exact1d.risk_and_gradient, "numba": _kernels1d.risk_and_gradient}
ALPHA_BETA = [(1.0, 0.0), (3.0, -1.5), (-2.0, 0.25), (0.3, 2.0)]


def affine_uniform_table(alpha: float, beta: float, a: float, b: float) -> PiecewiseTable:
    """f = alpha x + beta, density 1 / (b - a) on [a, b]; 2 Gauss-Legendre nodes are exact (degree 2)."""
    return PiecewiseTable(np.array([a, b]), np.array([[[beta, alpha]]]), np.zeros((0, 1, 3)), np.array([[1.0 / (b - a)]]), 2)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA)
@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-1.0, 2.0), (2.0, 5.0)])
def test_one_dead_neuron_and_the_best_constant(path, alpha, beta, a, b):
    table = affine_uniform_table(alpha, beta, a, b)
    c = beta + alpha * (a + b) / 2
    dead_neurons = [
        (1.0, -(b + 1.0)),  # w > 0, kink right of b
        (-2.0, 2.0 * (a - 1.0)),  # w < 0, kink left of a
        (1.0, -b),  # w > 0, kink exactly at b: active on (b, b], empty
        (0.0, -1.0),  # w = 0, b < 0
        (0.0, 0.0),  # w = b = 0: relu'(0) = 0, so G_w = G_b = 0 as well
    ]
    theta = np.array([[w, bias, 0.7, c] for w, bias in dead_neurons])
    risk, grad = PATHS[path](theta, table, 1)
    expected = alpha**2 * (b - a) ** 2 / 12
    assert np.all(np.abs(risk - expected) <= 1e-13 * expected)
    assert np.max(np.abs(grad)) < 1e-14


def h2_critical_point(alpha: float, beta: float) -> np.ndarray:
    """(w, b, v) = (-1, 2/3, -2/3 alpha), (1, -1/3, 2/3 alpha), c = beta + alpha / 2 (kinks at 2/3, 1/3)."""
    return np.array([-1.0, 1.0, 2.0 / 3.0, -1.0 / 3.0, -2.0 / 3.0 * alpha, 2.0 / 3.0 * alpha, beta + alpha / 2])


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA)
def test_two_neuron_critical_point_with_positive_risk(path, alpha, beta):
    table = affine_uniform_table(alpha, beta, 0.0, 1.0)
    risk, grad = PATHS[path](h2_critical_point(alpha, beta), table, 2)
    assert abs(risk - alpha**2 / 972) <= 1e-13 * alpha**2 / 972
    assert np.max(np.abs(grad)) < 1e-14
    # not a minimum of the risk in every direction: moving c does increase L (sanity of the setup)
    moved = h2_critical_point(alpha, beta)
    moved[-1] += 1e-3
    assert PATHS[path](moved, table, 2)[0] > risk


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA[:2])
def test_critical_points_through_problem_from_config(backend, alpha, beta):
    """The same numbers through the public API with the affine-target config of docs/DESIGN.md."""
    config = {
        "network": {"input_dim": 1, "width": 2, "output_dim": 1},
        "domain": [0.0, 1.0],
        "target": {"kind": "affine", "slope": alpha, "intercept": beta},
        "measure": {"kind": "uniform"},
    }
    problem = Problem.from_config(config, backend=backend)
    theta = h2_critical_point(alpha, beta)
    assert abs(problem.risk(theta) - alpha**2 / 972) <= 1e-13 * alpha**2 / 972
    assert np.max(np.abs(problem.generalized_gradient(theta))) < 1e-14
    config["network"]["width"] = 1
    problem1 = Problem.from_config(config, backend=backend)
    theta1 = np.array([[0.0, -1.0, 0.7, beta + alpha / 2], [1.0, -2.0, -0.3, beta + alpha / 2]])  # dead neurons
    assert np.all(np.abs(problem1.risk(theta1) - alpha**2 / 12) <= 1e-13 * alpha**2 / 12)
    assert np.max(np.abs(problem1.generalized_gradient(theta1))) < 1e-14
