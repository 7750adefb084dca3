"""Per-run summary tables and verdicts (reluflow.experiments.summary) on synthetic trajectories with known answers.

The synthetic datasets are built with :func:`reluflow.files.trajectories.build_trajectory_dataset` from arrays chosen so
that every summary number is known in closed form; comparisons of copied or selected values are exact, and
computed ones (ratios, fitted slopes) carry a tolerance stated where it is used.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reluflow import Problem
from reluflow.dynamics.solvers.result import Status
from reluflow.experiments.checks import BOUNDED_GROWTH, ZERO_RISK, norm_growth_last_decade
from reluflow.experiments.kinds.affine_targets import affine_critical_value, single_neuron_threshold
from reluflow.experiments.kinds.gd_vs_gf import fit_order, matching_save_times
from reluflow.experiments.summary import summarize
from reluflow.files.trajectories import FileInfo, RunArrays, build_trajectory_dataset
from reluflow.model.network import ParameterLayout

FINISHED, CONVERGED, DIVERGED, FAILED = (int(s) for s in Status)

AFFINE_01 = {  # f(x) = 2x - 1 on [0, 1], uniform: alpha = 2, threshold 4/12 (H = 1), reference 4/972
    "network": {"input_dim": 1, "width": 1, "output_dim": 1},
    "domain": [0.0, 1.0],
    "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
    "measure": {"kind": "uniform"},
}


def problem_config(raw: dict) -> dict:
    """The normalized problem configuration, as the workflow stores it (Case.problem == Problem.config)."""
    return Problem.from_config(raw).config


def with_width(raw: dict, width: int) -> dict:
    out = json.loads(json.dumps(raw))
    out["network"]["width"] = width
    return out


def flow_settings(kind: str = "standard", t_max: float = 1e3, eta: float | None = None, label: str = "gf") -> dict:
    return {
        "label": label,
        "flow": kind,
        "field": "standard",
        "solver": "dopri5",
        "t_max": t_max,
        "eta": eta,
        "rtol": 1e-8,
        "atol": 1e-10,
        "save": {"spacing": "log", "n": 10, "t_min": 1e-3},
    }


def log_times(t_max: float = 1e3, n: int = 13) -> np.ndarray:
    return np.concatenate([[0.0], np.geomspace(1e-3, t_max, n)])


def trajectory(
    problem: dict,
    risk,
    *,
    times=None,
    theta=None,
    status=None,
    grad_norm=None,
    param_norm=None,
    energy_residual=None,
    critical_risk=None,
    critical_grad_norm=None,
    critical_distance=None,
    constraint_drift=None,
    initial_risk=None,
    t_final=None,
    run_ids=None,
    init_scheme="gaussian",
    settings=None,
    seed=0,
):
    """A trajectory dataset with the given arrays (defaults: a random constant theta, |theta| from it, |G| = sqrt(L),
    zero energy residual, finished runs, certificate = final risk with |G| = 0)."""
    risk = np.asarray(risk, dtype=float)
    m, n_t = risk.shape
    times = log_times(n=n_t - 1) if times is None else np.asarray(times, dtype=float)
    net = problem["network"]
    d, h, k = net["input_dim"], net["width"], net["output_dim"]
    n = d * h + h + k * h + k
    rng = np.random.default_rng(seed)
    if theta is None:  # a random state held fixed in time (so |theta| is constant: a bounded run)
        theta = np.repeat(rng.standard_normal((m, 1, n)), n_t, axis=1)
        theta[~np.isfinite(risk)] = np.nan
    theta = np.asarray(theta, dtype=float)
    status = np.full(m, FINISHED) if status is None else np.asarray(status)
    if t_final is None:
        t_final = np.array([times[np.flatnonzero(np.isfinite(r))[-1]] for r in risk])
    last = np.array([r[np.isfinite(r)][-1] for r in risk])
    runs = RunArrays(
        theta=theta,
        time=times,
        risk=risk,
        grad_norm=np.sqrt(risk) if grad_norm is None else grad_norm,
        param_norm=np.linalg.norm(theta, axis=-1) if param_norm is None else param_norm,
        energy_residual=np.zeros((m, n_t)) if energy_residual is None else energy_residual,
        status=status,
        t_final=t_final,
        run_ids=np.arange(m) if run_ids is None else np.asarray(run_ids),
        critical_risk=last if critical_risk is None else critical_risk,
        critical_grad_norm=np.zeros(m) if critical_grad_norm is None else critical_grad_norm,
        constraint_drift=constraint_drift,
    )
    info = FileInfo(scenario="test", title="synthetic trajectories",
                    config={"problem": problem, "integrator": settings or {}}, history="test")
    return build_trajectory_dataset(
        runs,
        ParameterLayout(d, h, k),
        info,
        init={
            "init_scheme": np.array([init_scheme] * m),
            "init_scale": np.ones(m),
            "initial_risk": risk[:, 0] if initial_risk is None else np.asarray(initial_risk, float),
        },
        extra={"critical_distance": np.zeros(m) if critical_distance is None else np.asarray(critical_distance)},
    )


def spec_of(kind: str, cases: list[dict], scenario: str = "test") -> dict:
    for case in cases:
        case.setdefault("label", case["case"])
        case.setdefault("init", {"scheme": "gaussian"})
    return {"scenario": scenario, "kind": kind, "cases": cases}


def verdict_row(verdict: pd.DataFrame, check: str) -> pd.Series:
    rows = verdict[verdict["check"] == check]
    assert len(rows) == 1, f"expected one verdict row {check!r}, got {list(verdict['check'])}"
    return rows.iloc[0]


def decaying(initial: float, final: float, n_t: int = 14) -> np.ndarray:
    """A risk path from ``initial`` to ``final`` (geometric)."""
    return np.geomspace(initial, final, n_t)


# ------------------------------------------------------------------------------------------------------------
# the single-neuron scenario: the common columns with known values


def single_neuron_fixture():
    """Five runs with known outcomes (threshold alpha^2 (b-a)^2 / 12 = 1/3)."""
    problem = problem_config(AFFINE_01)
    times = log_times()  # 14 saves: 0, 1e-3 .. 1e3
    n_t = len(times)
    risk = np.array(
        [
            decaying(0.1, 1e-12),  # 0: below threshold, reaches zero
            decaying(0.3, 0.05),  # 1: below threshold, diverges after save 9 (NaN from save 10 on)
            decaying(0.5, 1.0 / 3.0),  # 2: above threshold, ends at the dead-neuron value
            decaying(0.2, 2e-10),  # 3: below threshold, final risk 2e-10 is NOT below 1e-10
            decaying(0.25, 1e-11),  # 4: below threshold, reaches zero with a growing norm
        ]
    )
    risk[1, 10:] = np.nan
    norm = np.full((5, n_t), 2.0)
    norm[1, 10:] = np.nan
    norm[2, 3] = 7.0  # sup over time is 7 (early), the last decade is flat
    # run 4: linear growth over the last decade [100, 1000]: saves at t >= 100 are indices 11, 12, 13
    norm[4, 11:] = [2.0, 2.2, 2.4]
    residual = np.zeros((5, n_t))
    residual[0, 5] = -3e-9  # |residual| / L0 = 3e-8
    status = np.array([FINISHED, DIVERGED, FINISHED, FINISHED, FINISHED])
    ds = trajectory(
        problem,
        risk,
        times=times,
        param_norm=norm,
        energy_residual=residual,
        status=status,
        critical_risk=np.array([0.0, 0.04, 1 / 3, 1e-30, 0.0]),
        critical_grad_norm=np.array([1e-15, 2e-15, 0.0, 1e-16, 5e-16]),
        critical_distance=np.array([1e-9, 0.5, 0.0, 1e-3, 2.0]),
        settings=flow_settings(),
    )
    spec = spec_of("jr_single_neuron", [{"case": "near", "problem": problem, "flows": {"gf": flow_settings()}}])
    return spec, {("near", "gf"): ds}, times


def test_common_columns_have_the_known_values():
    spec, datasets, times = single_neuron_fixture()
    summary, _ = summarize(spec, datasets)
    assert list(summary.columns[:6]) == ["scenario", "case", "case_label", "flow", "run", "status"]
    assert list(summary["run"]) == [0, 1, 2, 3, 4]
    assert list(summary["status"]) == ["finished", "diverged", "finished", "finished", "finished"]
    # final risk: the last finite saved risk; for the diverged run the value at save 9
    expected_final = [1e-12, decaying(0.3, 0.05)[9], 1.0 / 3.0, 2e-10, 1e-11]
    np.testing.assert_allclose(summary["final_risk"], expected_final, rtol=1e-15)  # geomspace end points: rounding
    assert summary.loc[1, "t_end"] == times[9]
    assert list(summary["reached_zero"]) == [True, False, False, False, True]
    assert list(summary["below_threshold"]) == [True, True, False, True, True]
    assert np.all(summary["threshold"] == 4.0 / 12.0)
    assert list(summary["max_param_norm"]) == [2.0, 2.0, 7.0, 2.0, 2.4]
    # norm growth over the last decade: run 4 grows from 2.0 to 2.4 -> 0.2; the others are flat
    assert summary.loc[4, "norm_growth"] == pytest.approx(0.2, rel=1e-15)
    assert summary.loc[0, "norm_growth"] == 0.0
    assert list(summary["bounded"]) == [True, False, True, True, False]
    # risk still falling over the last decade [100, 1000] (saves 11..13): two geometric steps of (1e-11)^(1/13)
    assert summary.loc[0, "risk_ratio_last_decade"] == pytest.approx(1e-11 ** (2 / 13), rel=1e-12)
    assert list(summary["norm_grew"]) == [False, True, False, False, True]
    assert summary.loc[0, "max_relative_energy_residual"] == pytest.approx(3e-8, rel=1e-14)
    assert summary.loc[0, "max_abs_energy_residual"] == 3e-9
    assert summary["max_constraint_drift"].isna().all()  # not a normalized flow
    np.testing.assert_array_equal(summary["critical_distance"], [1e-9, 0.5, 0.0, 1e-3, 2.0])
    np.testing.assert_array_equal(summary["initial_risk"], [0.1, 0.3, 0.5, 0.2, 0.25])
    assert list(summary["init_scheme"]) == ["gaussian"] * 5
    assert summary["eta"].isna().all() and (summary["width"] == 1).all()


def test_single_neuron_verdict_counts():
    spec, datasets, _ = single_neuron_fixture()
    _, verdict = summarize(spec, datasets)
    assert list(verdict.columns) == ["scenario", "check", "value", "passed", "detail"]
    row = verdict_row(verdict, "below_threshold_reach_zero")
    # below threshold and not failed: runs 0, 1, 3, 4; reached zero: 0 and 4
    assert row["value"] == 0.5 and bool(row["passed"]) is False
    assert "2/4 runs" in row["detail"] and "near/1" in row["detail"] and "near/3" in row["detail"]
    assert verdict_row(verdict, "runs_diverged")["value"] == 1
    assert pd.isna(verdict_row(verdict, "runs_diverged")["passed"])  # an observation, not a check
    assert "near/1" in verdict_row(verdict, "runs_diverged")["detail"]
    row = verdict_row(verdict, "below_threshold_unbounded")
    assert row["value"] == 2 and "2/4" in row["detail"] and "1 of them reached" in row["detail"]
    row = verdict_row(verdict, "above_threshold_outcome")
    assert "1 runs started at or above" in row["detail"] and "1 ended at the dead-neuron value" in row["detail"]
    assert bool(verdict_row(verdict, "solver_failures")["passed"]) is True


def test_single_neuron_all_below_threshold_reaching_zero_passes():
    problem = problem_config(AFFINE_01)
    risk = np.array([decaying(0.1, 1e-13), decaying(0.2, 5e-11)])
    ds = trajectory(problem, risk, settings=flow_settings())
    spec = spec_of("jr_single_neuron", [{"case": "main", "problem": problem, "flows": {"gf": flow_settings()}}])
    _, verdict = summarize(spec, {("main", "gf"): ds})
    row = verdict_row(verdict, "below_threshold_reach_zero")
    assert bool(row["passed"]) is True and row["value"] == 1.0 and "2/2 runs" in row["detail"]


def test_failed_runs_fail_the_solver_check_and_energy_residual_is_checked():
    problem = problem_config(AFFINE_01)
    risk = np.array([decaying(1.0, 0.1), decaying(1e-6, 1e-12), decaying(2.0, 0.5)])
    residual = np.zeros_like(risk)
    residual[0, 4] = 2e-6  # L0 = 1: 2e-6 > 1e-6 * max(1, L0): violates
    residual[1, 4] = 1e-9  # L0 = 1e-6: relative 1e-3, but on the max(1, L0) scale 1e-9: fine
    status = np.array([FINISHED, FINISHED, FAILED])
    ds = trajectory(problem, risk, energy_residual=residual, status=status, settings=flow_settings())
    spec = spec_of("jr_single_neuron", [{"case": "main", "problem": problem, "flows": {"gf": flow_settings()}}])
    summary, verdict = summarize(spec, {("main", "gf"): ds})
    assert summary.loc[1, "max_relative_energy_residual"] == pytest.approx(1e-3, rel=1e-12)
    row = verdict_row(verdict, "solver_failures")
    assert bool(row["passed"]) is False and row["value"] == 1 and "main/2" in row["detail"]
    row = verdict_row(verdict, "energy_identity")
    assert bool(row["passed"]) is False and row["value"] == pytest.approx(2e-6, rel=1e-12)
    assert "main/0" in row["detail"] and "main/1" not in row["detail"]
    # the failed run is not among the runs tested against the threshold
    assert "1/1 runs" in verdict_row(verdict, "below_threshold_reach_zero")["detail"]  # run 1 only


def test_norm_growth_last_decade_definition():
    times = np.array([0.0, 1.0, 10.0, 50.0, 100.0])
    norms = np.array(
        [
            [1.0, 1.0, 2.0, 3.0, 2.5],  # window [10, 100]: max 3 / 2 - 1 = 0.5
            [1.0, 1.0, 1.0, np.nan, np.nan],  # t_end = 10: window [1, 10]: 0
            [np.nan] * 5,
        ]
    )
    growth = norm_growth_last_decade(times, norms)
    assert growth[0] == 0.5 and growth[1] == 0.0 and np.isnan(growth[2])


def test_summary_rejects_bad_spec_and_mismatched_datasets():
    spec, datasets, _ = single_neuron_fixture()
    with pytest.raises(ValueError, match=r"^spec\.kind"):
        summarize({**spec, "kind": "jr_nonsense"}, datasets)
    with pytest.raises(ValueError, match=r"^datasets: no trajectories"):
        summarize(spec, {})
    with pytest.raises(ValueError, match=r"^datasets: trajectories for"):
        summarize(spec, {**datasets, ("other", "gf"): datasets[("near", "gf")]})
    stale = json.loads(json.dumps(spec))
    stale["cases"][0]["problem"]["target"]["slope"] = 3.0
    with pytest.raises(ValueError, match=r"^spec\.cases\[0\]\.problem: differs"):
        summarize(stale, datasets)
    sine = problem_config({**AFFINE_01, "target": {"kind": "sine", "amplitude": 1.0, "frequency": 6.0, "phase": 0.0}})
    ds = trajectory(sine, np.array([decaying(1.0, 0.1)]))
    bad = spec_of("jr_single_neuron", [{"case": "main", "problem": sine, "flows": {"gf": flow_settings()}}])
    with pytest.raises(ValueError, match=r"^spec\.cases\[0\]\.problem\.target\.kind"):
        summarize(bad, {("main", "gf"): ds})


# ------------------------------------------------------------------------------------------------------------
# reference values: checked against the risk of explicit networks (independent of the formulas' derivation)


@pytest.mark.parametrize("a, b, alpha, beta", [(0.0, 1.0, 2.0, -1.0), (1.0, 3.0, 3.0, 0.5), (-2.0, -0.5, -1.5, 0.2)])
def test_affine_critical_value_is_the_risk_of_a_critical_point(a, b, alpha, beta):
    """The H = 2 critical point of docs/MATH.md on [0, 1], mapped to [a, b] by x = a + (b - a) u, has G = 0
    and risk alpha^2 (b - a)^2 / 972 (risk and G from the exact d = 1 kernel, rounding ~1e-15)."""
    problem = Problem.from_config(
        {
            "network": {"input_dim": 1, "width": 2, "output_dim": 1},
            "domain": [a, b],
            "target": {"kind": "affine", "slope": alpha, "intercept": beta},
            "measure": {"kind": "uniform"},
        }
    )
    al, be = alpha * (b - a), alpha * a + beta  # the target in u
    w_u, b_u = np.array([-1.0, 1.0]), np.array([2 / 3, -1 / 3])
    v, c = np.array([-2 / 3 * al, 2 / 3 * al]), be + al / 2
    theta = np.concatenate([w_u / (b - a), b_u - w_u * a / (b - a), v, [c]])
    assert float(problem.risk(theta)) == pytest.approx(affine_critical_value(alpha, a, b), rel=1e-12)
    assert np.max(np.abs(problem.generalized_gradient(theta))) < 1e-12


@pytest.mark.parametrize("a, b, alpha", [(0.0, 1.0, 2.0), (1.0, 3.0, 3.0)])
def test_single_neuron_threshold_is_the_dead_neuron_risk(a, b, alpha):
    """A dead neuron (kink beyond b, active nowhere) plus the best constant c = mean f has risk Var(alpha X)."""
    problem = Problem.from_config(
        {
            "network": {"input_dim": 1, "width": 1, "output_dim": 1},
            "domain": [a, b],
            "target": {"kind": "affine", "slope": alpha, "intercept": 0.7},
            "measure": {"kind": "uniform"},
        }
    )
    theta = np.array([1.0, -(b + 1.0), 0.5, alpha * (a + b) / 2 + 0.7])
    assert float(problem.risk(theta)) == pytest.approx(single_neuron_threshold(alpha, a, b), rel=1e-12)


# ------------------------------------------------------------------------------------------------------------
# JR Theorem 1.1


def bounded_critical_fixture(gap_run1: float):
    problem = problem_config({**AFFINE_01, "network": {"input_dim": 1, "width": 2, "output_dim": 1}})
    n_t = 14
    risk = np.array([decaying(3.0, 0.2), decaying(2.0, 0.1), decaying(5.0, 0.3)])
    grad = np.array([decaying(5.0, 1e-7), decaying(4.0, 1e-6), decaying(3.0, 1e-1)])
    norm = np.full((3, n_t), 3.0)
    norm[2, 11:] = [3.0, 3.3, 3.6]  # run 2: norm grows 20 % over the last decade: not bounded
    crit = np.array([0.2 + 1e-10, 0.1 + gap_run1, 0.3])
    ds = trajectory(
        problem,
        risk,
        grad_norm=grad,
        param_norm=norm,
        critical_risk=crit,
        critical_grad_norm=np.array([1e-14, 1e-13, 1e-3]),
        critical_distance=np.array([1e-6, 2e-6, 1.0]),
    )
    spec = spec_of("jr_bounded_critical", [{"case": "main", "problem": problem, "flows": {"gf": flow_settings()}}])
    return spec, {("main", "gf"): ds}


def test_bounded_critical_counts_and_a_failing_gap():
    spec, datasets = bounded_critical_fixture(gap_run1=1e-6)  # 1e-6 > 1e-8 max(1, L*)
    summary, verdict = summarize(spec, datasets)
    assert list(summary["bounded"]) == [True, True, False]
    np.testing.assert_allclose(summary["limit_risk_gap"], [1e-10, 1e-6, 0.0], rtol=1e-5, atol=1e-16)  # float sums
    row = verdict_row(verdict, "bounded_runs")
    assert row["value"] == pytest.approx(2 / 3) and "2/3 runs" in row["detail"] and "main/2" in row["detail"]
    row = verdict_row(verdict, "limit_risk_equals_certified_critical_value")
    assert bool(row["passed"]) is False and row["value"] == 0.5
    assert "1/2 bounded runs: limit risk equals a certified critical value" in row["detail"]
    assert "main/1" in row["detail"]
    assert bool(verdict_row(verdict, "critical_gradient_small")["passed"]) is True  # run 2 (1e-3) is excluded
    row = verdict_row(verdict, "certificate_distance")  # distances 1e-6, 2e-6 vs |Theta_T| = 3
    assert pd.isna(row["passed"]) and row["value"] == 2e-6 and row["detail"].startswith("0/2 certificates")
    row = verdict_row(verdict, "gradient_norm_decreases")  # ratios 2e-8 and 2.5e-7 <= 1e-3
    assert bool(row["passed"]) is True and "2/2 bounded runs" in row["detail"]


def test_bounded_critical_all_matching_passes():
    spec, datasets = bounded_critical_fixture(gap_run1=5e-9)
    _, verdict = summarize(spec, datasets)
    row = verdict_row(verdict, "limit_risk_equals_certified_critical_value")
    assert bool(row["passed"]) is True and "2/2 bounded runs" in row["detail"]


# ------------------------------------------------------------------------------------------------------------
# JR Theorem 1.2


def test_affine_small_risk_per_width_and_scheme():
    base = {**AFFINE_01, "domain": [1.0, 3.0], "target": {"kind": "affine", "slope": 3.0, "intercept": 0.5}}
    reference = 9.0 * 4.0 / 972.0  # alpha^2 (b - a)^2 / 972
    cases, datasets = [], {}
    for width, scheme, initial, final in [
        (2, "near_exact", [0.5 * reference, 2 * reference, 0.1 * reference], [1e-12, 0.02, 3e-10]),
        (4, "near_exact", [0.9 * reference, 1e-5], [1e-15, 1e-20]),
        (4, "gaussian", [3.0, 5.0], [1e-11, 0.2]),
    ]:
        problem = problem_config(with_width(base, width))
        name = f"h{width}_{scheme}"
        risk = np.array([decaying(i, f) for i, f in zip(initial, final)])
        datasets[(name, "gf")] = trajectory(problem, risk, init_scheme=scheme)
        cases.append({"case": name, "problem": problem, "flows": {"gf": flow_settings()}})
    summary, verdict = summarize(spec_of("jr_affine_small_risk", cases), datasets)
    assert summary["threshold"].to_numpy() == pytest.approx(np.full(7, reference), rel=1e-15)
    assert list(summary["below_threshold"]) == [True, False, True, True, True, False, False]
    row = verdict_row(verdict, "below_reference_reach_zero_H2")  # runs 0 (1e-12) and 2 (3e-10: not zero)
    assert row["value"] == 0.5 and bool(row["passed"]) is False and "1/2 bounded runs" in row["detail"]
    row = verdict_row(verdict, "below_reference_reach_zero_H4")
    assert row["value"] == 1.0 and bool(row["passed"]) is True and "2/2" in row["detail"]
    row = verdict_row(verdict, "below_reference_reach_zero_all")
    assert row["value"] == 0.75 and bool(row["passed"]) is False and "3/4" in row["detail"]
    row = verdict_row(verdict, "reached_zero_gaussian_init")
    assert row["value"] == 0.5 and pd.isna(row["passed"]) and "1/2 runs with gaussian" in row["detail"]
    assert verdict_row(verdict, "reached_zero_near_exact_init")["value"] == pytest.approx(3 / 5)


def test_affine_small_risk_without_runs_below_the_reference_fails_visibly():
    problem = problem_config(with_width(AFFINE_01, 2))
    ds = trajectory(problem, np.array([decaying(1.0, 1e-12)]))
    spec = spec_of("jr_affine_small_risk", [{"case": "h2", "problem": problem, "flows": {"gf": flow_settings()}}])
    _, verdict = summarize(spec, {("h2", "gf"): ds})
    row = verdict_row(verdict, "below_reference_reach_zero_all")
    assert bool(row["passed"]) is False and np.isnan(row["value"]) and "nothing was tested" in row["detail"]


# ------------------------------------------------------------------------------------------------------------
# EJRW


def test_normalized_flow_checks():
    raw = {
        **AFFINE_01,
        "network": {"input_dim": 1, "width": 2, "output_dim": 1},
        "target": {"kind": "abs", "center": 0.5, "scale": 1.0},
    }
    problem = problem_config(raw)
    flows = {
        "standard": flow_settings("standard", label="standard"),
        "normalized": flow_settings("normalized", label="normalized"),
    }
    risk = np.array([decaying(2.0, 0.1), decaying(1.0, 0.05)])
    std_norm = np.full((2, 14), 4.0)
    std_norm[1, 11:] = [4.0, 5.0, 6.0]  # a standard run whose norm keeps growing
    nrm_norm = np.full((2, 14), 3.0)
    drift_ok = np.full((2, 14), 5e-11)
    drift_bad = drift_ok.copy()
    drift_bad[1, 7] = 2e-10
    datasets = {}
    cases = []
    for name, drift, initial_offset in (("good", drift_ok, 0.0), ("bad", drift_bad, 1e-6)):
        datasets[(name, "standard")] = trajectory(problem, risk, param_norm=std_norm)
        datasets[(name, "normalized")] = trajectory(
            problem, risk + initial_offset, param_norm=nrm_norm, constraint_drift=drift
        )
        cases.append({"case": name, "problem": problem, "flows": flows})
    summary, verdict = summarize(spec_of("ejrw_normalized_bounded", cases), datasets)
    normalized = summary[summary["flow_kind"] == "normalized"]
    assert list(normalized["max_constraint_drift"]) == [5e-11, 5e-11, 5e-11, 2e-10]
    assert summary[summary["flow_kind"] == "standard"]["max_constraint_drift"].isna().all()
    assert bool(verdict_row(verdict, "good: constraint_drift")["passed"]) is True
    row = verdict_row(verdict, "bad: constraint_drift")
    assert bool(row["passed"]) is False and row["value"] == 2e-10
    assert bool(verdict_row(verdict, "good: same_initial_realizations")["passed"]) is True
    assert bool(verdict_row(verdict, "bad: same_initial_realizations")["passed"]) is False  # 1e-6 apart
    row = verdict_row(verdict, "good: normalized_bounded")
    assert bool(row["passed"]) is True and row["value"] == 3.0
    assert "1/2 standard runs not bounded" in row["detail"] and "standard max 6" in row["detail"]


# ------------------------------------------------------------------------------------------------------------
# GD vs GF


def gd_fixture(etas, *, exponent=1.0, constant=3.0, diverged_eta=None, long_eta=None):
    """GF path theta(t) and GD paths theta(t) + constant * eta^exponent * (t / T) e_0 on a coarser grid:
    the max over common times of the distance is exactly constant * eta^exponent (reached at t = T)."""
    problem = problem_config({**AFFINE_01, "network": {"input_dim": 1, "width": 2, "output_dim": 1}})
    n = 7
    t_max = 10.0
    m = 4
    t_gf = np.linspace(0.0, t_max, 101)
    rng = np.random.default_rng(1)
    start, drift = rng.standard_normal((m, 1, n)), rng.standard_normal((m, 1, n))
    path = lambda t: start + drift * np.sin(t)[None, :, None]  # noqa: E731
    risk_gf = np.tile(decaying(1.0, 0.1, len(t_gf)), (m, 1))
    flows = {"gf": {**flow_settings("standard", t_max=t_max), "save": {"spacing": "linear", "n": 100}}}
    datasets = {("main", "gf"): trajectory(problem, risk_gf, times=t_gf, theta=path(t_gf), run_ids=np.arange(m))}
    t_gd = np.linspace(0.0, t_max, 51)  # every other GF save time
    for eta in etas:
        label = f"gd_{str(eta).replace('.', 'p')}"
        flows[label] = {
            **flow_settings("gd", t_max=t_max, eta=eta, label=label),
            "save": {"spacing": "linear", "n": 50},
        }
        theta = path(t_gd).copy()
        theta[:, :, 0] += constant * eta**exponent * (t_gd / t_max)[None, :]
        risk = np.tile(decaying(1.0, 0.1, len(t_gd)), (m, 1))
        status = np.full(m, FINISHED)
        residual = np.full((m, len(t_gd)), 0.3)  # GD's energy residual is O(eta), not a fidelity measure
        if eta == diverged_eta:
            theta[2, 30:] = np.nan
            risk[2, 30:] = np.nan
            status[2] = DIVERGED
        datasets[("main", label)] = trajectory(
            problem, risk, times=t_gd, theta=theta, status=status, energy_residual=residual
        )
    if long_eta is not None:  # a GD flow on a longer horizon whose saves (multiples of 50) miss (0, T]
        t_long = np.arange(0.0, 1000.0 + long_eta / 2, long_eta)
        flows["gd_long"] = {
            **flow_settings("gd", t_max=1000.0, eta=long_eta, label="gd_long"),
            "save": {"spacing": "linear", "n": len(t_long) - 1},
        }
        theta = np.repeat(path(np.zeros(1)), len(t_long), axis=1)
        datasets[("main", "gd_long")] = trajectory(
            problem, np.tile(decaying(1.0, 0.5, len(t_long)), (m, 1)), times=t_long, theta=theta + 1.0
        )
    spec = spec_of("gd_vs_gf", [{"case": "main", "problem": problem, "flows": flows}])
    return spec, datasets


def test_gd_distance_and_order_one_slope():
    etas = [0.1, 0.05, 0.02, 0.01, 0.001]
    spec, datasets = gd_fixture(etas)
    summary, verdict = summarize(spec, datasets)
    gd = summary[summary["flow_kind"] == "gd"]
    # distance = 3 eta exactly, up to the rounding of theta + 3 eta - theta (~1e-15 relative)
    np.testing.assert_allclose(gd["distance_to_gf"], 3.0 * gd["eta"], rtol=1e-12)
    assert summary[summary["flow_kind"] == "standard"]["distance_to_gf"].isna().all()
    row = verdict_row(verdict, "gd_order")
    assert row["value"] == pytest.approx(1.0, abs=1e-10) and bool(row["passed"]) is True
    assert "order 1.00 (expected 1" in row["detail"] and "C = 3" in row["detail"]
    assert verdict_row(verdict, "distance_eta=0.01")["value"] == pytest.approx(0.03, rel=1e-12)
    assert verdict_row(verdict, "gd_runs_diverged")["value"] == 0
    # GD's large energy residual does not enter the (gradient-flow) energy identity check
    assert bool(verdict_row(verdict, "energy_identity")["passed"]) is True


def test_gd_slope_two_fails_and_diverged_eta_is_excluded():
    etas = [0.1, 0.05, 0.02, 0.01]
    spec, datasets = gd_fixture(etas, exponent=2.0, constant=0.5, diverged_eta=0.1)
    summary, verdict = summarize(spec, datasets)
    row = verdict_row(verdict, "gd_order")
    # fit over 0.05, 0.02, 0.01 only: exactly slope 2
    assert row["value"] == pytest.approx(2.0, abs=1e-10) and bool(row["passed"]) is False
    assert "excluded (diverged runs, no usable run or no common save time): eta = 0.1" in row["detail"]
    assert "over 3 step sizes" in row["detail"]
    row = verdict_row(verdict, "gd_order_small_steps")  # etas 0.05, 0.02, 0.01: also exactly 2
    assert row["value"] == pytest.approx(2.0, abs=1e-10) and pd.isna(row["passed"])
    assert "0.01, 0.02, 0.05" in row["detail"]
    row = verdict_row(verdict, "gd_runs_diverged")
    assert row["value"] == 1 and "eta = 0.1: 1/4" in row["detail"]
    diverged = summary[(summary["flow"] == "gd_0p1") & (summary["run"] == 2)].iloc[0]
    assert diverged["status"] == "diverged" and np.isnan(diverged["distance_to_gf"])
    # the other runs at eta = 0.1 still have their distance 0.5 * 0.1^2
    others = summary[(summary["flow"] == "gd_0p1") & (summary["run"] != 2)]["distance_to_gf"]
    np.testing.assert_allclose(others, 0.005, rtol=1e-12)
    assert "1 diverged, not in the fit" in verdict_row(verdict, "distance_eta=0.1")["detail"]


def test_gd_flow_without_common_save_times_is_excluded_from_the_fit():
    spec, datasets = gd_fixture([0.1, 0.01], long_eta=50.0)
    _, verdict = summarize(spec, datasets)
    row = verdict_row(verdict, "distance_eta=50")
    assert "no common save time t > 0" in row["detail"] and "not in the fit" in row["detail"]
    row = verdict_row(verdict, "gd_order")
    assert row["value"] == pytest.approx(1.0, abs=1e-10) and "eta = 50" in row["detail"]


def test_fit_order_and_time_matching():
    eta = np.array([1e-3, 1e-2, 1e-1])
    p, c = fit_order(eta, 7.0 * eta**1.5)
    assert p == pytest.approx(1.5, abs=1e-12) and c == pytest.approx(7.0, rel=1e-10)
    assert np.isnan(fit_order(eta[:1], eta[:1])[0])
    i, j = matching_save_times(np.linspace(0, 1, 11), np.arange(0, 6) * 0.2, 1.0)
    np.testing.assert_array_equal(i, [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(j, [0, 1, 2, 3, 4, 5])


def test_verdict_csv_round_trip_keeps_observations_empty(tmp_path):
    spec, datasets, _ = single_neuron_fixture()
    summary, verdict = summarize(spec, datasets)
    path = tmp_path / "verdict.csv"
    verdict.to_csv(path, index=False)
    back = pd.read_csv(path)
    observation = back[back["check"] == "runs_diverged"].iloc[0]
    assert pd.isna(observation["passed"])
    assert back[back["check"] == "solver_failures"].iloc[0]["passed"] in (True, "True")
    assert len(back) == len(verdict)
    assert summary["reached_zero"].dtype == bool
    assert ZERO_RISK == 1e-10 and BOUNDED_GROWTH == 1e-2  # the documented definitions


def test_normalized_runs_the_solver_gave_up_on_are_not_judged_bounded():
    problem = problem_config({**AFFINE_01, "network": {"input_dim": 1, "width": 2, "output_dim": 1}})
    flows = {
        "standard": flow_settings("standard", label="standard"),
        "normalized": flow_settings("normalized", label="normalized"),
    }
    risk = np.array([decaying(2.0, 0.1), decaying(1.0, 0.05), decaying(3.0, 0.2)])
    norm = np.full((3, 14), 3.0)
    norm[2, 11:] = [3.0, 3.5, 4.0]  # run 2 grows: unbounded
    status = np.array([FINISHED, FAILED, FINISHED])
    datasets = {
        ("c", "standard"): trajectory(problem, risk),
        ("c", "normalized"): trajectory(
            problem, risk, param_norm=norm, status=status, constraint_drift=np.zeros((3, 14))
        ),
    }
    spec = spec_of("ejrw_normalized_bounded", [{"case": "c", "problem": problem, "flows": flows}])
    _, verdict = summarize(spec, datasets)
    row = verdict_row(verdict, "c: normalized_bounded")
    assert bool(row["passed"]) is False
    assert "1/2 normalized runs bounded" in row["detail"] and "1 more not judged" in row["detail"]
    assert "growing: c/2 (growth 0.333)" in row["detail"]
    assert "c/normalized/1" in verdict_row(verdict, "solver_failures")["detail"]
