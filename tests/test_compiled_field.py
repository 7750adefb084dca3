"""The compiled field (:mod:`reluflow.dynamics.compiled_field`): a step's stages with ``-G`` evaluated inside one
compiled call, and the whole Rosenbrock loop compiled (``rodas4``, and ``auto`` for each run once it is stiff), must give
the numbers of the solvers' own Python loops bit for bit (the same kernels, the same operations in the same
order), for every solver that uses them, on batches whose runs stop at different times and for every reason
(finished, converged, diverged, out of steps), take rejected steps and fall back from Cholesky to LU; only d = 1
laws with a density on the compiled backend have one."""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics.flows import NormalizedFlow, StandardFlow
from reluflow.dynamics.solvers.explicit import solve_explicit
from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock
from reluflow.dynamics.solvers.switching import solve_switching
from reluflow.simulate import simulate

FIELDS = ("y", "energy", "n_steps", "n_rejected", "status", "t_final", "n_rhs_run", "n_jac_run")

PROBLEMS = {
    "affine, uniform": {"network": {"width": 3}, "domain": [0.0, 1.0],
                        "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}, "measure": {"kind": "uniform"}},
    "sine and affine, triangular density, k = 2": {
        "network": {"width": 5, "output_dim": 2}, "domain": [0.0, 1.0],
        "target": {"kind": "stack", "components": [
            {"kind": "sine", "amplitude": 1.0, "frequency": 6.0, "phase": 0.3},
            {"kind": "affine", "slope": -1.0, "intercept": 0.5}]},
        "measure": {"kind": "triangular", "mode": 0.3},
    },
}


def assert_same_bits(a, b):
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert (a.n_rhs, a.n_jac) == (b.n_rhs, b.n_jac)
    assert a.info.get("stiff_from_step") == b.info.get("stiff_from_step")


def solve(solver: str, flow, y0, times, field, progress=None):
    common = dict(rtol=1e-9, atol=1e-11, gtol=1e-9, progress=progress)
    if solver == "dopri5":
        return solve_explicit(flow.rhs, y0, times, field=field, **common)
    stiff = dict(symmetric_jacobian=True, field=field)
    if solver == "rodas4":
        return solve_rosenbrock(flow.rhs, flow.jac, y0, times, **stiff, **common)
    return solve_switching(flow.rhs, flow.jac, y0, times, **stiff, **common)


@pytest.mark.parametrize("solver", ["dopri5", "rodas4", "auto"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_compiled_stages_give_the_solvers_own_numbers_bit_for_bit(name, solver):
    problem = Problem.from_config(PROBLEMS[name])
    flow = StandardFlow(problem)
    field = flow.compiled()
    assert field is not None
    rng = np.random.default_rng(11)
    y0 = rng.standard_normal((6, problem.n_params)) * np.array([0.3, 1.0, 2.0, 1.0, 3.0, 0.5])[:, None]
    y0[2] = 0.0  # every neuron dead at its kink: G = 0 in the neurons' blocks, only the bias moves
    times = [0.0, 0.5, 3.0, 20.0] if solver == "dopri5" else [0.0, 0.5, 1e2, 1e5]
    plain = solve(solver, flow, y0, times, None)
    fractions = []
    compiled = solve(solver, flow, y0, times, field, progress=fractions.append)
    assert_same_bits(plain, compiled)
    assert np.all(compiled.status >= 0)
    assert compiled.n_rejected[:, -1].sum() > 0  # rejected steps were taken and redone
    assert fractions and fractions[-1] == 1.0
    if solver != "dopri5":
        assert compiled.n_jac > 0
    if solver == "auto":
        assert compiled.info["stiff_from_step"]  # runs switched: the compiled loop took over


@pytest.mark.parametrize("symmetric", [True, False], ids=["cholesky", "lu"])
def test_compiled_rosenbrock_loop_stops_runs_for_every_reason_as_the_python_loop(symmetric):
    """Converged (gtol), diverged (a small divergence bound), out of steps (max_steps) and finished runs in one
    batch; with ``symmetric_jacobian=False`` every system goes through the per-row LU."""
    problem = Problem.from_config(PROBLEMS["affine, uniform"])
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(7).standard_normal((10, problem.n_params))
    # measured: with these settings one run passes |theta| = 3.45 after 38 steps, four converge, three run out
    # of steps and one reaches t = 100
    kwargs = dict(symmetric_jacobian=symmetric, rtol=1e-8, atol=1e-10, gtol=1e-7, divergence_bound=3.45,
                  max_steps=400)
    times = np.concatenate([[0.0], np.logspace(-2, 2, 30)])
    plain = solve_rosenbrock(flow.rhs, flow.jac, y0, times, **kwargs)
    compiled = solve_rosenbrock(flow.rhs, flow.jac, y0, times, field=flow.compiled(), **kwargs)
    assert_same_bits(plain, compiled)
    assert set(compiled.status.tolist()) == {0, 1, 2, 3}
    assert np.all(compiled.n_steps[:, -1] > 0)  # every run stopped inside the loop, none at t = 0


def test_rosenbrock_with_cholesky_falling_back_to_lu_gives_the_same_bits():
    """Large first steps from far-off states: ``sigma I - J`` is indefinite in some rows (LU there)."""
    problem = Problem.from_config(PROBLEMS["affine, uniform"])
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(5).standard_normal((8, problem.n_params)) * 4.0
    kwargs = dict(symmetric_jacobian=True, rtol=1e-6, atol=1e-8, h0=5.0)
    plain = solve_rosenbrock(flow.rhs, flow.jac, y0, [0.0, 10.0, 1e4], **kwargs)
    compiled = solve_rosenbrock(flow.rhs, flow.jac, y0, [0.0, 10.0, 1e4], field=flow.compiled(), **kwargs)
    assert_same_bits(plain, compiled)


def test_simulate_uses_the_compiled_field_and_gets_the_numbers_of_the_plain_loop():
    problem = Problem.from_config(PROBLEMS["affine, uniform"])
    theta0 = np.random.default_rng(2).standard_normal((4, problem.n_params))
    ds = simulate(problem, theta0, flow="standard", solver="rodas4", t_max=1e3, rtol=1e-8, atol=1e-10)
    flow = StandardFlow(problem)
    times = ds["time"].values
    plain = solve_rosenbrock(flow.rhs, flow.jac, theta0, times, symmetric_jacobian=True, rtol=1e-8, atol=1e-10)
    assert np.array_equal(ds["theta"].values, plain.y)


def test_only_d1_densities_on_the_compiled_backend_have_a_compiled_field():
    d1 = Problem.from_config(PROBLEMS["affine, uniform"])
    assert StandardFlow(d1).compiled() is not None
    assert not hasattr(NormalizedFlow(d1), "compiled")  # the normalized field takes the general path
    d1.backend = "numpy"
    assert StandardFlow(d1).compiled() is None
    gaussian = Problem.from_config({"network": {"input_dim": 2, "width": 2},
                                    "target": {"kind": "affine", "slope": [1.0, -1.0], "intercept": 0.0},
                                    "measure": {"kind": "gaussian"}})
    assert StandardFlow(gaussian).compiled() is None
    discrete = Problem.from_config({"network": {"width": 2}, "domain": [0.0, 1.0],
                                    "target": {"kind": "affine", "slope": 1.0, "intercept": 0.0},
                                    "measure": {"kind": "data", "points": [0.1, 0.5, 0.9], "weights": [0.25, 0.5, 0.25]}})
    assert StandardFlow(discrete).compiled() is None


@pytest.mark.parametrize("solver", ["rodas4", "auto"])
def test_a_runs_numbers_in_the_compiled_loop_do_not_depend_on_its_batch(solver):
    """The pool reorders and compacts runs and hands them over at different steps: a run's numbers must still be
    those it has alone, and in the batch in reverse order."""
    problem = Problem.from_config(PROBLEMS["sine and affine, triangular density, k = 2"])
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(4).standard_normal((5, problem.n_params))
    times = [0.0, 0.5, 1e2, 1e5]
    batch = solve(solver, flow, y0, times, flow.compiled())
    reverse = solve(solver, flow, y0[::-1].copy(), times, flow.compiled())
    for r in range(5):
        alone = solve(solver, flow, y0[r : r + 1], times, flow.compiled())
        for name in ("y", "energy", "n_steps", "n_rejected", "status", "n_rhs_run", "n_jac_run"):
            assert np.array_equal(getattr(alone, name)[0], getattr(batch, name)[r], equal_nan=True), (r, name)
            assert np.array_equal(getattr(reverse, name)[4 - r], getattr(batch, name)[r], equal_nan=True), (r, name)
