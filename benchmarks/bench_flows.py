"""Batched integrators against a Python loop of ``scipy.integrate.solve_ivp`` over the runs (issues 3 and 8).

Both benchmarks integrate the standard gradient flow ``Theta' = -G(Theta)`` (JR) of M = 256 runs of a d = 1
network with H = 16 neurons (n = 3H + 1 = 49 parameters) at rtol = 1e-8, atol = 1e-10, measured in one process:

- ``explicit`` (issue 3): to t = 1e3. Ours: ``solve_explicit(StandardFlow(problem).rhs, ...)`` (Dormand-Prince
  5(4), the whole batch at once). Reference: ``solve_ivp(method="RK45")`` (the same Dormand-Prince pair), one run
  after the other. Target: >= 30x faster at an equal or smaller energy-identity residual.
- ``stiff`` (issue 8): to t = 1e6. Ours: ``solve_rosenbrock(flow.rhs, flow.jac, ...)`` with Rodas4 (the default)
  and Rodas5P. Reference: ``solve_ivp(method="LSODA")`` with finite-difference Jacobians and, as a second
  variant, with the exact Jacobian. Target: >= 10x faster at an equal or smaller residual.

Problem. Target ``f(x) = 2x - 1`` on ``[0, 1]``, uniform law (``--target abs`` gives ``|x - 1/2|``). The affine
target is the case of JR Theorem 1.2, the project's central scenario: the runs either reach zero risk or stall at
critical points, many with slow power-law tails, which is the stiff long-horizon regime issue 8 is about. Its
exact kernel is the cheapest (one table interval, 2 Gauss nodes), so the benchmark measures integrator overhead
rather than quadrature cost: that is what the two sides differ in (both call the same ``G``).

Initial states: ``reluflow.experiments.initialization.draw_initializations`` with the gaussian scheme, scale 1 (every
parameter N(0, 1)); each run has its own seeded stream, so run ``r`` is the same whatever ``--runs`` is.

The same G. The reference right-hand side is ``-problem.generalized_gradient(theta)`` on one run (the same exact
kernel, through the public API, as ``StandardFlow.rhs`` on a batch).

Energy-identity residual. ``res = L(Theta_0) - L(Theta_T) - E(T)`` with ``E(T) = int_0^T |G(Theta_s)|^2 ds``,
reported relative to ``L(Theta_0)`` (max and median of ``|res| / L(Theta_0)`` over runs). Ours: the solvers
return ``E`` (the method applied to the augmented ODE, ``E`` outside the error control). Reference: the same
augmented ODE ``(theta, E)' = (-G, |G|^2)`` handed to ``solve_ivp``; this is the fair choice (``E`` is integrated
by the same method and the same steps as ``theta``, exactly as ours; a dense-output quadrature would add an
interpolation error of its own). ``solve_ivp`` has no way to leave a component out of its error norm except a
huge ``atol`` for it, so the reference is run in two variants where time allows:

- ``E in norm``: ``atol_E = atol`` (what a user would write; ``E`` also steers the step size, which the
  residual then profits from);
- ``E outside``: ``atol_E = 1e30``, so ``E``'s term in the error norm is ~0: the same control as ours.

For LSODA with the exact Jacobian the augmented Jacobian is ``[[J, 0], [2 (J^T f)^T, 0]]`` with ``f = -G``,
``J = -dG/dtheta`` (``problem.gradient_jacobian``).

Timing. Both sides are warmed up first (numba compilation / cache load of the kernels). Wall time
(``time.perf_counter``) and process CPU time (``time.process_time``, less sensitive to other processes on the
shared 2-core machine) are printed with ``os.getloadavg()`` before and after each side. If the full reference
loop would take too long (RK45 to 1e3: ~5-10 s per run, so ~40 min), ``--subset K`` times a seeded random subset
of K runs and extrapolates linearly (mean per-run time x M), printed as such, with the standard error of that
estimate from the spread of the per-run times (finite-population corrected). Residuals are then compared on the
same subset of runs (ours restricted to those runs); ours over all M runs is printed as well. Our side always
integrates all M runs in one batch. If the subset extrapolates to less than ``--full-budget`` seconds (600) for
all M runs, the remaining runs are integrated as well and the full loop is reported.

Usage::

    python benchmarks/bench_flows.py [explicit|stiff|all] [--runs 256] [--subset K] [--quick] [--target affine|abs]
        [--variants main|all] [--max-load 1.5] [--load-wait 120]

``--subset 0`` runs the full reference loop; by default it is 32 for both benchmarks (measured: RK45 to 1e3 takes
2-12 s per run; LSODA to 1e6 takes 1 s for some runs and more than 20 s for about a third of them, where the
kink of a neuron sits at a boundary of [0, 1] and its Jacobian keeps being re-evaluated).
``--quick``: 8 runs to t = 10 (explicit) / 1e3 (stiff), full loop, for a smoke run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import scipy
from scipy.integrate import solve_ivp

from reluflow import Problem
from reluflow.dynamics.flows import StandardFlow
from reluflow.dynamics.solvers.explicit import solve_explicit
from reluflow.dynamics.solvers.result import Status
from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock
from reluflow.experiments.initialization import draw_initializations, validate_init

TARGETS = {
    "affine": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
    "abs": {"kind": "abs", "center": 0.5},
}
RTOL, ATOL = 1e-8, 1e-10
#: ``atol`` of the energy component in the "E outside" reference variant: the error norm term of E is
#: ``err_E / (1e30 + rtol |E|)``, i.e. ~1e-30 x the error: E no longer influences the step sizes.
ATOL_E_OUTSIDE = 1e30
EXPLICIT_TARGET_SPEEDUP = 30.0
STIFF_TARGET_SPEEDUP = 10.0


# ---------------------------------------------------------------------------------------------------------
# setup


def make_problem(target: str, width: int) -> Problem:
    return Problem.from_config({"network": {"width": width}, "domain": [0.0, 1.0], "target": TARGETS[target],
                                "measure": {"kind": "uniform"}})


def initial_states(problem: Problem, runs: int, target: str) -> np.ndarray:
    init = validate_init("init", {"scheme": "gaussian", "n_runs": runs, "scale": 1.0}, problem)
    theta0, _ = draw_initializations(problem, init, "bench_flows", target, np.arange(runs))
    return theta0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load avg {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


def wait_for_low_load(max_load: float, max_wait: float) -> None:
    """Sleep until the 1-minute load average is below ``max_load`` or ``max_wait`` seconds have passed."""
    start = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - start < max_wait:
        time.sleep(10.0)
    waited = time.monotonic() - start
    state = "low" if os.getloadavg()[0] < max_load else "still high"
    print(f"  [waited {waited:.0f} s for 1-min load < {max_load}: {state}; {load()}]", flush=True)


@dataclass
class Timing:
    wall: float
    cpu: float
    load_before: str
    load_after: str


def timed(fn, *args, **kwargs):
    before = load()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    w1, c1 = time.perf_counter(), time.process_time()
    return out, Timing(w1 - w0, c1 - c0, before, load())


def relative_residuals(problem: Problem, theta0: np.ndarray, theta_t: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """``|L(theta_0) - L(theta_T) - E(T)| / L(theta_0)`` per run."""
    l0 = problem.risk(theta0)
    return np.abs(l0 - problem.risk(theta_t) - energy) / l0


def residual_text(res: np.ndarray) -> str:
    q90 = np.quantile(res, 0.9)
    return f"max {np.max(res):.2e}  90% {q90:.2e}  median {np.median(res):.2e}  (over {res.size} runs)"


# ---------------------------------------------------------------------------------------------------------
# the reference: a loop of solve_ivp over the runs


def augmented_rhs(problem: Problem):
    """``(theta, E)' = (-G(theta), |G(theta)|^2)`` for one run, through the public ``generalized_gradient``."""

    def fun(t, y):
        g = problem.generalized_gradient(y[:-1])
        out = np.empty_like(y)
        out[:-1] = -g
        out[-1] = g @ g
        return out

    return fun


def augmented_jacobian(problem: Problem):
    """Exact Jacobian of the augmented field: ``[[J, 0], [2 (J^T f)^T, 0]]``, ``f = -G``, ``J = -dG/dtheta``."""

    def jac(t, y):
        theta = y[:-1]
        f = -problem.generalized_gradient(theta)
        j = -problem.gradient_jacobian(theta)
        out = np.zeros((y.size, y.size))
        out[:-1, :-1] = j
        out[-1, :-1] = 2.0 * (j.T @ f)
        return out

    return jac


@dataclass
class Reference:
    label: str
    runs: np.ndarray  # indices of the runs integrated
    seconds: np.ndarray  # wall time per run
    cpu: np.ndarray  # CPU time per run
    residual: np.ndarray
    nfev: np.ndarray
    njev: np.ndarray
    failures: int
    load_before: str = ""
    load_after: str = ""
    extra: dict = field(default_factory=dict)


def run_reference(problem, theta0, runs, t_max, method, *, e_outside=False, exact_jac=False, label="",
                  verbose=True, header="per run") -> Reference:
    n = problem.n_params
    atol = np.full(n + 1, ATOL)
    if e_outside:
        atol[-1] = ATOL_E_OUTSIDE
    options = {"jac": augmented_jacobian(problem)} if exact_jac else {}
    fun = augmented_rhs(problem)
    seconds, cpu, res, nfev, njev = [], [], [], [], []
    failures = 0
    before = load()
    if verbose:
        print(f"  reference [{label}], {header}:")
    for r in runs:
        w0, c0 = time.perf_counter(), time.process_time()
        sol = solve_ivp(fun, (0.0, t_max), np.append(theta0[r], 0.0), method=method, rtol=RTOL, atol=atol,
                        **options)
        seconds.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        failures += sol.status != 0
        theta_t, energy = sol.y[:-1, -1], sol.y[-1, -1]
        res.append(relative_residuals(problem, theta0[r], theta_t, energy))
        nfev.append(sol.nfev)
        njev.append(sol.njev)
        if verbose:
            print(f"      run {r:3d}: wall {seconds[-1]:7.3f} s, nfev {sol.nfev:7d}, njev {sol.njev:5d},"
                  f" residual {res[-1]:.2e}{'' if sol.status == 0 else ' FAILED: ' + sol.message}")
    return Reference(label, np.asarray(runs), np.array(seconds), np.array(cpu), np.array(res, dtype=float),
                     np.array(nfev), np.array(njev), failures, before, load())


def reference_loop(args, problem, theta0, subset, t_max, method, **options) -> Reference:
    """The reference on ``subset``; if that extrapolates to less than ``args.full_budget`` seconds for all runs,
    the remaining runs are integrated too and the full loop is reported (no extrapolation needed)."""
    ref = run_reference(problem, theta0, subset, t_max, method, **options)
    m = theta0.shape[0]
    if subset.size == m or extrapolated(ref.seconds, m)[0] > args.full_budget:
        return ref
    rest = run_reference(problem, theta0, np.setdiff1d(np.arange(m), subset), t_max, method,
                         header=f"per run, the other {m - subset.size} runs", **options)
    print(f"    (the subset extrapolated to < {args.full_budget:.0f} s: the other {rest.runs.size} runs were "
          f"integrated too; the figures below are the full loop)")
    return Reference(ref.label, np.concatenate([ref.runs, rest.runs]), np.concatenate([ref.seconds, rest.seconds]),
                     np.concatenate([ref.cpu, rest.cpu]), np.concatenate([ref.residual, rest.residual]),
                     np.concatenate([ref.nfev, rest.nfev]), np.concatenate([ref.njev, rest.njev]),
                     ref.failures + rest.failures, ref.load_before, rest.load_after)


def extrapolated(per_run: np.ndarray, m_total: int) -> tuple[float, float]:
    """Linear extrapolation ``m_total x mean`` of per-run times and its standard error.

    The subset is a simple random sample without replacement, so the standard error of the total is
    ``m_total * s / sqrt(k) * sqrt(1 - k / m_total)`` (``s`` the sample standard deviation).
    """
    k = per_run.size
    total = m_total * float(np.mean(per_run))
    if k < 2 or k == m_total:
        return total, 0.0
    return total, m_total * float(np.std(per_run, ddof=1)) / math.sqrt(k) * math.sqrt(1.0 - k / m_total)


# ---------------------------------------------------------------------------------------------------------
# report


def report_ours(label, result, timing: Timing, residual_all, subset):
    statuses = {Status(s).name.lower(): int(c) for s, c in zip(*np.unique(result.status, return_counts=True))}
    m = result.y.shape[0]
    print(f"  ours [{label}] on all {m} runs in one batch: wall {timing.wall:.2f} s, CPU {timing.cpu:.2f} s")
    print(f"    {timing.load_before} -> {timing.load_after}")
    print(f"    status {statuses}; rhs rows {result.n_rhs} ({result.n_rhs / m:.0f} per run), jac rows {result.n_jac};"
          f" accepted steps per run mean {result.n_steps[:, -1].mean():.0f}, max {result.n_steps[:, -1].max()},"
          f" rejected total {result.n_rejected[:, -1].sum()}")
    print(f"    residual |L0 - LT - E| / L0, all runs:   {residual_text(residual_all)}")
    if subset.size < m:
        print(f"    residual, the reference's {subset.size} runs: {residual_text(residual_all[subset])}")


def report_reference(ref: Reference, m_total: int):
    k = ref.runs.size
    print(f"  reference [{ref.label}], a Python loop of solve_ivp over {k} runs:")
    print(f"    {ref.load_before} -> {ref.load_after}")
    print(f"    per run: wall min {ref.seconds.min():.3f} / median {np.median(ref.seconds):.3f} / max "
          f"{ref.seconds.max():.3f} s; nfev mean {ref.nfev.mean():.0f}, njev mean {ref.njev.mean():.1f};"
          f" failures {ref.failures}")
    wall, wall_se = extrapolated(ref.seconds, m_total)
    cpu, cpu_se = extrapolated(ref.cpu, m_total)
    if k < m_total:
        print(f"    EXTRAPOLATED from a seeded random subset of {k} of {m_total} runs: {m_total} x mean per-run time"
              f" = wall {wall:.1f} +- {wall_se:.1f} s, CPU {cpu:.1f} +- {cpu_se:.1f} s (+- one standard error)")
        print(f"    (measured: wall {ref.seconds.sum():.1f} s, CPU {ref.cpu.sum():.1f} s for the {k} runs)")
    else:
        print(f"    all {k} runs measured: wall {wall:.1f} s, CPU {cpu:.1f} s")
    print(f"    residual |L0 - LT - E| / L0: {residual_text(ref.residual)}")
    return wall, wall_se, cpu


def verdict(label_ours, timing: Timing, res_ours_all, ref: Reference, m_total: int, target: float):
    res_ours_subset = res_ours_all[ref.runs]  # the residual is compared on the runs the reference integrated
    wall, wall_se = extrapolated(ref.seconds, m_total)
    cpu = extrapolated(ref.cpu, m_total)[0]
    ratio, ratio_cpu = wall / timing.wall, cpu / timing.cpu
    lo = (wall - 2 * wall_se) / timing.wall
    hi = (wall + 2 * wall_se) / timing.wall
    res_ok_max = np.max(res_ours_subset) <= np.max(ref.residual)
    res_ok_med = np.median(res_ours_subset) <= np.median(ref.residual)
    met = ratio >= target and res_ok_max and res_ok_med
    spread = f" (+-2 SE: {lo:.1f}x .. {hi:.1f}x)" if wall_se > 0 else ""
    if ref.runs.size < m_total:  # needs no extrapolation: the subset alone against all M runs of ours
        spread += f"; lower bound without extrapolation {ref.seconds.sum() / timing.wall:.1f}x"
    print(f"  => {label_ours} vs {ref.label}: speed-up wall {ratio:.1f}x{spread}, CPU {ratio_cpu:.1f}x"
          f" (target >= {target:.0f}x);")
    print(f"     residual max {np.max(res_ours_subset):.2e} vs {np.max(ref.residual):.2e}"
          f" ({'<=' if res_ok_max else '>'}), median {np.median(res_ours_subset):.2e} vs"
          f" {np.median(ref.residual):.2e} ({'<=' if res_ok_med else '>'}) on the same {ref.runs.size} runs;"
          f" TARGET {'MET' if met else 'NOT MET'}")
    better = int(np.sum(res_ours_subset <= ref.residual))
    print(f"     run by run, ours has the smaller or equal residual on {better} of {ref.runs.size} runs")
    return met


# ---------------------------------------------------------------------------------------------------------
# the two benchmarks


def choose_subset(m: int, subset: int, seed: int) -> np.ndarray:
    if subset <= 0 or subset >= m:
        return np.arange(m)
    return np.sort(np.random.default_rng(seed).choice(m, size=subset, replace=False))


def bench_explicit(args) -> None:
    problem = make_problem(args.target, args.width)
    theta0 = initial_states(problem, args.runs, args.target)
    t_max = args.t_explicit
    flow = StandardFlow(problem)
    subset = choose_subset(args.runs, args.subset_explicit, args.subset_seed)
    print(f"\n=== issue 3: dopri5 batch vs loop of solve_ivp(RK45); M = {args.runs}, H = {args.width},"
          f" n = {problem.n_params}, t = {t_max:g}, rtol = {RTOL:g}, atol = {ATOL:g}, target {args.target} ===")
    # warm-up: numba kernels of G and of the solver (compilation or cache load), scipy's code paths
    solve_explicit(flow.rhs, theta0[:2], [0.0, 1e-3], rtol=RTOL, atol=ATOL)
    solve_ivp(augmented_rhs(problem), (0.0, 1e-3), np.append(theta0[0], 0.0), method="RK45", rtol=RTOL, atol=ATOL)

    wait_for_low_load(args.max_load, args.load_wait)
    result, timing = timed(solve_explicit, flow.rhs, theta0, [0.0, t_max], tableau="dopri5", rtol=RTOL, atol=ATOL,
                           max_steps=10**7)
    res_ours = relative_residuals(problem, theta0, result.y[:, -1], result.energy[:, -1])
    report_ours("dopri5", result, timing, res_ours, subset)

    variants = [("RK45, E in norm", False), ("RK45, E outside norm", True)]
    for label, e_outside in variants:
        wait_for_low_load(args.max_load, args.load_wait)
        ref = reference_loop(args, problem, theta0, subset, t_max, "RK45", e_outside=e_outside, label=label)
        report_reference(ref, args.runs)
        verdict("dopri5", timing, res_ours, ref, args.runs, EXPLICIT_TARGET_SPEEDUP)


def bench_stiff(args) -> None:
    problem = make_problem(args.target, args.width)
    theta0 = initial_states(problem, args.runs, args.target)
    t_max = args.t_stiff
    flow = StandardFlow(problem)
    subset = choose_subset(args.runs, args.subset_stiff, args.subset_seed)
    print(f"\n=== issue 8: Rosenbrock batch vs loop of solve_ivp(LSODA); M = {args.runs}, H = {args.width},"
          f" n = {problem.n_params}, t = {t_max:g}, rtol = {RTOL:g}, atol = {ATOL:g}, target {args.target} ===")
    for method in ("rodas4", "rodas5p"):  # warm-up
        solve_rosenbrock(flow.rhs, flow.jac, theta0[:2], [0.0, 1e-3], method=method, rtol=RTOL, atol=ATOL)
    solve_ivp(augmented_rhs(problem), (0.0, 1e-3), np.append(theta0[0], 0.0), method="LSODA", rtol=RTOL, atol=ATOL,
              jac=augmented_jacobian(problem))

    ours = {}
    for method in ("rodas4", "rodas5p"):
        wait_for_low_load(args.max_load, args.load_wait)
        result, timing = timed(solve_rosenbrock, flow.rhs, flow.jac, theta0, [0.0, t_max], method=method, rtol=RTOL,
                               atol=ATOL, max_steps=10**6)
        res = relative_residuals(problem, theta0, result.y[:, -1], result.energy[:, -1])
        report_ours(method, result, timing, res, subset)
        ours[method] = (timing, res)

    variants = [("LSODA, FD Jacobian, E in norm", False, False), ("LSODA, exact Jacobian, E in norm", False, True),
                ("LSODA, exact Jacobian, E outside norm", True, True)]
    if args.variants == "all":  # as slow as the first variant (~15 min for 32 runs), for completeness
        variants.append(("LSODA, FD Jacobian, E outside norm", True, False))
    for label, e_outside, exact_jac in variants:
        wait_for_low_load(args.max_load, args.load_wait)
        ref = reference_loop(args, problem, theta0, subset, t_max, "LSODA", e_outside=e_outside,
                             exact_jac=exact_jac, label=label)
        report_reference(ref, args.runs)
        for method, (timing, res) in ours.items():
            verdict(method, timing, res, ref, args.runs, STIFF_TARGET_SPEEDUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", nargs="?", choices=("explicit", "stiff", "all"), default="all")
    parser.add_argument("--runs", type=int, default=256, help="M, the number of runs (default 256)")
    parser.add_argument("--width", type=int, default=16, help="H (default 16)")
    parser.add_argument("--subset", type=int, default=None,
                        help="time the reference on a seeded random subset of this many runs and extrapolate; "
                             "0 = all runs (default: 32 for explicit, 0 for stiff)")
    parser.add_argument("--subset-seed", type=int, default=2024)
    parser.add_argument("--full-budget", type=float, default=600.0,
                        help="if the subset extrapolates to less than this many seconds, run the full loop")
    parser.add_argument("--target", choices=sorted(TARGETS), default="affine")
    parser.add_argument("--variants", choices=("main", "all"), default="main",
                        help="'all' adds LSODA with finite-difference Jacobians and E outside the error norm "
                             "(slow, and its information is in the exact-Jacobian variant)")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="before each timed section wait for the 1-min load average to drop below this")
    parser.add_argument("--load-wait", type=float, default=120.0, help="... but at most this many seconds")
    parser.add_argument("--quick", action="store_true", help="8 runs, t = 10 / 1e3, full loops: a smoke run")
    args = parser.parse_args()
    if args.runs < 1 or args.width < 1:
        raise ValueError("--runs and --width must be positive")
    args.t_explicit, args.t_stiff = 1e3, 1e6
    args.subset_explicit = 32 if args.subset is None else args.subset
    args.subset_stiff = 32 if args.subset is None else args.subset
    if args.quick:
        args.runs, args.t_explicit, args.t_stiff = min(args.runs, 8), 10.0, 1e3
        args.subset_explicit = args.subset_stiff = 0 if args.subset is None else args.subset
        args.load_wait = 0.0
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in a log file as it happens
    print(f"bench_flows: {load()}; numpy {np.__version__}, scipy {scipy.__version__}")
    if args.benchmark in ("explicit", "all"):
        bench_explicit(args)
    if args.benchmark in ("stiff", "all"):
        bench_stiff(args)


if __name__ == "__main__":
    main()
