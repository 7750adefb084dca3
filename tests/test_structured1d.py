"""Tests of :mod:`reluflow.kernels.structured1d`: the O(H log H) factorization of ``W = sigma I - J`` and ``J v``.

References, independent of the structured algorithm: the dense velocity Jacobian ``J`` of :mod:`reluflow.flows`
(``StandardFlow.jac = -gradient_jacobian``, ``NormalizedFlow.jac``), ``W = sigma I - J`` formed densely and solved
by ``numpy.linalg.solve`` (LAPACK ``gesv``), and the dense product ``J @ v``.

Tolerances (``eps = 2^-52``, ``n`` parameters, ``kappa = cond_2(W)``, 2-norms):

- backward error ``eta = |r - W x| / (|W| |x| + |r|) <= n eps`` with ``W`` the dense reference: Gaussian
  elimination with partial pivoting has ``eta <= c n rho eps`` with growth ``rho`` of order 1 in practice
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm 9.5), and forming ``r - W x`` in floating
  point adds up to ``n eps |W| |x|``. The structured solve is elimination on the augmented system, whose Schur
  complement is ``W``; measured ``eta <= 1.4 eps`` on every case here, so ``n eps`` (``n >= 52``) is a wide margin,
  while any wrong term of ``W`` (a kink term, an ``S`` term, a projection) gives ``eta`` of order ``1e-3`` or more;
- forward error ``|x - x_ref| <= 4 n eps kappa |x_ref|``: both ``x`` and ``x_ref`` solve ``W`` with backward error
  ``<= n eps`` in ``W`` and ``r``, and Higham Thm 7.2 gives each ``|x - x_true| <= 2 kappa eta |x_true| / (1 - kappa eta)``.
  Checked where ``kappa n eps <= 1/4`` (otherwise neither solution is accurate to anything); measured
  ``<= 2 eps kappa``;
- ``J v``: ``|(J v)_i - (J_ref v)_i| <= 2 n eps max_i (|J_ref| |v|)_i``: each product is a sum of at most ``n`` terms
  whose entries are the same integrals summed differently (error ``<= n eps sum_j |J_ij| |v_j|`` each,
  ``gamma_n`` of Higham Thm 3.1); measured ``<= 3.3 eps``.
"""

from __future__ import annotations

import numpy as np
import pytest
from tables1d import SPECIAL_H, cases, random_theta, special_theta

from reluflow import Problem
from reluflow.dynamics.flows import NormalizedFlow, StandardFlow
from reluflow.kernels import _structured1d_kernel as kernel
from reluflow.kernels.structured1d import (
    dense_below_width,
    factorize,
    jacobian_vector_product,
    velocity_jacobian,
)
from reluflow.model.piecewise import PiecewiseTable

EPS = np.finfo(float).eps
FLOWS = {"standard": StandardFlow, "normalized": NormalizedFlow}

CONFIGS = {
    "affine-uniform": {"network": {"width": 24}, "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0}},
    "pwlinear-triangular": {
        "network": {"width": 20},
        "domain": [-1.0, 2.0],
        "target": {"kind": "piecewise_linear", "knots": [-1.0, 0.2, 1.0, 2.0], "values": [0.0, 1.0, -0.5, 0.3]},
        "measure": {"kind": "triangular", "mode": 0.7},
    },
    "sine-uniform": {"network": {"width": 20}, "target": {"kind": "sine", "frequency": 6.0, "amplitude": 0.8, "phase": 0.3}},
    "sine-pwlinear2-triangular": {
        "network": {"width": 16, "output_dim": 2},
        "target": {
            "kind": "stack",
            "components": [
                {"kind": "sine", "frequency": 3.0},
                {"kind": "piecewise_linear", "knots": [0.0, 0.4, 1.0], "values": [0.0, 1.0, -1.0]},
            ],
        },
        "measure": {"kind": "triangular"},
    },
}

# shifts 1 / (h gamma) of a Rosenbrock step: tiny (W ~ -J, ill-conditioned) to huge (W ~ sigma I)
SIGMAS = np.array([1e-8, 1e-4, 3e-2, 1.0, 7.0, 1e3, 1e8])


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def problem(request):
    return Problem.from_config(CONFIGS[request.param])


def problem_rows(problem, rng):
    """Random parameters (kinks in and beyond ``[a, b]``) and every degenerate configuration of the kinks: at
    ``a``, at ``b`` (both signs of ``w``), at a table knot, three coinciding kinks, ``w = 0`` with ``b > 0``,
    ``b < 0`` and ``b = 0``, and a dead neuron."""
    H, n = problem.width, problem.n_params
    a, b = problem.domain
    knots = problem.table.knots
    knot = knots[1] if knots.size > 2 else 0.5 * (a + b)
    rows = rng.normal(size=(6, n))
    for row in rows[3:]:
        spec = [(1.3, a), (-1.3, a), (-0.8, b), (0.8, b), (1.1, knot), (-2.0, 0.625 * a + 0.375 * b),
                (0.5, 0.625 * a + 0.375 * b), (1.5, 0.625 * a + 0.375 * b), (1.0, b + 1.0)]  # fmt: skip
        for i, (w, xi) in enumerate(spec):
            row[i], row[H + i] = w, -w * xi
        row[9], row[H + 9], row[10], row[H + 10], row[11], row[H + 11] = 0.0, 0.7, 0.0, -0.4, 0.0, 0.0
    return rows


def table_rows(c, rng):
    """Four runs of one of the hand-built tables of ``tests/tables1d.py``: all degenerate kinks (``H = 17``)."""
    return np.array([special_theta(c, rng) for _ in range(4)])


def dense_w(J, sigma):
    return sigma[:, None, None] * np.eye(J.shape[-1]) - J


def assert_solution_accurate(x, W, rhs):
    """Backward error ``<= n eps`` and forward error ``<= 4 n eps kappa`` against ``numpy.linalg.solve`` (module
    docstring)."""
    n = W.shape[-1]
    for r in range(len(W)):
        singular_values = np.linalg.svd(W[r], compute_uv=False)
        norm_w = singular_values[0]
        eta = np.linalg.norm(rhs[r] - W[r] @ x[r]) / (norm_w * np.linalg.norm(x[r]) + np.linalg.norm(rhs[r]))
        assert eta <= n * EPS, f"run {r}: backward error {eta / EPS:.3g} eps > n eps = {n} eps"
        if norm_w * n * EPS <= 0.25 * singular_values[-1]:  # kappa n eps <= 1/4
            kappa = norm_w / singular_values[-1]
            reference = np.linalg.solve(W[r], rhs[r])
            error = np.linalg.norm(x[r] - reference) / np.linalg.norm(reference)
            assert error <= 4 * n * EPS * kappa, f"run {r}: forward error {error / (EPS * kappa):.3g} eps kappa"


# ------------------------------------------------------------------------------------------------------
# the dense reference path


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_velocity_jacobian_is_the_flows_jacobian(problem, flow):
    """The dense Jacobian used below :func:`dense_below_width` (and as reference) is the flows' ``jac``: same
    formula on the same ``G`` and ``dG/dtheta``, so bitwise equal."""
    rng = np.random.default_rng(1)
    theta = problem_rows(problem, rng)
    velocity = FLOWS[flow](problem)
    J = velocity.jac(theta)
    assert np.array_equal(velocity_jacobian(theta, problem.table, problem.width, flow), J)
    # the normalized flow also off the manifold (|u_i| != 1) and on it
    assert np.array_equal(velocity_jacobian(velocity.prepare(theta), problem.table, problem.width, flow),
                          velocity.jac(velocity.prepare(theta)))  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# solves against numpy.linalg.solve of the dense W


@pytest.mark.parametrize("method", ["structured", "dense"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_solve_matches_dense_solve_on_problems(problem, flow, method):
    rng = np.random.default_rng(2)
    velocity = FLOWS[flow](problem)
    theta = problem_rows(problem, rng)
    theta = np.concatenate([theta, velocity.prepare(theta)]) if flow == "normalized" else theta
    sigma = SIGMAS[rng.integers(0, SIGMAS.size, size=len(theta))]
    W = dense_w(velocity.jac(theta), sigma)
    factors = factorize(theta, sigma, problem.table, problem.width, flow, method=method)
    assert factors.method == method and factors.ok.all()
    for _ in range(2):  # several right-hand sides per factorization, as in a Rosenbrock step
        rhs = rng.normal(size=theta.shape)
        assert_solution_accurate(factors.solve(rhs), W, rhs)


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("c", cases(), ids=lambda c: c.name)
def test_structured_solve_matches_dense_solve_on_degenerate_kinks(c, flow):
    """The hand-built tables (k = 2, sine targets, piecewise and discontinuous densities, knots at kinks) with
    every degenerate kink configuration in every run, at every shift."""
    rng = np.random.default_rng(3)
    theta = table_rows(c, rng)
    J = velocity_jacobian(theta, c.table, SPECIAL_H, flow)
    for sigma in SIGMAS:
        sigma_runs = np.full(len(theta), sigma)
        factors = factorize(theta, sigma_runs, c.table, SPECIAL_H, flow, method="structured")
        assert factors.ok.all()
        rhs = rng.normal(size=theta.shape)
        assert_solution_accurate(factors.solve(rhs), dense_w(J, sigma_runs), rhs)


def jump_table():
    """[0, 1] with knots 0.25 and 0.5 where the density jumps (0.5 -> 1 -> 1.5) and, at 0.5, the target (x -> x + 1)."""
    return PiecewiseTable(
        knots=np.array([0.0, 0.25, 0.5, 1.0]),
        target_poly=np.array([[[0.0, 1.0]], [[0.0, 1.0]], [[1.0, 1.0]]]),
        sines=np.zeros((0, 1, 3)),
        density_poly=np.array([[0.5], [1.0], [1.5]]),
        quad_nodes=2,
    )


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_kinks_at_jumps_use_the_active_side(flow):
    """Kinks exactly at knots where ``p`` and ``f`` jump, both signs of ``w`` and coinciding there: ``p`` and ``f``
    in the kink terms are the limits from inside each neuron's active set (as the dense Jacobian's)."""
    table = jump_table()
    rng = np.random.default_rng(12)
    H = 12
    theta = random_theta(cases()[2], H, rng, size=4)  # [0, 1]
    w = np.array([2.0, -2.0, 0.75, 1.5, -0.5])
    xi = np.array([0.5, 0.5, 0.5, 0.25, 0.25])
    theta[:, :5], theta[:, H : H + 5] = w, -w * xi
    J = velocity_jacobian(theta, table, H, flow)
    for sigma in SIGMAS:
        sigma_runs = np.full(len(theta), sigma)
        rhs = rng.normal(size=theta.shape)
        assert_solution_accurate(factorize(theta, sigma_runs, table, H, flow, method="structured").solve(rhs),
                                 dense_w(J, sigma_runs), rhs)  # fmt: skip
    assert_product_accurate(jacobian_vector_product(theta, rhs, table, H, flow), J, rhs)


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_structured_solve_at_a_larger_width(flow):
    """H = 96 on a piecewise-linear target, triangular law: many kinks per table interval, long chains."""
    c = cases()[1]
    rng = np.random.default_rng(4)
    theta = random_theta(c, 96, rng, size=3)
    sigma = np.array([1e-3, 1.0, 1e3])
    factors = factorize(theta, sigma, c.table, 96, flow, method="structured")
    rhs = rng.normal(size=theta.shape)
    assert_solution_accurate(factors.solve(rhs), dense_w(velocity_jacobian(theta, c.table, 96, flow), sigma), rhs)


def test_auto_method_switches_at_the_measured_width():
    rng = np.random.default_rng(5)
    for c in (cases()[0], cases()[5]):  # k = 1, k = 2
        width = dense_below_width(c.k)
        for H, expected in ((width - 1, "dense"), (width, "structured")):
            assert factorize(random_theta(c, H, rng, size=2), 1.0, c.table, H).method == expected


# ------------------------------------------------------------------------------------------------------
# Jacobian-vector product


def assert_product_accurate(product, J, v):
    """``|(J v)_i - (J_ref v)_i| <= 2 n eps max_i (|J_ref| |v|)_i`` per run (module docstring)."""
    n = J.shape[-1]
    reference = np.einsum("rij,rj->ri", J, v)
    scale = np.max(np.einsum("rij,rj->ri", np.abs(J), np.abs(v)), axis=1, keepdims=True)
    error = np.abs(product - reference)
    assert np.all(error <= 2 * n * EPS * scale), f"worst error {np.max(error / scale) / EPS:.3g} eps"


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_jacobian_vector_product_matches_dense_product(problem, flow):
    rng = np.random.default_rng(6)
    velocity = FLOWS[flow](problem)
    theta = problem_rows(problem, rng)
    v = rng.normal(size=theta.shape)
    assert_product_accurate(jacobian_vector_product(theta, v, problem.table, problem.width, flow), velocity.jac(theta), v)


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("c", cases(), ids=lambda c: c.name)
def test_jacobian_vector_product_on_degenerate_kinks(c, flow):
    rng = np.random.default_rng(7)
    theta = table_rows(c, rng)
    v = rng.normal(size=theta.shape)
    J = velocity_jacobian(theta, c.table, SPECIAL_H, flow)
    assert_product_accurate(jacobian_vector_product(theta, v, c.table, SPECIAL_H, flow), J, v)


# ------------------------------------------------------------------------------------------------------
# reproducibility and shapes


@pytest.mark.parametrize("method", ["structured", "dense"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_runs_are_bitwise_independent_of_the_batch(flow, method):
    c = cases()[6]  # k = 2, sine and piecewise-linear target, piecewise-quadratic density
    rng = np.random.default_rng(8)
    theta = np.concatenate([table_rows(c, rng), random_theta(c, SPECIAL_H, rng, size=3)])
    sigma = SIGMAS[: len(theta)]
    rhs = rng.normal(size=theta.shape)
    n = theta.shape[1]

    def solve(rows, shifts, right):
        return factorize(rows, shifts, c.table, SPECIAL_H, flow, method=method).solve(right)

    x = solve(theta, sigma, rhs)
    product = jacobian_vector_product(theta, rhs, c.table, SPECIAL_H, flow)
    factors = factorize(theta, sigma, c.table, SPECIAL_H, flow, method=method)
    assert np.array_equal(factors.solve(rhs), x) and np.array_equal(factors.solve(rhs), x)  # solve is repeatable
    for r in range(len(theta)):  # alone, unbatched
        assert np.array_equal(solve(theta[r], sigma[r], rhs[r]), x[r])
        assert np.array_equal(jacobian_vector_product(theta[r], rhs[r], c.table, SPECIAL_H, flow), product[r])
    perm = rng.permutation(len(theta))
    assert np.array_equal(solve(theta[perm], sigma[perm], rhs[perm]), x[perm])
    others = random_theta(c, SPECIAL_H, np.random.default_rng(99), size=5)
    mixed = np.concatenate([others[:2], theta[2:5], others[2:]])  # other companions, other batch size
    mixed_sigma = np.concatenate([[0.5, 2.0], sigma[2:5], [3.0, 4.0, 5.0]])
    mixed_rhs = np.concatenate([rhs[:2], rhs[2:5], rhs[:3]])
    assert np.array_equal(solve(mixed, mixed_sigma, mixed_rhs)[2:5], x[2:5])
    batched = factorize(theta[:6].reshape(2, 3, n), sigma[:6].reshape(2, 3), c.table, SPECIAL_H, flow, method=method)
    assert batched.ok.shape == (2, 3)
    assert np.array_equal(batched.solve(rhs[:6].reshape(2, 3, n)).reshape(6, n), x[:6])
    assert factorize(np.empty((0, n)), np.empty(0), c.table, SPECIAL_H, flow, method=method).solve(np.empty((0, n))).shape == (0, n)


def test_scalar_shift_is_broadcast():
    c = cases()[0]
    rng = np.random.default_rng(9)
    theta = random_theta(c, 20, rng, size=3)
    rhs = rng.normal(size=theta.shape)
    assert np.array_equal(factorize(theta, 2.5, c.table, 20).solve(rhs), factorize(theta, np.full(3, 2.5), c.table, 20).solve(rhs))


# ------------------------------------------------------------------------------------------------------
# the linear algebra kernels on their own


def to_band(A, kl, ku):
    """Storage of :func:`reluflow.kernels._structured1d_kernel._band_factor`: ``band[col, kl + ku + row - col]``."""
    N = A.shape[0]
    band = np.zeros((N, 2 * kl + ku + 1))
    for row in range(N):
        for col in range(max(0, row - kl), min(N, row + ku + 1)):
            band[col, kl + ku + row - col] = A[row, col]
    return band


@pytest.mark.parametrize("kl,ku", [(0, 0), (1, 0), (0, 2), (3, 2), (6, 10)])
def test_band_lu_solves_like_numpy(kl, ku):
    """Partial pivoting on the band (LAPACK gbtf2/gbtrs) against numpy's dense LU, on random band matrices whose
    diagonal is small (pivoting is exercised): backward error bound as for the solves above."""
    rng = np.random.default_rng(10)
    N = 40
    A = np.triu(np.tril(rng.normal(size=(N, N)), ku), -kl)
    A[np.diag_indices(N)] *= 1e-3
    band = to_band(A, kl, ku)
    piv, u_first, l_count = (np.empty(N, dtype=np.int64) for _ in range(3))
    assert kernel._band_factor(band, kl, ku, piv)
    kernel._band_profile(band, kl, ku, u_first, l_count)
    rhs = rng.normal(size=N)
    x = rhs.copy()
    kernel._band_solve(band, kl, ku, piv, u_first, l_count, x)
    assert_solution_accurate(x[None], A[None], rhs[None])


def test_exactly_singular_systems_are_reported():
    """Two equal rows give an exact zero pivot: ``ok`` is False and the solution is NaN (both kernels)."""
    A = np.diag([2.0, 3.0, 4.0, 5.0]) + np.diag([1.0, 1.0, 1.0], 1)
    A[2] = A[1] = [0.0, 3.0, 1.0, 0.0]
    band = to_band(A, 1, 2)
    assert not kernel._band_factor(band, 1, 2, np.empty(4, dtype=np.int64))
    sigma = np.array([1.0, 1.0])
    jac = np.stack([np.eye(4) - A, np.eye(4) + np.diag([1.0, 2.0, 3.0, 4.0])])  # sigma I - jac: A, -diag(1..4)
    lu, piv, ok = np.empty((2, 4, 4)), np.empty((2, 4), dtype=np.int64), np.empty(2, dtype=np.bool_)
    kernel.dense_factor_rows(jac, sigma, lu, piv, ok)
    assert ok.tolist() == [False, True]
    out = np.empty((2, 4))
    kernel.dense_solve_rows(lu, piv, ok, np.ones((2, 4)), out)
    assert np.all(np.isnan(out[0])) and np.all(np.isfinite(out[1]))
    out = np.empty((2, 4))  # H = k = 1: the structured solve of runs whose factorization failed
    index = np.zeros((2, 1), np.int64)
    kernel.solve_rows(np.zeros((2, 1, 1)), index, index, index, index, np.array([False, False]), np.zeros(1, np.int64),
                      0, 0, 1, 1, np.ones((2, 4)), out)  # fmt: skip
    assert np.all(np.isnan(out))


# ------------------------------------------------------------------------------------------------------
# input validation


def test_bad_arguments_are_named():
    c = cases()[0]
    theta = random_theta(c, 20, np.random.default_rng(11), size=2)
    with pytest.raises(ValueError, match="^flow:"):
        factorize(theta, 1.0, c.table, 20, flow="gradient")
    with pytest.raises(ValueError, match="^method:"):
        factorize(theta, 1.0, c.table, 20, method="lu")
    for sigma in (0.0, -1.0, np.inf, np.nan, np.ones(3)):
        with pytest.raises(ValueError, match="^sigma:"):
            factorize(theta, sigma, c.table, 20)
    with pytest.raises(ValueError, match="^theta:"):
        factorize(theta[:, :-1], 1.0, c.table, 20)
    with pytest.raises(ValueError, match="^rhs:"):
        factorize(theta, 1.0, c.table, 20).solve(theta[0])
    with pytest.raises(ValueError, match="^v:"):
        jacobian_vector_product(theta, theta[0], c.table, 20)
