"""The test configuration's numbers are those of a stored reference run, bit for bit.

``tests/data/test_config_numbers.npz`` holds every variable and coordinate of every netCDF file that
``snakemake --cores 2 --configfile config/test.yaml`` wrote at commit 202a76a (before the package was cut into
layers and the solvers got one driver loop), plus each file's variable layout. A change meant to keep
behaviour must reproduce them exactly: the tolerance is 0 (``numpy.array_equal``, NaN equal to NaN), since
every step of the pipeline is deterministic and bitwise independent of batches and cores (README). Files,
variables and cases added since (the layout is extended, never renamed) are not part of the comparison; every
stored array must still be there, with the same dimensions.

One platform dependency is known: the last bit of ``sin`` may differ between CPU generations. Files of
scenarios whose targets contain a sine are compared only where this platform's sine has the reference
machine's fingerprint (:func:`golden_numbers.sine_fingerprint`); elsewhere they are listed as skipped, and
the other files are still compared bit for bit.

To store a new reference after a change that is meant to change numbers (say why in the commit):
``python tests/golden_numbers.py <project>/results tests/data/test_config_numbers.npz``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from golden_numbers import numbers_of, sine_fingerprint
from workflow_runner import load_config

from reluflow.experiments.config import resolve_scenarios

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).parent / "data" / "test_config_numbers.npz"


def _sine_scenarios() -> set[str]:
    out = set()
    for name, cases in resolve_scenarios(load_config()).items():
        if any('"kind": "sine"' in json.dumps(case.problem) for case in cases):
            out.add(name)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.all(a == b))


def test_test_configuration_numbers_are_bitwise_those_of_the_reference(completed_workflow):
    workdir, _ = completed_workflow
    reference = dict(np.load(REFERENCE))
    same_sine = str(reference.pop("@sine_fingerprint")) == sine_fingerprint()
    current = numbers_of(workdir / "results")
    missing = sorted(set(reference) - set(current))
    assert not missing, f"{len(missing)} stored arrays are gone, e.g. {missing[:5]}"
    sine = _sine_scenarios()
    compared, skipped, differing = 0, [], []
    for key, expected in reference.items():
        if not same_sine and key.split("/")[0] in sine:
            skipped.append(key)
            continue
        compared += 1
        if key.endswith("::@layout"):  # the stored variables keep their dims and kinds; new ones may join
            if not set(expected.tolist()) <= set(current[key].tolist()):
                differing.append(key)
            continue
        if not _same(expected, current[key]):
            differing.append(key)
    assert not differing, f"{len(differing)} arrays differ from the reference, e.g. {differing[:5]}"
    assert compared > 100  # the comparison covers the files, not an empty set
    if skipped:
        warnings.warn(f"this platform's sine differs from the reference machine's: {len(skipped)} arrays of "
                      f"the scenarios {sorted(sine)} were not compared", stacklevel=1)
