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
- ``balanced``: the ``gaussian`` draw (same ``scale``, ``scale_max``, same stream and order of draws) with each
  outer weight column rescaled, ``V[:, i] <- V[:, i] |(w_i, b_i)| / |V[:, i]|``: a gaussian direction of length
  ``|(w_i, b_i)|``. The quantities ``|V[:, i]|^2 - |w_i|^2 - b_i^2``, conserved along the gradient flow
  (MATH.md section 2), are then 0 (to rounding) for every neuron.
- ``teacher`` (the problem's target is a ``relu_network`` with ``H_t <= width`` neurons): the teacher's neurons
  (``w_i``, ``b_i``, ``V[:, i]`` for ``i < H_t``, and ``c`` = the teacher's outer bias) plus ``width - H_t`` extra
  neurons whose ``w``, ``b``, ``V`` are ``N(0, scale^2)`` (small ``scale``, default ``0.01``, keeps the
  realization near the teacher's), then a perturbation of relative size ``eps`` as for ``near_exact``:
  ``theta + eps |theta| u`` with ``u`` uniform on the unit sphere. ``perturbation`` is a number ``eps >= 0``
  (``0``: the teacher itself, risk 0 when ``width = H_t``) or ``[min, max]``, ``eps`` log-uniform per run
  (default ``[1e-4, 1e-1]``, as for ``near_exact``).

Every draw uses elementwise numpy arithmetic, never BLAS (``np.dot``, ``@``, ``np.linalg.norm``): BLAS kernels
sum in an order that depends on the CPU, and initial parameters must be the same bits on every machine.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from reluflow.experiments.seeding import run_seed_sequence
from reluflow.model.network import pack
from reluflow.model.validation import check_mapping, choice, fail, real, real_array, subkey, whole_number

SCHEMES = ("gaussian", "near_exact", "balanced", "teacher")
_KEYS = {
    "gaussian": {"scheme", "n_runs", "scale", "scale_max"},
    "near_exact": {"scheme", "n_runs", "perturbation", "weight_scale"},
    "balanced": {"scheme", "n_runs", "scale", "scale_max"},
    "teacher": {"scheme", "n_runs", "scale", "perturbation"},
}

#: default ``scale`` of the teacher scheme's extra neurons: small, so that the start is near the teacher
TEACHER_EXTRA_SCALE = 1e-2


def validate_init(key: str, raw: Mapping, problem) -> dict:
    """Check an ``init`` mapping for ``problem``; return it with defaults filled in."""
    if not isinstance(raw, Mapping):
        fail(key, f"must be a mapping, got {type(raw).__name__}")
    scheme = choice(subkey(key, "scheme"), raw.get("scheme"), SCHEMES)
    check_mapping(key, raw, required={"scheme", "n_runs"}, optional=_KEYS[scheme])
    out = {"scheme": scheme, "n_runs": whole_number(subkey(key, "n_runs"), raw["n_runs"], minimum=1)}
    if scheme in ("gaussian", "balanced"):
        out["scale"] = real(subkey(key, "scale"), raw.get("scale", 1.0), positive=True)
        out["scale_max"] = None
        if raw.get("scale_max") is not None:
            out["scale_max"] = real(subkey(key, "scale_max"), raw["scale_max"], positive=True)
            if out["scale_max"] < out["scale"]:
                fail(subkey(key, "scale_max"), f"must be >= scale = {out['scale']!r}")
    elif scheme == "teacher":
        target = problem.config["target"]
        if target.get("kind") != "relu_network":
            fail(subkey(key, "scheme"), f"teacher needs a relu_network target (it starts from the teacher's neurons), "
                                        f"got target.kind = {target.get('kind')!r}")
        h_teacher = len(target["inner_biases"])
        if problem.width < h_teacher:
            fail(subkey(key, "scheme"), f"teacher needs network.width >= the teacher's H_t = {h_teacher} neurons, "
                                        f"got network.width = {problem.width}")
        out["scale"] = real(subkey(key, "scale"), raw.get("scale", TEACHER_EXTRA_SCALE), positive=True)
        out["perturbation"] = _teacher_perturbation(subkey(key, "perturbation"), raw.get("perturbation", [1e-4, 1e-1]))
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


def _teacher_perturbation(key: str, raw):
    """A number ``eps >= 0`` (every run the same) or ``[min, max]`` with ``0 < min <= max`` (log-uniform per run)."""
    pert = real_array(key, raw, ndim={0, 1})
    if pert.ndim == 0:
        return real(key, float(pert), nonnegative=True)
    if pert.shape != (2,):
        fail(key, f"must be a number >= 0 or [min, max], got {raw!r}")
    lo = real(subkey(key, 0), float(pert[0]), positive=True)
    hi = real(subkey(key, 1), float(pert[1]), positive=True)
    if hi < lo:
        fail(key, f"needs min <= max, got {[lo, hi]!r}")
    return [lo, hi]


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


def _balanced(rng, problem, init):
    theta, scale = _gaussian(rng, problem, init)
    neurons, outer = problem.layout.neuron_blocks(), problem.layout.outer_weights()  # (H, d + 1), (H, k)
    u, v = theta[neurons], theta[outer]
    # |V[:, i]| = |u_i|: elementwise sums of squares (no BLAS, see the module docstring)
    theta[outer] = v * (np.sqrt(np.sum(u * u, axis=1)) / np.sqrt(np.sum(v * v, axis=1)))[:, None]
    return theta, scale


def _teacher(rng, problem, init):
    d, h, k = problem.input_dim, problem.width, problem.output_dim
    target = problem.config["target"]  # normalized: inner_weights (H_t, d), outer_weights (k, H_t)
    w_t, b_t = np.array(target["inner_weights"], dtype=float), np.array(target["inner_biases"], dtype=float)
    v_t, c_t = np.array(target["outer_weights"], dtype=float), np.array(target["outer_bias"], dtype=float)
    extra = h - b_t.shape[0]
    z = init["scale"] * rng.standard_normal(extra * (d + 1 + k))  # the extra neurons' w (extra x d), b, V (k x extra)
    W = np.concatenate([w_t, z[: extra * d].reshape(extra, d)])
    b = np.concatenate([b_t, z[extra * d : extra * (d + 1)]])
    V = np.concatenate([v_t, z[extra * (d + 1) :].reshape(k, extra)], axis=1)
    theta = pack(W, b, V, c_t)
    pert = init["perturbation"]
    eps = _log_uniform(rng, *pert) if isinstance(pert, list) else pert
    direction = rng.standard_normal(problem.n_params)
    direction /= np.sqrt(np.sum(direction * direction))
    return theta + eps * np.sqrt(np.sum(theta * theta)) * direction, eps


def draw_initializations(problem, init: Mapping, scenario: str, case: str, run_ids) -> tuple[np.ndarray, dict]:
    """Initial parameters ``(len(run_ids), n_params)`` and per-run metadata for the given runs.

    Metadata: ``init_scheme`` (str), ``init_scale``: the scale ``s`` of a gaussian or balanced run (drawn
    log-uniform when ``scale_max`` is given), the relative perturbation ``eps`` of a near-exact or teacher run
    (``|theta_0 - theta_exact| = eps |theta_exact|``; the extra neurons of a teacher run are part of
    ``theta_exact``, their ``scale`` is the scheme's setting).
    """
    draw = {"gaussian": _gaussian, "near_exact": _near_exact, "balanced": _balanced, "teacher": _teacher}[init["scheme"]]
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
