"""Scenario kinds: what an experiment of a kind requires, concludes, draws and says, in one place each.

A scenario's ``kind`` names a :class:`ScenarioKind`: its **preconditions** (checked when the configuration
is resolved, so ``reluflow check-config`` and ``snakemake -n`` refuse a violation, naming the key, before any
job runs), its **verdict** (the quantitative checks of the summary), its **figure** and its report
**caption**. This registry is the one list of kinds: the configuration's check, the CLI (``reluflow
kinds``) and the report all read it.

Built-in kinds are the modules of this package listed in :data:`BUILTIN`. A kind that lives outside the
package is named ``"<module>:<attribute>"`` (entry-point style, e.g. ``mylab.kinds:threshold``): the module
must be importable (installed, or on ``PYTHONPATH``) and the attribute a :class:`ScenarioKind`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from reluflow.model.validation import ConfigError

__all__ = ["ScenarioKind", "BUILTIN", "get_kind", "builtin_kinds"]

#: the built-in kinds, in the order the default configuration and the README present them
BUILTIN = (
    "jr_bounded_critical",
    "jr_affine_small_risk",
    "jr_single_neuron",
    "ejrw_normalized_bounded",
    "gd_vs_gf",
    "explore",
)


def _no_scenario_check(cases: Sequence[Any], key: str) -> None:
    return None


@dataclass(frozen=True)
class ScenarioKind:
    """The interface of a scenario kind.

    Attributes
    ----------
    name : the ``kind`` of a configuration's scenario.
    summary : one line: what the kind shows (listed by ``reluflow kinds``).
    check_case : ``check_case(case, key)`` raises :class:`~reluflow.model.validation.ConfigError` naming the
        key (``key`` is the case's key path, e.g. ``"scenarios[1].cases[0]"``) when the resolved case violates
        the kind's preconditions. ``case`` is the case as data (:meth:`~reluflow.experiments.config.Case.to_dict`:
        ``problem``, the normalized problem configuration, and ``flows``, ``{label: settings}``), as the
        configuration's resolution and the aggregation stage both have it.
    verdict : ``verdict(spec, datasets, table) -> (table, rows)``: the kind's columns added to the per-run
        ``table`` and its verdict rows (:mod:`reluflow.experiments.checks`).
    figure : ``figure(spec, datasets, summary, verdict) -> matplotlib.figure.Figure``.
    caption : ``caption(spec) -> str``: reStructuredText that says what the figure shows and what to look for.
    check_scenario : ``check_scenario(cases, key)``: preconditions across the cases (as data) of one scenario.
    """

    name: str
    summary: str
    check_case: Callable[[Any, str], None]
    verdict: Callable[[Mapping, Mapping, Any], tuple]
    figure: Callable[..., Any]
    caption: Callable[[Mapping], str]
    check_scenario: Callable[[Sequence[Any], str], None] = _no_scenario_check


def builtin_kinds() -> dict[str, ScenarioKind]:
    """``{name: kind}`` of the built-in kinds."""
    return {name: get_kind(name) for name in BUILTIN}


def get_kind(name: str, key: str = "kind") -> ScenarioKind:
    """The kind called ``name``: a built-in one, or ``"<module>:<attribute>"`` imported on demand.

    Raises :class:`~reluflow.model.validation.ConfigError` naming ``key`` for an unknown kind.
    """
    if not isinstance(name, str):
        raise ConfigError(f"{key}: must be a string, got {type(name).__name__} {name!r}")
    if name in BUILTIN:
        return importlib.import_module(f"{__name__}.{name}").KIND
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"{key}: unknown scenario kind {name!r}; expected one of {list(BUILTIN)} or '<module>:<attribute>' "
            f"naming a ScenarioKind in an importable module"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import the module of scenario kind {name!r}: {err}") from None
    kind = getattr(module, attribute, None)
    if not isinstance(kind, ScenarioKind):
        raise ConfigError(f"{key}: {module_name}.{attribute} is not a reluflow ScenarioKind (got {type(kind).__name__})")
    return kind
