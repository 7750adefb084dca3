"""The aggregation stage of a scenario: its summary table and verdict (:mod:`reluflow.experiments.checks`).

:func:`summarize` checks the scenario slice against the trajectories it is given (the same (case, flow)
pairs, the same problems) and the kind's preconditions, builds the per-run table every kind shares and
hands it to the kind's ``verdict`` (:mod:`reluflow.experiments.kinds`), which adds its own columns and rows.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd
import xarray as xr

from reluflow.experiments.checks import run_table, spec_error
from reluflow.experiments.kinds import get_kind

__all__ = ["check_spec", "summary_table", "summarize", "SUMMARY_LEADING_COLUMNS", "VERDICT_COLUMNS"]


def check_spec(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> None:
    """Check the scenario slice and that ``datasets`` holds exactly its (case, flow) pairs.

    Raises ``ValueError`` naming the offending key (``spec.kind``, ``spec.cases[1].flows``, ``datasets``).
    Each dataset's ``config_json["problem"]`` (when present) must equal the case's problem: a file left over
    from another configuration would otherwise be summarized under the wrong label.
    """
    if not isinstance(spec, Mapping):
        raise spec_error("spec", f"must be a mapping, got {type(spec).__name__}")
    for key in ("scenario", "kind", "cases"):
        if key not in spec:
            raise spec_error(f"spec.{key}", "is required")
    kind = get_kind(spec["kind"], "spec.kind")
    cases = spec["cases"]
    if not isinstance(cases, list) or not cases:
        raise spec_error("spec.cases", "must be a non-empty list of cases")
    expected: set[tuple[str, str]] = set()
    for i, case in enumerate(cases):
        key = f"spec.cases[{i}]"
        if not isinstance(case, Mapping):
            raise spec_error(key, f"must be a mapping, got {type(case).__name__}")
        for required in ("case", "problem", "flows"):
            if required not in case:
                raise spec_error(f"{key}.{required}", "is required")
        flows = case["flows"]
        if not isinstance(flows, Mapping) or not flows:
            raise spec_error(f"{key}.flows", "must be a non-empty mapping {label: settings}")
        for label, settings in flows.items():
            if not isinstance(settings, Mapping) or "flow" not in settings:
                raise spec_error(f"{key}.flows.{label}", "must be a mapping with a 'flow' key")
            if settings["flow"] == "gd" and settings.get("eta") is None:
                raise spec_error(f"{key}.flows.{label}.eta", "is required for a gd flow")
            expected.add((case["case"], label))
        kind.check_case(case, key)
    kind.check_scenario(cases, "spec")
    if not isinstance(datasets, Mapping):
        raise spec_error("datasets", f"must be a mapping {{(case, flow): Dataset}}, got {type(datasets).__name__}")
    missing = sorted(expected - set(datasets))
    if missing:
        raise spec_error(
            "datasets", f"no trajectories for (case, flow) {missing[0]!r} of scenario {spec['scenario']!r}"
        )
    extra = sorted(set(datasets) - expected)
    if extra:
        raise spec_error(
            "datasets", f"trajectories for (case, flow) {extra[0]!r}, which scenario {spec['scenario']!r} does not have"
        )
    for i, case in enumerate(cases):
        for label in case["flows"]:
            ds = datasets[(case["case"], label)]
            if not isinstance(ds, xr.Dataset):
                raise spec_error(
                    "datasets", f"({case['case']!r}, {label!r}) is a {type(ds).__name__}, not an xarray.Dataset"
                )
            for var in (
                "theta",
                "risk",
                "grad_norm",
                "param_norm",
                "energy_residual",
                "status",
                "t_final",
                "critical_risk",
                "critical_grad_norm",
            ):
                if var not in ds.variables:
                    raise spec_error("datasets", f"({case['case']!r}, {label!r}) has no variable {var!r}")
            stored = _dataset_config(ds).get("problem")
            if stored is not None and _canonical(stored) != _canonical(case["problem"]):
                raise spec_error(
                    f"spec.cases[{i}].problem",
                    f"differs from the problem stored in the trajectories of ({case['case']!r}, {label!r}); "
                    f"the trajectory files are from another configuration: rerun the workflow",
                )


def _dataset_config(ds: xr.Dataset) -> dict:
    try:
        value = json.loads(ds.attrs.get("config_json", "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


SUMMARY_LEADING_COLUMNS = ["scenario", "case", "case_label", "flow", "run", "status"]
VERDICT_COLUMNS = ["scenario", "check", "value", "passed", "detail"]


def summary_table(spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """The common per-run columns of every (case, flow) of the scenario, in spec order."""
    parts = [
        run_table(case, label, datasets[(case["case"], label)]) for case in spec["cases"] for label in case["flows"]
    ]
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "scenario", spec["scenario"])
    return table


def summarize(
    spec: Mapping[str, Any], datasets: Mapping[tuple[str, str], xr.Dataset]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, verdict)`` of one scenario (see the module docstring).

    ``spec``: the scenario slice ``{"scenario", "kind", "cases": [Case.to_dict(), ...]}``; ``datasets``:
    ``{(case name, flow label): trajectory Dataset}`` with batches concatenated along ``run``.
    Raises ``ValueError`` naming the key for a bad spec or missing/extra datasets, before any work.
    """
    check_spec(spec, datasets)
    table = summary_table(spec, datasets)
    table, rows = get_kind(spec["kind"], "spec.kind").verdict(spec, datasets, table)
    leading = [c for c in SUMMARY_LEADING_COLUMNS if c in table.columns]
    table = table[leading + [c for c in table.columns if c not in leading]]
    verdict = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    verdict["passed"] = verdict["passed"].astype("boolean")
    return table, verdict
