"""The adaptive solvers' numbers do not depend on the CPU's vector extensions.

NumPy dispatches some of its array functions to SIMD implementations chosen at run time by the CPU (on AVX-512
CPUs, its ``power`` differs from the C library's ``pow`` in about 5 % of last bits). The step-size formulas of the
adaptive solvers take their powers from :mod:`reluflow.dynamics.solvers.power` (the C library's ``pow``
on every CPU), so a solve gives the same bits whichever of NumPy's implementations the CPU selects. Checked here
by running the same solves in a process where NumPy's AVX-512 targets are switched off
(``NPY_DISABLE_CPU_FEATURES``, as on a CPU without AVX-512). On a CPU without AVX-512 both processes use the same
NumPy loops and the comparison cannot fail; the project's machines have AVX-512, where it failed before the
powers were the C library's (different step counts for ``dopri5`` and ``rodas4``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from reluflow.dynamics.solvers.power import power

SOLVES = """
import sys
import numpy as np
from reluflow import Problem
from reluflow.dynamics.flows import StandardFlow
from reluflow.dynamics.solvers.explicit import solve_explicit
from reluflow.dynamics.solvers.rosenbrock import solve_rosenbrock
from reluflow.dynamics.compiled_lsoda import solve_lsoda

problem = Problem.from_config({"network": {"width": 4}, "target": {"kind": "sine", "frequency": 1.0}})
flow = StandardFlow(problem)
theta0 = np.random.default_rng(0).standard_normal((64, problem.n_params))
out = {}
for name, result in (  # 64 starting steps, each a power: some of them differ between NumPy's two loops
    ("dopri5", solve_explicit(flow.rhs, theta0[:4], [0.0, 1.0, 10.0], tableau="dopri5", rtol=1e-8, atol=1e-10)),
    ("rodas4", solve_rosenbrock(flow.rhs, flow.jac, theta0, [0.0, 1.0, 100.0], rtol=1e-8, atol=1e-10)),
    ("lsoda", solve_lsoda(flow.rhs, theta0, [0.0, 1.0, 100.0], field=flow.compiled(), rtol=1e-8, atol=1e-10)),
):
    out[name + "_y"], out[name + "_steps"] = result.y, result.n_steps
np.savez(sys.argv[1], **out)
"""


def _solves(path: Path, env: dict) -> dict:
    subprocess.run([sys.executable, "-c", SOLVES, str(path)], env=env, check=True, timeout=600)
    with np.load(path) as data:
        return dict(data)


def test_power_is_the_c_librarys_pow():
    """Every entry is :func:`math.pow`'s (the C library's), over arguments spread across the floats' range and at
    the IEEE special cases; NumPy's array ``power`` on an AVX-512 CPU is not (about 5 % of last bits differ)."""
    rng = np.random.default_rng(3)
    x = np.exp(rng.uniform(-700.0, 700.0, 20000))
    for y in (-0.14, 0.08, -0.2, -0.25, 1.0 / 3.0, -1.0 / 5.0):
        assert np.array_equal(power(x, y), np.array([math.pow(v, y) for v in x]))
    special = np.array([0.0, np.inf, np.nan, 1.0, 1e-308, 5e-324])
    with np.errstate(divide="ignore"):
        expected = np.array([np.float64(v) ** -0.2 for v in special])
    assert np.array_equal(power(special, -0.2), expected, equal_nan=True)
    assert power(np.ones((2, 3)), 0.5).shape == (2, 3)


def test_solves_give_the_same_bits_without_numpys_avx512_loops(tmp_path):
    env = dict(os.environ)
    env.pop("NPY_DISABLE_CPU_FEATURES", None)
    default = _solves(tmp_path / "default.npz", env)
    env["NPY_DISABLE_CPU_FEATURES"] = "X86_V4 AVX512_ICL AVX512_SPR"
    without = _solves(tmp_path / "without.npz", env)
    assert set(default) == set(without)
    for key in default:
        assert np.array_equal(default[key], without[key], equal_nan=True), key
