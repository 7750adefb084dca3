"""The numbers of a workflow run's netCDF files as one flat mapping, to compare runs bit for bit.

``python tests/golden_numbers.py RESULTS_DIR OUT.npz`` stores them; ``numbers_of(RESULTS_DIR)`` reads them
back from a new run. Keys are ``<file relative to results/>::<variable>``; every data variable and coordinate
is included (numbers and strings), attributes are not (they hold dates, revisions and paths).
A key ``<file>::@layout`` lists each variable with its dimensions and dtype, so a change of the file
layout is caught too.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import xarray as xr


def sine_fingerprint() -> str:
    """SHA-256 of this platform's sine (numpy's loops, libm, numba's compiled call) on 2e5 arguments in
    [-20, 20]: the one operation whose last bit may differ between CPU generations (README,
    reproducibility), so files of sine targets are compared bit for bit only where it matches."""
    from numba import njit

    @njit(cache=False)
    def compiled(values):
        out = np.empty_like(values)
        for i in range(values.size):
            out[i] = math.sin(values[i])
        return out

    x = np.linspace(-20.0, 20.0, 200_001)
    digest = hashlib.sha256()
    for values in (np.sin(x), np.array([math.sin(v) for v in x]), compiled(x)):
        digest.update(values.tobytes())
    return digest.hexdigest()


def numbers_of(results: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for path in sorted(Path(results).glob("*/*/**/batch*.nc")):
        rel = str(path.relative_to(results))
        with xr.open_dataset(path) as ds:
            ds.load()
            layout = []
            for name in sorted(ds.variables):
                var = ds.variables[name]
                values = np.asarray(var.values)
                if values.dtype.kind == "O":
                    values = values.astype(str)
                out[f"{rel}::{name}"] = values
                layout.append(f"{name}{tuple(var.dims)}:{values.dtype.kind}")
            out[f"{rel}::@layout"] = np.array(layout)
    return out


if __name__ == "__main__":
    results, target = Path(sys.argv[1]), Path(sys.argv[2])
    numbers = numbers_of(results)
    numbers["@sine_fingerprint"] = np.array(sine_fingerprint())
    np.savez_compressed(target, **numbers)
    print(f"stored {len(numbers)} arrays of {len({k.split('::')[0] for k in numbers})} files in {target}")
