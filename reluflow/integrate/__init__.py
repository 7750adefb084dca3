"""Batched solvers for autonomous ODEs ``y' = rhs(y)`` on ensembles of states ``(M, n)``.

Solver (tableau), step-size controller and vector field are separate pieces; see ``docs/DESIGN.md``.
"""

from reluflow.integrate.result import STATUS_MEANINGS, SolveResult, Status
from reluflow.integrate.controller import PIController
from reluflow.integrate.explicit import solve_explicit
from reluflow.integrate.gd import gd_save_steps, gradient_descent
from reluflow.integrate.tableaux import DOP853, DOPRI5, TABLEAUX, TSIT5, ButcherTableau, get_tableau

__all__ = ["STATUS_MEANINGS", "SolveResult", "Status"]
__all__ += ["PIController", "solve_explicit", "gradient_descent", "gd_save_steps"]
__all__ += ["ButcherTableau", "TABLEAUX", "DOPRI5", "TSIT5", "DOP853", "get_tableau"]
from reluflow.integrate.rosenbrock import RODAS4, RODAS5P, ROSENBROCK_TABLEAUS, RosenbrockTableau, solve_rosenbrock

__all__ += ["solve_rosenbrock", "RosenbrockTableau", "ROSENBROCK_TABLEAUS", "RODAS4", "RODAS5P"]
