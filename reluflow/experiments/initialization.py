"""Seeded initializations of ensembles of runs.

Every run draws from its own stream (:func:`reluflow.experiments.seeding.run_seed_sequence`), so a run's initial
parameter depends only on the scenario name, the case name and its run id: never on the batch it is
computed in. Schemes:

- ``gaussian``: every parameter ``N(0, s^2)``, with ``s = scale`` or, with ``scale_max``, ``s``
  log-uniform on ``[scale, scale_max]`` per run (a cloud whose initial risks span decades);
- ``near_exact`` (affine target ``f(x) = alpha x + beta`` on ``[a, b]``, ``d = 1``): an exact
  representation of ``f`` (every neuron active on all of ``[a, b]``, ``sum_i V[:, i] w_i = alpha``,
  ``c = beta - V b``) plus a perturbation of relative size ``eps``, log-uniform on ``perturbation``.
  Initial risks then scale like ``eps^2`` and span the decades the JR theorems are about.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from reluflow.experiments.seeding import run_seed_sequence
from reluflow.model.network import pack
from reluflow.model.validation import check_mapping, choice, fail, real, real_array, subkey, whole_number

SCHEMES = ("gaussian", "near_exact")
_KEYS = {
    "gaussian": {"scheme", "n_runs", "scale", "scale_max"},
    "near_exact": {"scheme", "n_runs", "perturbation", "weight_scale"},
}


def validate_init(key: str, raw: Mapping, problem) -> dict:
    """Check an ``init`` mapping for ``problem``; return it with defaults filled in."""
    if not isinstance(raw, Mapping):
        fail(key, f"must be a mapping, got {type(raw).__name__}")
    scheme = choice(subkey(key, "scheme"), raw.get("scheme"), SCHEMES)
    check_mapping(key, raw, required={"scheme", "n_runs"}, optional=_KEYS[scheme])
    out = {"scheme": scheme, "n_runs": whole_number(subkey(key, "n_runs"), raw["n_runs"], minimum=1)}
    if scheme == "gaussian":
        out["scale"] = real(subkey(key, "scale"), raw.get("scale", 1.0), positive=True)
        out["scale_max"] = None
        if raw.get("scale_max") is not None:
            out["scale_max"] = real(subkey(key, "scale_max"), raw["scale_max"], positive=True)
            if out["scale_max"] < out["scale"]:
                fail(subkey(key, "scale_max"), f"must be >= scale = {out['scale']!r}")
    else:
        target = problem.config["target"]
        if problem.input_dim != 1 or target.get("kind") != "affine":
            fail(subkey(key, "scheme"), "near_exact needs d = 1 and an affine target (it starts from an exact representation)")
        pkey = subkey(key, "perturbation")
        pert = real_array(pkey, raw.get("perturbation", [1e-4, 1e-1]), ndim=1)
        if pert.shape != (2,):
            fail(pkey, f"must be [min, max], got {raw.get('perturbation')!r}")
        lo = real(subkey(pkey, 0), float(pert[0]), positive=True)
        hi = real(subkey(pkey, 1), float(pert[1]), positive=True)
        if hi < lo:
            fail(pkey, f"needs min <= max, got {[lo, hi]!r}")
        out["perturbation"] = [lo, hi]
        out["weight_scale"] = real(subkey(key, "weight_scale"), raw.get("weight_scale", 1.0), positive=True)
    return out


def _log_uniform(rng, lo, hi):
    return lo if hi == lo else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _gaussian(rng, problem, init):
    hi = init["scale_max"] if init["scale_max"] is not None else init["scale"]
    scale = _log_uniform(rng, init["scale"], hi)
    return scale * rng.standard_normal(problem.n_params), scale


def _affine_coefficients(problem):
    """``alpha (k,)`` and ``beta (k,)`` of an affine d = 1 target, read off its values at a and b."""
    a, b = problem.domain
    fa, fb = (np.atleast_1d(np.asarray(problem.target(np.array([x])), dtype=float)).reshape(-1) for x in (a, b))
    alpha = (fb - fa) / (b - a)
    return alpha, fa - alpha * a


def exact_affine_representation(rng, problem, weight_scale=1.0) -> np.ndarray:
    """A random parameter whose realization equals the affine target on ``[a, b]`` exactly.

    Each neuron gets a random sign and magnitude for ``w_i`` and its kink at distance ``U(0.1, 1) (b - a)``
    outside ``[a, b]`` on the side that keeps it active on the whole interval. Then ``N(x) = c + (V w) x +
    V b`` on ``[a, b]``; ``V`` is drawn and corrected along ``w`` so that ``V w = alpha``, and ``c = beta - V b``.
    """
    h, k = problem.width, problem.output_dim
    a, b = problem.domain
    alpha, beta = _affine_coefficients(problem)
    sign = rng.choice([-1.0, 1.0], size=h)
    w = sign * weight_scale * (0.5 + rng.random(h))
    margin = (0.1 + 0.9 * rng.random(h)) * (b - a)
    kink = np.where(sign > 0, a - margin, b + margin)
    bias = -w * kink
    v = weight_scale * rng.standard_normal((k, h))
    # products as elementwise sums, not BLAS dot/gemv: BLAS kernels differ between CPUs in their
    # summation order, and initial parameters must be the same bits on every machine
    v += np.outer(alpha - np.sum(v * w, axis=-1), w) / np.sum(w * w)
    c = beta - np.sum(v * bias, axis=-1)
    return pack(w.reshape(h, 1), bias, v, c)


def _near_exact(rng, problem, init):
    theta = exact_affine_representation(rng, problem, init["weight_scale"])
    eps = _log_uniform(rng, *init["perturbation"])
    direction = rng.standard_normal(problem.n_params)
    direction /= np.sqrt(np.sum(direction * direction))  # not np.linalg.norm (BLAS): see above
    return theta + eps * np.sqrt(np.sum(theta * theta)) * direction, eps


def draw_initializations(problem, init: Mapping, scenario: str, case: str, run_ids) -> tuple[np.ndarray, dict]:
    """Initial parameters ``(len(run_ids), n_params)`` and per-run metadata for the given runs.

    Metadata: ``init_scheme`` (str), ``init_scale`` (the scale of a gaussian run or the relative
    perturbation of a near-exact run).
    """
    draw = {"gaussian": _gaussian, "near_exact": _near_exact}[init["scheme"]]
    thetas, scales = [], []
    for run in np.asarray(run_ids, dtype=np.int64):
        rng = np.random.default_rng(run_seed_sequence(scenario, case, int(run)))
        theta, scale = draw(rng, problem, init)
        thetas.append(theta)
        scales.append(scale)
    thetas = np.array(thetas, dtype=float).reshape(len(scales), problem.n_params)
    meta = {
        "init_scheme": np.array([init["scheme"]] * len(scales), dtype=object),
        "init_scale": np.array(scales, dtype=float),
    }
    return thetas, meta
