"""What every batched solver returns, and the per-run status codes.

Status codes are stored in trajectory files as CF flags (``flag_values`` / ``flag_meanings``), so their
numbers are part of the file format: extend, never renumber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Status(IntEnum):
    """Why a trajectory stopped."""

    #: the final time was reached
    FINISHED = 0
    #: the stopping test ``|rhs| <= gtol`` held: the run sits at a critical point to that tolerance
    CONVERGED = 1
    #: the state became non-finite or its norm passed the divergence bound
    DIVERGED = 2
    #: the solver gave up (step-size underflow or step budget exhausted) before the final time
    FAILED = 3


STATUS_MEANINGS = " ".join(s.name.lower() for s in Status)


@dataclass
class SolveResult:
    """Batched solution on a grid of save times.

    After a run stops early, later save times hold its last state for ``CONVERGED`` runs (it sits at a
    critical point to within ``gtol``) and NaN for ``DIVERGED``/``FAILED`` runs.

    Attributes
    ----------
    t : (T,) save times.
    y : (M, T, n) states at the save times.
    energy : (M, T) ``int_0^t |rhs(y_s)|^2 ds``, accumulated with the solver's own weights.
    status : (M,) int8 :class:`Status` codes.
    t_final : (M,) the flow time each run reached.
    n_steps, n_rejected : (M, T) accepted / rejected steps taken up to each save time.
    n_rhs : total number of right-hand-side evaluations (rows of ``rhs`` summed over calls).
    n_jac : total number of Jacobian evaluations (rows), 0 for explicit solvers; with a structured
        factorization of ``sigma I - J`` (no dense ``J``), the number of factorizations.
    info : solver name and settings, for provenance.
    n_rhs_run, n_jac_run : (M,) the same counts per run (they sum to ``n_rhs`` and ``n_jac``).
    """

    t: np.ndarray
    y: np.ndarray
    energy: np.ndarray
    status: np.ndarray
    t_final: np.ndarray
    n_steps: np.ndarray
    n_rejected: np.ndarray
    n_rhs: int = 0
    n_jac: int = 0
    info: dict = field(default_factory=dict)
    n_rhs_run: np.ndarray | None = None
    n_jac_run: np.ndarray | None = None
