# Configuration loading and validation, and the helpers that cut it into per-rule slices.
import json
import math

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("8.20")


# Structure first (JSON schema), then meaning (reluflow): both fail before any job is scheduled, with a
# message that names the offending key; nothing under results/ is touched.
# reluflow's check_schema instead of snakemake.utils.validate: the same JSON schema, but the message
# is "<key path>: <problem>" rather than a dump of the schema.
from reluflow.experiments.config import resolve_scenarios
from reluflow.experiments.kinds import get_kind
from reluflow.experiments.resources import case_job_bytes
from reluflow.model.validation import ConfigError, check_schema

with open(workflow.source_path("../schemas/config.schema.yaml")) as schema_file:
    CONFIG_SCHEMA = yaml.safe_load(schema_file)

try:
    check_schema(config, CONFIG_SCHEMA)
    SCENARIOS = resolve_scenarios(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

RESULTS = "results"


def get_case(wildcards):
    for case in SCENARIOS[wildcards.scenario]:
        if case.name == wildcards.case:
            return case
    raise WorkflowError(
        f"scenario {wildcards.scenario!r} has no case {wildcards.case!r}"
    )


def init_slice(wildcards):
    """Slice for init jobs: the problem, the initialization and the names its seeds derive from."""
    case = get_case(wildcards)
    return json.dumps(
        {
            "scenario": case.scenario,
            "case": case.name,
            "label": case.label,
            "problem": case.problem,
            "init": case.init,
            "batch_size": case.batch_size,
        },
        sort_keys=True,
    )


def flow_slice(wildcards):
    """What a simulate job needs beyond its init file: one flow's settings."""
    return json.dumps(
        get_case(wildcards).flow(wildcards.flow).to_config(), sort_keys=True
    )


def scenario_slice(wildcards):
    """What aggregation and figures need: the scenario's kind, cases and flows (no numbers are recomputed)."""
    cases = SCENARIOS[wildcards.scenario]
    return json.dumps(
        {
            "scenario": wildcards.scenario,
            "kind": cases[0].kind,
            "cases": [c.to_dict() for c in cases],
        },
        sort_keys=True,
    )


def figure_caption(wildcards):
    """The report caption of a scenario's figure, from its kind (reluflow.experiments.kinds)."""
    cases = SCENARIOS[wildcards.scenario]
    spec = {
        "scenario": wildcards.scenario,
        "kind": cases[0].kind,
        "cases": [c.to_dict() for c in cases],
    }
    return get_kind(cases[0].kind).caption(spec)


def batch_ids(case):
    return [f"{b:03d}" for b in range(case.n_batches)]


def trajectory_files(wildcards):
    return [
        f"{RESULTS}/{case.scenario}/trajectories/{case.name}/{flow.label}/batch{b}.nc"
        for case in SCENARIOS[wildcards.scenario]
        for flow in case.flows
        for b in batch_ids(case)
    ]


def simulate_mem_mb(wildcards, attempt):
    # twice reluflow's estimate of the job's peak memory (reluflow.experiments.resources), at least 1 GB;
    # doubled on a retry
    case = get_case(wildcards)
    estimate = case_job_bytes(case, case.flow(wildcards.flow))
    return max(1000, math.ceil(2 * estimate / 2**20)) * attempt


def simulate_runtime(wildcards, attempt):
    # minutes, for SLURM; doubled on a retry
    return 30 * attempt


def case_trajectory_files(wildcards):
    case = get_case(wildcards)
    return [
        f"{RESULTS}/{case.scenario}/trajectories/{case.name}/{flow.label}/batch{b}.nc"
        for flow in case.flows
        for b in batch_ids(case)
    ]


def final_targets():
    out = []
    for name, cases in SCENARIOS.items():
        out += [
            f"{RESULTS}/figures/{name}/{case.name}.gif"
            for case in cases
            if case.animate
        ]
    for name in SCENARIOS:
        out += [
            f"{RESULTS}/{name}/summary.csv",
            f"{RESULTS}/{name}/verdict.csv",
            f"{RESULTS}/figures/{name}.pdf",
            f"{RESULTS}/figures/{name}.png",
        ]
    out.append(f"{RESULTS}/verdicts.csv")
    return out
