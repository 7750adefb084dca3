"""The ``balanced`` and ``teacher`` initialization schemes: what each one promises at t = 0, independence of the
batching, and configuration errors that name the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from reluflow import Problem
from reluflow.experiments.initialization import draw_initializations, validate_init
from reluflow.model.validation import ConfigError, check_schema

ROOT = Path(__file__).resolve().parents[1]
EPS = np.finfo(float).eps
TEACHER = {"kind": "relu_network", "inner_weights": [[1.0, -0.5], [-2.0, 1.0]], "inner_biases": [0.3, 0.8],
           "outer_weights": [[1.5, -0.7], [0.2, 1.0]], "outer_bias": [0.1, -0.4]}


def problem_2d(width=2, target=TEACHER, k=2):
    return Problem.from_config({"network": {"input_dim": 2, "width": width, "output_dim": k}, "domain": [-1.0, 1.0],
                                "target": target, "measure": {"kind": "qmc", "n_points": 64}})


def draw(problem, raw, runs=np.arange(6), case="case"):
    return draw_initializations(problem, validate_init("init", raw, problem), "scn", case, runs)


def teacher_vector():
    layout = problem_2d().layout
    theta = np.empty(layout.n_params)
    theta[layout.W] = np.ravel(TEACHER["inner_weights"])
    theta[layout.b] = TEACHER["inner_biases"]
    theta[layout.V] = np.ravel(TEACHER["outer_weights"])
    theta[layout.c] = TEACHER["outer_bias"]
    return theta


@pytest.mark.parametrize("d, k", [(1, 1), (2, 2), (3, 1)])
def test_balanced_neurons_conserve_zero(d, k):
    """|V[:, i]|^2 - |w_i|^2 - b_i^2 = 0: both sides are sums of d + 1 (k) squares, rescaled by one quotient of
    square roots, so they agree to a few roundings: 8 eps of |u_i|^2."""
    target = {"kind": "sine", "frequency": [1.0] * d} if k == 1 else {"kind": "affine", "slope": np.ones((k, d)).tolist()}
    problem = Problem.from_config({"network": {"input_dim": d, "width": 5, "output_dim": k}, "target": target,
                                   "measure": {"kind": "qmc", "n_points": 8}})
    theta, meta = draw(problem, {"scheme": "balanced", "n_runs": 6, "scale": 0.5, "scale_max": 2.0})
    layout = problem.layout
    u2 = np.sum(theta[:, layout.neuron_blocks()] ** 2, axis=-1)
    v2 = np.sum(theta[:, layout.outer_weights()] ** 2, axis=-1)
    assert np.all(np.abs(v2 - u2) <= 8 * EPS * u2)
    assert np.all((meta["init_scale"] >= 0.5) & (meta["init_scale"] <= 2.0)) and np.all(meta["init_scheme"] == "balanced")


def test_balanced_is_the_gaussian_draw_with_rescaled_outer_weights():
    problem = problem_2d(width=4)
    settings = {"n_runs": 6, "scale": 0.5, "scale_max": 2.0}
    gaussian, meta_g = draw(problem, {"scheme": "gaussian", **settings})
    balanced, meta_b = draw(problem, {"scheme": "balanced", **settings})
    layout = problem.layout
    same = np.ones(layout.n_params, dtype=bool)
    same[layout.V] = False
    np.testing.assert_array_equal(balanced[:, same], gaussian[:, same])
    np.testing.assert_array_equal(meta_b["init_scale"], meta_g["init_scale"])
    vg, vb = gaussian[:, layout.outer_weights()], balanced[:, layout.outer_weights()]
    np.testing.assert_allclose(vb / np.linalg.norm(vb, axis=-1, keepdims=True),
                               vg / np.linalg.norm(vg, axis=-1, keepdims=True), rtol=0, atol=4 * EPS)


def test_teacher_with_no_perturbation_is_the_teacher():
    problem = problem_2d()
    theta, meta = draw(problem, {"scheme": "teacher", "n_runs": 6, "perturbation": 0})
    np.testing.assert_array_equal(theta, np.broadcast_to(teacher_vector(), theta.shape))
    assert np.all(problem.risk(theta) == 0.0) and np.all(meta["init_scale"] == 0.0)


def test_teacher_keeps_its_neurons_and_draws_small_extra_ones():
    wide = problem_2d(width=5)
    theta, _ = draw(wide, {"scheme": "teacher", "n_runs": 6, "perturbation": 0, "scale": 1e-3})
    layout, teacher = wide.layout, teacher_vector()
    narrow = problem_2d().layout
    W = theta[:, layout.W].reshape(6, 5, 2)
    np.testing.assert_array_equal(W[:, :2].reshape(6, -1), np.broadcast_to(teacher[narrow.W], (6, 4)))
    np.testing.assert_array_equal(theta[:, layout.b][:, :2], np.broadcast_to(teacher[narrow.b], (6, 2)))
    V = theta[:, layout.V].reshape(6, 2, 5)
    np.testing.assert_array_equal(V[:, :, :2].reshape(6, -1), np.broadcast_to(teacher[narrow.V], (6, 4)))
    np.testing.assert_array_equal(theta[:, layout.c], np.broadcast_to(teacher[narrow.c], (6, 2)))
    extra = np.concatenate([W[:, 2:].reshape(6, -1), theta[:, layout.b][:, 2:], V[:, :, 2:].reshape(6, -1)], axis=1)
    assert 0 < np.max(np.abs(extra)) < 5e-3  # N(0, 1e-6): 90 draws, none beyond 5 standard deviations
    # the extra neurons change N by O(scale^2) = 1e-6 at most, so the risk is O(1e-12)
    assert np.all(wide.risk(theta) < 1e-10)


def test_teacher_perturbation_has_the_drawn_relative_size():
    problem = problem_2d()
    theta, meta = draw(problem, {"scheme": "teacher", "n_runs": 6, "perturbation": [1e-4, 1e-1]})
    teacher = teacher_vector()
    relative = np.linalg.norm(theta - teacher, axis=-1) / np.linalg.norm(teacher)
    np.testing.assert_allclose(relative, meta["init_scale"], rtol=1e-10)
    assert np.all((meta["init_scale"] >= 1e-4) & (meta["init_scale"] <= 1e-1))
    assert len(np.unique(meta["init_scale"])) == 6
    fixed, meta_fixed = draw(problem, {"scheme": "teacher", "n_runs": 6, "perturbation": 1e-3})
    assert np.all(meta_fixed["init_scale"] == 1e-3)


@pytest.mark.parametrize("raw", [
    {"scheme": "balanced", "n_runs": 10, "scale": 1.0, "scale_max": 3.0},
    {"scheme": "teacher", "n_runs": 10, "perturbation": [1e-3, 1.0], "scale": 0.1},
])
def test_initializations_do_not_depend_on_the_batching(raw):
    problem = problem_2d(width=4)
    whole, _ = draw(problem, raw, np.arange(10))
    parts = [draw(problem, raw, chunk)[0] for chunk in (np.arange(0, 3), np.arange(3, 6), np.arange(6, 10))]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    singles = [draw(problem, raw, [r])[0][0] for r in (7, 2)]
    np.testing.assert_array_equal(whole[[7, 2]], np.array(singles))
    assert not np.any(np.all(whole == draw(problem, raw, np.arange(10), case="other")[0], axis=1))


BAD = [
    ("init.scheme", problem_2d, {"scheme": "teachr", "n_runs": 2}),
    ("init.scheme", lambda: problem_2d(width=1), {"scheme": "teacher", "n_runs": 2}),  # width < H_t = 2
    ("init.scheme", lambda: problem_2d(target={"kind": "affine", "slope": [1.0, 2.0]}, k=1),
     {"scheme": "teacher", "n_runs": 2}),
    ("init.scale", problem_2d, {"scheme": "teacher", "n_runs": 2, "scale": 0.0}),
    ("init.scale", problem_2d, {"scheme": "balanced", "n_runs": 2, "scale": -1.0}),
    ("init.scale_max", problem_2d, {"scheme": "balanced", "n_runs": 2, "scale": 1.0, "scale_max": 0.5}),
    ("init.perturbation", problem_2d, {"scheme": "teacher", "n_runs": 2, "perturbation": -1e-3}),
    ("init.perturbation", problem_2d, {"scheme": "teacher", "n_runs": 2, "perturbation": [1e-3, 1e-4]}),
    ("init.perturbation", problem_2d, {"scheme": "teacher", "n_runs": 2, "perturbation": [1e-3, 1e-2, 1e-1]}),
    ("init.perturbation[0]", problem_2d, {"scheme": "teacher", "n_runs": 2, "perturbation": [0.0, 1e-2]}),
    ("init.perturbation", problem_2d, {"scheme": "teacher", "n_runs": 2, "perturbation": "small"}),
    ("init.weight_scale", problem_2d, {"scheme": "teacher", "n_runs": 2, "weight_scale": 1.0}),
    ("init.perturbation", problem_2d, {"scheme": "balanced", "n_runs": 2, "perturbation": 0.1}),
]


@pytest.mark.parametrize("key, make, raw", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_bad_init_names_the_key(key, make, raw):
    with pytest.raises(ConfigError, match="^" + key.replace("[", r"\[").replace("]", r"\]") + ": "):
        validate_init("init", raw, make())


def test_new_schemes_pass_the_workflow_schema():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    scenario = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())["scenarios"][0]
    scenario = {key: scenario[key] for key in ("name", "problem", "flows")}
    for init in ({"scheme": "teacher", "n_runs": 2, "perturbation": 0.0}, {"scheme": "balanced", "n_runs": 2}):
        check_schema({"scenarios": [dict(scenario, init=init)]}, schema)
    with pytest.raises(ConfigError, match=r"^scenarios\[0\]\.init\.scheme: 'teachr' is not one of"):
        check_schema({"scenarios": [dict(scenario, init={"scheme": "teachr", "n_runs": 2})]}, schema)
