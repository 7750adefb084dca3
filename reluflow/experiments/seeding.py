"""Per-run random streams: a run's numbers depend on its names and id only, never on batches or machines.

A run's stream is :class:`numpy.random.SeedSequence` with entropy from a SHA-256 of the scenario and case
names and ``spawn_key = (run_id,)``: the same on every machine and Python (unlike ``hash``), independent of
the batch size, of ``--cores`` and of which job draws it.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["stable_entropy", "run_seed_sequence"]


def stable_entropy(*names: str) -> int:
    """A 128-bit integer from names, the same on every machine and Python (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    return int.from_bytes(digest[:16], "little")


def run_seed_sequence(scenario: str, case: str, run_id: int) -> np.random.SeedSequence:
    """The random stream of one run: depends only on the names and the run id."""
    return np.random.SeedSequence(entropy=stable_entropy(scenario, case), spawn_key=(int(run_id),))
