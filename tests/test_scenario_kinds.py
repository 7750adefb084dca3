"""Scenario kinds as plug-ins: one registry, preconditions checked before any job.

This module is itself a scenario kind outside the package: ``KIND`` below is named in a configuration as
``test_scenario_kinds:KIND`` (the module importable through ``PYTHONPATH``), and goes through ``reluflow
check-config``, ``reluflow kinds`` and a one-case workflow, summary, figure and report caption included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml
from workflow_runner import copy_project, load_config, run_snakemake, write_config

from reluflow.experiments.checks import common_rows, verdict_row
from reluflow.experiments.config import resolve_scenarios
from reluflow.experiments.kinds import BUILTIN, ScenarioKind, builtin_kinds, get_kind
from reluflow.model.validation import ConfigError, fail

TESTS = Path(__file__).resolve().parent
PLUGIN = "test_scenario_kinds:KIND"
CAPTION_TEXT = "Risk decrease of every run (a kind defined in the test suite)."


def check_case(case, key: str) -> None:
    width = case["problem"]["network"]["width"]
    if width < 2:
        fail(f"{key}.problem.network.width", f"the risk-decrease kind needs at least two neurons, got {width}")


def judge(spec, datasets, table):
    rows = common_rows(spec["scenario"], table)
    fell = table["final_risk"] <= table["initial_risk"]
    rows.append(verdict_row(spec["scenario"], "risk_decreased", float(fell.mean()), bool(fell.all()),
                            f"{int(fell.sum())}/{len(table)} runs end below their initial risk"))
    table["risk_fell"] = fell
    return table, rows


def draw(spec, datasets, summary, verdict):
    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    for ds in datasets.values():
        for run in range(ds.sizes["run"]):
            ax.loglog(ds["time"].values[1:], ds["risk"].values[run, 1:])
    ax.set_xlabel("t")
    ax.set_ylabel("L")
    return fig


KIND = ScenarioKind(
    name="risk_decrease",
    summary="every run's risk decreases (a kind defined in the test suite)",
    check_case=check_case,
    verdict=judge,
    figure=draw,
    caption=lambda spec: CAPTION_TEXT,
)

CONFIG = {
    "scenarios": [
        {
            "name": "plugin_demo",
            "kind": PLUGIN,
            "problem": {
                "network": {"input_dim": 1, "width": 2, "output_dim": 1},
                "domain": [0.0, 1.0],
                "target": {"kind": "affine", "slope": 2.0, "intercept": -1.0},
                "measure": {"kind": "uniform"},
            },
            "init": {"scheme": "gaussian", "n_runs": 2, "scale": 1.0},
            "flows": [{"label": "gf", "flow": "standard", "solver": "dopri5", "t_max": 10.0,
                       "save": {"spacing": "log", "n": 8, "t_min": 0.1}}],
            "batch_size": 2,
        }
    ]
}


def env_with_tests_on_path() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def reluflow_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("reluflow")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env_with_tests_on_path(),
                          timeout=300)


def test_the_registry_lists_the_builtin_kinds_each_with_its_pieces():
    kinds = builtin_kinds()
    assert list(kinds) == list(BUILTIN)
    for name, kind in kinds.items():
        assert kind.name == name and kind.summary
        spec = {"scenario": name, "kind": name, "cases": []}
        assert kind.caption(spec).strip()
        for piece in (kind.check_case, kind.check_scenario, kind.verdict, kind.figure):
            assert callable(piece)


def test_unknown_and_broken_kinds_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^scenarios\[0\]\.kind: unknown scenario kind 'jr_nonsense'"):
        get_kind("jr_nonsense", "scenarios[0].kind")
    with pytest.raises(ConfigError, match=r"^k: cannot import the module"):
        get_kind("no_such_module_xyz:KIND", "k")
    with pytest.raises(ConfigError, match=r"^k: test_scenario_kinds\.CONFIG is not a reluflow ScenarioKind"):
        get_kind("test_scenario_kinds:CONFIG", "k")


def test_a_kind_from_outside_the_package_resolves_and_checks_its_preconditions():
    assert get_kind(PLUGIN) is KIND
    assert list(resolve_scenarios(CONFIG)) == ["plugin_demo"]
    narrow = json.loads(json.dumps(CONFIG))
    narrow["scenarios"][0]["problem"]["network"]["width"] = 1
    with pytest.raises(ConfigError, match=r"^scenarios\[0\]\.problem\.network\.width: the risk-decrease kind"):
        resolve_scenarios(narrow)


def test_check_config_and_kinds_commands_load_the_plugin(tmp_path):
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    proc = reluflow_cli("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "plugin_demo: 1 case(s), 2 runs, 1 simulate job(s)" in proc.stdout
    proc = reluflow_cli("kinds", PLUGIN)
    assert proc.returncode == 0 and "risk decreases" in proc.stdout, proc.stderr
    proc = reluflow_cli("kinds")
    assert proc.returncode == 0 and all(name in proc.stdout for name in BUILTIN)
    narrow = json.loads(json.dumps(CONFIG))
    narrow["scenarios"][0]["problem"]["network"]["width"] = 1
    path.write_text(yaml.safe_dump(narrow))
    proc = reluflow_cli("check-config", str(path))
    assert proc.returncode == 2 and "scenarios[0].problem.network.width" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_plugin_kind_runs_through_a_one_case_workflow(tmp_path):
    workdir = copy_project(tmp_path / "project")
    write_config(workdir, CONFIG, "plugin.yaml")
    run_snakemake(workdir, configfile="config/plugin.yaml", env={"PYTHONPATH": env_with_tests_on_path()["PYTHONPATH"]})
    verdict = pd.read_csv(workdir / "results" / "plugin_demo" / "verdict.csv")
    assert "risk_decreased" in set(verdict["check"])
    summary = pd.read_csv(workdir / "results" / "plugin_demo" / "summary.csv")
    assert len(summary) == 2 and "risk_fell" in summary.columns
    assert (workdir / "results" / "figures" / "plugin_demo.png").stat().st_size > 1000
    report = workdir / "results" / "report.html"
    run_snakemake(workdir, "--report", str(report), configfile="config/plugin.yaml",
                  env={"PYTHONPATH": env_with_tests_on_path()["PYTHONPATH"]})
    assert CAPTION_TEXT in report.read_text(errors="replace")


@pytest.mark.slow
def test_a_broken_precondition_stops_a_dry_run_naming_the_key(tmp_path):
    workdir = copy_project(tmp_path / "project")
    config = load_config()
    names = [s["name"] for s in config["scenarios"]]
    affine = config["scenarios"][names.index("jr_affine_small_risk")]
    # a sine target with a random initialization (near_exact starts from an affine target's exact representation)
    affine.pop("cases")
    affine["init"] = {"scheme": "gaussian", "n_runs": 2}
    affine["problem"]["target"] = {"kind": "sine", "amplitude": 1.0, "frequency": 6.0, "phase": 0.0}
    write_config(workdir, config, "broken.yaml")
    proc = run_snakemake(workdir, "-n", configfile="config/broken.yaml", check=False)
    index = names.index("jr_affine_small_risk")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"scenarios[{index}].problem.target.kind: JR Theorem 1.2 needs an affine target" in output, output[-2000:]
    assert not (workdir / "results").exists()  # refused before any job


def test_kind_preconditions_are_checked_for_every_builtin_kind():
    """Each built-in kind refuses a case outside its setting, naming the key (the table: kind, change, key)."""
    config = load_config()
    names = [s["name"] for s in config["scenarios"]]
    changes = [
        ("jr_bounded_critical", ("problem", "measure"), {"kind": "qmc", "n_points": 64}, "problem.measure.kind"),
        ("jr_affine_small_risk", ("problem", "measure"), {"kind": "triangular"}, "problem.measure.kind"),
        ("jr_single_neuron", ("problem", "network", "width"), 2, "problem.network.width"),
        ("ejrw_normalized_bounded", ("flows",), [{"flow": "standard", "t_max": 1.0}], "flows"),
        ("gd_vs_gf", ("flows",), [{"flow": "standard", "t_max": 1.0}], "flows"),
    ]
    for kind, path, value, key in changes:
        broken = json.loads(json.dumps(config))
        scenario = broken["scenarios"][names.index(kind)]
        scenario.pop("cases", None)
        target = scenario
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        with pytest.raises(ConfigError) as err:
            resolve_scenarios(broken)
        assert str(err.value).startswith(f"scenarios[{names.index(kind)}].{key}"), (kind, str(err.value))
    # every built-in kind with preconditions is in the table (explore has none: any problem, any flows)
    assert {kind for kind, *_ in changes} == set(BUILTIN) - {"explore"}
