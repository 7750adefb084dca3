"""Input laws ``mu`` on ``[a, b]^d`` described by data, and the d = 1 table of the exact kernel.

Kinds (``measure.kind``):

- densities (d = 1 only), piecewise polynomial in the global coordinate ``x``:

  - ``uniform``: ``p(x) = 1 / (b - a)``;
  - ``triangular`` (``mode`` in ``[a, b]``, default the midpoint): ``p`` rises linearly from 0 at ``a`` to
    ``2 / (b - a)`` at the mode and falls linearly to 0 at ``b``;
  - ``piecewise_polynomial``: ``knots`` (strictly increasing, ``knots[0] = a``, ``knots[-1] = b``) and
    ``coefficients``, one list per piece in increasing powers of ``x``:
    ``p(x) = sum_q coefficients[l][q] x**q`` on ``[knots[l], knots[l+1]]``.

  A density must be non-negative and integrate to one; both are checked exactly from the polynomial
  (see :func:`check_density`).

- densities on the square ``[a, b]^2`` (d = 2): ``uniform``, and ``polynomial_density`` with ``coefficients``
  ``P`` (a matrix): ``p(x, y) = sum_{q,s} P[q][s] x^q y^s``; it must integrate to one (checked exactly) and be
  non-negative on the square (certified by Bernstein subdivision, :func:`planar_density_is_nonnegative`).
  The risk is exact (:mod:`reluflow.kernels.exact2d`).

- ``gaussian`` (any d): ``N(mean, covariance)`` on all of ``R^d`` (defaults: mean 0, covariance the identity;
  the covariance must be symmetric and positive definite). It has no domain: a configuration that gives
  ``domain`` with it is refused (the domain would be silently ignored). The risk is exact for targets
  ``affine``, ``polynomial`` of degree <= 2, ``relu_network`` and their sums (:mod:`reluflow.kernels.gaussian`).

- discrete measures (any d, also d = 1), ``mu = sum_p weights[p] delta_{points[p]}``:

  - ``qmc``: ``n_points`` points of a scipy.stats.qmc ``method`` (``"sobol"`` default or ``"halton"``)
    sequence with ``seed`` (default 0) and ``scrambled`` (default true), mapped affinely from ``[0, 1)^d``
    onto ``[a, b]^d``; equal weights ``1 / n_points``;
  - ``gauss_legendre``: the tensor product of the ``n_per_dim``-point Gauss-Legendre rule on ``[a, b]``,
    weights the products of the 1-D weights (normalized to sum to one); it integrates polynomials of
    degree ``<= 2 n_per_dim - 1`` in each variable exactly against the uniform law;
  - ``data``: given ``points`` (``(P, d)``; for d = 1 also a flat list) and optional ``weights`` (a
    probability vector; default equal weights). Points must lie in ``[a, b]^d``: the problem (and
    targets such as ``piecewise_linear``) is defined only on the domain, so a point outside it is an
    error rather than being silently dropped or extrapolated.

:func:`parse_measure` validates (cheap, no points generated); :func:`discrete_measure` generates the
points of a validated discrete measure; :func:`piecewise_table` builds the d = 1 kernel input.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from numpy.polynomial import polynomial as npoly

from reluflow.model.piecewise import PiecewiseTable
from reluflow.model.validation import (
    boolean,
    check_kind,
    check_mapping,
    choice,
    fail,
    integer,
    real,
    real_array,
    subkey,
    to_json,
)

DENSITY_KINDS = ("uniform", "triangular", "piecewise_polynomial", "polynomial_density")
#: densities of inputs in the square [a, b]^2 (the exact d = 2 kernels)
PLANAR_DENSITY_KINDS = ("uniform", "polynomial_density")
DISCRETE_KINDS = ("qmc", "gauss_legendre", "data")
#: input laws on all of R^d (no domain)
UNBOUNDED_KINDS = ("gaussian",)
KINDS = DENSITY_KINDS + DISCRETE_KINDS + UNBOUNDED_KINDS
QMC_METHODS = ("sobol", "halton")

#: caps on the number of points of generated discrete measures (memory of one evaluation ~ M P H floats)
MAX_QMC_POINTS = 2**24
MAX_TENSOR_POINTS = 2**22

#: Tolerance of the "integrates to one" / "sums to one" checks, relative to the sum of the absolute
#: values of the summed terms (at least 1). The sums themselves are exact (math.fsum); the only error left
#: is in the terms: a few ulps each for the exact antiderivative of the pieces, and the rounding of the
#: numbers as the user wrote them. 1e-12 accepts data written with about 13 significant digits and still
#: refuses any density or weight vector whose mass is off by more than one part in 10^12.
MASS_RTOL = 1e-12

#: Tolerance of the non-negativity check, relative to sum_q |c_q| |x|^q at the same point (the size of the
#: rounding error of evaluating the polynomial there, times ~1e4): a density that touches zero (such as
#: 12 (x - 1/2)^2) passes although its computed minimum may be -1e-16, a genuinely negative one fails.
NEGATIVITY_RTOL = 1e-12


@dataclass(frozen=True)
class DensityMeasure:
    """A d = 1 law with piecewise-polynomial density ``coefficients (L, D + 1)`` on ``knots (L + 1,)``."""

    kind: str
    knots: np.ndarray
    coefficients: np.ndarray

    def density(self, x) -> np.ndarray:
        """``p(x)``, zero outside ``[a, b]``."""
        x = np.asarray(x, dtype=float)
        idx = np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, len(self.knots) - 2)
        value = _polyval_rows(self.coefficients[idx], x)
        return np.where((x >= self.knots[0]) & (x <= self.knots[-1]), value, 0.0)


def _polyval_rows(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_q coefficients[..., q] x**q`` by Horner's rule, elementwise."""
    out = np.zeros(x.shape)
    for q in range(coefficients.shape[-1] - 1, -1, -1):
        out = out * x + coefficients[..., q]
    return out


@dataclass(frozen=True)
class GaussianMeasure:
    """The normal law ``N(mean, covariance)`` on ``R^d`` (covariance symmetric positive definite)."""

    kind: str
    mean: np.ndarray
    covariance: np.ndarray


@dataclass(frozen=True)
class DiscreteMeasure:
    """``mu = sum_p weights[p] delta_{points[p]}`` with ``points (P, d)`` and ``weights (P,)`` summing to one."""

    kind: str
    points: np.ndarray
    weights: np.ndarray


# ----------------------------------------------------------------------------------------------------
# densities


def check_density(key: str, knots: np.ndarray, coefficients: np.ndarray) -> None:
    """Refuse a piecewise polynomial that is negative somewhere or does not integrate to one.

    Both checks use the polynomial itself, not samples: the minimum on a piece is attained at an end
    or at a root of the derivative inside (found by ``polyroots``; every real part inside the piece is
    tried), and the integral is ``sum_l sum_q c_lq (hi^(q+1) - lo^(q+1)) / (q + 1)`` summed exactly.
    Errors name ``<key>.coefficients`` (``[l]`` for the negative piece).
    """
    ckey = subkey(key, "coefficients")
    terms = []
    for l in range(coefficients.shape[0]):
        lo, hi, c = knots[l], knots[l + 1], coefficients[l]
        candidates = [lo, hi]
        derivative = np.trim_zeros(npoly.polyder(c), "b") if c.shape[0] > 2 else np.empty(0)
        if derivative.shape[0] > 1:  # the derivative is not constant: its roots are candidate minima
            candidates += [float(r.real) for r in npoly.polyroots(derivative) if lo < r.real < hi]
        candidates = np.array(candidates)
        values = _polyval_rows(np.broadcast_to(c, candidates.shape + c.shape), candidates)
        scale = np.sum(np.abs(c) * np.abs(candidates[:, None]) ** np.arange(c.shape[0]), axis=1)
        worst = int(np.argmin(values + NEGATIVITY_RTOL * scale))
        if values[worst] < -NEGATIVITY_RTOL * scale[worst]:
            fail(
                subkey(ckey, l),
                f"the density must be non-negative, but on piece {l} = [{lo!r}, {hi!r}] it is "
                f"{values[worst]!r} at x = {candidates[worst]!r}",
            )
        q = np.arange(c.shape[0])
        terms.extend((c * (hi ** (q + 1) - lo ** (q + 1)) / (q + 1)).tolist())
    mass = math.fsum(terms)
    tolerance = MASS_RTOL * max(1.0, math.fsum(abs(t) for t in terms))
    if not abs(mass - 1.0) <= tolerance:
        fail(ckey, f"the density must integrate to one over [a, b], but its integral is {mass!r} (tolerance {tolerance:.3g})")


def _uniform(a, b):
    return np.array([a, b]), np.array([[1.0 / (b - a)]])


def _triangular(a, b, mode):
    knots, pieces = [a], []
    if mode > a:  # rising piece 2 (x - a) / ((b - a) (m - a)) on [a, m]
        s = 2.0 / ((b - a) * (mode - a))
        pieces.append([-s * a, s])
        knots.append(mode)
    if mode < b:  # falling piece 2 (b - x) / ((b - a) (b - m)) on [m, b]
        s = 2.0 / ((b - a) * (b - mode))
        pieces.append([s * b, -s])
        knots.append(b)
    return np.array(knots), np.array(pieces)


# ----------------------------------------------------------------------------------------------------
# parsing


_KEYS = {
    "uniform": (set(), set()),
    "triangular": (set(), {"mode"}),
    "piecewise_polynomial": ({"knots", "coefficients"}, set()),
    "qmc": ({"n_points"}, {"method", "seed", "scrambled"}),
    "gauss_legendre": ({"n_per_dim"}, set()),
    "data": ({"points"}, {"weights"}),
    "gaussian": (set(), {"mean", "covariance"}),
    "polynomial_density": ({"coefficients"}, set()),
}

#: subdivision depth of the non-negativity certificate of a d = 2 polynomial density (4^depth sub-squares at most)
NONNEGATIVITY_DEPTH = 8

#: symmetry of a covariance matrix: |C - C^T| <= this times max |C| (the rounding of numbers as written)
SYMMETRY_RTOL = 1e-12


def parse_measure(raw: Any, key: str, input_dim: int, domain: tuple[float, float]):
    """Validate the measure mapping ``raw`` at key path ``key`` for inputs in ``[a, b]^input_dim``.

    Returns ``(normalized, law)``: the JSON-ready mapping with defaults filled in, and the
    :class:`DensityMeasure` of a density kind, the :class:`GaussianMeasure` of ``gaussian`` (``domain`` unused),
    or ``None`` for discrete kinds (whose points :func:`discrete_measure` generates from ``normalized``).
    Nothing expensive happens here.
    """
    kind = check_kind(key, raw, KINDS)
    planar = input_dim == 2 and kind in PLANAR_DENSITY_KINDS
    if (input_dim > 1 and kind in DENSITY_KINDS and not planar) or (input_dim == 1 and kind == "polynomial_density"):
        exact = "uniform, polynomial_density" if input_dim == 2 else "uniform, triangular, piecewise_polynomial"
        fail(
            subkey(key, "kind"),
            f"density {kind!r} is not available for input_dim = {input_dim}; densities: {exact} (input_dim 1 and "
            f"2), gaussian (any); or a discrete measure: one of {list(DISCRETE_KINDS)}",
        )
    required, optional = _KEYS[kind]
    check_mapping(key, raw, required={"kind"} | required, optional=optional)
    if kind == "gaussian":
        return _parse_gaussian(raw, key, input_dim)
    if planar:
        return _parse_planar_density(raw, key, kind, domain)
    a, b = domain
    if kind == "uniform":
        knots, coefficients = _uniform(a, b)
        normalized = {"kind": "uniform"}
    elif kind == "triangular":
        mode = real(subkey(key, "mode"), raw.get("mode", 0.5 * (a + b)))
        if not a <= mode <= b:
            fail(subkey(key, "mode"), f"must lie in the domain [{a!r}, {b!r}], got {mode!r}")
        knots, coefficients = _triangular(a, b, mode)
        normalized = {"kind": "triangular", "mode": mode}
    elif kind == "piecewise_polynomial":
        knots, coefficients, normalized = _parse_piecewise_polynomial(raw, key, a, b)
    else:
        return _PARSE_DISCRETE[kind](raw, key, input_dim, a, b), None
    check_density(key, knots, coefficients)
    return normalized, DensityMeasure(kind=kind, knots=knots, coefficients=coefficients)


@dataclass(frozen=True)
class PlanarDensity:
    """A density on the square ``[a, b]^2``: ``p(x, y) = sum_{q,s} coefficients[q, s] x^q y^s``."""

    kind: str
    coefficients: np.ndarray


def _bernstein(coefficients: np.ndarray, a: float, b: float) -> np.ndarray:
    """The tensor Bernstein coefficients on ``[a, b]^2`` of ``sum_{q,s} c[q, s] x^q y^s`` (same degrees)."""
    from math import comb

    def one_dimension(n):
        # power basis in x = a + (b - a) u, then u^j = sum_{i >= j} C(i, j) / C(n, j) B_{i,n}(u)
        shift = np.zeros((n + 1, n + 1))  # shift[p, j]: coefficient of u^j in x^p
        for p in range(n + 1):
            for j in range(p + 1):
                shift[p, j] = comb(p, j) * a ** (p - j) * (b - a) ** j
        basis = np.zeros((n + 1, n + 1))  # basis[j, i]: coefficient of B_i in u^j
        for j in range(n + 1):
            for i in range(j, n + 1):
                basis[j, i] = comb(i, j) / comb(n, j)
        return shift @ basis

    qx, qy = coefficients.shape
    return one_dimension(qx - 1).T @ coefficients @ one_dimension(qy - 1)


def _split(bern: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """de Casteljau at u = 1/2 along ``axis``: the Bernstein coefficients on the two halves."""
    rows = np.moveaxis(bern, axis, 0).copy()
    n = rows.shape[0] - 1
    left, right = [rows[0].copy()], [rows[n].copy()]
    for level in range(1, n + 1):
        rows = 0.5 * (rows[:-1] + rows[1:])
        left.append(rows[0].copy())
        right.append(rows[-1].copy())
    return np.moveaxis(np.array(left), 0, axis), np.moveaxis(np.array(right[::-1]), 0, axis)


def planar_density_is_nonnegative(coefficients: np.ndarray, a: float, b: float, tolerance: float) -> bool:
    """Whether ``p >= -tolerance`` on ``[a, b]^2``, decided by Bernstein subdivision: on a sub-square ``p`` lies in
    the hull of its Bernstein coefficients and equals them at the corners, so all coefficients ``>= -tolerance``
    prove the sub-square, a corner ``< -tolerance`` disproves it, anything else is split in four (to depth
    :data:`NONNEGATIVITY_DEPTH`, below which the sub-square's smallest coefficient decides)."""
    stack = [(_bernstein(coefficients, a, b), 0)]
    while stack:
        bern, depth = stack.pop()
        if bern.min() >= -tolerance:
            continue
        corners = bern[[0, 0, -1, -1], [0, -1, 0, -1]]
        if corners.min() < -tolerance or depth >= NONNEGATIVITY_DEPTH:
            return False
        for half in _split(bern, 0):
            stack.extend((quarter, depth + 1) for quarter in _split(half, 1))
    return True


def _parse_planar_density(raw, key, kind, domain):
    a, b = domain
    if kind == "uniform":
        return {"kind": "uniform"}, PlanarDensity(kind="uniform", coefficients=np.array([[1.0 / (b - a) ** 2]]))
    ckey = subkey(key, "coefficients")
    coefficients = real_array(ckey, raw["coefficients"], ndim=2)
    if coefficients.size == 0:
        fail(ckey, "must not be empty")
    # exact moments of the monomials over the square: int x^q = (b^{q+1} - a^{q+1}) / (q + 1)
    mx = [(b ** (q + 1) - a ** (q + 1)) / (q + 1) for q in range(coefficients.shape[0])]
    my = [(b ** (s + 1) - a ** (s + 1)) / (s + 1) for s in range(coefficients.shape[1])]
    terms = [coefficients[q, s] * mx[q] * my[s] for q in range(len(mx)) for s in range(len(my))]
    mass = math.fsum(terms)
    tolerance = MASS_RTOL * max(1.0, math.fsum(abs(t) for t in terms))
    if not abs(mass - 1.0) <= tolerance:
        fail(ckey, f"the density must integrate to one over [a, b]^2, but its integral is {mass!r} "
                   f"(tolerance {tolerance:.3g}): divide the coefficients by it")
    scale = max(1.0, float(np.sum(np.abs(coefficients)) * max(1.0, abs(a), abs(b)) ** sum(coefficients.shape)))
    if not planar_density_is_nonnegative(coefficients, a, b, NEGATIVITY_RTOL * scale):
        fail(ckey, f"the density is negative somewhere in [{a!r}, {b!r}]^2")
    return {"kind": "polynomial_density", "coefficients": to_json(coefficients)}, PlanarDensity(kind, coefficients)


def _parse_gaussian(raw, key, d):
    mkey, ckey = subkey(key, "mean"), subkey(key, "covariance")
    mean = real_array(mkey, raw.get("mean", [0.0] * d), ndim={0, 1}).reshape(-1)
    if mean.shape != (d,):
        fail(mkey, f"must be a list of input_dim = {d} numbers, got {raw.get('mean')!r}")
    covariance = real_array(ckey, raw.get("covariance", np.eye(d).tolist()), ndim={0, 2})
    covariance = covariance.reshape(1, 1) if covariance.ndim == 0 else covariance
    if covariance.shape != (d, d):
        fail(ckey, f"must be a {d} x {d} matrix, got shape {covariance.shape}")
    if np.max(np.abs(covariance - covariance.T)) > SYMMETRY_RTOL * np.max(np.abs(covariance)):
        fail(ckey, "must be symmetric")
    eigenvalues = np.linalg.eigvalsh(0.5 * (covariance + covariance.T))
    if not eigenvalues[0] > 0:
        fail(ckey, f"must be positive definite, but its smallest eigenvalue is {eigenvalues[0]!r}")
    normalized = {"kind": "gaussian", "mean": to_json(mean), "covariance": to_json(covariance)}
    return normalized, GaussianMeasure(kind="gaussian", mean=mean, covariance=covariance)


def _parse_piecewise_polynomial(raw, key, a, b):
    kkey, ckey = subkey(key, "knots"), subkey(key, "coefficients")
    knots = real_array(kkey, raw["knots"], ndim=1)
    if knots.shape[0] < 2:
        fail(kkey, f"needs at least 2 knots, got {knots.shape[0]}")
    if not np.all(np.diff(knots) > 0):
        fail(kkey, f"must be strictly increasing, got {knots.tolist()}")
    if knots[0] != a or knots[-1] != b:
        fail(kkey, f"must start at a = {a!r} and end at b = {b!r} (the density lives on the domain), got [{knots[0]!r}, {knots[-1]!r}]")
    pieces = raw["coefficients"]
    if not isinstance(pieces, (list, tuple, np.ndarray)) or len(pieces) != knots.shape[0] - 1:
        got = len(pieces) if isinstance(pieces, (list, tuple, np.ndarray)) else repr(pieces)
        fail(ckey, f"must be a list of {knots.shape[0] - 1} coefficient lists (one per piece), got {got}")
    rows = [real_array(subkey(ckey, l), c, ndim=1) for l, c in enumerate(pieces)]
    for l, row in enumerate(rows):
        if row.shape[0] == 0:
            fail(subkey(ckey, l), "must not be empty")
    coefficients = np.zeros((len(rows), max(r.shape[0] for r in rows)))
    for l, row in enumerate(rows):
        coefficients[l, : row.shape[0]] = row
    normalized = {"kind": "piecewise_polynomial", "knots": to_json(knots), "coefficients": [to_json(r) for r in rows]}
    return knots, coefficients, normalized


def _parse_qmc(raw, key, d, a, b):
    return {
        "kind": "qmc",
        "method": choice(subkey(key, "method"), raw.get("method", "sobol"), QMC_METHODS),
        "n_points": integer(subkey(key, "n_points"), raw["n_points"], minimum=1, maximum=MAX_QMC_POINTS),
        "seed": integer(subkey(key, "seed"), raw.get("seed", 0), minimum=0),
        "scrambled": boolean(subkey(key, "scrambled"), raw.get("scrambled", True)),
    }


def _parse_gauss_legendre(raw, key, d, a, b):
    nkey = subkey(key, "n_per_dim")
    n = integer(nkey, raw["n_per_dim"], minimum=1)
    if n**d > MAX_TENSOR_POINTS:
        fail(nkey, f"n_per_dim**d = {n}**{d} tensor points exceed the limit {MAX_TENSOR_POINTS}")
    return {"kind": "gauss_legendre", "n_per_dim": n}


def _parse_data(raw, key, d, a, b):
    pkey, wkey = subkey(key, "points"), subkey(key, "weights")
    points = real_array(pkey, raw["points"], ndim={1, 2} if d == 1 else 2)
    if points.ndim == 1:
        points = points[:, None]
    if points.shape[0] == 0:
        fail(pkey, "must contain at least one point")
    if points.shape[1] != d:
        fail(pkey, f"each point must have input_dim = {d} coordinates, got {points.shape[1]}")
    outside = np.nonzero(np.any((points < a) | (points > b), axis=1))[0]
    if outside.size:
        i = int(outside[0])
        fail(subkey(pkey, i), f"lies outside the domain [{a!r}, {b!r}]^{d}: {points[i].tolist()}")
    weights = raw.get("weights")
    if weights is not None:
        w = real_array(wkey, weights, ndim=1)
        if w.shape[0] != points.shape[0]:
            fail(wkey, f"needs one weight per point: {points.shape[0]}, got {w.shape[0]}")
        if np.any(w < 0):
            i = int(np.argmax(w < 0))
            fail(subkey(wkey, i), f"weights must be non-negative, got {w[i]!r}")
        total = math.fsum(w.tolist())
        if not abs(total - 1.0) <= MASS_RTOL:
            fail(wkey, f"must sum to one (a probability vector), got sum {total!r}")
        weights = to_json(w)
    return {"kind": "data", "points": to_json(points), "weights": weights}


_PARSE_DISCRETE = {"qmc": _parse_qmc, "gauss_legendre": _parse_gauss_legendre, "data": _parse_data}


# ----------------------------------------------------------------------------------------------------
# building


def discrete_measure(normalized: Mapping, input_dim: int, domain: tuple[float, float]) -> DiscreteMeasure:
    """The points and weights of a validated discrete measure (``normalized`` from :func:`parse_measure`)."""
    a, b = domain
    d = input_dim
    kind = normalized["kind"]
    if kind == "qmc":
        from scipy.stats import qmc

        engine_class = qmc.Sobol if normalized["method"] == "sobol" else qmc.Halton
        rng = np.random.default_rng(normalized["seed"])
        try:
            engine = engine_class(d, scramble=normalized["scrambled"], rng=rng)
        except TypeError:  # scipy < 1.15 calls it seed
            engine = engine_class(d, scramble=normalized["scrambled"], seed=rng)
        with warnings.catch_warnings():
            # Sobol's balance properties need n = 2^m; other n are allowed by the configuration
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")
            unit = engine.random(normalized["n_points"])
        points = a + (b - a) * unit
        weights = np.full(points.shape[0], 1.0 / points.shape[0])
    elif kind == "gauss_legendre":
        n = normalized["n_per_dim"]
        nodes, w = np.polynomial.legendre.leggauss(n)
        nodes = 0.5 * (a + b) + 0.5 * (b - a) * nodes
        w = 0.5 * w  # the 1-D weights of the uniform law on [a, b]
        index = np.array(list(itertools.product(range(n), repeat=d)), dtype=np.int64).reshape(-1, d)
        points = nodes[index]
        weights = w[index[:, 0]]
        for j in range(1, d):
            weights = weights * w[index[:, j]]
    elif kind == "data":
        points = np.array(normalized["points"], dtype=float).reshape(-1, d)
        if normalized["weights"] is None:
            weights = np.full(points.shape[0], 1.0 / points.shape[0])
        else:
            weights = np.array(normalized["weights"], dtype=float)
    else:
        raise ValueError(f"measure.kind: {kind!r} is not a discrete measure")
    return DiscreteMeasure(kind=kind, points=np.ascontiguousarray(points), weights=np.ascontiguousarray(weights))


def piecewise_table(target, density: DensityMeasure, domain: tuple[float, float]) -> PiecewiseTable:
    """The :class:`~reluflow.model.piecewise.PiecewiseTable` of a d = 1 target and density on ``[a, b]``.

    Knots: ``a``, ``b``, the target's breakpoints and the density's knots; every interval is then cut
    into equal parts so that ``|omega| * width <= 1`` for the largest angular frequency ``omega`` of the
    target's sine terms. ``quad_nodes``: with ``r = (affine) - (target polynomial)`` of degree
    ``Dr = max(1, Dt)`` and density degree ``Dp``, the integrands ``r^2 p`` and ``x r p`` have degree at
    most ``D = 2 Dr + Dp``, integrated exactly by ``n`` Gauss-Legendre points iff ``2 n - 1 >= D``, so
    ``n = D // 2 + 1``; with sine terms at least 16 (accurate to rounding when ``|omega| * width <= 1``).
    """
    a, b = domain
    knots = np.unique(np.concatenate([[a, b], target.breakpoints(a, b), density.knots]))
    knots = knots[(knots >= a) & (knots <= b)]
    sines = target.sines()
    active = sines[..., 0] != 0
    omega_max = float(np.max(np.abs(sines[..., 1][active]))) if np.any(active) else 0.0
    if omega_max > 0:
        refined = [knots[:1]]
        for lo, hi in zip(knots[:-1], knots[1:]):
            parts = max(1, math.ceil((hi - lo) * omega_max))
            refined.append(np.linspace(lo, hi, parts + 1)[1:])
        knots = np.concatenate(refined)
    n_pieces = knots.shape[0] - 1
    degree = target.degree
    target_poly = np.zeros((n_pieces, target.output_dim, degree + 1))
    density_index = np.clip(
        np.searchsorted(density.knots, 0.5 * (knots[:-1] + knots[1:]), side="right") - 1, 0, len(density.knots) - 2
    )
    for l in range(n_pieces):
        piece = target.poly_on(knots[l], knots[l + 1])
        target_poly[l, :, : piece.shape[1]] = piece
    density_poly = density.coefficients[density_index].copy()
    total_degree = 2 * max(1, degree) + (density_poly.shape[1] - 1)
    quad_nodes = total_degree // 2 + 1
    if np.any(active):
        quad_nodes = max(quad_nodes, 16)
    return PiecewiseTable(
        knots=knots,
        target_poly=target_poly,
        sines=sines.astype(float),
        density_poly=density_poly,
        quad_nodes=int(quad_nodes),
    )
