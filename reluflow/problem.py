"""``Problem``: a network shape, a target and an input law, from a configuration mapping.

A problem fixes everything in ``L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)`` except ``theta``
(MATH.md sections 1-3)::

    network: {input_dim: 1, width: 8, output_dim: 1}   # d, H, k (input_dim, output_dim default 1)
    domain: [0.0, 1.0]                                # [a, b] (the cube [a, b]^d); default [0, 1]
    target: {kind: affine, slope: 2.0, intercept: -1.0}   # see reluflow.model.targets
    measure: {kind: uniform}                          # see reluflow.model.measures; default uniform (d = 1)

Evaluation paths:

- ``d = 1`` with a density: the exact kernel ``risk_and_gradient(theta, table, width)`` on the
  :class:`~reluflow.model.piecewise.PiecewiseTable` of target and density, from :mod:`reluflow.kernels.exact1d_numba`
  (numba, ``backend="numba"``, the default) or :mod:`reluflow.kernels.exact1d` (pure numpy, ``backend="numpy"``);
  the kernel module is imported on first use;
- ``d = 2`` with a density on the square (``uniform``, ``polynomial_density``): :mod:`reluflow.kernels.exact2d`
  (``_numba``) on the :class:`~reluflow.kernels.exact2d.PlanarProblemData` of target and density;
- a ``gaussian`` law (any ``d``, no domain): :mod:`reluflow.kernels.gaussian` (``_numba``);
- a discrete measure (any ``d``): :func:`reluflow.kernels.discrete.risk_and_gradient`, exact for that measure.

Every configuration error raises :class:`~reluflow.model.validation.ConfigError` naming the key, inside
:meth:`Problem.from_config` and before any points, tables or kernels are built.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Mapping

import numpy as np

from reluflow.kernels import discrete
from reluflow.model.measures import (
    DensityMeasure,
    DiscreteMeasure,
    PlanarDensity,
    discrete_measure,
    parse_measure,
    piecewise_table,
)
from reluflow.model.network import ParameterLayout, check_theta
from reluflow.model.network import realization as network_realization
from reluflow.model.targets import Target, parse_target
from reluflow.model.validation import ConfigError, check_mapping, fail, integer, real

BACKENDS = ("numba", "numpy")


def _finite_rows(x: np.ndarray) -> np.ndarray:
    """Per row of ``x (M, n)``: every entry finite (``x - x`` is 0 for finite entries, NaN otherwise)."""
    return ~np.isnan(np.sum(x - x, axis=-1))

#: elements of one (runs x points x neurons) work array in :meth:`Problem.realization`
_CHUNK_ELEMENTS = 2**21


def _parse_network(raw: Any) -> dict:
    check_mapping("network", raw, required={"width"}, optional={"input_dim", "output_dim"})
    return {
        "input_dim": integer("network.input_dim", raw.get("input_dim", 1), minimum=1),
        "width": integer("network.width", raw["width"], minimum=1),
        "output_dim": integer("network.output_dim", raw.get("output_dim", 1), minimum=1),
    }


def _parse_domain(raw: Any) -> tuple[float, float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        fail("domain", f"must be a list [a, b] of two numbers, got {raw!r}")
    a, b = real("domain[0]", raw[0]), real("domain[1]", raw[1])
    if not a < b:
        fail("domain", f"needs a < b, got [{a!r}, {b!r}]")
    return a, b


class Problem:
    """A shallow ReLU regression problem ``L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)``.

    Build it with :meth:`from_config`. Attributes: ``config`` (the normalized configuration, JSON-ready,
    defaults filled in; ``Problem.from_config(problem.config)`` gives the same problem), ``input_dim``
    (d), ``width`` (H), ``output_dim`` (k), ``domain`` ((a, b)), ``n_params`` (``d H + H + k H + k``),
    ``backend`` (``"numba"`` or ``"numpy"``: which d = 1 kernel is used; assignable), ``table`` (the
    :class:`~reluflow.model.piecewise.PiecewiseTable` of a d = 1 density problem, else ``None``) and
    ``discrete_measure`` (the :class:`~reluflow.model.measures.DiscreteMeasure`, else ``None``).

    ``theta`` arguments have shape ``(..., n_params)`` (any leading batch shape, also ``()``), laid out as
    in MATH.md section 1 (:mod:`reluflow.model.network`); results keep the batch shape.
    """

    def __init__(self, config: dict, target: Target, table, measure: DiscreteMeasure | None, backend: str = "numba",
                 gaussian=None, domain: tuple[float, float] | None = None, planar=None):
        self._config = config
        self._target = target
        self.table = table
        self.discrete_measure = measure
        #: ``(GaussianMeasure, GaussianTarget)`` of a gaussian input law, else None
        self.gaussian = gaussian
        #: the :class:`~reluflow.kernels.exact2d.PlanarProblemData` of a d = 2 density on a square, else None
        self.planar = planar
        network = config["network"]
        self.input_dim = int(network["input_dim"])
        self.width = int(network["width"])
        self.output_dim = int(network["output_dim"])
        if domain is None:
            domain = (float(config["domain"][0]), float(config["domain"][1]))
        self.domain = domain
        self.layout = ParameterLayout(self.input_dim, self.width, self.output_dim)
        self.n_params = self.layout.n_params
        self.backend = backend
        if measure is not None:
            self._target_values = np.ascontiguousarray(target.evaluate(measure.points))

    # ------------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_config(cls, mapping: Mapping, backend: str = "numba") -> "Problem":
        """Validate ``mapping`` (keys ``network``, ``domain``, ``target``, ``measure``) and build the problem.

        Raises :class:`~reluflow.model.validation.ConfigError` (a ``ValueError``) whose message starts with the
        dotted key path of the first offending value; ``backend`` must be ``"numba"`` or ``"numpy"``.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {list(BACKENDS)}, got {backend!r}")
        mapping = copy.deepcopy(mapping)  # never alias the caller's data
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"config: must be a mapping, got {type(mapping).__name__} {mapping!r}")
        # top-level keys are named bare ("network.width"), so that an enclosing configuration can prefix them
        check_mapping("", mapping, required={"network", "target"}, optional={"domain", "measure"})
        network = _parse_network(mapping["network"])
        d, k = network["input_dim"], network["output_dim"]
        if "measure" not in mapping and d > 1:
            fail("measure", f"is required for input_dim = {d} > 1 (gaussian, or a discrete measure: qmc, "
                            f"gauss_legendre or data)")
        raw_measure = mapping.get("measure", {"kind": "uniform"})
        if isinstance(raw_measure, Mapping) and raw_measure.get("kind") == "gaussian":
            return cls._gaussian(mapping, network, raw_measure, backend)
        domain = _parse_domain(mapping.get("domain", [0.0, 1.0]))
        target, target_config = parse_target(mapping["target"], "target", d, domain)
        if target.output_dim != k:
            fail("target", f"has {target.output_dim} output(s) but network.output_dim = {k}")
        measure_config, law = parse_measure(raw_measure, "measure", d, domain)
        config = {"network": network, "domain": list(domain), "target": target_config, "measure": measure_config}
        # everything is validated: now the work (tables, points, target values)
        if isinstance(law, DensityMeasure):
            return cls(config, target, piecewise_table(target, law, domain), None, backend)
        if isinstance(law, PlanarDensity):
            from reluflow.kernels.exact2d import planar_data

            return cls(config, target, None, None, backend, planar=planar_data(target, law.coefficients, domain))
        return cls(config, target, None, discrete_measure(measure_config, d, domain), backend)

    @classmethod
    def _gaussian(cls, mapping: Mapping, network: dict, raw_measure: Mapping, backend: str) -> "Problem":
        """A problem under ``N(mean, covariance)`` on ``R^d``: no domain; the risk, ``G`` and the Jacobian of the
        Gaussian kernels (:mod:`reluflow.kernels.gaussian`). ``domain`` is then the window ``mean_j +- 4 sigma_j``
        (over the coordinates ``j``) in which figures draw the realization."""
        from reluflow.kernels.gaussian import target_terms

        if "domain" in mapping:
            fail("domain", "is not used by a gaussian input law (its support is all of R^d): remove it")
        d, k = network["input_dim"], network["output_dim"]
        measure_config, law = parse_measure(raw_measure, "measure", d, (0.0, 1.0))
        sigma = np.sqrt(np.diag(law.covariance))
        window = (float(np.min(law.mean - 4 * sigma)), float(np.max(law.mean + 4 * sigma)))
        target, target_config = parse_target(mapping["target"], "target", d, window)
        if target.output_dim != k:
            fail("target", f"has {target.output_dim} output(s) but network.output_dim = {k}")
        terms = target_terms(target, "target")
        config = {"network": network, "target": target_config, "measure": measure_config}
        return cls(config, target, None, None, backend, gaussian=(law, terms), domain=window)

    @property
    def config(self) -> dict:
        """The normalized configuration (a fresh deep copy: JSON-ready, safe to modify)."""
        return copy.deepcopy(self._config)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend: must be one of {list(BACKENDS)}, got {value!r}")
        self._backend = value

    def __repr__(self) -> str:
        c = self._config
        where = f"domain={list(self.domain)}" if "domain" in c else "R^d"
        return (
            f"Problem(d={self.input_dim}, H={self.width}, k={self.output_dim}, {where}, "
            f"target={c['target']['kind']!r}, measure={c['measure']['kind']!r})"
        )

    # ------------------------------------------------------------------------------------------------
    # pointwise

    def _points(self, x) -> np.ndarray:
        """``x`` as ``(P, d)``: for d = 1 ``(P,)`` or ``(P, 1)``, for d > 1 ``(P, d)``; finite."""
        try:
            x = np.asarray(x, dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(f"x: must be an array of numbers: {err}") from None
        d = self.input_dim
        if d == 1 and x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != d:
            expected = "(P,) or (P, 1)" if d == 1 else f"(P, {d})"
            raise ValueError(f"x: expected shape {expected} for input_dim = {d}, got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x: entries must be finite")
        return np.ascontiguousarray(x)

    def _outputs(self, values: np.ndarray) -> np.ndarray:
        """Drop the trailing output axis when k = 1 (the documented shape convention)."""
        return values[..., 0] if self.output_dim == 1 else values

    def target(self, x) -> np.ndarray:
        """The target ``f`` at points ``x``: shape ``(P,)`` when k = 1, ``(P, k)`` when k > 1.

        Evaluated from its definition (:mod:`reluflow.model.targets`), also outside ``[a, b]`` where that makes
        sense (a ``piecewise_linear`` target is constant beyond its end knots).
        """
        return self._outputs(self._target.evaluate(self._points(x)))

    def realization(self, theta, x) -> np.ndarray:
        """``N_theta(x) = c + V relu(W x + b)``: shape ``batch + (P,)`` when k = 1, ``batch + (P, k)`` when k > 1."""
        theta = check_theta(theta, self.n_params)
        x = self._points(x)
        batch = theta.shape[:-1]
        flat = theta.reshape(-1, self.n_params)
        out = np.empty((flat.shape[0], x.shape[0], self.output_dim))
        rows = max(1, _CHUNK_ELEMENTS // max(1, x.shape[0] * max(self.width, self.output_dim)))
        for start in range(0, flat.shape[0], rows):
            out[start : start + rows] = network_realization(
                flat[start : start + rows], x, self.input_dim, self.width, self.output_dim
            )
        return self._outputs(out.reshape(batch + out.shape[1:]))

    # ------------------------------------------------------------------------------------------------
    # risk and generalized gradient

    # The table's arrays are checked and laid out for the kernels once per problem (they are fixed): a solver
    # evaluates G thousands of times on small batches, where preparing the table each time cost more than
    # the kernel itself.

    @functools.cached_property
    def table_arrays(self):
        """The table as the kernels' checked arrays (:func:`reluflow.kernels.exact1d.prepare`), made once."""
        from reluflow.kernels.exact1d import prepare

        return prepare(self.table)

    @functools.cached_property
    def compiled_arguments(self) -> tuple:
        """The table as the compiled d = 1 kernel's arguments (:func:`reluflow.kernels.exact1d_numba.kernel_arguments`),
        made once: for the vector fields that call that kernel from their own compiled loops."""
        from reluflow.kernels.exact1d_numba import kernel_arguments

        return kernel_arguments(self.table_arrays)

    def risk_and_gradient_rows(self, theta2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``L (M,)`` and ``G (M, n)`` of a C-contiguous float64 ``theta2d (M, n_params)``, without the checks of
        :meth:`risk_and_gradient` (the fast path of the vector fields): the same numbers, except that a row
        with a non-finite entry gives NaN instead of an error (a solver's trial state may overflow)."""
        if self.table is not None and self._backend == "numba":  # the compiled kernel checks each row itself
            return self._exact_kernel()(theta2d)
        finite = _finite_rows(theta2d)
        if not finite.all():
            risk = np.full(theta2d.shape[0], np.nan)
            grad = np.full(theta2d.shape, np.nan)
            if finite.any():
                risk[finite], grad[finite] = self.risk_and_gradient_rows(np.ascontiguousarray(theta2d[finite]))
            return risk, grad
        if self.gaussian is not None:
            law, terms = self.gaussian
            return self._gaussian_kernel().risk_and_gradient(
                theta2d, self.input_dim, self.width, self.output_dim, law.mean, law.covariance, terms)
        if self.planar is not None:
            return self._planar_kernel().risk_and_gradient(theta2d, self.width, self.output_dim, self.planar)
        if self.table is None:
            measure = self.discrete_measure
            return discrete.risk_and_gradient(theta2d, measure.points, measure.weights, self._target_values,
                                              self.width)
        return self._exact_kernel()(theta2d)

    def _exact_kernel(self):
        """The d = 1 kernel of the chosen backend as ``rows(theta2d) -> (risk, grad)``, with the table's
        arrays prepared once (every d = 1 evaluation of ``L`` and ``G`` goes through here); the callable is made
        once per backend, since a solver asks for it on every evaluation."""
        kernels = self.__dict__.setdefault("_exact_kernels", {})
        kernel = kernels.get(self._backend)
        if kernel is not None:
            return kernel
        if self._backend == "numba":
            from reluflow.kernels.exact1d_numba import risk_and_gradient_rows

            kernel = functools.partial(risk_and_gradient_rows, H=self.width, arguments=self.compiled_arguments)
        else:
            from reluflow.kernels.exact1d import risk_and_gradient_rows

            kernel = functools.partial(risk_and_gradient_rows, H=self.width, arrays=self.table_arrays)
        kernels[self._backend] = kernel
        return kernel

    def gradient_jacobian_rows(self, theta2d: np.ndarray) -> np.ndarray:
        """``dG/dtheta (M, n, n)`` of a C-contiguous float64 ``theta2d (M, n_params)`` without the checks of
        :meth:`gradient_jacobian` (laws with a density); NaN rows where ``theta2d`` has a non-finite entry."""
        from reluflow.kernels.jacobian1d import gradient_jacobian_rows

        if self.table is not None and self._backend == "numba":  # the compiled kernel checks each row itself
            return gradient_jacobian_rows(theta2d, self.width, self.table_arrays, "numba")
        finite = _finite_rows(theta2d)
        if not finite.all():
            out = np.full(theta2d.shape + (theta2d.shape[1],), np.nan)
            if finite.any():
                out[finite] = self.gradient_jacobian_rows(np.ascontiguousarray(theta2d[finite]))
            return out
        if self.gaussian is not None:
            law, terms = self.gaussian
            return self._gaussian_kernel().gradient_jacobian(
                theta2d, self.input_dim, self.width, self.output_dim, law.mean, law.covariance, terms)
        if self.planar is not None:
            return self._planar_kernel().gradient_jacobian(theta2d, self.width, self.output_dim, self.planar)
        return gradient_jacobian_rows(theta2d, self.width, self.table_arrays, self._backend)

    def risk_and_gradient(self, theta) -> tuple[np.ndarray, np.ndarray]:
        """``L(theta)`` (shape ``batch``) and ``G(theta)`` (shape ``batch + (n_params,)``) in one pass.

        ``G`` is the generalized gradient of MATH.md section 2 (strict active sets, relu'(0) = 0).
        """
        theta = check_theta(theta, self.n_params)
        batch = theta.shape[:-1]
        flat = np.ascontiguousarray(theta.reshape(-1, self.n_params))
        if flat.shape[0] == 0:
            return np.empty(batch), np.empty(batch + (self.n_params,))
        risk, grad = self.risk_and_gradient_rows(flat)
        risk = np.asarray(risk, dtype=float).reshape(batch)
        grad = np.asarray(grad, dtype=float).reshape(batch + (self.n_params,))
        return risk, grad

    def _gaussian_kernel(self):
        """The Gaussian-input kernel module of the chosen backend."""
        if self._backend == "numba":
            from reluflow.kernels import gaussian_numba as kernel
        else:
            from reluflow.kernels import gaussian as kernel
        return kernel

    def _planar_kernel(self):
        """The exact d = 2 kernel module of the chosen backend."""
        if self._backend == "numba":
            from reluflow.kernels import exact2d_numba as kernel
        else:
            from reluflow.kernels import exact2d as kernel
        return kernel

    @property
    def has_jacobian(self) -> bool:
        """Whether :meth:`gradient_jacobian` is available (laws with a density: d = 1, d = 2 on a square, gaussian)."""
        return self.table is not None or self.gaussian is not None or self.planar is not None

    def gradient_jacobian(self, theta) -> np.ndarray:
        """``dG/dtheta`` (the Hessian of the risk where it exists), shape ``batch + (n_params, n_params)``.

        Exact for laws with a density: d = 1, including the terms from kinks that move with the parameters
        (:mod:`reluflow.kernels.jacobian1d`); d = 2 on a square, with the line terms of the moving lines
        (:mod:`reluflow.kernels.exact2d`); Gaussian inputs (:mod:`reluflow.kernels.gaussian`). Used by the stiff
        solvers and the classification of end points.
        """
        if not self.has_jacobian:
            raise ValueError("gradient_jacobian: only available for input laws with a density (not discrete measures)")
        theta = check_theta(theta, self.n_params)
        batch = theta.shape[:-1]
        flat = np.ascontiguousarray(theta.reshape(-1, self.n_params))
        if flat.shape[0] == 0:
            return np.empty(batch + (self.n_params, self.n_params))
        jac = self.gradient_jacobian_rows(flat)
        return np.asarray(jac, dtype=float).reshape(batch + (self.n_params, self.n_params))

    def risk(self, theta) -> np.ndarray:
        """``L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)``; shape ``batch``."""
        return self.risk_and_gradient(theta)[0]

    def generalized_gradient(self, theta) -> np.ndarray:
        """``G(theta)`` of MATH.md section 2; shape ``batch + (n_params,)``."""
        return self.risk_and_gradient(theta)[1]
