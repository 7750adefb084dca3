"""Every bad configuration is refused by ``Problem.from_config`` with a ConfigError naming the key,
before any table, point set or kernel is built; bad arrays passed to the API raise ValueError naming
the argument."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import reluflow.problem as problem_module
from reluflow.model.validation import ConfigError
from reluflow.problem import Problem

BASE = {
    "network": {"input_dim": 1, "width": 8, "output_dim": 1},
    "domain": [0.0, 1.0],
    "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
    "measure": {"kind": "uniform"},
}
BASE_2D = {
    "network": {"input_dim": 2, "width": 4, "output_dim": 1},
    "domain": [0.0, 1.0],
    "target": {"kind": "sine", "frequency": [1.0, 2.0]},
    "measure": {"kind": "qmc", "n_points": 64},
}


def changed(base, path, value):
    """A deep copy of ``base`` with ``path`` (a tuple of keys/indices) set to ``value`` (or deleted if ``...``)."""
    config = copy.deepcopy(base)
    node = config
    for part in path[:-1]:
        node = node[part]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


def target(t, base=BASE):
    return changed(base, ("target",), t)


def measure(m, base=BASE):
    return changed(base, ("measure",), m)


# (expected key path, configuration)
BAD = [
    # network
    ("network.width", changed(BASE, ("network", "width"), 0)),
    ("network.width", changed(BASE, ("network", "width"), -3)),
    ("network.width", changed(BASE, ("network", "width"), 8.5)),
    ("network.width", changed(BASE, ("network", "width"), 8.0)),
    ("network.width", changed(BASE, ("network", "width"), "8")),
    ("network.width", changed(BASE, ("network", "width"), True)),
    ("network.width", changed(BASE, ("network", "width"), ...)),
    ("network.input_dim", changed(BASE, ("network", "input_dim"), 0)),
    ("network.output_dim", changed(BASE, ("network", "output_dim"), None)),
    ("network.depth", changed(BASE, ("network", "depth"), 2)),
    ("network", changed(BASE, ("network",), [1, 8, 1])),
    # top level
    ("measur", changed(BASE, ("measur",), {"kind": "uniform"})),
    ("target", changed(BASE, ("target",), ...)),
    # domain
    ("domain", changed(BASE, ("domain",), [1.0, 0.0])),
    ("domain", changed(BASE, ("domain",), [0.5, 0.5])),
    ("domain", changed(BASE, ("domain",), [0.0, 1.0, 2.0])),
    ("domain[1]", changed(BASE, ("domain",), [0.0, math.inf])),
    ("domain[0]", changed(BASE, ("domain",), [math.nan, 1.0])),
    ("domain[0]", changed(BASE, ("domain",), ["0", 1.0])),
    # targets
    ("target.kind", target({"kind": "relu_of_exp"})),
    ("target.kind", target({"slope": 1.0})),
    ("target.slpoe", target({"kind": "affine", "slpoe": 2.0})),
    ("target.slope", target({"kind": "affine", "slope": "2.0"})),
    ("target.slope", target({"kind": "affine", "slope": [[1.0, 2.0]]})),
    ("target.intercept", target({"kind": "affine", "slope": 2.0, "intercept": math.nan})),
    ("target.intercept", target({"kind": "affine", "slope": [1.0, 2.0], "intercept": [1.0, 2.0, 3.0]})),
    ("target.slope[1]", target({"kind": "affine", "slope": [1.0, math.inf]})),
    ("target", target({"kind": "affine", "slope": [1.0, 2.0]})),  # 2 outputs, network has 1
    ("target", changed(BASE, ("network", "output_dim"), 3)),  # 1 output, network has 3
    ("target.knots", target({"kind": "piecewise_linear", "knots": [0.1, 0.3, 1.0], "values": [0.0, 1.0, 0.0]})),
    ("target.knots", target({"kind": "piecewise_linear", "knots": [0.0, 0.3, 0.9], "values": [0.0, 1.0, 0.0]})),
    ("target.knots", target({"kind": "piecewise_linear", "knots": [0.0, 0.3, 0.3, 1.0], "values": [0, 1, 1, 0]})),
    ("target.values", target({"kind": "piecewise_linear", "knots": [0.0, 0.3, 1.0], "values": [0.0, 1.0]})),
    ("target.values[1][0]", target({"kind": "piecewise_linear", "knots": [0.0, 1.0], "values": [[0.0, 1.0], ["x", 1.0]]})),
    ("target.values[1]", target({"kind": "piecewise_linear", "knots": [0.0, 1.0], "values": [[0.0, 1.0], [1.0]]})),
    ("target.coefficients", target({"kind": "polynomial", "coefficients": []})),
    ("target.coefficients[2]", target({"kind": "polynomial", "coefficients": [1.0, 2.0, None]})),
    ("target.half_width", target({"kind": "hat", "center": 0.5, "half_width": 0.0})),
    ("target.center", target({"kind": "hat", "half_width": 0.1})),
    ("target.period", target({"kind": "sawtooth", "period": -1.0})),
    ("target.period", target({"kind": "sawtooth", "period": 1e-9})),  # too many pieces
    ("target.frequency", target({"kind": "sine", "frequency": 1e9})),  # too many oscillations for d = 1
    ("target.terms", target({"kind": "sum", "terms": []})),
    ("target.terms[1].kind", target({"kind": "sum", "terms": [{"kind": "abs"}, {"kind": "cosine"}]})),
    ("target.terms[1]", target({"kind": "sum", "terms": [{"kind": "abs"}, {"kind": "affine", "slope": [1.0, 2.0]}]})),
    ("target.components[0]", changed(target({"kind": "stack", "components": [
        {"kind": "affine", "slope": [1.0, 2.0]}, {"kind": "abs"}]}), ("network", "output_dim"), 2)),
    ("target.components[1].scael", target({"kind": "stack", "components": [{"kind": "abs"}, {"kind": "abs", "scael": 1}]})),
    # d = 1 only kinds with d > 1, and d > 1 shapes
    ("target.kind", target({"kind": "hat", "center": 0.5, "half_width": 0.1}, BASE_2D)),
    ("target.kind", target({"kind": "piecewise_linear", "knots": [0.0, 1.0], "values": [0.0, 1.0]}, BASE_2D)),
    ("target.kind", target({"kind": "abs"}, BASE_2D)),
    # a polynomial's coefficient list is d = 1 syntax; in d > 1 its monomials are given as terms
    ("target.terms[0].coefficients",
     target({"kind": "sum", "terms": [{"kind": "polynomial", "coefficients": [1.0]}]}, BASE_2D)),
    ("target.frequency", target({"kind": "sine", "frequency": [1.0, 2.0, 3.0]}, BASE_2D)),
    ("target.frequency", target({"kind": "sine", "frequency": 1.0}, BASE_2D)),
    ("target.slope", target({"kind": "affine", "slope": 1.0}, BASE_2D)),
    ("target.slope", target({"kind": "affine", "slope": [[1.0, 2.0, 3.0]]}, BASE_2D)),
    # densities
    # a gaussian law has no domain: one given with it would be silently ignored, so it is refused
    ("domain", measure({"kind": "gaussian"})),
    ("measure.kind", measure({"kind": "triangular"}, BASE_2D)),
    ("measure.kind", measure({"kind": "polynomial_density", "coefficients": [[1.0]]})),
    ("measure", changed(BASE_2D, ("measure",), ...)),
    ("measure.mode", measure({"kind": "triangular", "mode": 1.5})),
    ("measure.low", measure({"kind": "uniform", "low": 0.0})),
    ("measure.coefficients", measure({"kind": "piecewise_polynomial", "knots": [0.0, 1.0], "coefficients": [[2.0]]})),
    ("measure.coefficients", measure({"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0],
                                      "coefficients": [[1.0], [1.0 + 1e-9]]})),
    # integrates to one (-1 + 4/2 = 1) but is negative near 0
    ("measure.coefficients[0]", measure({"kind": "piecewise_polynomial", "knots": [0.0, 1.0], "coefficients": [[-1.0, 4.0]]})),
    # integrates to one (11/3 - 8 + 16/3), positive at both ends, negative only inside (x = 1/2: -1/3):
    # the check must look at the interior critical point, not only at the knots
    ("measure.coefficients[0]", measure({"kind": "piecewise_polynomial", "knots": [0.0, 1.0],
                                         "coefficients": [[11.0 / 3.0, -16.0, 16.0]]})),
    ("measure.knots", measure({"kind": "piecewise_polynomial", "knots": [0.0, 0.9], "coefficients": [[1 / 0.9]]})),
    ("measure.coefficients", measure({"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0], "coefficients": [[1.0]]})),
    # discrete
    ("measure.n_points", measure({"kind": "qmc", "n_points": 0}, BASE_2D)),
    ("measure.n_points", measure({"kind": "qmc", "n_points": 10.0}, BASE_2D)),
    ("measure.method", measure({"kind": "qmc", "n_points": 8, "method": "lattice"}, BASE_2D)),
    ("measure.scrambled", measure({"kind": "qmc", "n_points": 8, "scrambled": "yes"}, BASE_2D)),
    ("measure.seed", measure({"kind": "qmc", "n_points": 8, "seed": -1}, BASE_2D)),
    ("measure.n_per_dim", measure({"kind": "gauss_legendre", "n_per_dim": 0}, BASE_2D)),
    ("measure.n_per_dim", measure({"kind": "gauss_legendre", "n_per_dim": 10_000}, BASE_2D)),
    ("measure.weights", measure({"kind": "data", "points": [[0.1, 0.2], [0.3, 0.4]], "weights": [0.5, 0.6]}, BASE_2D)),
    ("measure.weights[0]", measure({"kind": "data", "points": [[0.1, 0.2], [0.3, 0.4]], "weights": [-0.5, 1.5]}, BASE_2D)),
    ("measure.weights", measure({"kind": "data", "points": [[0.1, 0.2], [0.3, 0.4]], "weights": [1.0]}, BASE_2D)),
    ("measure.points[1]", measure({"kind": "data", "points": [[0.1, 0.2], [0.3, 1.4]]}, BASE_2D)),
    ("measure.points", measure({"kind": "data", "points": [[0.1, 0.2, 0.3]]}, BASE_2D)),
    ("measure.points", measure({"kind": "data", "points": []})),
]


def test_the_bad_table_is_large_enough():
    assert len(BAD) >= 12
    # the interior-minimum case really integrates to one and is negative at 1/2 (else it tests nothing)
    c = BAD[[i for i, (k, cfg) in enumerate(BAD) if k == "measure.coefficients[0]"][1]][1]["measure"]["coefficients"][0]
    assert abs(c[0] + c[1] / 2 + c[2] / 3 - 1.0) < 1e-15
    assert c[0] + c[1] * 0.5 + c[2] * 0.25 < 0 and c[0] > 0 and c[0] + c[1] + c[2] > 0


@pytest.fixture
def no_work(monkeypatch):
    """Make every piece of post-validation work fail loudly: validation must finish before any of it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before validation finished")

    monkeypatch.setattr(problem_module, "piecewise_table", forbidden)
    monkeypatch.setattr(problem_module, "discrete_measure", forbidden)
    monkeypatch.setattr(problem_module.Problem, "_exact_kernel", forbidden)


@pytest.mark.parametrize("key, config", BAD, ids=[f"{i}:{k}" for i, (k, _) in enumerate(BAD)])
def test_bad_config_raises_config_error_naming_the_key(key, config, no_work):
    with pytest.raises(ConfigError) as info:
        Problem.from_config(config)
    message = str(info.value)
    assert message.startswith(key + ": "), message
    assert isinstance(info.value, ValueError)


def test_good_base_configs_pass():
    """The bases of the table above are valid (so each bad case fails for its own reason): they build the
    problem they describe, and their normalized form builds the same problem again."""
    one = Problem.from_config(BASE)
    assert (one.input_dim, one.width, one.output_dim, one.n_params) == (1, 8, 1, 3 * 8 + 1)
    assert one.table is not None and one.discrete_measure is None  # exact d = 1 path
    # f(x) = 2x - 1: the zero network's risk is E f^2 = int_0^1 (2x - 1)^2 dx = 1/3
    assert one.risk(np.zeros(one.n_params)) == pytest.approx(1 / 3, rel=1e-14)
    two = Problem.from_config(BASE_2D)
    assert (two.input_dim, two.width, two.n_params) == (2, 4, 2 * 4 + 4 + 4 + 1)
    assert two.table is None and two.discrete_measure.points.shape == (64, 2)
    for problem in (one, two):
        again = Problem.from_config(problem.config)
        assert again.config == problem.config


def test_the_caller_mapping_is_not_modified():
    config = copy.deepcopy(BASE)
    del config["measure"]
    before = copy.deepcopy(config)
    problem = Problem.from_config(config)
    assert config == before
    assert problem.config["measure"] == {"kind": "uniform"}


def test_config_error_messages_name_nested_keys_for_scenarios():
    # scenario.py prefixes "<scenario>.problem." to the message: it must start with the key itself
    with pytest.raises(ConfigError, match=r"^network\.width: must be an integer >= 1, got 0$"):
        Problem.from_config(changed(BASE, ("network", "width"), 0))


def test_bad_backend():
    with pytest.raises(ValueError, match="^backend: "):
        Problem.from_config(BASE, backend="cuda")
    problem = Problem.from_config(BASE)
    with pytest.raises(ValueError, match="^backend: "):
        problem.backend = "fortran"


@pytest.mark.parametrize("base", [BASE, BASE_2D], ids=["d1", "d2"])
@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda n: np.zeros(n - 1), "theta: last axis has length"),
        (lambda n: np.zeros((3, n + 1)), "theta: last axis has length"),
        (lambda n: np.float64(1.0), "theta: must have shape"),
        (lambda n: np.where(np.arange(n) == 2, np.nan, 0.0), "theta: entries must be finite"),
        (lambda n: np.full((2, n), np.inf), "theta: entries must be finite"),
        (lambda n: [["a"] * n], "theta: must be an array of numbers"),
    ],
)
def test_bad_theta_raises_value_error_naming_theta(base, bad, message, monkeypatch):
    problem = Problem.from_config(base)

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran on bad theta")

    monkeypatch.setattr(problem_module.Problem, "_exact_kernel", forbidden)
    monkeypatch.setattr(problem_module.discrete, "risk_and_gradient", forbidden)
    for method in (problem.risk, problem.generalized_gradient, problem.risk_and_gradient):
        with pytest.raises(ValueError, match="^" + message):
            method(bad(problem.n_params))
    with pytest.raises(ValueError, match="^" + message):
        problem.realization(bad(problem.n_params), np.full((3, problem.input_dim), 0.5))


def test_bad_points_raise_value_error_naming_x():
    p1 = Problem.from_config(BASE)
    p2 = Problem.from_config(BASE_2D)
    theta1, theta2 = np.zeros(p1.n_params), np.zeros(p2.n_params)
    for problem, theta, x in (
        (p1, theta1, np.zeros((3, 2))),
        (p1, theta1, np.float64(0.5)),
        (p1, theta1, np.array([0.5, np.nan])),
        (p2, theta2, np.zeros(3)),
        (p2, theta2, np.zeros((3, 3))),
    ):
        with pytest.raises(ValueError, match="^x: "):
            problem.realization(theta, x)
        with pytest.raises(ValueError, match="^x: "):
            problem.target(x)


_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scenarios"],
    "properties": {
        "scenarios": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z]+$", "description": "scenario name"},
                    "batch_size": {"type": "integer", "minimum": 1},
                },
            },
        }
    },
}


@pytest.mark.parametrize(
    "config, prefix",
    [
        ({"scenarios": [{"name": "ok"}, {"name": "Bad Name"}]}, "scenarios[1].name: 'Bad Name' does not match"),
        ({"scenarios": [{"name": "ok", "batch_size": 0}]}, "scenarios[0].batch_size: 0 is less than the minimum"),
        ({"scenarios": [{"name": "ok", "typo": 1}]}, "scenarios[0]: Additional properties are not allowed ('typo'"),
        ({"scenarios": []}, "scenarios: [] should be non-empty"),
        ({}, "<top level>: 'scenarios' is a required property"),
    ],
)
def test_schema_errors_name_the_key_path(config, prefix):
    from reluflow.model.validation import check_schema

    with pytest.raises(ConfigError) as err:
        check_schema(config, _SCHEMA)
    assert str(err.value).startswith(prefix), str(err.value)


def test_schema_error_carries_the_schema_description():
    from reluflow.model.validation import check_schema

    with pytest.raises(ConfigError, match=r"\(scenario name\)$"):
        check_schema({"scenarios": [{"name": "X"}]}, _SCHEMA)
    check_schema({"scenarios": [{"name": "ok", "batch_size": 3}]}, _SCHEMA)  # valid: no error
