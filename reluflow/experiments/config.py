"""Scenarios as data: resolve a workflow configuration into cases, flows and batches of runs.

A scenario (one theorem's experiment) has a base problem, an initialization distribution and a list of
flows; optional ``cases`` vary it (each case is deep-merged over the base). Every case is cut into
batches of runs; a run's initialization is drawn from its own random stream, derived from the scenario
name, the case name and the run id with :class:`numpy.random.SeedSequence`, so the numbers do not depend on
the batch size, on ``--cores``, or on the machine.

This module only reads and checks data; it runs nothing and never evaluates configuration content.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from reluflow.model.validation import ConfigError

#: scenario, case and flow names become path components: keep them to a safe alphabet
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: the figure/verdict families the project knows (a scenario's ``kind``)
SCENARIO_KINDS = (
    "jr_bounded_critical",
    "jr_affine_small_risk",
    "jr_single_neuron",
    "ejrw_normalized_bounded",
    "gd_vs_gf",
)

FLOW_KINDS = ("standard", "normalized", "gd")
SOLVERS = ("auto", "dopri5", "tsit5", "dop853", "rodas4")
SPACINGS = ("log", "linear")

_SCENARIO_KEYS = {"name", "kind", "description", "problem", "init", "flows", "batch_size", "cases"}
_CASE_KEYS = {"name", "problem", "init", "flows", "batch_size", "label"}
_FLOW_KEYS = {
    "label",
    "flow",
    "field",
    "solver",
    "t_max",
    "save",
    "rtol",
    "atol",
    "gtol",
    "eta",
    "divergence_bound",
    "max_steps",
    "certify",
}
_SAVE_KEYS = {"spacing", "n", "t_min"}

FLOW_DEFAULTS = {
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


def _fail(key: str, message: str):
    raise ConfigError(f"{key}: {message}")


def _check_name(key: str, value) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        _fail(
            key,
            f"must be a name of lower-case letters, digits and '_' starting with a letter "
            f"(at most 64 characters; it becomes part of file paths), got {value!r}",
        )
    return value


def _check_keys(key: str, mapping, allowed: set[str]) -> None:
    if not isinstance(mapping, Mapping):
        _fail(key, f"must be a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        _fail(f"{key}.{unknown[0]}", f"unknown key; allowed keys are {sorted(allowed)}")


def _number(key: str, value, *, positive=False, nonnegative=False, integer=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(key, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        _fail(key, f"must be finite, got {value!r}")
    if integer and int(value) != value:
        _fail(key, f"must be a whole number, got {value!r}")
    if positive and not value > 0:
        _fail(key, f"must be > 0, got {value!r}")
    if nonnegative and not value >= 0:
        _fail(key, f"must be >= 0, got {value!r}")
    return int(value) if integer else float(value)


#: a case's value for these keys replaces the scenario's whole (a new target kind or init scheme has keys of
#: its own: merging the old ones in would mix two different objects)
REPLACED_WHOLE = frozenset({"init", "target", "measure", "flows"})


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """``base`` updated by ``override``: mappings merge key by key, except under the keys in
    :data:`REPLACED_WHOLE`; everything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key not in REPLACED_WHOLE and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class FlowSpec:
    """One way of moving the initial states: a flow, its solver and its time grid (already validated)."""

    label: str
    settings: dict

    @property
    def save_times(self) -> np.ndarray:
        return save_times(self.settings)


def save_times(settings: Mapping) -> np.ndarray:
    """The save grid of a flow: ``0`` then ``n`` log-spaced times from ``t_min`` to ``t_max``, or
    ``n + 1`` equispaced times on ``[0, t_max]``."""
    save = settings["save"]
    t_max = float(settings["t_max"])
    if save["spacing"] == "linear":
        return np.linspace(0.0, t_max, int(save["n"]) + 1)
    t_min = min(float(save["t_min"]), t_max)
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, int(save["n"]))])


@dataclass(frozen=True)
class Case:
    """A fully resolved case: everything one batch job needs, as plain data."""

    scenario: str
    kind: str
    name: str
    label: str
    problem: dict
    init: dict
    flows: tuple[FlowSpec, ...]
    n_runs: int
    batch_size: int

    @property
    def n_batches(self) -> int:
        return -(-self.n_runs // self.batch_size)

    def batch_runs(self, batch: int) -> np.ndarray:
        """Run ids of batch ``batch`` (0-based): a contiguous slice of ``range(n_runs)``."""
        if not 0 <= batch < self.n_batches:
            raise ValueError(f"batch: {batch} is outside 0..{self.n_batches - 1} for case {self.name!r}")
        return np.arange(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n_runs))

    def flow(self, label: str) -> FlowSpec:
        for spec in self.flows:
            if spec.label == label:
                return spec
        raise ValueError(f"flow: case {self.name!r} of {self.scenario!r} has no flow {label!r}")

    def to_dict(self) -> dict:
        """The case as JSON-ready data (for provenance and for the workflow's ``params``)."""
        return {
            "scenario": self.scenario,
            "kind": self.kind,
            "case": self.name,
            "label": self.label,
            "problem": self.problem,
            "init": self.init,
            "flows": {f.label: f.settings for f in self.flows},
            "n_runs": self.n_runs,
            "batch_size": self.batch_size,
        }


def stable_entropy(*names: str) -> int:
    """A 128-bit integer from names, the same on every machine and Python (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    return int.from_bytes(digest[:16], "little")


def run_seed_sequence(scenario: str, case: str, run_id: int) -> np.random.SeedSequence:
    """The random stream of one run: depends only on the names and the run id."""
    return np.random.SeedSequence(entropy=stable_entropy(scenario, case), spawn_key=(int(run_id),))


def resolve_flow(key: str, raw) -> FlowSpec:
    """Validate one flow's settings (``raw``, found at ``key``), defaults filled in; ConfigError names the key."""
    _check_keys(key, raw, _FLOW_KEYS)
    settings = deep_merge(FLOW_DEFAULTS, raw)
    label = _check_name(f"{key}.label", settings.get("label", settings["flow"]))
    settings["label"] = label
    if settings["flow"] not in FLOW_KINDS:
        _fail(f"{key}.flow", f"unknown flow {settings['flow']!r}; expected one of {list(FLOW_KINDS)}")
    if settings["field"] not in ("standard", "normalized"):
        _fail(f"{key}.field", f"must be 'standard' or 'normalized', got {settings['field']!r}")
    if settings["solver"] not in SOLVERS:
        _fail(f"{key}.solver", f"unknown solver {settings['solver']!r}; expected one of {list(SOLVERS)}")
    if "t_max" not in raw:
        _fail(f"{key}.t_max", "is required (the final flow time)")
    settings["t_max"] = _number(f"{key}.t_max", settings["t_max"], positive=True)
    settings["rtol"] = _number(f"{key}.rtol", settings["rtol"], positive=True)
    settings["atol"] = _number(f"{key}.atol", settings["atol"], positive=True)
    if settings["rtol"] >= 1:
        _fail(f"{key}.rtol", f"must be < 1, got {settings['rtol']!r}")
    if settings["gtol"] is not None:
        settings["gtol"] = _number(f"{key}.gtol", settings["gtol"], positive=True)
    settings["divergence_bound"] = _number(f"{key}.divergence_bound", settings["divergence_bound"], positive=True)
    settings["max_steps"] = _number(f"{key}.max_steps", settings["max_steps"], positive=True, integer=True)
    if not isinstance(settings["certify"], bool):
        _fail(f"{key}.certify", f"must be true or false, got {settings['certify']!r}")
    save = settings["save"]
    _check_keys(f"{key}.save", save, _SAVE_KEYS)
    if save["spacing"] not in SPACINGS:
        _fail(f"{key}.save.spacing", f"must be one of {list(SPACINGS)}, got {save['spacing']!r}")
    save["n"] = _number(f"{key}.save.n", save["n"], positive=True, integer=True)
    save["t_min"] = _number(f"{key}.save.t_min", save["t_min"], positive=True)
    if settings["flow"] == "gd":
        if settings["eta"] is None:
            _fail(f"{key}.eta", "is required for flow 'gd' (the step size)")
        settings["eta"] = _number(f"{key}.eta", settings["eta"], positive=True)
        steps = save_times(settings) / settings["eta"]
        if not np.allclose(steps, np.round(steps), rtol=0, atol=1e-9 * max(1.0, steps[-1])):
            _fail(
                f"{key}.save",
                f"gradient descent saves after whole numbers of steps: every save time must be a multiple "
                f"of eta = {settings['eta']!r} (use spacing 'linear' with t_max a multiple of eta * n)",
            )
    elif settings["eta"] is not None:
        _fail(f"{key}.eta", f"only applies to flow 'gd', not {settings['flow']!r}")
    return FlowSpec(label=label, settings=settings)


def _resolve_case(key: str, scenario: Mapping, case_raw: Mapping, case_key: str) -> Case:
    from reluflow.experiments.initialization import validate_init
    from reluflow.problem import Problem

    name = scenario["name"]
    merged = deep_merge({k: scenario[k] for k in ("problem", "init", "flows", "batch_size") if k in scenario},
                        {k: v for k, v in case_raw.items() if k not in ("name", "label")})
    case_name = _check_name(f"{case_key}.name", case_raw.get("name", "main"))
    for required in ("problem", "init", "flows"):
        if required not in merged:
            _fail(f"{key}.{required}", "is required")
    try:
        problem = Problem.from_config(merged["problem"])
    except ConfigError as err:
        raise ConfigError(f"{key}.problem.{err}") from None
    except ValueError as err:
        raise ConfigError(f"{key}.problem: {err}") from None
    init = validate_init(f"{key}.init", merged["init"], problem)
    flows_raw = merged["flows"]
    if not isinstance(flows_raw, list) or not flows_raw:
        _fail(f"{key}.flows", "must be a non-empty list of flows")
    flows = tuple(resolve_flow(f"{key}.flows[{i}]", f) for i, f in enumerate(flows_raw))
    labels = [f.label for f in flows]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        _fail(f"{key}.flows", f"duplicate flow label {dup[0]!r}: every flow of a case needs its own label")
    batch_size = _number(f"{key}.batch_size", merged.get("batch_size", 32), positive=True, integer=True)
    label = case_raw.get("label", case_name)
    if not isinstance(label, str):
        _fail(f"{case_key}.label", f"must be a string, got {type(label).__name__}")
    return Case(
        scenario=name,
        kind=scenario["kind"],
        name=case_name,
        label=label,
        problem=problem.config,
        init=init,
        flows=flows,
        n_runs=init["n_runs"],
        batch_size=batch_size,
    )


def resolve_scenarios(config: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Check a whole workflow configuration and resolve it: ``{scenario name: [Case, ...]}``.

    Raises :class:`~reluflow.model.validation.ConfigError` naming the offending key, before anything runs.
    """
    if not isinstance(config, Mapping):
        _fail("config", f"must be a mapping, got {type(config).__name__}")
    scenarios = config.get("scenarios")
    if not isinstance(scenarios, list) or not scenarios:
        _fail("scenarios", "must be a non-empty list of scenarios")
    out: dict[str, list[Case]] = {}
    for i, raw in enumerate(scenarios):
        key = f"scenarios[{i}]"
        _check_keys(key, raw, _SCENARIO_KEYS)
        name = _check_name(f"{key}.name", raw.get("name"))
        if name in out:
            _fail(f"{key}.name", f"duplicate scenario name {name!r}")
        scenario = dict(raw)
        scenario.setdefault("kind", name)
        if scenario["kind"] not in SCENARIO_KINDS:
            _fail(f"{key}.kind", f"unknown scenario kind {scenario['kind']!r}; expected one of {list(SCENARIO_KINDS)}")
        explicit = "cases" in scenario
        cases_raw = scenario.get("cases", [{"name": "main"}])
        if not isinstance(cases_raw, list) or not cases_raw:
            _fail(f"{key}.cases", "must be a non-empty list of cases (or be left out)")
        cases = []
        for j, case_raw in enumerate(cases_raw):
            # errors name the case only where the configuration has cases
            case_key = f"{key}.cases[{j}]" if explicit else key
            _check_keys(case_key, case_raw, _CASE_KEYS)
            cases.append(_resolve_case(case_key, scenario, case_raw, case_key))
        names = [c.name for c in cases]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            _fail(f"{key}.cases", f"duplicate case name {dup[0]!r}")
        out[name] = cases
    return out
