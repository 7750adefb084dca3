"""The linter is part of the test suite: ``ruff check`` (rules in pyproject.toml) on the package, the tests and
the benchmarks (``snakemake --lint`` and ``snakefmt --check`` of the workflow run in tests/test_workflow.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    assert found, f"{name} is not installed: it is a test dependency (pip install -e '.[test]')"
    return [found]


def test_ruff_finds_nothing():
    proc = subprocess.run(_tool("ruff") + ["check", "reluflow", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
