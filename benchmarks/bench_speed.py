"""Speed at the limit and wide networks: every figure is a ratio of times measured in the same run.

Four benchmarks (``python benchmarks/bench_speed.py [lsoda|overhead|auto|width|all]``):

``lsoda``: H = 1, 16 runs of the standard flow, affine target ``2x - 1`` on [0, 1] (uniform law), every parameter
    N(0, 1) (``bench_flows.py``'s initial states), to t = 1e6. Reference: a Python loop of
    ``scipy.integrate.solve_ivp(method="LSODA")`` over the runs on the augmented system ``(theta, E)`` at rtol
    1e-10, atol 1e-12, with the exact Jacobian (and, with ``--lsoda-fd``, with finite-difference Jacobians: the
    slower reference of ``bench_flows.py``). Ours: the whole batch with ``lsoda`` (what ``solver: auto`` is for
    this flow: LSODA's Adams and BDF methods, batched and compiled, :mod:`reluflow.dynamics.compiled_lsoda`),
    ``switching`` (the Dormand-Prince / Rodas4 pair, ``auto`` for the other flows), ``rodas4`` and ``rodas5p``,
    each at rtol 1e-11 * 10^(k / 6), k = 0 .. 18, up to 1e-8 (atol
    rtol / 100): work against precision, six tolerances per decade, so that "an equal residual" is met within
    a factor 1.5 of the tolerance rather than the 2 to 2.5 of a 1-2-5 grid.
    Target: ours at least 30x faster at an equal or smaller energy-identity residual
    ``|L(theta_0) - L(theta_T) - E(T)| / L(theta_0)`` (max and median over the runs); reported at the same rtol
    and at the fastest of our tolerances whose residual is not larger than the reference's. With the latter, the
    floor of that solve: its own rows of G and of the Jacobian evaluated in one call each (the kernels alone, no
    solver and no per-call cost), and the speed-up over the reference that a solve making those evaluations could
    reach at most.
``overhead``: the same case at H = 1 and H = 16: the whole solve against the same solve's own evaluations of G
    and of the Jacobian done in a tight loop. The solve is run twice: timed, then through the uncompiled stage
    loop (the same bits, asserted) with every argument passed to the vector field and its Jacobian recorded; the
    recorded batches are then evaluated again in a loop through the field's callables (``StandardFlow.rhs``,
    ``StandardFlow.jac``: the problem's compiled kernels), and, for the kernels' own cost, all recorded rows in
    one call each; for ``lsoda`` (compiled only, nothing to record) the same numbers of calls and rows at the
    initial states. Solvers: ``lsoda``, ``switching``, ``rodas4``. Target: solve time at most 3x the loop's.
``auto``: H = 16, 8 runs, sine target ``sin(2 pi x)``, rtol 1e-8, atol 1e-10, to t_max = 10, 1e3, 1e6: ``auto``
    (``lsoda`` for this flow) against ``dopri5`` and ``rodas4``, and the pair ``switching`` for reference. Target:
    ``auto`` within 1.5x of the better of ``dopri5`` and ``rodas4`` at each horizon.
    ``dopri5`` to 1e6 is not run (stability-limited, its cost grows like t: ~3e7 steps); its time to 1e3 is a
    lower bound, and already larger than ``rodas4``'s to 1e6.
``width``: 8 runs, sine target, rtol 1e-8, to t = 1e5 at H = 64, 256, 1024 with ``rodas4`` (the structured
    factorization of ``sigma I - J`` from the crossover width on): time per attempted step (summed over the runs)
    and its growth exponent ``p`` in ``t ~ H^p`` (least squares on the logs; ``H log H`` has local exponent 1.17
    to 1.25 here); ``auto`` to t = 1e6 at H = 1024 (target: within 10 minutes on 2 cores) and at H = 4096; and at
    H = 64 the dense path (the exact Jacobian and an LU of the (3H+1)^2 matrix per run and step) for comparison.

Timing. Every solver is warmed up first (numba compilation or cache load, on a short run through the same
paths). Wall time ``time.perf_counter``; CPU time of the process ``time.process_time`` (every kernel is
single-threaded), which on the shared 2-core machine is less sensitive to other jobs. ``--repeats k`` repeats
each timed solve k times (ours and the LSODA loop alike) and keeps the minimum. The 1-minute load average is printed with every
section: figures measured under load are ratios of times measured in the same run, but the ratio moves with
the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy
from scipy.integrate import solve_ivp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_flows import augmented_jacobian, augmented_rhs, initial_states, make_problem  # noqa: E402

from reluflow import Problem  # noqa: E402
from reluflow.dynamics.compiled_lsoda import solve_lsoda  # noqa: E402
from reluflow.dynamics.flows import StandardFlow  # noqa: E402
from reluflow.dynamics.solvers.explicit import solve_explicit  # noqa: E402
from reluflow.dynamics.solvers.rosenbrock import RODAS4, DenseShiftedSystem, solve_rosenbrock  # noqa: E402
from reluflow.dynamics.solvers.switching import solve_switching  # noqa: E402
from reluflow.simulate import choose_solver  # noqa: E402

# work against precision at the lsoda case: six tolerances per decade from 1e-11 to 1e-8 (the reference's rtol
# among them)
OUR_TOLERANCES = tuple(float(f"{1e-11 * 10 ** (k / 6):.3g}") for k in range(19))
# ours at the lsoda case: "lsoda" is LSODA's pair of methods (reluflow.dynamics.compiled_lsoda)
# (a configuration's ``solver: auto`` is ``lsoda`` here; ``switching`` is the Dormand-Prince / Rodas4 pair)
OURS = ("switching", "rodas4", "rodas5p", "lsoda")

SINE = {"kind": "sine", "amplitude": 1.0, "frequency": 6.283185307179586, "phase": 0.0}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} (1 / 5 min, {os.cpu_count()} cores)"


def timed(fn, repeats: int = 1):
    """``(result, wall, cpu)``: the minimum over ``repeats`` calls (the result of the last)."""
    best_wall = best_cpu = np.inf
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return out, best_wall, best_cpu


def residuals(problem: Problem, theta0, theta_t, energy) -> np.ndarray:
    l0 = problem.risk(theta0)
    return np.abs(l0 - problem.risk(theta_t) - energy) / l0


def solver(name: str, flow, y0, times, rtol, atol, **options):
    """A solve of ``flow`` from ``y0`` with ``name``: ``auto`` (what a configuration's ``solver: auto`` resolves to
    for this problem, :func:`reluflow.simulate.choose_solver`: ``lsoda`` for the standard flow of a d = 1 law with a
    density below the structured width, else the pair), ``switching`` (the Dormand-Prince / Rodas4 pair),
    ``lsoda``, ``rodas4``, ``rodas5p``, ``dopri5``, ``rodas4-dense``."""
    if name == "auto":
        name = "lsoda" if choose_solver("auto", flow.name, float(times[-1]), flow.problem) == "lsoda" else "switching"
    fact = flow.shifted_factorization() if flow.structured and name != "rodas4-dense" else None
    stiff = dict(factorization=fact, symmetric_jacobian=flow.name == "standard")  # as reluflow.simulate does
    compiled = flow.compiled() if flow.name == "standard" and options.pop("compiled", True) else None
    rhs, jac = options.pop("rhs", flow.rhs), options.pop("jac", flow.jac)
    if name == "switching":
        return solve_switching(rhs, jac, y0, times, **stiff, field=compiled, rtol=rtol, atol=atol, **options)
    if name == "lsoda":
        return solve_lsoda(rhs, y0, times, field=compiled, rtol=rtol, atol=atol, **options)
    if name.startswith("rodas"):
        method = "rodas5p" if name == "rodas5p" else "rodas4"
        return solve_rosenbrock(rhs, jac, y0, times, **stiff, field=compiled, method=method, rtol=rtol, atol=atol,
                                **options)
    return solve_explicit(rhs, y0, times, tableau=name, field=compiled, rtol=rtol, atol=atol, **options)


def describe(result) -> str:
    attempted = result.n_steps[:, -1] + result.n_rejected[:, -1]
    switched = result.info.get("stiff_from_step")
    stiff = "BDF" if result.info.get("solver") == "lsoda" else "Rodas4"
    extra = "" if switched is None else f", {len(switched)} of {result.y.shape[0]} runs switched to {stiff}"
    return (f"steps per run max {attempted.max()} (sum {attempted.sum()}), rhs rows {result.n_rhs}, jac rows "
            f"{result.n_jac}, status {np.bincount(result.status, minlength=4).tolist()}{extra}")


# ---------------------------------------------------------------------------------------------------------


def affine_case(width: int, runs: int = 16):
    problem = make_problem("affine", width)
    return problem, initial_states(problem, runs, "affine")


def bench_lsoda(args) -> None:
    problem, theta0 = affine_case(1)
    flow = StandardFlow(problem)
    rtol, atol, t_max = 1e-10, 1e-12, 1e6
    print(f"\n=== lsoda: H = 1, {theta0.shape[0]} runs, affine target, LSODA at rtol {rtol:g}, atol {atol:g}, t = {t_max:g};"
          f" {load()} ===")
    variants = [("LSODA, exact Jacobian", {"jac": augmented_jacobian(problem)})]
    if args.lsoda_fd:
        variants.append(("LSODA, finite-difference Jacobian", {}))
    atol_aug = np.full(problem.n_params + 1, atol)
    references = {}
    for label, options in variants:
        for fn in (augmented_rhs(problem), options.get("jac")):  # compiled before the clock starts, as ours are
            if fn is not None:
                fn(0.0, np.append(theta0[0], 0.0))

        def loop(options=options):
            return [solve_ivp(augmented_rhs(problem), (0.0, t_max), np.append(theta0[r], 0.0), method="LSODA",
                              rtol=rtol, atol=atol_aug, **options) for r in range(theta0.shape[0])]

        solutions, wall, cpu = timed(loop, args.repeats)  # timed as ours are: the best of --repeats
        res = np.array([residuals(problem, theta0[r], sol.y[:-1, -1], sol.y[-1, -1])
                        for r, sol in enumerate(solutions)])  # fmt: skip
        nfev = sum(sol.nfev for sol in solutions)
        references[label] = (wall, cpu, res)
        print(f"  reference [{label}] loop over {theta0.shape[0]} runs: wall {wall:.2f} s, CPU {cpu:.2f} s;"
              f" residual max {res.max():.2e}, median {np.median(res):.2e}; nfev {nfev}; {load()}")
    # work against precision: each of ours at the reference's rtol and at looser ones; the comparison at "an
    # equal or smaller residual" takes, per solver, the fastest tolerance whose residual (max and median) is not
    # larger than the reference's
    ours = []
    for name in OURS:
        for our_rtol in OUR_TOLERANCES:
            solver(name, flow, theta0[:4], [0.0, 1e3], our_rtol, our_rtol * 1e-2)
            result, wall, cpu = timed(lambda: solver(name, flow, theta0, [0.0, t_max], our_rtol, our_rtol * 1e-2),
                                      args.repeats)
            res = residuals(problem, theta0, result.y[:, -1], result.energy[:, -1])
            ours.append((name, our_rtol, wall, cpu, res, result))
            print(f"  ours {name:7s} rtol {our_rtol:g} (atol rtol/100): wall {wall:.4f} s, CPU {cpu:.4f} s; residual"
                  f" max {res.max():.2e}, median {np.median(res):.2e}; {describe(result)}")
    for label, (wall, cpu, res) in references.items():
        for name in OURS:
            same_rtol = next(o for o in ours if o[0] == name and o[1] == rtol)
            print(f"  => {name} vs {label}, both at rtol {rtol:g}: {wall / same_rtol[2]:.1f}x wall,"
                  f" {cpu / same_rtol[3]:.1f}x CPU")
            matched = [o for o in ours if o[0] == name and o[4].max() <= res.max()
                       and np.median(o[4]) <= np.median(res)]
            if matched:
                best = min(matched, key=lambda o: o[3])
                print(f"  => {name} vs {label} at an equal or smaller residual (ours at rtol {best[1]:g}):"
                      f" {wall / best[2]:.1f}x wall, {cpu / best[3]:.1f}x CPU (target >= 30x)")
                # the floor of that solve: its own evaluations of G and J with no solver around them, every
                # recorded row in one call each (no per-call cost either); no solve making them is faster
                result = best[5]
                if name == "lsoda":  # its evaluations happen in its compiled loop only: no recorded batches
                    continue
                recorder = recorded_evaluations(name, flow, theta0, [0.0, t_max], best[1], best[1] * 1e-2, result)
                floor = one_call_each(flow, recorder, args.repeats)
                print(f"     its {result.n_rhs} rows of G and {result.n_jac} of J, all in one call each: {floor:.4f} s"
                      f" wall; the speed-up a solve making these evaluations could reach: {wall / floor:.0f}x")
            else:
                print(f"  => {name} vs {label}: no tolerance of ours reached the reference's residual")


class Recorder:
    """The flow's rhs and jac, recording a copy of every batch they are called with."""

    def __init__(self, flow):
        self.flow = flow
        self.rhs_calls: list[np.ndarray] = []
        self.jac_calls: list[np.ndarray] = []

    def rhs(self, y):
        self.rhs_calls.append(np.array(y))
        return self.flow.rhs(y)

    def jac(self, y):
        self.jac_calls.append(np.array(y))
        return self.flow.jac(y)


def recorded_evaluations(name, flow, theta0, times, rtol, atol, result) -> Recorder:
    """The batches a solve passes to G and to the Jacobian. The compiled field evaluates the stages inside its own
    loop, unseen by a recorder; the solve through the uncompiled stage loop gives the same bits (asserted against
    ``result``, the compiled solve), so it evaluates G at the same states."""
    recorder = Recorder(flow)
    again = solver(name, flow, theta0, times, rtol, atol, rhs=recorder.rhs, jac=recorder.jac, compiled=False)
    assert np.array_equal(again.y, result.y), "the recorded solve must be the timed one"
    return recorder


def one_call_each(flow, recorder: Recorder, repeats: int) -> float:
    """Wall time of the recorded rows of G in one call and those of the Jacobian in another: the kernels' own
    cost, without the per-call cost of the solve's batches."""
    every_g = np.concatenate(recorder.rhs_calls)
    every_j = np.concatenate(recorder.jac_calls) if recorder.jac_calls else None  # an explicit solve has none
    _, wall, _ = timed(lambda: (flow.rhs(every_g), every_j is None or flow.jac(every_j)), repeats)
    return wall


def bench_overhead(args) -> None:
    rtol, atol, t_max = 1e-10, 1e-12, 1e6
    for width in (1, 16):
        problem, theta0 = affine_case(width)
        flow = StandardFlow(problem)
        print(f"\n=== overhead: H = {width}, {theta0.shape[0]} runs, affine target, rtol {rtol:g}, t = {t_max:g};"
              f" {load()} ===")
        for name in ("lsoda", "switching", "rodas4"):
            solver(name, flow, theta0[:4], [0.0, 1e3], rtol, atol)
            result, wall, cpu = timed(lambda: solver(name, flow, theta0, [0.0, t_max], rtol, atol), args.repeats)
            if name == "lsoda":
                lsoda_overhead(flow, theta0, result, wall, cpu, args.repeats)
                continue
            recorder = recorded_evaluations(name, flow, theta0, [0.0, t_max], rtol, atol, result)

            def replay():
                for y in recorder.rhs_calls:
                    flow.rhs(y)
                for y in recorder.jac_calls:
                    flow.jac(y)

            _, loop_wall, loop_cpu = timed(replay, args.repeats)
            rows = sum(y.shape[0] for y in recorder.rhs_calls), sum(y.shape[0] for y in recorder.jac_calls)
            assert rows == (result.n_rhs, result.n_jac)
            batch_wall = one_call_each(flow, recorder, args.repeats)
            print(f"  {name:7s}: solve wall {wall:.3f} s (CPU {cpu:.3f} s); its {len(recorder.rhs_calls)} calls of G"
                  f" ({rows[0]} rows) and {len(recorder.jac_calls)} of the Jacobian ({rows[1]} rows) in a tight loop:"
                  f" wall {loop_wall:.3f} s (CPU {loop_cpu:.3f} s); the same rows in one call each: {batch_wall:.3f} s")
            print(f"  => solve / own evaluations: {wall / loop_wall:.2f}x wall, {cpu / loop_cpu:.2f}x CPU (target <= 3x);"
                  f" {describe(result)}")
            # what the step's dense linear algebra costs by itself: one factorization of sigma I - J and one solve
            # per stage for each recorded Jacobian (a lower bound: rejected steps refactorize)
            system = DenseShiftedSystem(symmetric=True)
            stages = RODAS4.stages
            jacs = [flow.jac(y) for y in recorder.jac_calls]
            sigmas = [np.full(j.shape[0], 1.0 / (RODAS4.gamma * 1e-2)) for j in jacs]

            def algebra():
                for jac, sigma in zip(jacs, sigmas):
                    system.factor(jac, sigma)
                    rhs = jac[:, 0]
                    out = np.empty_like(rhs)
                    for _ in range(stages):
                        system.solve(rhs, out)

            _, la_wall, la_cpu = timed(algebra, args.repeats)
            print(f"     the dense linear algebra of those steps alone (factorization + {stages} solves per Jacobian):"
                  f" wall {la_wall:.3f} s; solve / (evaluations + linear algebra): {wall / (loop_wall + la_wall):.2f}x")


def lsoda_overhead(flow, theta0, result, wall, cpu, repeats) -> None:
    """``lsoda`` evaluates G and the Jacobian inside its compiled loop only (no uncompiled twin to record): its
    tight loop is the same number of calls with the same numbers of rows (the driver's two batched calls at the
    start, then the loop's, rows spread evenly over its calls), at the initial states."""
    calls = result.info["calls"]
    m = theta0.shape[0]

    def batches(rows: int, n_calls: int) -> list[np.ndarray]:
        sizes = np.full(n_calls, rows // n_calls) + (np.arange(n_calls) < rows % n_calls)
        return [np.ascontiguousarray(np.resize(theta0, (int(k), theta0.shape[1]))) for k in sizes if k]

    g_batches = [theta0, theta0] + batches(result.n_rhs - 2 * m, calls["rhs"])
    j_batches = batches(result.n_jac, calls["jac"]) if calls["jac"] else []

    def replay():
        for y in g_batches:
            flow.rhs(y)
        for y in j_batches:
            flow.jac(y)

    _, loop_wall, loop_cpu = timed(replay, repeats)
    assert sum(y.shape[0] for y in g_batches) == result.n_rhs and sum(y.shape[0] for y in j_batches) == result.n_jac
    print(f"  lsoda  : solve wall {wall:.4f} s (CPU {cpu:.4f} s); {len(g_batches)} calls of G ({result.n_rhs} rows) and"
          f" {len(j_batches)} of the Jacobian ({result.n_jac} rows) in a tight loop: wall {loop_wall:.4f} s"
          f" (CPU {loop_cpu:.4f} s)")
    print(f"  => solve / own evaluations: {wall / loop_wall:.2f}x wall, {cpu / loop_cpu:.2f}x CPU (target <= 3x);"
          f" {describe(result)}")


def sine_case(width: int, runs: int = 8, seed: int = 0):
    problem = Problem.from_config({"network": {"width": width}, "target": SINE})
    return problem, np.random.default_rng(seed).standard_normal((runs, problem.n_params))


def bench_auto(args) -> None:
    problem, theta0 = sine_case(16)
    flow = StandardFlow(problem)
    rtol, atol = 1e-8, 1e-10
    print(f"\n=== auto: H = 16, 8 runs, sine target, rtol {rtol:g}, atol {atol:g}; {load()} ===")
    print(f"  (solver: auto is {choose_solver('auto', flow.name, 1e6, problem)} here; switching: the"
          f" Dormand-Prince / Rodas4 pair, for reference)")
    for name in ("auto", "switching", "rodas4", "dopri5"):
        solver(name, flow, theta0, [0.0, 30.0], rtol, atol)  # warm-up through both modes of each
    previous_dopri5 = (np.inf, np.inf)
    for t_max in (10.0, 1e3, 1e6):
        times = {}
        for name in ("auto", "switching", "dopri5", "rodas4"):
            if name == "dopri5" and t_max > 1e3:
                continue
            result, wall, cpu = timed(lambda: solver(name, flow, theta0, [0.0, t_max], rtol, atol), args.repeats)
            times[name] = (wall, cpu)
            print(f"  t_max {t_max:g} {name:9s}: wall {wall:.3f} s, CPU {cpu:.3f} s; {describe(result)}")
        if "dopri5" not in times:
            times["dopri5"] = previous_dopri5  # a lower bound: its time to 1e3
            print(f"  t_max {t_max:g} dopri5 : not run; at least its time to 1e3, wall {previous_dopri5[0]:.3f} s")
        previous_dopri5 = times["dopri5"]
        best = min(("dopri5", "rodas4"), key=lambda k: times[k][1])
        print(f"  => auto / {best} (the better, by CPU): {times['auto'][0] / times[best][0]:.2f}x wall,"
              f" {times['auto'][1] / times[best][1]:.2f}x CPU (target <= 1.5x); {load()}")


def bench_width(args) -> None:
    rtol, atol = 1e-8, 1e-10
    print(f"\n=== width: 8 runs, sine target, rtol {rtol:g}, atol {atol:g}; {load()} ===")
    per_step = {}
    for width in args.widths:
        problem, theta0 = sine_case(width)
        flow = StandardFlow(problem)
        solver("rodas4", flow, theta0[:2], [0.0, 1e-2], rtol, atol)
        result, wall, cpu = timed(lambda: solver("rodas4", flow, theta0, [0.0, 1e5], rtol, atol))
        attempted = int((result.n_steps[:, -1] + result.n_rejected[:, -1]).sum())
        per_step[width] = cpu / attempted
        print(f"  H = {width:5d} rodas4 to 1e5 ({result.info['linear_algebra']}): wall {wall:.2f} s, CPU {cpu:.2f} s;"
              f" CPU per run-step {1e3 * per_step[width]:.3f} ms; {describe(result)}; {load()}")
    widths = np.array(sorted(per_step), dtype=float)
    if widths.size >= 2:
        p = np.polyfit(np.log(widths), np.log([per_step[w] for w in sorted(per_step)]), 1)[0]
        hlogh = np.polyfit(np.log(widths), np.log(widths * np.log(widths)), 1)[0]
        print(f"  => time per step ~ H^{p:.2f} over H = {', '.join(str(int(w)) for w in widths)}"
              f" (H log H over the same widths: H^{hlogh:.2f}); target: at most like H log H")
    if args.dense_width:
        problem, theta0 = sine_case(args.dense_width)
        flow = StandardFlow(problem)
        solver("rodas4-dense", flow, theta0[:2], [0.0, 1e-2], rtol, atol)
        result, wall, cpu = timed(lambda: solver("rodas4-dense", flow, theta0, [0.0, 1e5], rtol, atol))
        attempted = int((result.n_steps[:, -1] + result.n_rejected[:, -1]).sum())
        print(f"  H = {args.dense_width:5d} rodas4 to 1e5, DENSE Jacobian + LU: wall {wall:.2f} s, CPU {cpu:.2f} s;"
              f" CPU per run-step {1e3 * cpu / attempted:.3f} ms; {describe(result)}")
    for width in args.long_widths:
        problem, theta0 = sine_case(width)
        flow = StandardFlow(problem)
        solver("auto", flow, theta0[:2], [0.0, 1e-2], rtol, atol)
        result, wall, cpu = timed(lambda: solver("auto", flow, theta0, [0.0, args.long_t], rtol, atol))
        print(f"  H = {width:5d} auto to {args.long_t:g}: wall {wall:.1f} s ({wall / 60:.1f} min), CPU {cpu:.1f} s;"
              f" {describe(result)}; {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", nargs="?", choices=("lsoda", "overhead", "auto", "width", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each timed solve, ours and the LSODA loop (minimum kept)")
    parser.add_argument("--lsoda-fd", action="store_true", help="also LSODA with finite-difference Jacobians (slow)")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--dense-width", type=int, default=64, help="width of the dense comparison (0: none)")
    parser.add_argument("--long-widths", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument("--long-t", type=float, default=1e6)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(f"bench_speed: numpy {np.__version__}, scipy {scipy.__version__}; {load()}")
    for name, fn in (("lsoda", bench_lsoda), ("overhead", bench_overhead), ("auto", bench_auto),
                     ("width", bench_width)):
        if args.benchmark in (name, "all"):
            fn(args)


if __name__ == "__main__":
    main()
