"""The ``reluflow`` command line: the steps the workflow runs, each reading and writing named files.

    reluflow check-config config/config.yaml       validate a workflow configuration, list its jobs
    reluflow init      --spec JSON --batch B --output init.nc
    reluflow simulate  --init init.nc --spec JSON --output traj.nc [--progress]
    reluflow summarize --spec JSON --summary summary.csv --verdict verdict.csv traj.nc ...
    reluflow figure    --spec JSON --summary summary.csv --verdict verdict.csv --pdf f.pdf --png f.png traj.nc ...
    reluflow verdicts  --output verdicts.csv verdict.csv ...
    reluflow animate   --spec JSON --case C --output c.gif traj.nc ...
    reluflow kinds     [KIND ...]                  the scenario kinds and what each shows

Exit codes: 0 success; 2 bad command line or configuration (the message names the key); 3 an input
file is missing, corrupt, truncated or of another format (the message names the file); 1 anything else.
Every output file is written atomically: an interrupted command leaves the previous file or none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3


class UsageError(ValueError):
    """A command-line argument is wrong."""


def _spec(text: str) -> dict:
    """``--spec`` is a JSON object (the rule's slice of the workflow configuration) or ``@file.json``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--spec: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise UsageError("--spec: must be a JSON object")
    return value


class ProgressPrinter:
    """Progress of a long integration as lines on stderr (log files show them; no terminal tricks)."""

    def __init__(self, label: str, stream=None, min_interval: float = 2.0):
        self.label, self.stream, self.min_interval = label, stream or sys.stderr, min_interval
        self.start = time.monotonic()
        self.last = -float("inf")

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last < self.min_interval and fraction < 1.0:
            return
        self.last = now
        elapsed = now - self.start
        print(f"[{self.label}] {100 * fraction:5.1f}% done, {elapsed:7.1f} s elapsed", file=self.stream, flush=True)


def cmd_check_config(args) -> int:
    import yaml

    from reluflow.experiments.config import resolve_scenarios

    path = Path(args.config)
    if not path.exists():
        raise FileNotFoundError(2, "No such configuration file", str(path))
    with path.open() as fh:
        config = yaml.safe_load(fh)  # data only: never constructs Python objects
    scenarios = resolve_scenarios(config)
    for name, cases in scenarios.items():
        jobs = sum(c.n_batches * len(c.flows) for c in cases)
        runs = sum(c.n_runs for c in cases)
        print(f"{name}: {len(cases)} case(s), {runs} runs, {jobs} simulate job(s)")
    return EXIT_OK


def cmd_init(args) -> int:
    from reluflow.experiments.config import Case
    from reluflow.experiments.initialization import draw_initializations, validate_init
    from reluflow.files.initializations import build_init_dataset, write_init_dataset
    from reluflow.problem import Problem

    spec = _spec(args.spec)
    for key in ("scenario", "case", "problem", "init", "batch_size"):
        if key not in spec:
            raise UsageError(f"--spec: missing key {key!r}")
    problem = Problem.from_config(spec["problem"])
    init = validate_init("init", spec["init"], problem)
    case = Case(scenario=spec["scenario"], kind="", name=spec["case"], label=spec.get("label", spec["case"]),
                problem=problem.config, init=init, flows=(), n_runs=init["n_runs"], batch_size=int(spec["batch_size"]))
    runs = case.batch_runs(int(args.batch))
    theta0, meta = draw_initializations(problem, init, spec["scenario"], spec["case"], runs)
    ds = build_init_dataset(theta0, runs, meta, spec=spec, batch=int(args.batch), problem=problem)
    write_init_dataset(ds, args.output)
    print(f"wrote {len(runs)} initial states to {args.output}")
    return EXIT_OK


def cmd_simulate(args) -> int:
    from reluflow.dynamics.settings import FlowSettings
    from reluflow.files.initializations import open_init_dataset
    from reluflow.files.trajectories import write_trajectory_dataset
    from reluflow.problem import Problem
    from reluflow.simulate import simulate

    # the spec is checked before the (possibly large) init file is even opened
    settings = FlowSettings.from_config(_spec(args.spec), "--spec")
    init_ds, init_spec = open_init_dataset(args.init)
    problem = Problem.from_config(init_spec["problem"])
    label = f"{init_spec['scenario']}/{init_spec['case']}/{settings.label}"
    progress = ProgressPrinter(label) if args.progress else None
    started = time.monotonic()
    ds = simulate(
        problem,
        init_ds["theta0"].values,
        settings=settings,
        run_ids=init_ds["run"].values,
        init={
            "init_scheme": init_ds["init_scheme"].values.astype(str),
            "init_scale": init_ds["init_scale"].values,
        },
        scenario=init_spec["scenario"],
        title=f"reluflow trajectories: {init_spec['scenario']} / {init_spec['case']} / {settings.label}",
        config={"case": init_spec["case"], "flow": settings.to_config(), "init": init_spec["init"],
                "batch": int(init_ds.attrs["batch"])},
        progress=progress,
    )
    write_trajectory_dataset(ds, args.output)
    counts = {int(s): int((ds["status"].values == s).sum()) for s in sorted(set(ds["status"].values.tolist()))}
    print(f"wrote {ds.sizes['run']} runs x {ds.sizes['time']} saves to {args.output} "
          f"in {time.monotonic() - started:.1f} s; status counts {counts}")
    return EXIT_OK


def _group_datasets(paths):
    from reluflow.files.trajectories import group_trajectories

    return group_trajectories(paths)


def cmd_summarize(args) -> int:
    from reluflow.experiments.summary import summarize
    from reluflow.files.atomic import atomic_output

    spec = _spec(args.spec)
    summary, verdict = summarize(spec, _group_datasets(args.trajectories))
    for df, path in ((summary, args.summary), (verdict, args.verdict)):
        with atomic_output(path) as tmp:
            df.to_csv(tmp, index=False)
    print(verdict.to_string(index=False))
    return EXIT_OK


def cmd_figure(args) -> int:
    import pandas as pd

    from reluflow.experiments.figure import make_figure

    spec = _spec(args.spec)
    summary = pd.read_csv(args.summary)
    verdict = pd.read_csv(args.verdict)
    make_figure(spec, _group_datasets(args.trajectories), summary, verdict, args.pdf, args.png)
    print(f"wrote {args.pdf} and {args.png}")
    return EXIT_OK


def cmd_animate(args) -> int:
    from reluflow.experiments.animation import animate_case

    spec = _spec(args.spec)
    animate_case(spec, args.case, _group_datasets(args.trajectories), args.output)
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_kinds(args) -> int:
    from reluflow.experiments.kinds import builtin_kinds, get_kind

    kinds = builtin_kinds() if not args.kind else {name: get_kind(name, "kind") for name in args.kind}
    for name, kind in kinds.items():
        print(f"{name}: {kind.summary}")
    return EXIT_OK


def cmd_verdicts(args) -> int:
    import pandas as pd

    from reluflow.files.atomic import atomic_output

    table = pd.concat([pd.read_csv(p) for p in args.verdicts], ignore_index=True)
    with atomic_output(args.output) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reluflow",
        description=__doc__.split("\n\n")[0] + " Run 'reluflow COMMAND --help' for a command's options.",
        epilog="Exit codes: 0 ok, 1 unexpected failure, 2 bad arguments or configuration, 3 bad input file.",
    )
    from reluflow import __version__

    parser.add_argument("--version", action="version", version=f"reluflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate a workflow configuration (YAML) and list its jobs")
    p.add_argument("config", help="path of the YAML configuration, e.g. config/config.yaml")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("init", help="draw one batch of seeded initial parameters")
    p.add_argument("--spec", required=True, help="JSON (or @file): scenario, case, problem, init, batch_size")
    p.add_argument("--batch", required=True, type=int, help="batch index (runs batch*batch_size ...)")
    p.add_argument("--output", required=True, help="initialization netCDF file to write")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("simulate", help="integrate one flow from a batch of initial parameters")
    p.add_argument("--init", required=True, help="initialization netCDF file (from 'reluflow init')")
    p.add_argument("--spec", required=True, help="JSON (or @file): the flow's settings (flow, solver, t_max, ...)")
    p.add_argument("--output", required=True, help="trajectory netCDF file to write")
    p.add_argument("--progress", action="store_true", help="print progress lines to stderr")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("summarize", help="per-run summary table and the scenario's quantitative verdict")
    p.add_argument("--spec", required=True, help="JSON (or @file): the scenario slice")
    p.add_argument("--summary", required=True, help="CSV file to write, one row per run")
    p.add_argument("--verdict", required=True, help="CSV file to write, one row per check")
    p.add_argument("trajectories", nargs="+", help="trajectory files .../<case>/<flow>/batchNNN.nc")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("figure", help="the scenario's multi-panel figure (PDF and PNG)")
    p.add_argument("--spec", required=True, help="JSON (or @file): the scenario slice")
    p.add_argument("--summary", required=True, help="summary CSV from 'reluflow summarize'")
    p.add_argument("--verdict", required=True, help="verdict CSV from 'reluflow summarize'")
    p.add_argument("--pdf", required=True, help="PDF file to write")
    p.add_argument("--png", required=True, help="PNG file to write")
    p.add_argument("trajectories", nargs="+", help="trajectory files .../<case>/<flow>/batchNNN.nc")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("animate", help="a GIF of one case: realization and neurons over flow time")
    p.add_argument("--spec", required=True, help="JSON (or @file): the scenario slice")
    p.add_argument("--case", required=True, help="the case to animate")
    p.add_argument("--output", required=True, help="GIF file to write")
    p.add_argument("trajectories", nargs="+", help="trajectory files of the case")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("kinds", help="list the scenario kinds (the built-in ones, or those named)")
    p.add_argument("kind", nargs="*", help="kinds to show; '<module>:<attribute>' for a kind outside reluflow")
    p.set_defaults(func=cmd_kinds)

    p = sub.add_parser("verdicts", help="collect the scenarios' verdict tables into one")
    p.add_argument("--output", required=True, help="CSV file to write")
    p.add_argument("verdicts", nargs="+", help="verdict CSV files")
    p.set_defaults(func=cmd_verdicts)
    return parser


def main(argv=None) -> int:
    from reluflow.files.trajectories import TrajectoryFileError
    from reluflow.model.validation import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError) as err:
        print(f"reluflow {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrajectoryFileError as err:
        print(f"reluflow {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except FileNotFoundError as err:
        print(f"reluflow {args.command}: error: {err.filename}: file not found", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
