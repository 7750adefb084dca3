"""Scenarios as data: resolve a workflow configuration into cases, flows and batches of runs.

A scenario (one experiment) has a ``kind`` (:mod:`reluflow.experiments.kinds`), a base problem, an
initialization distribution and a list of flows; optional ``cases`` vary it (each case is deep-merged over
the base). Every case is cut into batches of runs; a run's initialization is drawn from its own random
stream (:mod:`reluflow.experiments.seeding`), so the numbers do not depend on the batch size, on
``--cores``, or on the machine.

Resolution checks everything before anything runs: the problem (:meth:`reluflow.Problem.from_config`), the
initialization, each flow (:class:`~reluflow.dynamics.settings.FlowSettings`) and the kind's preconditions;
every error is a :class:`~reluflow.model.validation.ConfigError` whose message starts with the key to fix.
This module only reads and checks data; it runs nothing and never evaluates configuration content.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from reluflow.dynamics.settings import FlowSettings
from reluflow.experiments.initialization import validate_init
from reluflow.experiments.kinds import get_kind
from reluflow.experiments.resources import check_resources, parse_limits
from reluflow.model.validation import ConfigError, boolean, check_mapping, check_name, fail, subkey, whole_number
from reluflow.problem import Problem

__all__ = ["Case", "resolve_scenarios", "resolve_flow", "deep_merge", "REPLACED_WHOLE"]

_SCENARIO_KEYS = {"name", "kind", "description", "problem", "init", "flows", "batch_size", "cases", "animate"}
_CASE_KEYS = {"name", "problem", "init", "flows", "batch_size", "label"}

#: runs per simulate job when a scenario does not say
DEFAULT_BATCH_SIZE = 32

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
class Case:
    """A fully resolved case: everything one batch job needs, as plain data."""

    scenario: str
    kind: str
    name: str
    label: str
    problem: dict
    init: dict
    flows: tuple[FlowSettings, ...]
    n_runs: int
    batch_size: int
    animate: bool = False

    @property
    def n_batches(self) -> int:
        return -(-self.n_runs // self.batch_size)

    def batch_runs(self, batch: int) -> np.ndarray:
        """Run ids of batch ``batch`` (0-based): a contiguous slice of ``range(n_runs)``."""
        if not 0 <= batch < self.n_batches:
            raise ValueError(f"batch: {batch} is outside 0..{self.n_batches - 1} for case {self.name!r}")
        return np.arange(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n_runs))

    def flow(self, label: str) -> FlowSettings:
        for settings in self.flows:
            if settings.label == label:
                return settings
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
            "flows": {f.label: f.to_config() for f in self.flows},
            "n_runs": self.n_runs,
            "batch_size": self.batch_size,
            "animate": self.animate,
        }


def resolve_flow(key: str, raw) -> FlowSettings:
    """Validate one flow's settings (``raw``, found at ``key``), defaults filled in; ConfigError names the key."""
    return FlowSettings.from_config(raw, key)


_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _written_in(raw: Any, path: str) -> bool:
    """Whether the dotted key path ``path`` (``problem.network.width``, ``flows[0].rtol``) is written in ``raw``
    down to its last part or to a part that replaces its base whole (:data:`REPLACED_WHOLE`, a list)."""
    node = raw
    for name, index in _PATH_TOKEN.findall(path):
        if index:
            return True  # a list replaces the scenario's whole
        if not isinstance(node, Mapping) or name not in node:
            return False
        if name in REPLACED_WHOLE:
            return True
        node = node[name]
    return True


def _resolve_case_naming_the_origin(scenario: Mapping, case_raw: Mapping, case_key: str, scenario_key: str) -> Case:
    """:func:`_resolve_case`, whose errors name the key where the offending value is written: the case's, or
    the scenario's when the case inherits it (a case is the scenario's settings merged with its own)."""
    try:
        return _resolve_case(scenario, case_raw, case_key)
    except ConfigError as err:
        message = str(err)
        prefix = case_key + "."
        if case_key != scenario_key and message.startswith(prefix):
            path = message[len(prefix):].split(":", 1)[0]
            if not _written_in(case_raw, path):
                raise ConfigError(scenario_key + "." + message[len(prefix):]) from None
        raise


def _resolve_case(scenario: Mapping, case_raw: Mapping, key: str) -> Case:
    merged = deep_merge({k: scenario[k] for k in ("problem", "init", "flows", "batch_size") if k in scenario},
                        {k: v for k, v in case_raw.items() if k not in ("name", "label")})
    case_name = check_name(subkey(key, "name"), case_raw.get("name", "main"))
    for required in ("problem", "init", "flows"):
        if required not in merged:
            fail(subkey(key, required), "is required")
    try:
        problem = Problem.from_config(merged["problem"])
    except ConfigError as err:
        raise ConfigError(f"{key}.problem.{err}") from None
    except ValueError as err:
        raise ConfigError(f"{key}.problem: {err}") from None
    init = validate_init(subkey(key, "init"), merged["init"], problem)
    flows_raw = merged["flows"]
    if not isinstance(flows_raw, list) or not flows_raw:
        fail(subkey(key, "flows"), "must be a non-empty list of flows")
    flows = tuple(resolve_flow(f"{key}.flows[{i}]", f) for i, f in enumerate(flows_raw))
    labels = [f.label for f in flows]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        fail(subkey(key, "flows"), f"duplicate flow label {dup[0]!r}: every flow of a case needs its own label")
    batch_size = whole_number(subkey(key, "batch_size"), merged.get("batch_size", DEFAULT_BATCH_SIZE), minimum=1)
    label = case_raw.get("label", case_name)
    if not isinstance(label, str):
        fail(subkey(key, "label"), f"must be a string, got {type(label).__name__}")
    return Case(
        scenario=scenario["name"],
        kind=scenario["kind"],
        name=case_name,
        label=label,
        problem=problem.config,
        init=init,
        flows=flows,
        n_runs=init["n_runs"],
        batch_size=batch_size,
        animate=scenario["animate"],
    )


def resolve_scenarios(config: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Check a whole workflow configuration and resolve it: ``{scenario name: [Case, ...]}``.

    Raises :class:`~reluflow.model.validation.ConfigError` naming the offending key, before anything runs;
    this includes each scenario kind's preconditions (:mod:`reluflow.experiments.kinds`) and the estimate of
    what the jobs need (:mod:`reluflow.experiments.resources`; optional top-level ``limits``).
    """
    if not isinstance(config, Mapping):
        fail("config", f"must be a mapping, got {type(config).__name__}")
    check_mapping("", config, required={"scenarios"}, optional={"limits"})
    limits = parse_limits(config.get("limits"))
    scenarios = config.get("scenarios")
    if not isinstance(scenarios, list) or not scenarios:
        fail("scenarios", "must be a non-empty list of scenarios")
    out: dict[str, list[Case]] = {}
    case_keys: dict[tuple[str, str], dict] = {}
    for i, raw in enumerate(scenarios):
        key = f"scenarios[{i}]"
        check_mapping(key, raw, optional=_SCENARIO_KEYS)
        name = check_name(subkey(key, "name"), raw.get("name"))
        if name in out:
            fail(subkey(key, "name"), f"duplicate scenario name {name!r}")
        scenario = dict(raw)
        scenario.setdefault("kind", name)
        scenario["animate"] = boolean(subkey(key, "animate"), raw.get("animate", False))
        kind = get_kind(scenario["kind"], subkey(key, "kind"))
        explicit = "cases" in scenario
        cases_raw = scenario.get("cases", [{"name": "main"}])
        if not isinstance(cases_raw, list) or not cases_raw:
            fail(subkey(key, "cases"), "must be a non-empty list of cases (or be left out)")
        cases = []
        for j, case_raw in enumerate(cases_raw):
            # errors name the case where it writes the offending value, else the scenario
            case_key = f"{key}.cases[{j}]" if explicit else key
            check_mapping(case_key, case_raw, optional=_CASE_KEYS)
            case = _resolve_case_naming_the_origin(scenario, case_raw, case_key, key)
            kind.check_case(case.to_dict(), case_key)
            cases.append(case)
            # where each setting of the case was written: the case, or the scenario it inherits from
            network = case_raw.get("problem", {}).get("network", {}) if isinstance(case_raw.get("problem"), Mapping) else {}
            case_keys[(name, case.name)] = {
                "init": case_key if "init" in case_raw else key,
                "batch_size": case_key if "batch_size" in case_raw else key,
                "width": case_key if isinstance(network, Mapping) and "width" in network else key,
            }
        names = [c.name for c in cases]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            fail(subkey(key, "cases"), f"duplicate case name {dup[0]!r}")
        kind.check_scenario([c.to_dict() for c in cases], key)
        out[name] = cases
    check_resources(out, case_keys, limits)
    return out
