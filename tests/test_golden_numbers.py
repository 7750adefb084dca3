"""The test configuration's numbers are those of a stored reference run: bit for bit where the same solver runs,
within a bound derived from the tolerances where the stiff solver or ``solver: auto`` integrates.

``tests/data/test_config_numbers.npz`` holds every variable and coordinate of every netCDF file that
``snakemake --cores 2 --configfile config/test.yaml`` wrote at commit 202a76a (before the package was cut into
layers and the solvers got one driver loop), plus each file's variable layout. It is kept as it is. Files,
variables and cases added since (the layout is extended, never renamed) are not part of the comparison; every
stored array must still be there, with the same dimensions.

Bitwise (``numpy.array_equal``, NaN equal to NaN): every file of gradient descent, every initialization file,
and in the other files every coordinate, the run metadata, ``status`` and ``t_final``: every step of the
pipeline is deterministic and bitwise independent of batches and cores (README).

Within a derived bound: the trajectory numbers of flows integrated by an adaptive solver (an explicit pair,
``rodas4`` or ``auto``). Since the reference was stored, the stiff step's arithmetic changed (compiled stage
kernels, the structured and Cholesky factorizations, the compiled controller), ``auto`` switches from
Dormand-Prince to Rodas4 by stiffness instead of by ``t_max`` (at ``t_max = 1e3`` it used to be Dormand-Prince
throughout), and the powers in the step-size formulas (the PI controller's, the starting step's) are the C
library's ``pow`` on every CPU (:mod:`reluflow.dynamics.solvers.power`; the reference's were NumPy's AVX-512
``power``, which differs from it in the last bit for about 5 % of arguments), so an explicit pair's step sizes
differ in their last bits too. Both runs are solutions at the flow's ``rtol``, ``atol``; per run ``r`` and save
time ``t_k``, with ``N`` the accepted steps of the two solvers up to ``t_k`` (``n_steps`` of both files) and ``n`` the number of parameters:

- every accepted step's local error ``e`` (state and energy integral) has ``RMS(e / (atol + rtol |y|)) <= 1``, so
  ``|e|_2 <= sqrt(n + 1) tol`` with ``tol = atol + rtol max_t |theta_r|_inf``. Where the flow does not expand
  distances (a gradient flow contracts where ``Hess L`` is positive semidefinite: near the minima the runs settle
  at), the two numerical solutions differ by at most the sum of both solvers' local errors:
  ``|theta_new - theta_ref|_2 <= B = sqrt(n + 1) N tol``; also for ``param_norm`` and ``constraint_drift``;
- ``risk``: ``|dL| <= |G| B + Lambda B^2``, ``grad_norm``: ``|d|G|| <= 2 Lambda B``, with ``Lambda`` the largest
  ``|Hess L|_2`` along the reference run (computed here; the factor 2 allows for its change along the segment);
- ``energy_residual``: ``R = L(theta_0) - L(theta) - E`` is constant along the exact augmented flow, so each step
  changes it by at most ``sqrt(1 + |G|^2) |e|``: each file's residual is at most
  ``N_own sqrt(1 + G_max^2) sqrt(n + 1) tol_E`` (``tol_E`` with ``max(|theta|, E)``), and the two differ by at
  most the sum of those bounds;
- ``critical_risk``, ``critical_distance``: the certified critical point near the final state; the same critical
  set within ``B``: ``|d critical_risk| <= |dL|`` at ``t_max`` plus ``64 eps`` of the risk,
  ``|d critical_distance| <= 2 B`` (``theta_T`` and its projection each move by at most ``B``) where the run has
  reached its certificate to within ``100 B``; from a state still far from it (a short flow, ``t_max = 2``) Newton's
  path decides where on a degenerate critical set it lands, and the distance (1.3 there) is not compared;
  ``critical_grad_norm`` is the certificate's rounding level: ``|d| <= 64 eps max(1, max_t |G|)``;
- ``decay_exponent``, ``decay_rate``, ``decay_kind``: fitted to ``log(L - L_inf)`` over the last two decades. Where
  the fitted excess is at least ``100 dL`` at every fitted point (relative error ``eps_r <= 0.01``), a
  least-squares slope over an abscissa range ``D`` moves by at most ``3 eps_r / D`` (uniformly spaced points:
  ``sum |x - xbar| / sum (x - xbar)^2 = 3 / D``); the kind is then the same. Elsewhere the excess is within a
  hundred times the solver's error (it has reached zero, or sits at rounding level) and the fit describes that
  error, not the flow: not compared.

``n_steps`` and ``n_rejected`` of these files count another solver's steps and are not compared. Variables
added since (``n_rhs``, ``n_jac``, or a classification of end points) must not change the reference's: every
reference variable is present with its dims and dtype, more may be.

One platform dependency is known: the last bit of ``sin`` may differ between CPU generations. Files of
scenarios whose targets contain a sine are compared only where this platform's sine has the reference
machine's fingerprint (:func:`golden_numbers.sine_fingerprint`); elsewhere they are listed as skipped.

To store a new reference after a change that is meant to change numbers (say why in the commit):
``python tests/golden_numbers.py <project>/results tests/data/test_config_numbers.npz``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from golden_numbers import numbers_of, sine_fingerprint
from workflow_runner import load_config

from reluflow import Problem
from reluflow.experiments.config import resolve_scenarios

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).parent / "data" / "test_config_numbers.npz"
EPS = np.finfo(float).eps

#: the trajectory numbers of an adaptive flow, compared with the bounds of the module docstring
TOLERANT = ("theta", "param_norm", "constraint_drift", "risk", "grad_norm", "energy_residual", "critical_risk",
            "critical_distance", "critical_grad_norm", "decay_exponent", "decay_rate", "decay_kind")
#: step counts of another solver: not compared in those files
NOT_COMPARED = ("n_steps", "n_rejected")


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


def _adaptive_flow(path: Path) -> dict | None:
    """The file's configuration if its flow runs an adaptive solver (every solver but gradient descent's fixed
    steps; else None)."""
    with xr.open_dataset(path) as ds:
        config = json.loads(ds.attrs["config_json"])
    return config if config["flow"]["flow"] != "gd" else None


def _violations(ref: dict, cur: dict, config: dict) -> list[str]:
    """The arrays of one adaptive flow's file outside the bounds of the module docstring."""
    rtol, atol = config["flow"]["rtol"], config["flow"]["atol"]
    theta_ref, theta_cur = ref["theta"], cur["theta"]
    m, _, n = theta_ref.shape
    steps = ref["n_steps"] + cur["n_steps"]  # (run, time)
    tol = atol + rtol * np.nanmax(np.abs(theta_ref), axis=(1, 2))  # (run,)
    bound = np.sqrt(n + 1) * steps * tol[:, None]  # B (run, time)
    problem = Problem.from_config(config["problem"])
    flat = theta_ref.reshape(-1, n)
    finite = np.all(np.isfinite(flat), axis=1)
    hess = np.full(flat.shape[0], np.nan)
    hess[finite] = np.linalg.norm(problem.gradient_jacobian(flat[finite]), ord=2, axis=(1, 2))
    lam = np.nanmax(hess.reshape(m, -1), axis=1)[:, None]  # Lambda (run, 1)
    grad = ref["grad_norm"]
    risk_bound = grad * bound + lam * bound**2
    out = []

    def check(name, difference, allowed):
        bad = ~(np.abs(difference) <= allowed) & ~(np.isnan(difference) & np.isnan(allowed + difference))
        if np.any(bad):
            out.append(f"{name}: |diff| up to {np.nanmax(np.abs(difference)):.3g}, allowed there "
                       f"{np.asarray(allowed * np.ones_like(difference))[bad].min():.3g}")

    check("theta", np.linalg.norm(theta_cur - theta_ref, axis=-1), bound)
    check("param_norm", cur["param_norm"] - ref["param_norm"], bound)
    if "constraint_drift" in ref:
        check("constraint_drift", cur["constraint_drift"] - ref["constraint_drift"], bound + 4 * EPS)
    check("risk", cur["risk"] - ref["risk"], risk_bound + 64 * EPS * np.abs(ref["risk"]))
    check("grad_norm", cur["grad_norm"] - ref["grad_norm"], 2 * lam * bound + 64 * EPS * np.maximum(1.0, grad))
    energy = ref["initial_risk"][:, None] - ref["risk"] - ref["energy_residual"]
    tol_e = atol + rtol * np.maximum(np.nanmax(np.abs(theta_ref), axis=(1, 2))[:, None], np.nanmax(energy, axis=1)[:, None])
    g_max = np.nanmax(grad, axis=1)[:, None]
    own = {name: files["n_steps"] * np.sqrt(1 + g_max**2) * np.sqrt(n + 1) * tol_e for name, files in
           (("ref", ref), ("cur", cur))}
    check("energy_residual (own bound of the new file)", cur["energy_residual"], own["cur"])
    check("energy_residual", cur["energy_residual"] - ref["energy_residual"], own["ref"] + own["cur"])
    last = np.argmax(np.cumsum(np.isfinite(ref["risk"]), axis=1), axis=1)
    rows = np.arange(m)
    check("critical_risk", cur["critical_risk"] - ref["critical_risk"],
          risk_bound[rows, last] + 64 * EPS * np.abs(ref["critical_risk"]))
    # the distance only where the run has reached its critical point to within 100 B (else Newton's path from a
    # transient state decides where on a degenerate critical set it lands, not the flow: not compared)
    settled = ref["critical_distance"] <= 100 * bound[rows, last]
    check("critical_distance", np.where(settled, cur["critical_distance"] - ref["critical_distance"], 0.0),
          np.where(settled, 2 * bound[rows, last], np.inf))
    check("critical_grad_norm", cur["critical_grad_norm"] - ref["critical_grad_norm"],
          64 * EPS * np.maximum(1.0, g_max[:, 0]))
    # the fits, where the fitted excess is at least 100 times the risk's bound at every fitted point
    t = ref["time"]
    window = t >= t[-1] / 100.0
    excess = ref["risk"] - ref["critical_risk"][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(window, risk_bound / excess, 0.0)
    informative = np.all(np.where(window, excess > 0, True), axis=1)
    eps_r = np.where(informative, np.nanmax(relative, axis=1), np.inf)
    signal = eps_r <= 0.01
    span_log, span_t = np.log(t[window][-1] / t[window][0]), t[window][-1] - t[window][0]
    check("decay_exponent", np.where(signal, cur["decay_exponent"] - ref["decay_exponent"], 0.0),
          np.where(signal, 3 * eps_r / span_log, np.inf))
    check("decay_rate", np.where(signal, cur["decay_rate"] - ref["decay_rate"], 0.0),
          np.where(signal, 3 * eps_r / span_t, np.inf))
    if np.any(signal & (cur["decay_kind"] != ref["decay_kind"])):
        out.append(f"decay_kind: {ref['decay_kind'][signal].tolist()} -> {cur['decay_kind'][signal].tolist()}")
    return out


def test_test_configuration_numbers_are_those_of_the_reference(completed_workflow):
    workdir, _ = completed_workflow
    results = workdir / "results"
    reference = dict(np.load(REFERENCE))
    same_sine = str(reference.pop("@sine_fingerprint")) == sine_fingerprint()
    current = numbers_of(results)
    assert set(reference) <= set(current), f"missing: {sorted(set(reference) - set(current))[:5]}"
    sine = _sine_scenarios()
    files = sorted({key.split("::")[0] for key in reference})
    compared, tolerant, skipped, differing = 0, [], [], []
    for file in files:
        keys = [key for key in reference if key.split("::")[0] == file]
        if not same_sine and file.split("/")[0] in sine:
            skipped += keys
            continue
        layout = set(reference[f"{file}::@layout"].tolist())
        assert layout <= set(current[f"{file}::@layout"].tolist()), f"{file}: a variable was renamed or retyped"
        config = _adaptive_flow(results / file) if "/trajectories/" in file else None
        for key in keys:
            name = key.split("::")[1]
            if name == "@layout" or (config is not None and name in TOLERANT + NOT_COMPARED):
                continue
            compared += 1
            if not _same(reference[key], current[key]):
                differing.append(key)
        if config is not None:
            tolerant.append(file)
            ref = {key.split("::")[1]: value for key, value in reference.items() if key.startswith(f"{file}::")}
            cur = {key.split("::")[1]: value for key, value in current.items() if key.startswith(f"{file}::")}
            differing += [f"{file}::{problem}" for problem in _violations(ref, cur, config)]
    assert not differing, f"{len(differing)} arrays differ from the reference, e.g. {differing[:5]}"
    assert compared > 100  # the comparison covers the files, not an empty set
    assert tolerant  # the stiff and auto flows were compared within their bounds
    if skipped:
        warnings.warn(f"this platform's sine differs from the reference machine's: {len(skipped)} arrays of "
                      f"the scenarios {sorted(sine)} were not compared", stacklevel=1)
