"""Dormand-Prince while the step is limited by accuracy, Rodas4 once stability limits it, per run: ``solver: auto``
for the flows that :mod:`reluflow.dynamics.compiled_lsoda` does not serve (the normalized flow, wide d = 1
networks with the structured factorization, d = 2; :func:`reluflow.simulate.choose_solver`).

Why. A gradient flow that settles near a critical point decays slowly along flat directions while its fast
directions stay fast: an explicit pair is then held at ``|h lambda_max| ~ 3.3`` by stability (its cost grows like
``t``), while an L-stable Rosenbrock method takes steps limited by accuracy alone (cost ~ ``log t``). Before that,
in the transient, the explicit pair is accurate and cheaper per step. Which regime a run is in, and when it
changes, depends on the run: a horizon ``t_max`` says nothing about it (at ``H = 16`` the flows of the benchmark
become stiff near ``t ~ 1``).

Detection (Hairer & Wanner's ``dopri5.f``, Hairer, Norsett & Wanner I, sec. IV.2 / II.10). After every accepted
Dormand-Prince step of a run,

    h lambda ~ h |f(y_1) - f(Y_6)| / |y_1 - Y_6|

(``Y_6`` the argument of the sixth stage, ``f(Y_6)`` its derivative, ``f(y_1)`` the first-same-as-last stage:
no extra evaluation) estimates ``h`` times the dominant eigenvalue of the Jacobian along the step. The stability
domain of DOPRI5 reaches ``-3.3`` on the real axis, and ``dopri5.f`` counts a step as stiff when ``h lambda >
3.25``. Here the threshold is 1.5: this package's PI controller (``beta2 = 0.08``, damping the oscillation at the
stability boundary) holds a stability-limited step at an estimated ``h lambda`` of 1.8 to 3.2 (measured on the
flows of the benchmark, where it stayed pinned there for hundreds of steps), while the accuracy-limited steps of the
transient stayed below 1 (at rtol 1e-8: a fast mode that is still present must be resolved to ``rtol``; with a
much looser ``rtol`` the count of 15 protects against occasional larger values).
Fifteen such steps (``dopri5.f``'s count; six non-stiff steps in a row reset it) switch the run to
Rodas4 with the exact Jacobian (the structured factorization of ``sigma I - J`` for wide d = 1 networks), starting
from the current step size; the predictive controller then grows it by up to 6x per step. ``dopri5.f`` tests every
``NSTIFF = 1000`` steps and then every step while it suspects stiffness; the test is two sums per run, so here it
runs after every accepted step.

The switch is one way. Once a run's steps are limited by stability it stays near the critical point it
approaches in every case seen here, and Rodas4 is accurate in non-stiff stretches too (at a higher cost per step,
which is then small next to the steps saved); switching back would need an estimate of ``|J|`` at every step.

Per-run independence. The mode, the detection counters and the controller memories are per run and every
decision reads that run's numbers only; a batch with runs in both modes is split into the two sub-batches, each
stepped by its method, whose arithmetic is row by row. So a run's numbers are bitwise those it would have in any
other batch. Until a run switches, its steps are exactly those of ``solver: dopri5``.

Pieces: :class:`SwitchingMethod` (the driver method) and :class:`SwitchingController` (the
:class:`~reluflow.dynamics.solvers.controllers.PIController` of the explicit pair for explicit rows and the
:class:`~reluflow.dynamics.solvers.controllers.PredictiveController` of ``rodas.f`` for stiff rows); the driver
loop is the one of every method.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from reluflow.dynamics.solvers.controllers import PIController, PredictiveController, _AdaptiveLanding
from reluflow.dynamics.solvers.driver import StepEstimate
from reluflow.dynamics.solvers.explicit import ExplicitRungeKutta
from reluflow.dynamics.solvers.rosenbrock import RosenbrockMethod

__all__ = ["SwitchingMethod", "SwitchingController", "solve_switching", "STIFF_H_LAMBDA", "STIFF_HITS",
           "CALM_RESET"]

#: ``h lambda`` beyond which a Dormand-Prince step counts as limited by stability (``dopri5.f``)
STIFF_H_LAMBDA = 1.5
#: stiff steps that switch a run (``dopri5.f``: 15)
STIFF_HITS = 15
#: non-stiff steps in a row that reset the count of stiff steps (``dopri5.f``: 6)
CALM_RESET = 6


@njit(cache=True, error_model="numpy")
def _h_lambda(h, y_new, stage, k_new, k_stage, out):
    """``h |k_new - k_stage| / |y_new - stage|`` per row (0 where the denominator vanishes)."""
    m, n = y_new.shape
    for r in range(m):
        num = 0.0
        den = 0.0
        for c in range(n):
            d = k_new[r, c] - k_stage[r, c]
            num += d * d
            e = y_new[r, c] - stage[r, c]
            den += e * e
        out[r] = h[r] * np.sqrt(num / den) if den > 0.0 else 0.0


@njit(cache=True)
def _count_stiff_steps(accepted, stiff, h_lambda, explicit_steps, hits, calm, threshold, hits_to_switch, reset_after):
    """The detection's counters after a step, per row, in place (``stiff``, ``explicit_steps``, ``hits``,
    ``calm``): an accepted explicit step counts; it is a hit when ``h lambda > threshold``, else a calm step (a
    hit resets the calm steps, ``reset_after`` calm steps in a row reset the hits); ``hits_to_switch`` hits
    make the row stiff. Integer bookkeeping only: one compiled call instead of a dozen small numpy ones."""
    for r in range(accepted.shape[0]):
        explicit = accepted[r] and not stiff[r]
        big = explicit and h_lambda[r] > threshold
        quiet = explicit and not big
        explicit_steps[r] += explicit
        hits[r] += big
        calm[r] = 0 if big else calm[r] + quiet
        if quiet and calm[r] >= reset_after:
            hits[r] = 0
        stiff[r] = stiff[r] or hits[r] >= hits_to_switch


# The masks of a step are tested with np.count_nonzero: on a batch of a few runs it costs a fifth of .any()
# (a ufunc reduction), and this is the Python loop of every explicit step of ``auto``.


class SwitchingMethod:
    """Per-run switch from an explicit pair (``dopri5``) to a Rosenbrock method (module docstring)."""

    def __init__(self, explicit: ExplicitRungeKutta, stiff: RosenbrockMethod):
        tab = explicit.tableau
        if not (tab.fsal and tab.stages >= 3):
            raise ValueError(f"explicit: stiffness detection needs a first-same-as-last pair, got {tab.name!r}")
        self.explicit = explicit
        self.stiff = stiff
        self.order = explicit.order
        self.error_exponent = explicit.error_exponent  # runs start explicit (the first step is the pair's)
        self.stiff_from_step: dict[int, int] = {}  # run -> accepted steps before its switch, for the report
        self._h_lambda = np.zeros(0)

    def memory(self, m: int, n: int) -> dict:
        return {"stiff": np.zeros(m, dtype=bool), "hits": np.zeros(m, dtype=np.int64),
                "calm": np.zeros(m, dtype=np.int64), "explicit_steps": np.zeros(m, dtype=np.int64),
                **self.stiff.memory(m, n)}

    def workspace(self, m: int, n: int) -> None:
        self.explicit.workspace(m, n)
        self.stiff.workspace(m, n)

    def prepare(self, y, memory):
        stiff = memory["stiff"]
        if not np.count_nonzero(stiff):
            return None, None
        return self.stiff.prepare(y, memory, active=stiff)

    def _explicit_step(self, rhs, y, f, h):
        est = self.explicit.step(rhs, y, f, h, {})
        m = y.shape[0]
        s = self.explicit.tableau.stages
        K = self.explicit._K
        out = np.empty(m)
        _h_lambda(h, est.y_new, self.explicit._stage[:m], K[s - 1, :m], K[s - 2, :m], out)
        return est, out

    def step(self, rhs, y, f, h, memory) -> StepEstimate:
        stiff = memory["stiff"]
        m = y.shape[0]
        n_stiff = np.count_nonzero(stiff)
        if not n_stiff:
            est, self._h_lambda = self._explicit_step(rhs, y, f, h)
            est.stiff = stiff
            return est
        if n_stiff == m:
            self._h_lambda = np.zeros(m)
            est = self.stiff.step(rhs, y, f, h, memory)
            est.stiff = stiff
            return est
        e, s = np.flatnonzero(~stiff), np.flatnonzero(stiff)
        est_e, h_lambda = self._explicit_step(rhs, np.ascontiguousarray(y[e]), np.ascontiguousarray(f[e]), h[e])
        sub = {"jac": np.ascontiguousarray(memory["jac"][s])} if "jac" in memory else {}
        est_s = self.stiff.step(rhs, np.ascontiguousarray(y[s]), np.ascontiguousarray(f[s]), h[s], sub)
        self._h_lambda = np.zeros(m)
        self._h_lambda[e] = h_lambda
        n = y.shape[1]
        y_new = np.empty((m, n))
        y_new[e], y_new[s] = est_e.y_new, est_s.y_new
        increment = np.empty(m)
        increment[e], increment[s] = est_e.energy_increment, est_s.energy_increment
        valid = np.ones(m, dtype=bool)
        valid[s] = est_s.valid
        f_new = np.empty((m, n))
        f_new[e] = est_e.f_new
        rhs_rows = np.empty(m, dtype=np.int64)
        rhs_rows[e] = est_e.n_rhs // e.size
        rhs_rows[s] = est_s.rhs_rows
        jac_rows = None
        if est_s.jac_rows is not None:
            jac_rows = np.zeros(m, dtype=np.int64)
            jac_rows[s] = est_s.jac_rows
        # the explicit estimate's arrays are views of the pair's buffers, untouched until its next step
        return StepEstimate(y_new=y_new, energy_increment=increment, valid=valid, f_new=f_new, f_known=~stiff,
                            n_rhs=est_e.n_rhs + est_s.n_rhs, rhs_rows=rhs_rows, jac_rows=jac_rows, stiff=stiff,
                            parts=((e, est_e), (s, est_s)))

    def accepted(self, memory: dict, accepted: np.ndarray) -> None:
        self.stiff.accepted(memory, accepted)
        stiff = memory["stiff"].copy()  # a new array: this step's estimate still holds the old one
        _count_stiff_steps(accepted, stiff, self._h_lambda, memory["explicit_steps"], memory["hits"], memory["calm"],
                           STIFF_H_LAMBDA, STIFF_HITS, CALM_RESET)  # fmt: skip
        memory["stiff"] = stiff

    def compiled_loop(self, controller, post_step, carry, memory):
        """The runs that are stiff (and whose predictive memory the controller has started) are the Rosenbrock
        method's from here on: its compiled loop, if it has one, takes them (the same numbers as stepping them
        on here, each run's arithmetic being its own); the driver steps them there together, in lockstep with
        the explicit runs it steps here."""
        if not isinstance(controller, SwitchingController):
            return None
        which = carry["stiff"] & memory["stiff"]
        if not np.count_nonzero(which):
            return None
        handed = self.stiff.compiled_loop(controller.stiff, post_step, carry, memory)
        return None if handed is None else (handed[0], which)

    def stopped(self, memory: dict, idx: np.ndarray, runs: np.ndarray) -> None:
        """Record, for the runs that leave the batch, after how many accepted steps they switched."""
        for i, run in zip(idx, runs):
            if memory["stiff"][i]:
                self.stiff_from_step[int(run)] = int(memory["explicit_steps"][i])


class SwitchingController(_AdaptiveLanding):
    """The explicit pair's PI controller on explicit rows, ``rodas.f``'s predictive controller on stiff rows.

    A run's predictive memory starts fresh at its switch (no Gustafsson factor from explicit steps)."""

    def __init__(self, explicit: PIController, stiff: PredictiveController):
        self.explicit = explicit
        self.stiff = stiff

    def initial_scale(self, y0: np.ndarray) -> np.ndarray:
        return self.explicit.initial_scale(y0)

    def memory(self, m: int) -> dict:
        return {"stiff": np.zeros(m, dtype=bool), **self.explicit.memory(m), **self.stiff.memory(m)}

    def estimate_norm(self, h, estimate, y0, energy0):
        if estimate.parts is None:
            part = self.stiff if np.count_nonzero(estimate.stiff) else self.explicit
            return part.estimate_norm(h, estimate, y0, energy0)
        err = np.empty(y0.shape[0])
        for (rows, sub), part in zip(estimate.parts, (self.explicit, self.stiff)):
            err[rows] = part.estimate_norm(h[rows], sub, np.ascontiguousarray(y0[rows]), energy0[rows])
        return err

    def update(self, memory: dict, step, err, accepted, valid, n_accepted, estimate=None) -> np.ndarray:
        stiff = estimate.stiff
        new = stiff & ~memory["stiff"]
        if np.count_nonzero(new):  # fresh predictive memory at the switch
            memory["h_acc"][new] = 0.0
            memory["err_acc"][new] = 1.0
            memory["last_rejected"][new] = False
            memory["n_singular"][new] = 0
            memory["stiff"] = memory["stiff"] | new
        n_stiff = np.count_nonzero(stiff)
        if not n_stiff:
            return self.explicit.update(memory, step, err, accepted, valid, n_accepted)
        if n_stiff == stiff.size:
            return self.stiff.update(memory, step, err, accepted, valid, n_accepted)
        h_new = np.empty(step.shape[0])
        for rows, part in ((np.flatnonzero(~stiff), self.explicit), (np.flatnonzero(stiff), self.stiff)):
            sub = {key: value[rows] for key, value in memory.items()}
            h_new[rows] = part.update(sub, step[rows], err[rows], accepted[rows], valid[rows], n_accepted[rows])
            for key, value in sub.items():
                memory[key][rows] = value
        return h_new

    def failed(self, memory: dict) -> np.ndarray:
        return self.stiff.failed(memory)

    def info(self) -> dict:
        return {"kind": "switching", "explicit": self.explicit.info(), "stiff": self.stiff.info()}


def solve_switching(rhs, jac, y0, save_times, *, factorization=None, symmetric_jacobian: bool = False,
                    field=None, tableau: str = "dopri5",
                    method: str = "rodas4", rtol: float = 1e-8, atol: float = 1e-10, h0=None,
                    max_steps: int = 10**6, gtol: float | None = None, divergence_bound: float = np.inf,
                    progress=None, post_step=None):
    """Integrate ``y' = rhs(y)`` from every row of ``y0`` with the per-run switch of the module docstring.

    ``jac`` (dense ``(m, n, n)``) or ``factorization`` (a structured factorizer of ``sigma I - J``),
    ``symmetric_jacobian`` and ``field`` as for :func:`~reluflow.dynamics.solvers.rosenbrock.solve_rosenbrock`
    (``field`` serves both modes); ``tableau``: the explicit pair (a first-same-as-last pair, ``dopri5`` by
    default), ``method``: the Rosenbrock tableau; the other arguments as for the two solvers (``atol`` a scalar).
    ``result.info["stiff_from_step"]`` maps each run that switched to the number of accepted explicit steps
    before its switch.
    """
    from reluflow.dynamics.solvers.driver import solve
    from reluflow.dynamics.solvers.rosenbrock import ROSENBROCK_TABLEAUS

    explicit = ExplicitRungeKutta(tableau, field=field)
    tab = ROSENBROCK_TABLEAUS[method]
    stiff = RosenbrockMethod(tab, jac=None if factorization is not None else jac, factorization=factorization,
                             symmetric=symmetric_jacobian, field=field)
    controller = SwitchingController(
        PIController(rtol=float(rtol), atol=float(atol), error_order=explicit.tableau.error_order),
        PredictiveController(float(rtol), float(atol), tab.embedded_order),
    )
    switching = SwitchingMethod(explicit, stiff)
    result = solve(switching, controller, rhs, y0, save_times, h0=h0, max_steps=max_steps, gtol=gtol,
                   divergence_bound=divergence_bound, progress=progress, post_step=post_step)
    result.info = {
        "solver": "auto",
        "explicit": explicit.tableau.name,
        "stiff": tab.name,
        "linear_algebra": "structured" if factorization is not None else (
            "dense, Cholesky where positive definite" if symmetric_jacobian else "dense LU"),
        "stiffness_detection": {"h_lambda": STIFF_H_LAMBDA, "hits": STIFF_HITS, "reset_after": CALM_RESET},
        "stiff_from_step": {str(run): steps for run, steps in sorted(switching.stiff_from_step.items())},
        "rtol": float(rtol),
        "atol": float(atol),
        "max_steps": int(max_steps),
        "gtol": None if gtol is None else float(gtol),
        "divergence_bound": float(divergence_bound),
        "controller": controller.info(),
    }
    return result
