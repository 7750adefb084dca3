"""The numbers of a workflow run's netCDF files as one flat mapping, to compare runs bit for bit.

``python tests/golden_numbers.py RESULTS_DIR OUT.npz`` stores them; ``numbers_of(RESULTS_DIR)`` reads them
back from a new run. Keys are ``<file relative to results/>::<variable>``; every data variable and coordinate
is included (numbers and strings), attributes are not (they hold dates, revisions and paths).
A key ``<file>::@layout`` lists each variable with its dimensions and dtype, so a change of the file
layout is caught too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr


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
    np.savez_compressed(target, **numbers)
    print(f"stored {len(numbers)} arrays of {len({k.split('::')[0] for k in numbers})} files in {target}")
