"""How one flow is integrated: :class:`FlowSettings`, its save grid, and the one table of defaults.

A configuration's flow entry (``{label, flow, solver, t_max, save, rtol, ...}``), the ``reluflow simulate``
command and :func:`reluflow.simulate` all go through :meth:`FlowSettings.from_config`, so every default is
stated once, in :data:`FLOW_DEFAULTS`, and every error names the offending key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from reluflow.model.validation import boolean, check_mapping, check_name, choice, fail, real, subkey, whole_number

FLOW_KINDS = ("standard", "normalized", "gd")
FIELDS = ("standard", "normalized")
SOLVERS = ("auto", "dopri5", "tsit5", "dop853", "rodas4", "lsoda")
SPACINGS = ("log", "linear")

#: every flow setting's default (``t_max`` has none: the final time is always the user's choice)
FLOW_DEFAULTS: dict[str, Any] = {
    "flow": "standard",
    "field": "standard",
    "solver": "auto",
    "save": {"spacing": "log", "n": 60, "t_min": 1e-3},
    "rtol": 1e-8,
    "atol": 1e-10,
    "gtol": None,
    "eta": None,
    "divergence_bound": 1e8,
    "max_steps": 200_000,
    "certify": True,
}

_KEYS = {"label", "t_max", *FLOW_DEFAULTS}
_SAVE_KEYS = {"spacing", "n", "t_min"}


@dataclass(frozen=True)
class SaveGrid:
    """The save times of a flow: ``0`` then ``n`` log-spaced times from ``t_min`` to ``t_max``
    (``spacing = "log"``), or ``n + 1`` equispaced times on ``[0, t_max]`` (``"linear"``)."""

    spacing: str = FLOW_DEFAULTS["save"]["spacing"]
    n: int = FLOW_DEFAULTS["save"]["n"]
    t_min: float = FLOW_DEFAULTS["save"]["t_min"]

    def times(self, t_max: float, eta: float | None = None) -> np.ndarray:
        """The grid on ``[0, t_max]``; with a gradient-descent step ``eta``, rounded to whole steps (iterates
        exist only there) and repeated times merged."""
        if self.spacing == "linear":
            grid = np.linspace(0.0, t_max, int(self.n) + 1)
        else:
            grid = np.concatenate([[0.0], np.geomspace(min(float(self.t_min), t_max), t_max, int(self.n))])
        if eta is not None:
            grid = np.unique(np.floor(grid / eta + 0.5)) * eta
        return grid

    def to_config(self) -> dict:
        return {"spacing": self.spacing, "n": self.n, "t_min": self.t_min}


@dataclass(frozen=True)
class FlowSettings:
    """One flow of a case: which flow, how it is integrated and where it is recorded (already validated).

    ``flow``: ``"standard"`` (``Theta' = -G``), ``"normalized"`` (``Theta' = -P G`` on the manifold ``M``) or
    ``"gd"`` (gradient descent with step ``eta`` on the vector field ``field``). ``solver``: ``"auto"``,
    an explicit pair (``"dopri5"``, ``"tsit5"``, ``"dop853"``), ``"rodas4"`` (stiff) or ``"lsoda"`` (Adams, then BDF
    per run once stiff: the standard flow of d = 1 laws with a density below the structured width). ``rtol``, ``atol``:
    local error tolerances; ``gtol``: stop a run once ``|F(Theta)| <= gtol``; ``divergence_bound``: a run
    whose norm passes it has diverged; ``max_steps``: attempted steps per run; ``certify``: polish each final
    state to a certified critical point. ``label`` names the flow in file paths (default: ``flow``).
    """

    t_max: float
    label: str = ""
    flow: str = FLOW_DEFAULTS["flow"]
    field: str = FLOW_DEFAULTS["field"]
    solver: str = FLOW_DEFAULTS["solver"]
    save: SaveGrid = SaveGrid()
    rtol: float = FLOW_DEFAULTS["rtol"]
    atol: float = FLOW_DEFAULTS["atol"]
    gtol: float | None = FLOW_DEFAULTS["gtol"]
    eta: float | None = FLOW_DEFAULTS["eta"]
    divergence_bound: float = FLOW_DEFAULTS["divergence_bound"]
    max_steps: int = FLOW_DEFAULTS["max_steps"]
    certify: bool = FLOW_DEFAULTS["certify"]

    @classmethod
    def from_config(cls, raw: Any, key: str = "flow") -> "FlowSettings":
        """Validate a flow mapping found at ``key``; defaults from :data:`FLOW_DEFAULTS`.

        Raises :class:`~reluflow.model.validation.ConfigError` whose message starts with the key to fix.
        """
        check_mapping(key, raw, required={"t_max"}, optional=_KEYS)
        merged = copy.deepcopy(FLOW_DEFAULTS)
        for name, value in raw.items():
            if name == "save" and isinstance(value, Mapping):
                check_mapping(subkey(key, "save"), value, optional=_SAVE_KEYS)
                merged["save"].update(value)
            else:
                merged[name] = value
        flow = choice(subkey(key, "flow"), merged["flow"], FLOW_KINDS)
        label = merged.get("label", flow)
        label = check_name(subkey(key, "label"), label)
        field = choice(subkey(key, "field"), merged["field"], FIELDS)
        solver = choice(subkey(key, "solver"), merged["solver"], SOLVERS)
        t_max = real(subkey(key, "t_max"), merged["t_max"], positive=True)
        rtol = real(subkey(key, "rtol"), merged["rtol"], positive=True)
        if rtol >= 1:
            fail(subkey(key, "rtol"), f"must be < 1, got {rtol!r}")
        atol = real(subkey(key, "atol"), merged["atol"], positive=True)
        gtol = None if merged["gtol"] is None else real(subkey(key, "gtol"), merged["gtol"], positive=True)
        bound = real(subkey(key, "divergence_bound"), merged["divergence_bound"], positive=True)
        max_steps = whole_number(subkey(key, "max_steps"), merged["max_steps"], minimum=1)
        certify = boolean(subkey(key, "certify"), merged["certify"])
        if flow == "gd" and "save" not in raw:
            # gradient descent records whole steps: by default 60 equal intervals, rounded to steps
            merged["save"] = {**merged["save"], "spacing": "linear"}
        save_raw = merged["save"]
        if not isinstance(save_raw, Mapping):
            fail(subkey(key, "save"), f"must be a mapping, got {type(save_raw).__name__}")
        skey = subkey(key, "save")
        save = SaveGrid(
            spacing=choice(subkey(skey, "spacing"), save_raw["spacing"], SPACINGS),
            n=whole_number(subkey(skey, "n"), save_raw["n"], minimum=1),
            t_min=real(subkey(skey, "t_min"), save_raw["t_min"], positive=True),
        )
        eta = merged["eta"]
        if flow == "gd":
            if eta is None:
                fail(subkey(key, "eta"), "is required for flow 'gd' (the step size)")
            eta = real(subkey(key, "eta"), eta, positive=True)
            steps = save.times(t_max) / eta
            if "save" in raw and not np.allclose(steps, np.round(steps), rtol=0, atol=1e-9 * max(1.0, steps[-1])):
                fail(skey, f"gradient descent saves after whole numbers of steps: every save time must be a "
                           f"multiple of eta = {eta!r} (use spacing 'linear' with t_max a multiple of eta * n)")
        elif eta is not None:
            fail(subkey(key, "eta"), f"only applies to flow 'gd', not {flow!r}")
        return cls(t_max=t_max, label=label, flow=flow, field=field, solver=solver, save=save, rtol=rtol,
                   atol=atol, gtol=gtol, eta=eta, divergence_bound=bound, max_steps=max_steps, certify=certify)

    def save_times(self) -> np.ndarray:
        """The save grid (:meth:`SaveGrid.times`; for gradient descent in whole steps of ``eta``)."""
        return self.save.times(self.t_max, self.eta if self.flow == "gd" else None)

    def replace(self, **changes) -> "FlowSettings":
        return dataclasses.replace(self, **changes)

    def to_config(self) -> dict:
        """The settings as JSON-ready data (``FlowSettings.from_config(s.to_config()) == s``)."""
        out = {name: getattr(self, name) for name in ("label", "flow", "field", "solver", "t_max", "rtol",
                                                      "atol", "gtol", "eta", "divergence_bound", "max_steps",
                                                      "certify")}
        out["save"] = self.save.to_config()
        return out
