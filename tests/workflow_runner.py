"""Helpers for tests that run the Snakemake workflow in a temporary copy of the project."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config")


def snakemake_command() -> list[str]:
    """Snakemake of this interpreter's environment."""
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def copy_project(dest: Path) -> Path:
    """A runnable copy of the workflow (the package itself is the installed one)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def write_config(workdir: Path, config: dict, name: str = "custom.yaml") -> Path:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_config(name: str = "test.yaml") -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def run_snakemake(workdir: Path, *args: str, configfile: str = "config/test.yaml", cores: int = 2,
                  timeout: float = 900, check: bool = True, env: dict | None = None):
    cmd = snakemake_command() + ["--cores", str(cores), *args]
    if configfile:
        cmd += ["--configfile", configfile]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def mutated_config(path, value, name: str = "test.yaml") -> dict:
    """A shipped configuration with the value at ``path`` (keys and list indices) replaced, or deleted
    when ``value`` is ``KeyError``."""
    config = load_config(name)
    target = config
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


def tree_digest(folder: Path, pattern: str = "**/*") -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` matching ``pattern``."""
    out = {}
    for path in sorted(folder.glob(pattern)):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def trajectory_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "results").glob("*/trajectories/*/*/batch*.nc"))
