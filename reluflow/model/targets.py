"""Target functions ``f: [a, b]^d -> R^k`` described by data (never code; nothing is evaluated as Python).

Kinds (``target.kind``), with ``x`` the input (a number for ``d = 1``); "d = 1" kinds are refused for d > 1:

- ``affine`` (any d): ``f(x) = S x + c``. ``slope`` S: a number (d = 1), a list (d = 1: one slope per
  output, k = its length; d > 1: the gradient, of length d, k = 1) or a k x d matrix. ``intercept`` c: a
  number (broadcast to every output) or a list of length k; default 0.
- ``piecewise_linear`` (d = 1): linear interpolation of ``values`` ((K,) or (K, k)) at strictly increasing
  ``knots`` (K >= 2), which must span ``[a, b]``; constant beyond the end knots.
- ``polynomial``: in d = 1 ``f(x) = sum_p coefficients[p] x**p`` (increasing powers; for k > 1 a list of k
  coefficient lists, which may have different lengths); in any d (d = 1 too) ``terms``, a list of monomials
  ``{powers: [p_1, ..., p_d], coefficient: c}`` (``c`` a number, or a list of k numbers, one per output):
  ``f(x) = sum_t c_t x_1^{p_1} ... x_d^{p_d}``. Give either ``coefficients`` or ``terms``.
- ``abs`` (d = 1): ``scale * |x - center|`` (defaults ``scale = 1``, ``center = 0``).
- ``hat`` (d = 1): ``height * max(0, 1 - |x - center| / half_width)`` (``height`` default 1).
- ``sine`` (any d): ``amplitude * sin(frequency . x + phase)``, ``frequency`` angular (a number for d = 1,
  else a list of length d); defaults ``amplitude = 1``, ``phase = 0``.
- ``sawtooth`` (d = 1): the triangle wave ``offset + amplitude * (4 |x/period - round(x/period)| - 1)``,
  of period ``period``, values in ``[offset - amplitude, offset + amplitude]`` (``offset - amplitude`` at
  multiples of the period), Lipschitz constant ``4 |amplitude| / period``, linear between multiples of
  ``period / 2`` (defaults ``amplitude = 1``, ``offset = 0``).
- ``relu_network`` (any d; a teacher): ``f(x) = outer_bias + outer_weights relu(inner_weights x + inner_biases)``,
  the realization of a shallow ReLU network with ``H_t`` neurons (MATH.md section 1): ``inner_weights`` an
  ``H_t x d`` matrix (for d = 1 also a flat list of ``H_t`` numbers), ``inner_biases`` a list of ``H_t``,
  ``outer_weights`` a ``k x H_t`` matrix (for k = 1 also a flat list of ``H_t`` numbers), ``outer_bias`` a
  list of ``k``. For d = 1 it is piecewise linear: its kinks ``-b_j / w_j`` (``w_j != 0``) inside ``(a, b)``
  are the breakpoints; a neuron with ``w_j = 0`` is the constant ``relu(b_j)``.
- ``sum`` (any d): ``sum_t terms[t](x)``; all terms have the same number of outputs.
- ``stack`` (any d): ``(components[0](x), ..., components[k-1](x))``: k scalar targets as one R^k target.

For ``d = 1`` every target is "piecewise polynomial plus sines": on each interval between consecutive
:meth:`Target.breakpoints` it equals :meth:`Target.poly_on` (coefficients in increasing powers of the
global ``x``) plus the :meth:`Target.sines` terms. :func:`reluflow.model.measures.piecewise_table` turns this
into the :class:`~reluflow.model.piecewise.PiecewiseTable` of the exact kernel.

:func:`parse_target` validates a mapping and returns the target with its normalized (JSON-ready,
defaults filled in) mapping; errors raise :class:`~reluflow.model.validation.ConfigError` naming the key.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reluflow.model.network import pack, realization
from reluflow.model.validation import (
    check_kind,
    check_mapping,
    fail,
    real,
    real_array,
    subkey,
    to_json,
)

#: target kinds defined for every input dimension; the others exist only for d = 1
ANY_DIMENSION_KINDS = ("affine", "polynomial", "sine", "relu_network", "sum", "stack")
ONE_DIMENSION_KINDS = ("piecewise_linear", "abs", "hat", "sawtooth")
KINDS = ("affine", "piecewise_linear", "polynomial", "abs", "hat", "sine", "sawtooth", "relu_network", "sum", "stack")

#: at most this many pieces from one target on [a, b] (sawtooth kinks, or |omega| (b - a) for a sine,
#: which sets how many intervals the table needs): beyond it the exact d = 1 evaluation gets slow and the
#: problem is better posed with a discrete measure.
MAX_PIECES = 100_000


def _pad(coefficients: np.ndarray, degree: int) -> np.ndarray:
    """Zero-pad polynomial coefficients ``(k, D + 1)`` to ``(k, degree + 1)``."""
    k, n = coefficients.shape
    out = np.zeros((k, degree + 1))
    out[:, :n] = coefficients
    return out


class Target:
    """A target ``f: R^d -> R^k``. Subclasses define :meth:`evaluate`; d = 1 kinds also the piecewise form."""

    kind: str = ""
    input_dim: int = 1
    output_dim: int = 1
    degree: int = 0  # polynomial degree of :meth:`poly_on` (d = 1)

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """``f`` at points ``x (P, d)``; returns ``(P, k)``."""
        raise NotImplementedError

    def breakpoints(self, a: float, b: float) -> np.ndarray:
        """Points in the open interval ``(a, b)`` where the polynomial part may change (d = 1)."""
        return np.empty(0)

    def poly_on(self, lo: float, hi: float) -> np.ndarray:
        """Coefficients ``(k, degree + 1)`` (increasing powers of x) of the polynomial part on ``[lo, hi]``.

        ``[lo, hi]`` must contain no breakpoint in its interior.
        """
        raise NotImplementedError

    def sines(self) -> np.ndarray:
        """Sine terms ``(S, k, 3)`` of (amplitude, angular frequency, phase) added to the polynomial part."""
        return np.zeros((0, self.output_dim, 3))


class Affine(Target):
    kind = "affine"

    def __init__(self, slope: np.ndarray, intercept: np.ndarray):
        self.slope = slope  # (k, d)
        self.intercept = intercept  # (k,)
        self.output_dim, self.input_dim = slope.shape
        self.degree = 1

    def evaluate(self, x):
        out = np.empty((x.shape[0], self.output_dim))
        for m in range(self.output_dim):
            acc = self.intercept[m] + self.slope[m, 0] * x[:, 0]
            for j in range(1, self.input_dim):
                acc = acc + self.slope[m, j] * x[:, j]
            out[:, m] = acc
        return out

    def poly_on(self, lo, hi):
        return np.stack([self.intercept, self.slope[:, 0]], axis=1)


class PiecewiseLinear(Target):
    kind = "piecewise_linear"

    def __init__(self, knots: np.ndarray, values: np.ndarray):
        self.knots = knots  # (K,)
        self.values = values  # (K, k)
        self.output_dim = values.shape[1]
        self.degree = 1

    def evaluate(self, x):
        return np.stack([np.interp(x[:, 0], self.knots, self.values[:, m]) for m in range(self.output_dim)], axis=1)

    def breakpoints(self, a, b):
        return self.knots[(self.knots > a) & (self.knots < b)]

    def poly_on(self, lo, hi):
        j = int(np.clip(np.searchsorted(self.knots, 0.5 * (lo + hi), side="right") - 1, 0, len(self.knots) - 2))
        t0, t1 = self.knots[j], self.knots[j + 1]
        slope = (self.values[j + 1] - self.values[j]) / (t1 - t0)
        return np.stack([self.values[j] - slope * t0, slope], axis=1)


class Polynomial(Target):
    kind = "polynomial"

    def __init__(self, coefficients: np.ndarray):
        self.coefficients = coefficients  # (k, D + 1)
        self.output_dim = coefficients.shape[0]
        self.degree = coefficients.shape[1] - 1

    def evaluate(self, x):
        out = np.zeros((x.shape[0], self.output_dim))
        for coefficient in self.coefficients.T[::-1]:  # Horner, highest power first
            out = out * x[:, :1] + coefficient
        return out

    def poly_on(self, lo, hi):
        return self.coefficients.copy()


class PolynomialTerms(Target):
    """``f_m(x) = sum_t coefficients[t, m] prod_j x_j ** powers[t, j]``: a polynomial in any dimension."""

    kind = "polynomial"

    def __init__(self, powers: np.ndarray, coefficients: np.ndarray):
        self.powers = powers  # (T, d) non-negative integers
        self.coefficients = coefficients  # (T, k)
        self.input_dim = powers.shape[1]
        self.output_dim = coefficients.shape[1]
        self.degree = int(np.max(np.sum(powers, axis=1))) if powers.shape[0] else 0

    def evaluate(self, x):
        out = np.zeros((x.shape[0], self.output_dim))
        for powers, coefficient in zip(self.powers, self.coefficients):
            monomial = np.ones(x.shape[0])
            for j, p in enumerate(powers):
                if p:
                    monomial = monomial * x[:, j] ** int(p)
            out = out + monomial[:, None] * coefficient
        return out


class Abs(Target):
    kind = "abs"

    def __init__(self, scale: float, center: float):
        self.scale, self.center = scale, center
        self.degree = 1

    def evaluate(self, x):
        return self.scale * np.abs(x[:, :1] - self.center)

    def breakpoints(self, a, b):
        return np.array([self.center]) if a < self.center < b else np.empty(0)

    def poly_on(self, lo, hi):
        sign = 1.0 if 0.5 * (lo + hi) >= self.center else -1.0
        return np.array([[-sign * self.scale * self.center, sign * self.scale]])


class Hat(Target):
    kind = "hat"

    def __init__(self, center: float, half_width: float, height: float):
        self.center, self.half_width, self.height = center, half_width, height
        self.degree = 1

    def evaluate(self, x):
        return self.height * np.maximum(0.0, 1.0 - np.abs(x[:, :1] - self.center) / self.half_width)

    def breakpoints(self, a, b):
        points = np.array([self.center - self.half_width, self.center, self.center + self.half_width])
        return points[(points > a) & (points < b)]

    def poly_on(self, lo, hi):
        mid, c, w, h = 0.5 * (lo + hi), self.center, self.half_width, self.height
        if c - w < mid < c:  # rising side: h (1 - (c - x) / w)
            return np.array([[h * (1.0 - c / w), h / w]])
        if c <= mid < c + w:  # falling side: h (1 - (x - c) / w)
            return np.array([[h * (1.0 + c / w), -h / w]])
        return np.zeros((1, 2))


class Sine(Target):
    kind = "sine"

    def __init__(self, amplitude: float, frequency: np.ndarray, phase: float):
        self.amplitude, self.frequency, self.phase = amplitude, frequency, phase  # frequency (d,)
        self.input_dim = frequency.shape[0]
        self.degree = 0

    def evaluate(self, x):
        argument = self.phase + self.frequency[0] * x[:, 0]
        for j in range(1, self.input_dim):
            argument = argument + self.frequency[j] * x[:, j]
        return self.amplitude * np.sin(argument)[:, None]

    def poly_on(self, lo, hi):
        return np.zeros((1, 1))

    def sines(self):
        return np.array([[[self.amplitude, self.frequency[0], self.phase]]])


class Sawtooth(Target):
    kind = "sawtooth"

    def __init__(self, period: float, amplitude: float, offset: float):
        self.period, self.amplitude, self.offset = period, amplitude, offset
        self.degree = 1

    def evaluate(self, x):
        t = x[:, :1] / self.period
        return self.offset + self.amplitude * (4.0 * np.abs(t - np.floor(t + 0.5)) - 1.0)

    def breakpoints(self, a, b):
        half = 0.5 * self.period
        j = np.arange(math.floor(a / half), math.ceil(b / half) + 1)
        points = j * half
        return points[(points > a) & (points < b)]

    def poly_on(self, lo, hi):
        # On [lo, hi] the nearest integer n to x / period is fixed; there
        # f = offset - A + 4 A (x / period - n) (rising) or offset - A - 4 A (x / period - n) (falling).
        t = 0.5 * (lo + hi) / self.period
        n = math.floor(t + 0.5)
        A, P = self.amplitude, self.period
        if t >= n:
            return np.array([[self.offset - A - 4.0 * A * n, 4.0 * A / P]])
        return np.array([[self.offset - A + 4.0 * A * n, -4.0 * A / P]])


class ReluNetwork(Target):
    """``f(x) = c + V relu(W x + b)``: a teacher network with ``W (H_t, d)``, ``b (H_t,)``, ``V (k, H_t)``, ``c (k,)``."""

    kind = "relu_network"

    def __init__(self, W: np.ndarray, b: np.ndarray, V: np.ndarray, c: np.ndarray):
        self.W, self.b, self.V, self.c = W, b, V, c
        self.width, self.input_dim = W.shape
        self.output_dim = V.shape[0]
        self.degree = 1
        self.theta = pack(W, b, V, c)  # the student's layout, so that a student equal to the teacher rounds alike

    def evaluate(self, x):
        return realization(self.theta, x, self.input_dim, self.width, self.output_dim)

    def breakpoints(self, a, b):
        w = self.W[:, 0]
        moving = w != 0
        kinks = -self.b[moving] / w[moving]
        return np.unique(kinks[(kinks > a) & (kinks < b)])

    def poly_on(self, lo, hi):
        # no kink inside (lo, hi): the active set {j : w_j x + b_j > 0} is the one at the midpoint, and
        # N(x) = c + sum_{j active} V[:, j] (w_j x + b_j) (w_j = 0 < b_j: the constant V[:, j] b_j)
        active = (self.W[:, 0] * (0.5 * (lo + hi)) + self.b > 0).astype(float)
        intercept = self.c + np.sum(self.V * (active * self.b), axis=1)
        slope = np.sum(self.V * (active * self.W[:, 0]), axis=1)
        return np.stack([intercept, slope], axis=1)


class Sum(Target):
    kind = "sum"

    def __init__(self, terms: list[Target]):
        self.terms = terms
        self.output_dim = terms[0].output_dim
        self.input_dim = terms[0].input_dim
        self.degree = max(t.degree for t in terms)

    def evaluate(self, x):
        out = self.terms[0].evaluate(x)
        for term in self.terms[1:]:
            out = out + term.evaluate(x)
        return out

    def breakpoints(self, a, b):
        return np.unique(np.concatenate([t.breakpoints(a, b) for t in self.terms]))

    def poly_on(self, lo, hi):
        out = np.zeros((self.output_dim, self.degree + 1))
        for term in self.terms:
            out = out + _pad(term.poly_on(lo, hi), self.degree)
        return out

    def sines(self):
        return np.concatenate([t.sines() for t in self.terms], axis=0)


class Stack(Target):
    kind = "stack"

    def __init__(self, components: list[Target]):
        self.components = components
        self.output_dim = len(components)
        self.input_dim = components[0].input_dim
        self.degree = max(t.degree for t in components)

    def evaluate(self, x):
        return np.concatenate([t.evaluate(x) for t in self.components], axis=1)

    def breakpoints(self, a, b):
        return np.unique(np.concatenate([t.breakpoints(a, b) for t in self.components]))

    def poly_on(self, lo, hi):
        return np.concatenate([_pad(t.poly_on(lo, hi), self.degree) for t in self.components], axis=0)

    def sines(self):
        # a sine of component m contributes (amplitude, omega, phase) to output m and (0, 0, 0) elsewhere
        blocks = []
        for m, component in enumerate(self.components):
            own = component.sines()  # (S_m, 1, 3)
            block = np.zeros((own.shape[0], self.output_dim, 3))
            block[:, m, :] = own[:, 0, :]
            blocks.append(block)
        return np.concatenate(blocks, axis=0)


# ----------------------------------------------------------------------------------------------------
# parsing


_KEYS = {
    "affine": ({"slope"}, {"intercept"}),
    "piecewise_linear": ({"knots", "values"}, set()),
    "polynomial": (set(), {"coefficients", "terms"}),
    "abs": (set(), {"scale", "center"}),
    "hat": ({"center", "half_width"}, {"height"}),
    "sine": ({"frequency"}, {"amplitude", "phase"}),
    "sawtooth": ({"period"}, {"amplitude", "offset"}),
    "relu_network": ({"inner_weights", "inner_biases", "outer_weights", "outer_bias"}, set()),
    "sum": ({"terms"}, set()),
    "stack": ({"components"}, set()),
}


def parse_target(raw: Any, key: str, input_dim: int, domain: tuple[float, float]) -> tuple[Target, dict]:
    """Validate the target mapping ``raw`` (found at key path ``key``) for inputs in ``[a, b]^input_dim``.

    Returns ``(target, normalized)``: the :class:`Target` and its mapping with numbers as floats and
    defaults filled in (``parse_target(normalized, ...)`` gives the same target). The number of outputs
    is ``target.output_dim``; comparing it with the network is the caller's job.
    """
    kind = check_kind(key, raw, KINDS)
    if input_dim > 1 and kind in ONE_DIMENSION_KINDS:
        fail(
            subkey(key, "kind"),
            f"target kind {kind!r} is only defined for input_dim = 1 (network.input_dim = {input_dim}); "
            f"for d > 1 use one of {list(ANY_DIMENSION_KINDS)}",
        )
    required, optional = _KEYS[kind]
    check_mapping(key, raw, required={"kind"} | required, optional=optional)
    a, b = domain
    return _PARSERS[kind](raw, key, input_dim, a, b)


def _parse_affine(raw, key, d, a, b):
    slope = real_array(subkey(key, "slope"), raw["slope"], ndim={0, 1, 2})
    slope_is_scalar = slope.ndim == 0
    if d == 1:
        matrix = slope.reshape(-1, 1) if slope.ndim < 2 else slope
        if matrix.shape[1] != 1:
            fail(subkey(key, "slope"), f"must be a k x 1 matrix for input_dim = 1, got shape {slope.shape}")
    else:
        if slope.ndim == 0:
            fail(
                subkey(key, "slope"),
                f"a single number is ambiguous for input_dim = {d}: give the gradient (a list of {d} numbers) "
                f"or a k x {d} matrix",
            )
        matrix = slope[None, :] if slope.ndim == 1 else slope
        if matrix.shape[1] != d:
            fail(subkey(key, "slope"), f"must have {d} columns (one per input), got shape {slope.shape}")
    if matrix.shape[0] == 0:
        fail(subkey(key, "slope"), "must not be empty")
    intercept = real_array(subkey(key, "intercept"), raw.get("intercept", 0.0), ndim={0, 1})
    normalized = {"kind": "affine", "slope": to_json(slope), "intercept": to_json(intercept)}
    k = matrix.shape[0]
    if intercept.ndim == 1:
        if slope_is_scalar:
            k = intercept.shape[0]
            matrix = np.repeat(matrix, k, axis=0)
        if intercept.shape[0] != k or k == 0:
            fail(subkey(key, "intercept"), f"must be a number or a list of k = {k} numbers (one per output), got {intercept.shape[0]}")
    intercept = np.broadcast_to(intercept, (k,)).astype(float)
    return Affine(matrix.astype(float), intercept), normalized


def _parse_piecewise_linear(raw, key, d, a, b):
    knots = real_array(subkey(key, "knots"), raw["knots"], ndim=1)
    if knots.shape[0] < 2:
        fail(subkey(key, "knots"), f"needs at least 2 knots, got {knots.shape[0]}")
    if not np.all(np.diff(knots) > 0):
        i = int(np.argmax(~(np.diff(knots) > 0))) + 1
        fail(subkey(key, "knots"), f"must be strictly increasing; knots[{i}] = {knots[i]!r} <= knots[{i - 1}] = {knots[i - 1]!r}")
    if knots[0] > a or knots[-1] < b:
        fail(
            subkey(key, "knots"),
            f"must span the domain [a, b] = [{a!r}, {b!r}] (the target is defined only between its knots), "
            f"got [{knots[0]!r}, {knots[-1]!r}]",
        )
    values = real_array(subkey(key, "values"), raw["values"], ndim={1, 2})
    if values.shape[0] != knots.shape[0]:
        fail(subkey(key, "values"), f"needs one value (or row) per knot: {knots.shape[0]}, got {values.shape[0]}")
    if values.ndim == 2 and values.shape[1] == 0:
        fail(subkey(key, "values"), "rows must not be empty")
    values2 = values[:, None] if values.ndim == 1 else values
    normalized = {"kind": "piecewise_linear", "knots": to_json(knots), "values": to_json(values)}
    return PiecewiseLinear(knots, values2), normalized


def _parse_polynomial(raw, key, d, a, b):
    if ("coefficients" in raw) == ("terms" in raw):
        fail(key, "give either coefficients (d = 1: increasing powers of x) or terms (any d: monomials)")
    if "terms" in raw:
        return _parse_polynomial_terms(raw, key, d)
    pkey = subkey(key, "coefficients")
    if d != 1:
        fail(pkey, f"is for input_dim = 1; for input_dim = {d} give terms: [{{powers: [...], coefficient: c}}, ...]")
    coefficients = raw["coefficients"]
    if not isinstance(coefficients, (list, tuple, np.ndarray)) or len(coefficients) == 0:
        fail(pkey, f"must be a non-empty list of numbers (or of lists, one per output), got {coefficients!r}")
    if all(isinstance(c, (list, tuple, np.ndarray)) for c in coefficients):
        rows = [real_array(subkey(pkey, m), c, ndim=1) for m, c in enumerate(coefficients)]
        for m, row in enumerate(rows):
            if row.shape[0] == 0:
                fail(subkey(pkey, m), "must not be empty")
        normalized_value = [to_json(r) for r in rows]
    else:
        rows = [real_array(pkey, coefficients, ndim=1)]
        normalized_value = to_json(rows[0])
    degree = max(r.shape[0] for r in rows) - 1
    matrix = np.zeros((len(rows), degree + 1))
    for m, row in enumerate(rows):
        matrix[m, : row.shape[0]] = row
    return Polynomial(matrix), {"kind": "polynomial", "coefficients": normalized_value}


def _parse_polynomial_terms(raw, key, d):
    tkey = subkey(key, "terms")
    terms = raw["terms"]
    if not isinstance(terms, (list, tuple)) or not terms:
        fail(tkey, f"must be a non-empty list of {{powers: [...], coefficient: c}}, got {terms!r}")
    powers, coefficients = [], []
    for t, term in enumerate(terms):
        ikey = subkey(tkey, t)
        check_mapping(ikey, term, required={"powers", "coefficient"})
        p = real_array(subkey(ikey, "powers"), term["powers"], ndim=1)
        if p.shape[0] != d or np.any(p < 0) or np.any(p != np.round(p)):
            fail(subkey(ikey, "powers"), f"must be {d} non-negative whole numbers (one per input), got {term['powers']!r}")
        coefficients.append(real_array(subkey(ikey, "coefficient"), term["coefficient"], ndim={0, 1}).reshape(-1))
        powers.append(p.astype(np.int64))
    k = coefficients[0].shape[0]
    for t, c in enumerate(coefficients):
        if c.shape[0] != k or k == 0:
            fail(subkey(subkey(tkey, t), "coefficient"), f"needs {k} value(s), one per output, like terms[0]")
    powers, coefficients = np.array(powers), np.array(coefficients)
    normalized = {"kind": "polynomial", "terms": [{"powers": p.tolist(), "coefficient": to_json(c if k > 1 else c[0])}
                                                  for p, c in zip(powers, coefficients)]}
    if d == 1:  # the piecewise form of the exact d = 1 kernels: coefficients in increasing powers
        matrix = np.zeros((k, int(powers.max()) + 1))
        for p, c in zip(powers[:, 0], coefficients):
            matrix[:, p] += c
        return Polynomial(matrix), normalized
    return PolynomialTerms(powers, coefficients), normalized


def _parse_abs(raw, key, d, a, b):
    scale = real(subkey(key, "scale"), raw.get("scale", 1.0))
    center = real(subkey(key, "center"), raw.get("center", 0.0))
    return Abs(scale, center), {"kind": "abs", "scale": scale, "center": center}


def _parse_hat(raw, key, d, a, b):
    center = real(subkey(key, "center"), raw["center"])
    half_width = real(subkey(key, "half_width"), raw["half_width"], positive=True)
    height = real(subkey(key, "height"), raw.get("height", 1.0))
    return Hat(center, half_width, height), {"kind": "hat", "center": center, "half_width": half_width, "height": height}


def _parse_sine(raw, key, d, a, b):
    fkey = subkey(key, "frequency")
    frequency = real_array(fkey, raw["frequency"], ndim={0, 1})
    if frequency.ndim == 0:
        if d != 1:
            fail(fkey, f"must be a list of input_dim = {d} angular frequencies, got a single number")
        vector = frequency.reshape(1)
    else:
        if frequency.shape[0] != d:
            fail(fkey, f"must have input_dim = {d} entries, got {frequency.shape[0]}")
        vector = frequency
    if d == 1 and abs(vector[0]) * (b - a) > MAX_PIECES:
        fail(fkey, f"|frequency| * (b - a) = {abs(vector[0]) * (b - a):.6g} exceeds {MAX_PIECES} "
                   f"(too many oscillations for the exact d = 1 evaluation)")
    amplitude = real(subkey(key, "amplitude"), raw.get("amplitude", 1.0))
    phase = real(subkey(key, "phase"), raw.get("phase", 0.0))
    normalized = {"kind": "sine", "amplitude": amplitude, "frequency": to_json(frequency), "phase": phase}
    return Sine(amplitude, vector.astype(float), phase), normalized


def _parse_sawtooth(raw, key, d, a, b):
    period = real(subkey(key, "period"), raw["period"], positive=True)
    if 2.0 * (b - a) / period > MAX_PIECES:
        fail(subkey(key, "period"), f"gives {2.0 * (b - a) / period:.6g} linear pieces on [a, b], more than {MAX_PIECES}")
    amplitude = real(subkey(key, "amplitude"), raw.get("amplitude", 1.0))
    offset = real(subkey(key, "offset"), raw.get("offset", 0.0))
    return Sawtooth(period, amplitude, offset), {"kind": "sawtooth", "period": period, "amplitude": amplitude, "offset": offset}


def _parse_relu_network(raw, key, d, a, b):
    wkey, bkey = subkey(key, "inner_weights"), subkey(key, "inner_biases")
    vkey, ckey = subkey(key, "outer_weights"), subkey(key, "outer_bias")
    W = real_array(wkey, raw["inner_weights"], ndim={1, 2})
    if W.ndim == 1:
        if d != 1:
            fail(wkey, f"a flat list is only accepted for input_dim = 1; give an H_t x {d} matrix (one row per neuron)")
        W = W[:, None]
    if W.shape[0] == 0:
        fail(wkey, "must not be empty (the teacher needs at least one neuron)")
    if W.shape[1] != d:
        fail(wkey, f"must be an H_t x input_dim matrix with {d} column(s) (one row per neuron), got shape {W.shape}")
    h = W.shape[0]
    if d == 1 and h > MAX_PIECES:
        fail(wkey, f"{h} neurons give up to {h + 1} linear pieces on [a, b], more than {MAX_PIECES}")
    bias = real_array(bkey, raw["inner_biases"], ndim=1)
    if bias.shape[0] != h:
        fail(bkey, f"needs one bias per neuron: H_t = {h} (the rows of inner_weights), got {bias.shape[0]}")
    V = real_array(vkey, raw["outer_weights"], ndim={1, 2})
    if V.ndim == 1:
        V = V[None, :]  # a flat list: one output
    if V.shape[1] != h:
        fail(vkey, f"must be a k x H_t matrix with H_t = {h} columns (for k = 1 also a flat list of {h}), got shape {V.shape}")
    c = real_array(ckey, raw["outer_bias"], ndim=1)
    if c.shape[0] != V.shape[0]:
        fail(ckey, f"needs one number per output: k = {V.shape[0]} (the rows of outer_weights), got {c.shape[0]}")
    normalized = {
        "kind": "relu_network",
        "inner_weights": to_json(W),
        "inner_biases": to_json(bias),
        "outer_weights": to_json(V),
        "outer_bias": to_json(c),
    }
    return ReluNetwork(W, bias, V, c), normalized


def _parse_list(raw, key, name):
    items = raw[name]
    if not isinstance(items, (list, tuple)) or len(items) == 0:
        fail(subkey(key, name), f"must be a non-empty list of targets, got {items!r}")
    return items


def _parse_sum(raw, key, d, a, b):
    parsed = [parse_target(t, subkey(subkey(key, "terms"), i), d, (a, b)) for i, t in enumerate(_parse_list(raw, key, "terms"))]
    terms = [t for t, _ in parsed]
    for i, term in enumerate(terms):
        if term.output_dim != terms[0].output_dim:
            fail(
                subkey(subkey(key, "terms"), i),
                f"has {term.output_dim} outputs but terms[0] has {terms[0].output_dim}: all terms of a sum need the same",
            )
    return Sum(terms), {"kind": "sum", "terms": [n for _, n in parsed]}


def _parse_stack(raw, key, d, a, b):
    parsed = [
        parse_target(t, subkey(subkey(key, "components"), i), d, (a, b))
        for i, t in enumerate(_parse_list(raw, key, "components"))
    ]
    components = [t for t, _ in parsed]
    for i, component in enumerate(components):
        if component.output_dim != 1:
            fail(subkey(subkey(key, "components"), i), f"must be a scalar target (1 output), got {component.output_dim} outputs")
    return Stack(components), {"kind": "stack", "components": [n for _, n in parsed]}


_PARSERS = {
    "affine": _parse_affine,
    "piecewise_linear": _parse_piecewise_linear,
    "polynomial": _parse_polynomial,
    "abs": _parse_abs,
    "hat": _parse_hat,
    "sine": _parse_sine,
    "sawtooth": _parse_sawtooth,
    "relu_network": _parse_relu_network,
    "sum": _parse_sum,
    "stack": _parse_stack,
}
