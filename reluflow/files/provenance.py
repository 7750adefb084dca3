"""Provenance of result files: which code wrote them, from which command, with which configuration.

Every trajectory file carries, as global attributes (see :mod:`reluflow.files.trajectories`):

- ``source``: :func:`source_string`, e.g. ``"reluflow 0.1.0 (git 3f2c...e1-dirty)"``;
- ``history``: :func:`history_line`, an ISO-8601 UTC timestamp and the command line that wrote the file;
- ``config_json``: :func:`config_json`, the full configuration as canonical JSON (sorted keys), so two
  files written from the same configuration carry byte-identical strings.

The version, revision, source and history functions never raise: provenance is recorded on a best-effort
basis and must never stop a run. :func:`config_json` raises ``ValueError`` for a configuration with no JSON form.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: what :func:`git_revision` returns when the revision cannot be determined
UNKNOWN = "unknown"

#: seconds to wait for a ``git`` call before giving up (a hung network file system must not hang a run)
_GIT_TIMEOUT = 10.0


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed reluflow version (``"0.0.0+unknown"`` when running from an uninstalled tree)."""
    try:
        return version("reluflow")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _source_root() -> Path:
    """The folder holding the ``reluflow`` package folder (the repository root for a source checkout)."""
    return Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> str:
    # --no-optional-locks: `git status` must not take .git/index.lock, which would collide with commits
    # made in the same tree while a run is writing its files.
    completed = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=_GIT_TIMEOUT,
        check=True,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
    )
    return completed.stdout.strip()


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """``git rev-parse HEAD`` of the reluflow source tree, plus ``"-dirty"`` if tracked files are modified.

    Returns :data:`UNKNOWN` when reluflow is not imported from the top level of a git checkout (for
    instance an installed wheel inside some other repository), when ``git`` is missing or fails. Untracked
    files do not make the tree dirty (as for ``git describe --dirty``). The answer is cached for the
    life of the process.
    """
    root = _source_root()
    try:
        toplevel = Path(_git(root, "rev-parse", "--show-toplevel")).resolve()
        if toplevel != root:
            return UNKNOWN
        head = _git(root, "rev-parse", "HEAD")
        if not head:
            return UNKNOWN
        modified = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError, ValueError):
        return UNKNOWN
    return head + ("-dirty" if modified else "")


def source_string() -> str:
    """The CF ``source`` attribute: ``"reluflow <version> (git <revision>)"``."""
    return f"reluflow {package_version()} (git {git_revision()})"


def history_line(argv: Sequence[str] | None = None, *, now: datetime | None = None) -> str:
    """One CF ``history`` entry: ``"<ISO-8601 UTC time>: <shell-quoted command line>"``.

    ``argv`` defaults to ``sys.argv``; the program is shown by its base name. The line never contains a
    newline (CF separates history entries by newlines).
    """
    if argv is None:
        argv = sys.argv
    argv = [str(a) for a in argv]
    if argv:
        argv[0] = os.path.basename(argv[0]) or argv[0]
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")
    command = shlex.join(argv) if argv else "(unknown command)"
    return f"{stamp}: {command}".replace("\r", " ").replace("\n", " ")


def _to_json_value(value: Any) -> Any:
    """numpy scalars/arrays, tuples, paths and non-finite floats as JSON-compatible Python values."""
    if isinstance(value, Mapping):
        return {str(k): _to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_to_json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _to_json_value(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/inf; strings keep the value visible instead of producing invalid JSON
        return repr(value)
    if isinstance(value, Path):
        return str(value)
    return value


def config_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a configuration mapping: sorted keys, compact separators, strict JSON.

    numpy values become Python values, tuples become lists, non-finite floats become the strings
    ``"nan"``, ``"inf"``, ``"-inf"``. Raises ``ValueError`` (naming ``config``) for values with no JSON
    form.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: must be a mapping, got {type(config).__name__}")
    try:
        return json.dumps(_to_json_value(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise ValueError(f"config: not representable as JSON ({exc})") from None
