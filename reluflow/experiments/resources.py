"""What a configuration will cost, estimated before any job: memory per simulate job and the number of jobs.

A configuration whose simulate job would not fit the machine, or whose workflow would have more jobs than
Snakemake can plan in reasonable time, is refused when it is resolved (``reluflow check-config`` and
``snakemake -n`` stop in seconds), naming the key to change and the estimate.

Memory of one simulate job (``m`` runs of the batch, ``n`` parameters, ``T`` save times), in float64 words:

- the saved trajectories and what is computed from them: ``theta`` ``(m, T, n)`` held by the solver's
  recorder, by the diagnostics and by the dataset (3 copies), plus the gradients at the save times (1 more);
- the solver's work arrays: an explicit pair's ``s`` stages and buffers, ``(s + 4) m n``; a Rosenbrock step
  with the dense Jacobian ``m n^2`` for the stored Jacobians and as much for the LU factors and the step's
  copy, ``3 m n^2`` (the structured solve of :mod:`reluflow.kernels.structured1d` needs O(n) per run instead,
  but the estimate keeps the dense bound: an over-estimate refuses nothing that fits);
- the exact kernels and the certificate: a few ``m n`` and, for the certificate's Levenberg-Marquardt
  normal equations, ``2 m n^2``.

The machine's memory is read from the operating system (``os.sysconf``); ``limits.job_memory_mb`` and
``limits.jobs`` in the configuration override the defaults (80 % of the machine's memory, 20,000 jobs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from reluflow.model.validation import check_mapping, fail, real, subkey, whole_number

__all__ = ["Limits", "parse_limits", "simulate_job_bytes", "case_job_bytes", "check_resources", "machine_memory_bytes"]

#: most simulate jobs a configuration may ask for: Snakemake builds its DAG job by job (measured: about a
#: millisecond per job), so 20,000 jobs take tens of seconds to plan; beyond that, larger batches are the fix
DEFAULT_MAX_JOBS = 20_000
#: share of the machine's memory one job may use (the rest: the operating system and the other cores' jobs)
DEFAULT_MEMORY_SHARE = 0.8
#: stages of the largest explicit pair (DOP853)
_MAX_STAGES = 12
_WORD = 8


@dataclass(frozen=True)
class Limits:
    """The largest simulate job (bytes) and the most simulate jobs a configuration may ask for."""

    job_memory_bytes: float
    jobs: int


def machine_memory_bytes() -> float:
    """Physical memory of this machine (``inf`` where the operating system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def parse_limits(raw: Any, key: str = "limits") -> Limits:
    """The ``limits`` mapping of a configuration (optional keys ``job_memory_mb``, ``jobs``), defaults filled in."""
    raw = {} if raw is None else raw
    check_mapping(key, raw, optional={"job_memory_mb", "jobs"})
    memory = DEFAULT_MEMORY_SHARE * machine_memory_bytes()
    if "job_memory_mb" in raw:
        memory = real(subkey(key, "job_memory_mb"), raw["job_memory_mb"], positive=True) * 2**20
    jobs = whole_number(subkey(key, "jobs"), raw.get("jobs", DEFAULT_MAX_JOBS), minimum=1)
    return Limits(job_memory_bytes=memory, jobs=jobs)


def simulate_job_bytes(runs: int, n_params: int, n_saves: int) -> float:
    """Estimated peak memory of one simulate job (module docstring)."""
    m, n, t = runs, n_params, n_saves
    words = 4 * m * t * n + (_MAX_STAGES + 4) * m * n + 3 * m * n * n + 2 * m * n * n + 8 * m * n
    return float(words * _WORD)


def case_job_bytes(case, flow, runs: int | None = None) -> float:
    """:func:`simulate_job_bytes` of one batch job of ``case`` (a resolved
    :class:`~reluflow.experiments.config.Case`) and one of its flows; ``runs`` defaults to a full batch."""
    net = case.problem["network"]
    width, d, k = net["width"], net.get("input_dim", 1), net.get("output_dim", 1)
    if runs is None:
        runs = min(case.batch_size, case.n_runs)
    return simulate_job_bytes(runs, d * width + width + k * width + k, flow.save_times().size)


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes / 2**10:.3g} kB"


def check_resources(scenarios: Mapping[str, list], case_keys: Mapping[tuple[str, str], Mapping[str, str]],
                    limits: Limits) -> None:
    """Refuse a resolved configuration whose jobs would not fit. ``scenarios``: name -> cases of
    :func:`reluflow.experiments.config.resolve_scenarios`; ``case_keys``: (scenario, case) -> for ``init``,
    ``batch_size`` and ``width``, the key path where the case's value was written (``scenarios[1].cases[0]``,
    or ``scenarios[1]`` when the case inherits it), so that the error names the key to change."""
    jobs = {}
    for name, cases in scenarios.items():
        for case in cases:
            keys = case_keys[(name, case.name)]
            jobs[f"{keys['init']}.init.n_runs"] = jobs.get(f"{keys['init']}.init.n_runs", 0) + case.n_batches * len(
                case.flows)
            runs = min(case.batch_size, case.n_runs)
            net = case.problem["network"]
            n = (net.get("input_dim", 1) + 1 + net.get("output_dim", 1)) * net["width"] + net.get("output_dim", 1)
            for flow in case.flows:
                saves = flow.save_times().size
                need = case_job_bytes(case, flow)
                if need <= limits.job_memory_bytes:
                    continue
                one_run = case_job_bytes(case, flow, runs=1) > limits.job_memory_bytes
                fail(
                    f"{keys['width']}.problem.network.width" if one_run else f"{keys['batch_size']}.batch_size",
                    f"a simulate job of case {case.name!r}, flow {flow.label!r} ({runs} runs of {n} parameters, "
                    f"{saves} saves) needs about {_size(need)}, more than the {_size(limits.job_memory_bytes)} a "
                    f"job may use (limits.job_memory_mb); "
                    + ("even one run does not fit: use a smaller width" if one_run else "use a smaller batch_size"),
                )
    total = sum(jobs.values())
    if total > limits.jobs:
        worst = max(jobs, key=jobs.get)
        fail(
            worst,
            f"the configuration asks for {total} simulate jobs ({jobs[worst]} of them here), more than "
            f"{limits.jobs} (limits.jobs): Snakemake would plan them for minutes; use fewer runs or a larger "
            f"batch_size",
        )
