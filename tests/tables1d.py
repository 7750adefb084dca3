"""Test helpers for the exact d = 1 kernels: small piecewise tables built by hand, and test parameters.

Each case carries its :class:`~reluflow.model.piecewise.PiecewiseTable` *and* independent Python formulas for
the target and the density (written directly, not evaluated from the table's coefficients), so that
a reference integrating the formulas checks the kernels and the table together.

Parameter sets deliberately contain every degenerate configuration of the kinks ``xi_i = -b_i / w_i``:
kinks left and right of ``[a, b]`` for both signs of ``w`` (neurons active everywhere or nowhere),
``w_i = 0`` with ``b_i > 0``, ``< 0`` and ``= 0``, two neurons with the same kink (signs equal and
opposite), kinks exactly at ``a`` and at ``b`` (both signs) and exactly at a table knot. The values
are dyadic so that ``-b / w`` is exactly the intended point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from reluflow.model.piecewise import PiecewiseTable


@dataclass
class Case:
    """A d = 1 problem: table for the kernels, formulas for the references."""

    name: str
    table: PiecewiseTable
    target: Callable[[float], np.ndarray]  # f(x) -> (k,) array, written directly
    density: Callable[[float], float]  # p(x), written directly

    @property
    def a(self) -> float:
        return float(self.table.knots[0])

    @property
    def b(self) -> float:
        return float(self.table.knots[-1])

    @property
    def k(self) -> int:
        return self.table.output_dim

    @property
    def interior_knots(self) -> np.ndarray:
        return np.asarray(self.table.knots[1:-1], dtype=float)

    def n_params(self, H: int) -> int:
        return 2 * H + self.k * H + self.k


def _build(name, a, b, target_parts, density_parts, target, density, sines=None, quad_nodes=None) -> Case:
    """Merge per-output target pieces and density pieces into one table on ``[a, b]``.

    ``target_parts[m]`` is a list of ``(lo, hi, coefficients in increasing powers of x)`` covering
    ``[a, b]``; ``density_parts`` likewise (one list). ``quad_nodes`` defaults to the fewest
    Gauss-Legendre nodes exact for ``|r|^2 p`` (``r`` of degree ``max(1, Dt)``).
    """
    k = len(target_parts)
    cuts = {a, b}
    for parts in list(target_parts) + [density_parts]:
        for lo, hi, _ in parts:
            cuts.update((lo, hi))
    knots = np.array(sorted(cuts))
    Dt = max(len(c) for parts in target_parts for _, _, c in parts) - 1
    Dp = max(len(c) for _, _, c in density_parts) - 1

    def pick(parts, mid, size):
        for lo, hi, coef in parts:
            if lo <= mid <= hi:
                out = np.zeros(size)
                out[: len(coef)] = coef
                return out
        raise AssertionError(f"{name}: no piece covers {mid}")

    L = len(knots) - 1
    target_poly = np.zeros((L, k, Dt + 1))
    density_poly = np.zeros((L, Dp + 1))
    for l in range(L):
        mid = 0.5 * (knots[l] + knots[l + 1])
        for m in range(k):
            target_poly[l, m] = pick(target_parts[m], mid, Dt + 1)
        density_poly[l] = pick(density_parts, mid, Dp + 1)
    if quad_nodes is None:
        quad_nodes = (2 * max(1, Dt) + Dp + 2) // 2
    sines = np.zeros((0, k, 3)) if sines is None else np.asarray(sines, dtype=float)
    table = PiecewiseTable(knots, target_poly, sines, density_poly, int(quad_nodes))
    return Case(name, table, target, density)


# ---- target components on [0, 1] (pieces, formula) ------------------------------------------------


def _affine_parts(a, b, slope, intercept):
    return [(a, b, [intercept, slope])], lambda x: slope * x + intercept


# a V-shaped piecewise linear target with its knot at 0.375 (dyadic: a neuron's kink can sit on it)
_PL_KNOT = 0.375
_PL_PARTS = [(0.0, _PL_KNOT, [0.75 - 0.3, -2.0]), (_PL_KNOT, 1.0, [-0.75 - 0.3, 2.0])]


def _pl(x):
    return 2.0 * abs(x - _PL_KNOT) - 0.3


_CUBIC_PARTS = [(0.0, 1.0, [0.5, -2.0, 1.5, 3.0])]


def _cubic(x):
    return 0.5 - 2.0 * x + 1.5 * x**2 + 3.0 * x**3


# 0.8 sin(5 x + 0.3) + 0.2 x: sine terms need |omega| * width <= 1 per interval, hence knots every 0.2
_SINE = (0.8, 5.0, 0.3)
_SINE_PARTS = [(0.2 * i, 0.2 * (i + 1), [0.0, 0.2]) for i in range(5)]


def _sine(x):
    return _SINE[0] * np.sin(_SINE[1] * x + _SINE[2]) + 0.2 * x


# ---- densities on [0, 1] -------------------------------------------------------------------------

_UNIFORM01 = [(0.0, 1.0, [1.0])]

_TRI_MODE = 0.25  # triangular density with mode 1/4: 8 x on [0, 1/4], (8/3)(1 - x) on [1/4, 1]
_TRIANGULAR = [(0.0, _TRI_MODE, [0.0, 8.0]), (_TRI_MODE, 1.0, [8.0 / 3.0, -8.0 / 3.0])]


def _triangular(x):
    return 8.0 * x if x <= _TRI_MODE else 8.0 / 3.0 * (1.0 - x)


# piecewise quadratic, discontinuous at 1/2: (1 + 3 x^2) / Z on [0, 1/2], (2 - x + x^2) / Z on [1/2, 1]
_Z = (0.5 + 0.125) + (1.0 - 0.375 + 0.875 / 3.0)
_PIECEWISE_QUADRATIC = [(0.0, 0.5, [1.0 / _Z, 0.0, 3.0 / _Z]), (0.5, 1.0, [2.0 / _Z, -1.0 / _Z, 1.0 / _Z])]


def _piecewise_quadratic(x):
    return (1.0 + 3.0 * x * x) / _Z if x <= 0.5 else (2.0 - x + x * x) / _Z


def _scalar(fn):
    return lambda x: np.array([fn(x)])


def cases() -> list[Case]:
    """The test problems (target x density): every builder the kernels must handle."""
    a, b = -1.0, 2.0
    affine_parts, affine = _affine_parts(a, b, 1.7, -0.4)
    aff01_parts, aff01 = _affine_parts(0.0, 1.0, -1.3, 0.6)
    return [
        _build("affine-uniform[-1,2]", a, b, [affine_parts], [(a, b, [1.0 / 3.0])], _scalar(affine), lambda x: 1.0 / 3.0),
        _build("pl-triangular", 0.0, 1.0, [_PL_PARTS], _TRIANGULAR, _scalar(_pl), _triangular),
        _build("cubic-uniform", 0.0, 1.0, [_CUBIC_PARTS], _UNIFORM01, _scalar(_cubic), lambda x: 1.0),
        _build("cubic-pwquadratic", 0.0, 1.0, [_CUBIC_PARTS], _PIECEWISE_QUADRATIC, _scalar(_cubic), _piecewise_quadratic),
        _build(
            "sine-uniform", 0.0, 1.0, [_SINE_PARTS], _UNIFORM01, _scalar(_sine), lambda x: 1.0,
            sines=[[list(_SINE)]], quad_nodes=12,
        ),  # fmt: skip
        _build(
            "k2-affine,cubic-triangular", 0.0, 1.0, [aff01_parts, _CUBIC_PARTS], _TRIANGULAR,
            lambda x: np.array([aff01(x), _cubic(x)]), _triangular,
        ),  # fmt: skip
        _build(
            "k2-pl,sine-pwquadratic", 0.0, 1.0, [_PL_PARTS, _SINE_PARTS], _PIECEWISE_QUADRATIC,
            lambda x: np.array([_pl(x), _sine(x)]), _piecewise_quadratic,
            sines=[[[0.0, 0.0, 0.0], list(_SINE)]], quad_nodes=12,
        ),  # fmt: skip
    ]


def case(name: str) -> Case:
    for c in cases():
        if c.name == name:
            return c
    raise KeyError(name)


# ---- parameters ----------------------------------------------------------------------------------

SPECIAL_H = 17


def special_theta(c: Case, rng: np.random.Generator) -> np.ndarray:
    """``SPECIAL_H`` neurons covering every degenerate kink configuration (dyadic values), random ``V, c``."""
    a, b = c.a, c.b
    knot = c.interior_knots[0] if c.interior_knots.size else 0.5 * (a + b)
    inside = a + 0.625 * (b - a)  # shared kink (dyadic offset for [0, 1] and [-1, 2])
    wb = [
        (1.0, -(a - 0.5)),  # w > 0, kink left of a: active everywhere
        (0.75, -0.75 * (b + 0.25)),  # w > 0, kink right of b: dead
        (-1.25, -1.25 * (a - 0.25)),  # w < 0, kink left of a: dead
        (-0.5, 0.5 * (b + 0.5)),  # w < 0, kink right of b: active everywhere
        (0.0, 0.625),  # w = 0 < b: active everywhere
        (0.0, -0.375),  # w = 0, b < 0: dead
        (0.0, 0.0),  # w = b = 0: dead (relu'(0) = 0)
        (2.0, -2.0 * inside),  # coinciding kinks, opposite signs
        (-0.5, 0.5 * inside),
        (4.0, -4.0 * inside),  # ... and a third one, same sign as the first
        (1.5, -1.5 * a),  # kink exactly at a, w > 0: active on (a, b]
        (-1.5, 1.5 * a),  # kink exactly at a, w < 0: active on [a, a): dead
        (-0.75, 0.75 * b),  # kink exactly at b, w < 0: active on [a, b)
        (0.75, -0.75 * b),  # kink exactly at b, w > 0: dead
        (-1.0, knot),  # kink exactly at a table knot
        (1.0, -knot),
        (rng.uniform(0.5, 2.0), 0.0),  # a generic kink, placed below
    ]
    w = np.array([p[0] for p in wb])
    bias = np.array([p[1] for p in wb])
    bias[-1] = -w[-1] * rng.uniform(a, b)
    assert w.size == SPECIAL_H
    V = rng.normal(size=(c.k, SPECIAL_H))
    cvec = rng.normal(size=c.k)
    return np.concatenate([w, bias, V.ravel(), cvec])


def random_theta(c: Case, H: int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Generic parameters: kinks mostly inside ``[a, b]``, some outside, random signs and scales."""
    shape = (H,) if size is None else (size, H)
    w = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 2.5, size=shape)
    xi = rng.uniform(c.a - 0.3 * (c.b - c.a), c.b + 0.3 * (c.b - c.a), size=shape)
    bias = -w * xi
    V = rng.normal(size=shape[:-1] + (c.k * H,))
    cvec = rng.normal(size=shape[:-1] + (c.k,))
    return np.concatenate([w, bias, V, cvec], axis=-1)


def unpack(theta: np.ndarray, H: int, k: int):
    """``w (H), b (H), V (k, H), c (k)`` of one parameter vector (MATH.md section 1, d = 1)."""
    return theta[:H], theta[H : 2 * H], theta[2 * H : 2 * H + k * H].reshape(k, H), theta[2 * H + k * H :]
