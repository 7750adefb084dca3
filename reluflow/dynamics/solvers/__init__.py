"""Batched solvers for autonomous ODEs ``y' = f(y)`` on ensembles of states ``(M, n)``.

One driver loop (:mod:`.driver`) for every method: explicit embedded pairs (:mod:`.explicit`, tableaux in
:mod:`.tableaux`), Rosenbrock methods with the exact Jacobian (:mod:`.rosenbrock`) and gradient descent
(:mod:`.gd`); step-size controllers in :mod:`.controllers`, the starting step in :mod:`.initial_step`.
"""

from reluflow.dynamics.solvers.controllers import FixedStep, PIController, PredictiveController
from reluflow.dynamics.solvers.driver import StepEstimate, solve
from reluflow.dynamics.solvers.explicit import ExplicitRungeKutta, solve_explicit
from reluflow.dynamics.solvers.gd import EulerStep, gd_save_steps, gradient_descent
from reluflow.dynamics.solvers.initial_step import select_initial_step
from reluflow.dynamics.solvers.result import STATUS_MEANINGS, SolveResult, Status
from reluflow.dynamics.solvers.rosenbrock import (
    RODAS4,
    RODAS5P,
    ROSENBROCK_TABLEAUS,
    RosenbrockMethod,
    RosenbrockTableau,
    solve_rosenbrock,
)
from reluflow.dynamics.solvers.tableaux import DOP853, DOPRI5, TABLEAUX, TSIT5, ButcherTableau, get_tableau

__all__ = [
    "STATUS_MEANINGS", "SolveResult", "Status", "StepEstimate", "solve", "select_initial_step",
    "PIController", "PredictiveController", "FixedStep",
    "ExplicitRungeKutta", "solve_explicit", "EulerStep", "gradient_descent", "gd_save_steps",
    "RosenbrockMethod", "solve_rosenbrock", "RosenbrockTableau", "ROSENBROCK_TABLEAUS", "RODAS4", "RODAS5P",
    "ButcherTableau", "TABLEAUX", "DOPRI5", "TSIT5", "DOP853", "get_tableau",
]
