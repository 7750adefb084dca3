"""Atomic file output: a reader sees the previous file or the complete new one, never a partial one.

Everything reluflow writes (trajectory and initialization netCDF files, CSV tables, figures) goes through
:func:`atomic_output`: the content is written to a hidden temporary file in the same folder (so the
final rename stays on one file system), flushed to disk, then moved over the target with
:func:`os.replace`. On any exception the temporary file is removed. A process killed with SIGKILL may
leave a temporary file behind; its name (``.<name>.<16 hex>.tmp``) is never a result name.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: names of temporary files left by killed writers
TEMPORARY_FILE_PATTERN = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file's (or a folder's entries') data to disk; best effort for folders."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    The suffix of ``path`` is kept (``.<name>.<hex>.tmp<suffix>`` would confuse format detection of
    libraries that look at suffixes, so the temporary name ends in ``.tmp`` and writers must name the
    format explicitly).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException:
        try:
            temporary.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_path(folder, directory=True)
