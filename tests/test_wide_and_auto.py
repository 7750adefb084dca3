"""The stiff step in O(H log H) inside the solvers, the per-run switching ``auto``, and the per-run counters.

- Rodas4 with the structured factorization of ``sigma I - J`` (no dense Jacobian) at H = 256 against DOP853 at
  rtol 1e-12, both flows; and at a width just above the crossover against the dense path of the same method;
- ``auto``: a run's numbers are bitwise independent of the batch (runs in both modes at once), it agrees with
  ``dopri5`` bit for bit until it switches, and it switches once a run's steps are limited by stability;
- ``n_rhs`` and ``n_jac`` per run: they add up to the calls actually made, and land in the trajectory file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics.flows import NormalizedFlow, StandardFlow
from reluflow.dynamics.solvers.explicit import solve_explicit
from reluflow.dynamics.solvers.rosenbrock import RosenbrockMethod, solve_rosenbrock
from reluflow.dynamics.solvers.switching import solve_switching
from reluflow.simulate import simulate

SINE = {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.0}


def sine_problem(width: int) -> Problem:
    return Problem.from_config({"network": {"width": width}, "target": SINE})


@pytest.mark.parametrize("flow_class", [StandardFlow, NormalizedFlow], ids=["standard", "normalized"])
def test_structured_rodas4_at_h256_matches_a_high_accuracy_explicit_reference(flow_class):
    """H = 256 (n = 769): Rodas4 at rtol 1e-9 through the structured factorization, against DOP853 at rtol 1e-12,
    on [0, 2] (the fast transient and beyond). Measured: the two differ by 5e-10 at |theta| ~ 3 to 5, as much as
    DOP853 at rtol 1e-12 differs from itself at 1e-13; the bound 1e-6 leaves three decades. A wrong term of W
    makes Rodas4 a W-method of order 1 to 2, which its error control answers with many more steps: it takes
    about half of DOP853's here, and must take fewer."""
    problem = sine_problem(256)
    flow = flow_class(problem)
    assert flow.structured
    y0 = flow.prepare(np.random.default_rng(3).standard_normal((2, problem.n_params)))
    post = flow.retract if flow_class is NormalizedFlow else None
    times = [0.0, 0.1, 2.0]
    reference = solve_explicit(flow.rhs, y0, times, tableau="dop853", rtol=1e-12, atol=1e-14, post_step=post)
    stiff = solve_rosenbrock(flow.rhs, None, y0, times, factorization=flow.shifted_factorization(), rtol=1e-9,
                             atol=1e-12, post_step=post)
    assert stiff.info["linear_algebra"] == "structured"
    assert np.all(stiff.status == 0) and np.all(reference.status == 0)
    assert np.max(np.abs(stiff.y - reference.y)) < 1e-6
    energy_gap = np.abs(stiff.energy[:, -1] - reference.energy[:, -1])
    assert np.all(energy_gap < 1e-6 * np.maximum(1.0, reference.energy[:, -1]))
    assert stiff.n_jac == stiff.n_steps[:, -1].sum() + stiff.n_rejected[:, -1].sum()  # one factorization per attempt
    assert np.all(stiff.n_steps[:, -1] < reference.n_steps[:, -1])


def test_structured_and_dense_paths_give_the_same_trajectory_to_the_tolerance():
    """Just above the crossover (H = 24) both linear algebras run the same Rodas4: the step sequences see
    solutions of W u = r that differ by rounding only, so the trajectories agree to far below rtol."""
    problem = sine_problem(24)
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(4).standard_normal((3, problem.n_params))
    times = [0.0, 1.0, 100.0]
    dense = solve_rosenbrock(flow.rhs, flow.jac, y0, times, rtol=1e-10, atol=1e-12)
    structured = solve_rosenbrock(flow.rhs, None, y0, times, factorization=flow.shifted_factorization(),
                                  rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(dense.y - structured.y)) < 1e-8 * max(1.0, np.max(np.abs(dense.y)))


def test_the_method_keeps_no_dense_jacobian_on_the_structured_path():
    problem = sine_problem(32)
    flow = StandardFlow(problem)
    method = RosenbrockMethod(solve_rosenbrock.__globals__["RODAS4"], factorization=flow.shifted_factorization())
    assert method.memory(8, problem.n_params) == {}
    with pytest.raises(ValueError, match="jac, factorization"):
        RosenbrockMethod(solve_rosenbrock.__globals__["RODAS4"])


@pytest.mark.parametrize("width", [3, 24])
def test_auto_is_bitwise_independent_of_the_batch(width):
    """Runs that switch at different steps (so that batches hold runs in both modes) give the same bits alone."""
    problem = sine_problem(width)
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(5).standard_normal((4, problem.n_params))
    fact = flow.shifted_factorization() if flow.structured else None
    times = [0.0, 1.0, 30.0, 1e3]
    batch = solve_switching(flow.rhs, flow.jac, y0, times, factorization=fact)
    switched = batch.info["stiff_from_step"]
    assert len(set(switched.values())) > 1  # the batch was mixed for a while
    for r in range(4):
        alone = solve_switching(flow.rhs, flow.jac, y0[r : r + 1], times, factorization=fact)
        for name in ("y", "energy", "n_steps", "n_rejected", "n_rhs_run", "n_jac_run"):
            assert np.array_equal(getattr(alone, name)[0], getattr(batch, name)[r]), (r, name)
        assert alone.info["stiff_from_step"].get("0") == switched.get(str(r))


def test_auto_is_dopri5_until_it_switches_and_then_stiff():
    """Before the switch a run's steps are those of dopri5, bit for bit; at t = 1e3 every run has switched
    (the flows have settled and Dormand-Prince is held at its stability boundary), and the cost to t = 1e6 is
    a few times that to t = 1e3 (Rodas4's log t), not 1000 times."""
    problem = sine_problem(4)
    flow = StandardFlow(problem)
    y0 = np.random.default_rng(6).standard_normal((3, problem.n_params))
    short = solve_switching(flow.rhs, flow.jac, y0, [0.0, 1e-2, 1e-1])
    explicit = solve_explicit(flow.rhs, y0, [0.0, 1e-2, 1e-1])
    assert short.info["stiff_from_step"] == {}
    assert np.array_equal(short.y, explicit.y) and np.array_equal(short.energy, explicit.energy)
    long = solve_switching(flow.rhs, flow.jac, y0, [0.0, 1e3, 1e6])
    assert sorted(long.info["stiff_from_step"]) == ["0", "1", "2"]
    assert np.all(long.status == 0)
    assert long.n_steps[:, 2].sum() < 3 * long.n_steps[:, 1].sum()


class Counting:
    """A vector field whose calls are counted per run (rows are identified by their first coordinate)."""

    def __init__(self, flow, y0):
        self.flow = flow
        self.tags = {float(v): r for r, v in enumerate(y0[:, 0])}
        self.rhs_rows = 0
        self.jac_rows = 0

    def rhs(self, y):
        self.rhs_rows += y.shape[0]
        return self.flow.rhs(y)

    def jac(self, y):
        self.jac_rows += y.shape[0]
        return self.flow.jac(y)


@pytest.mark.parametrize("solver", ["dopri5", "rodas4", "auto"])
def test_per_run_counts_add_up_to_the_calls(solver):
    problem = sine_problem(3)
    y0 = np.random.default_rng(7).standard_normal((3, problem.n_params))
    counting = Counting(StandardFlow(problem), y0)
    times = [0.0, 10.0, 1e3]
    if solver == "dopri5":
        result = solve_explicit(counting.rhs, y0, times)
    elif solver == "rodas4":
        result = solve_rosenbrock(counting.rhs, counting.jac, y0, times)
    else:
        result = solve_switching(counting.rhs, counting.jac, y0, times)
    assert result.n_rhs_run.sum() == result.n_rhs == counting.rhs_rows
    assert result.n_jac_run.sum() == result.n_jac == counting.jac_rows
    assert np.all(result.n_rhs_run > 0)


@pytest.mark.parametrize(("flow", "solver"), [("standard", "lsoda"), ("normalized", "auto")])
def test_counts_are_in_the_trajectory_file(flow, solver):
    """``solver: auto`` (LSODA's pair for the standard flow, the Dormand-Prince / Rodas4 pair for the normalized
    one): the evaluations per run are in the file, and a run evaluated Jacobians exactly when it turned stiff."""
    problem = sine_problem(2)
    theta0 = np.random.default_rng(8).standard_normal((3, problem.n_params))
    ds = simulate(problem, theta0, flow=flow, t_max=100.0, certify=False)
    assert ds["n_rhs"].dims == ("run",) and ds["n_jac"].dims == ("run",)
    assert np.all(ds["n_rhs"].values > 0)
    info = json.loads(ds.attrs["solver_info_json"])
    assert info["solver"] == solver
    stiff_runs = {int(r) for r in info["stiff_from_step"]}
    assert all((ds["n_jac"].values[r] > 0) == (r in stiff_runs) for r in range(3))


@pytest.mark.parametrize(("m", "n", "lockstep"), [(7, 13, True), (3, 49, False), (9, 49, True), (2, 97, False)])
def test_dense_symmetric_system_cholesky_with_lu_fallback_per_row(m, n, lockstep):
    """sigma I - J for symmetric J: Cholesky (in lockstep or row by row, by the batch's size) where positive
    definite, LU elsewhere; the solutions are numpy's to rounding, and a row's bits do not depend on the other rows
    of the batch (alone, a row is factorized on its own: the other layout whenever the batch is in lockstep)."""
    from reluflow.dynamics.solvers.rosenbrock import DenseShiftedSystem, cholesky_in_lockstep

    assert cholesky_in_lockstep(m, n) == lockstep and not cholesky_in_lockstep(1, n)
    rng = np.random.default_rng(9)
    a = rng.standard_normal((m, n, n))
    jac = -(a @ a.transpose(0, 2, 1)) / n  # -SPD: W = sigma I + SPD is positive definite
    indefinite = [1, m - 1]
    jac[indefinite] *= -1.0  # W indefinite for small sigma: these rows fall back to LU
    sigma = np.full(m, 0.5)
    system = DenseShiftedSystem(symmetric=True)
    assert system.factor(jac, sigma).all()
    assert system.A.shape[2] == (m if lockstep else 0)
    assert system.kind.tolist()[:m] == [0 if r in indefinite else 1 for r in range(m)]
    b = rng.standard_normal((m, n))
    x = system.solve(b, np.empty_like(b))
    w = sigma[:, None, None] * np.eye(n) - jac
    # W's condition number is below 1e3 here (sigma = 0.5, |J| of order 1): 1e-10 is 1e5 rounding units of slack
    assert np.max(np.abs(x - np.linalg.solve(w, b[..., None])[..., 0])) < 1e-10
    for r in range(m):
        alone = DenseShiftedSystem(symmetric=True)
        alone.factor(jac[r : r + 1], sigma[r : r + 1])
        assert np.array_equal(alone.solve(b[r : r + 1], np.empty((1, n)))[0], x[r])


def test_cholesky_layouts_give_the_same_bits():
    """The two layouts of the dense Cholesky (lockstep over the rows, each row on its own) run the same
    subtractions in the same order on every entry: the same factors, the same pivot failures, the same solutions,
    bit for bit, on a batch with a positive definite row, a singular one, an indefinite one, a non-finite one and a
    diagonal one (its factor's off-diagonal zero)."""
    from reluflow.dynamics.solvers.rosenbrock import _cholesky_shifted, _dense_solve_into

    rng = np.random.default_rng(21)
    n = 23
    jac = np.empty((6, n, n))
    for r in range(6):
        a = rng.standard_normal((n, n))
        jac[r] = -(a @ a.T) / n
    jac[1] = -np.outer(a[0], a[0])  # W = sigma I + rank one: positive definite
    jac[2] *= -1.0  # indefinite for this sigma
    jac[3, 4, 7] = jac[3, 7, 4] = np.nan
    jac[4] = -np.diag(rng.uniform(0.0, 2.0, n))
    sigma = np.array([0.3, 1e-3, 0.3, 0.3, 0.3, 1e4])
    b = rng.standard_normal((6, n))
    results = []
    for lanes in (6, 0):
        A, lu = np.empty((n, n, lanes)), np.empty((6, n, n))
        kind = np.ones(6, dtype=np.int8)
        _cholesky_shifted(jac, sigma, A, lu, kind)
        assert kind.tolist() == [1, 1, 0, 0, 1, 1]
        factors = [A[:, :, r] if lanes else lu[r] for r in range(6)]
        upper = np.array([np.triu(factors[r]) for r in (0, 1, 4, 5)])
        if not lanes:  # the row layout keeps U^T in the strict lower triangle for the back substitution
            assert all(np.array_equal(np.tril(lu[r], -1), np.triu(lu[r], 1).T) for r in (0, 1, 4, 5))
        good = kind == 1
        x = np.empty((4, n))
        _dense_solve_into(kind[good], np.ascontiguousarray(A[:, :, good]) if lanes else A, lu[good],
                          np.zeros((4, n), dtype=np.int64), b[good], x, np.empty((n, 4)))  # fmt: skip
        results.append((upper, x))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])
    w = sigma[good, None, None] * np.eye(n) - jac[good]
    # the worst conditioned W here (sigma = 1e-3 plus rank one) has condition number about 2e4: 1e-8 is slack
    assert np.max(np.abs(results[0][1] - np.linalg.solve(w, b[good][..., None])[..., 0])) < 1e-8
    assert np.all(np.isfinite(results[0][0])) and np.all(np.diagonal(results[0][0], axis1=1, axis2=2) > 0)
