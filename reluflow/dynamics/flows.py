"""Vector fields of the gradient flows (MATH.md sections 2 and 4).

- :class:`StandardFlow`: ``dTheta/dt = -G(Theta)`` (JR), with ``G`` the generalized gradient.
- :class:`NormalizedFlow`: ``dTheta/dt = -P(Theta) G(Theta)`` (EJRW), restricted to
  ``M = {theta : |u_i| = 1 for every neuron i}``, ``u_i = (w_i, b_i)``.
- :func:`project_to_manifold`: the realization-preserving map of a parameter onto ``M``.

A vector field is an object with ``rhs(theta) -> velocity`` on batches ``(m, n_params)`` and
``evaluate(theta) -> FlowEvaluation`` (risk, gradient and velocity in one pass). Along either flow
``dL/dt = -|velocity|^2``, which gives the energy identity the integrators check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlowEvaluation:
    """Risk ``L``, generalized gradient ``G`` and velocity ``F`` (``-G`` or ``-P G``) of a batch."""

    risk: np.ndarray
    gradient: np.ndarray
    velocity: np.ndarray


def tangent_projection(problem, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``P(theta) g``: remove from each neuron block ``g_{u_i}`` its component along ``u_i``.

    ``(P g)_{u_i} = g_{u_i} - (g_{u_i} . u_i / |u_i|^2) u_i``; the ``V`` and ``c`` components are unchanged.
    On ``M`` (``|u_i| = 1``) this is MATH.md's ``g_{u_i} - (g_{u_i} . u_i) u_i``. Dividing by ``|u_i|^2``
    makes ``d|u_i|^2/dt = 0`` exactly for the continuous flow wherever it starts, so an integrator's
    constraint drift measures only its own error. A block with ``u_i = 0`` is left unchanged.
    """
    idx = problem.layout.neuron_blocks()
    u = theta[..., idx]
    gu = g[..., idx]
    uu = np.sum(u * u, axis=-1, keepdims=True)
    coef = np.divide(np.sum(gu * u, axis=-1, keepdims=True), uu, out=np.zeros_like(uu), where=uu > 0)
    out = np.array(g, dtype=float, copy=True)
    out[..., idx] = gu - coef * u
    return out


def constraint_drift(problem, theta: np.ndarray) -> np.ndarray:
    """``max_i ||u_i| - 1|`` for each parameter vector: the distance from the manifold ``M``."""
    u = theta[..., problem.layout.neuron_blocks()]
    return np.max(np.abs(np.sqrt(np.sum(u * u, axis=-1)) - 1.0), axis=-1)


def project_to_manifold(problem, theta: np.ndarray) -> np.ndarray:
    """Map ``theta`` onto ``M`` without changing its realization (MATH.md section 4).

    ``u_i -> u_i / |u_i|`` and ``V[:, i] -> |u_i| V[:, i]``: positive homogeneity of relu keeps
    ``V[:, i] relu(w_i . x + b_i)``. A neuron with ``u_i = 0`` contributes nothing; it becomes
    ``u_i = (0, ..., 0, 1)`` (a unit bias) with ``V[:, i] = 0``, which also contributes nothing.
    """
    theta = np.array(theta, dtype=float, copy=True)
    idx = problem.layout.neuron_blocks()
    vidx = problem.layout.outer_weights()
    u = theta[..., idx]
    norm = np.sqrt(np.sum(u * u, axis=-1))
    zero = norm == 0
    safe = np.where(zero, 1.0, norm)
    u_new = u / safe[..., None]
    u_new[zero] = 0.0
    u_new[..., -1] = np.where(zero, 1.0, u_new[..., -1])
    v_new = theta[..., vidx] * norm[..., None]
    theta[..., idx] = u_new
    theta[..., vidx] = v_new
    return theta


def _gradient(problem, theta) -> np.ndarray:
    """``G(theta)`` for the vector fields: a solver's ``(m, n)`` float64 batch goes straight to the problem's
    kernel (:meth:`~reluflow.Problem.risk_and_gradient_rows`: no per-call checks, NaN rows for non-finite
    states), anything else through the checked public method."""
    if isinstance(theta, np.ndarray) and theta.ndim == 2 and theta.dtype == np.float64 and theta.shape[1] == problem.n_params:
        return problem.risk_and_gradient_rows(np.ascontiguousarray(theta))[1]
    return problem.generalized_gradient(theta)


def _gradient_jacobian(problem, theta) -> np.ndarray:
    """``dG/dtheta`` for the vector fields, with the fast path of :func:`_gradient`."""
    if isinstance(theta, np.ndarray) and theta.ndim == 2 and theta.dtype == np.float64 and theta.shape[1] == problem.n_params:
        return problem.gradient_jacobian_rows(np.ascontiguousarray(theta))
    return problem.gradient_jacobian(theta)


def _structured(problem) -> bool:
    """Whether the stiff step's ``sigma I - J`` is factorized without ``J`` (:func:`shifted_factorization`):
    d = 1 densities from the measured crossover width on (:func:`~reluflow.kernels.structured1d.dense_below_width`)."""
    if problem.table is None or problem.input_dim != 1:
        return False
    from reluflow.kernels.structured1d import dense_below_width

    return problem.width >= dense_below_width(problem.output_dim)


class StandardFlow:
    """The gradient flow of JR: ``dTheta/dt = -G(Theta)``."""

    name = "standard"

    def __init__(self, problem):
        self.problem = problem

    def evaluate(self, theta: np.ndarray) -> FlowEvaluation:
        risk, grad = self.problem.risk_and_gradient(theta)
        return FlowEvaluation(risk=risk, gradient=grad, velocity=-grad)

    def rhs(self, theta: np.ndarray) -> np.ndarray:
        out = _gradient(self.problem, theta)
        return np.negative(out, out=out)

    def jac(self, theta: np.ndarray) -> np.ndarray:
        """``d(-G)/d theta``: minus the Hessian of the risk where it exists (for stiff solvers)."""
        out = _gradient_jacobian(self.problem, theta)
        return np.negative(out, out=out)

    @property
    def structured(self) -> bool:
        """Whether stiff solvers should use :meth:`shifted_factorization` instead of the dense :meth:`jac`."""
        return _structured(self.problem)

    def shifted_factorization(self):
        """A reusable factorizer of ``W = sigma I - J`` (``J`` this field's Jacobian) for d = 1 densities, in
        O(H log H) per run without any ``n x n`` matrix (:class:`~reluflow.kernels.structured1d.ShiftedSystem`)."""
        from reluflow.kernels.structured1d import ShiftedSystem

        return ShiftedSystem(self.problem.table_arrays, self.problem.width, self.name)

    def compiled(self):
        """This field for the solvers' compiled stage loops (:mod:`reluflow.dynamics.compiled_field`): d = 1 laws
        with a density on the compiled backend; ``None`` for the others (they take the general path)."""
        problem = self.problem
        if problem.table is None or problem.input_dim != 1 or problem.backend != "numba":
            return None
        from reluflow.dynamics.compiled_field import StandardField1D
        from reluflow.kernels.jacobian1d_numba import kernel_arguments

        return StandardField1D(problem.width, problem.compiled_arguments, kernel_arguments(problem.table_arrays))

    def prepare(self, theta0: np.ndarray) -> np.ndarray:
        """Initial states for this flow (the standard flow starts where it is told)."""
        return np.array(theta0, dtype=float, copy=True)


class NormalizedFlow:
    """The normalized gradient flow of EJRW on ``M``: ``dTheta/dt = -P(Theta) G(Theta)``.

    Along it ``dL/dt = -|P G|^2`` and every ``|u_i|`` is conserved. Initial states are first mapped
    onto ``M`` by :func:`project_to_manifold`, which keeps their realization (and so their risk).
    """

    name = "normalized"

    def __init__(self, problem):
        self.problem = problem

    def evaluate(self, theta: np.ndarray) -> FlowEvaluation:
        risk, grad = self.problem.risk_and_gradient(theta)
        return FlowEvaluation(risk=risk, gradient=grad, velocity=-tangent_projection(self.problem, theta, grad))

    def rhs(self, theta: np.ndarray) -> np.ndarray:
        out = tangent_projection(self.problem, theta, _gradient(self.problem, theta))
        return np.negative(out, out=out)

    @property
    def structured(self) -> bool:
        """Whether stiff solvers should use :meth:`shifted_factorization` instead of the dense :meth:`jac`."""
        return _structured(self.problem)

    def shifted_factorization(self):
        """A reusable factorizer of ``W = sigma I - J`` for this field (:meth:`StandardFlow.shifted_factorization`)."""
        from reluflow.kernels.structured1d import ShiftedSystem

        return ShiftedSystem(self.problem.table_arrays, self.problem.width, self.name)

    def jac(self, theta: np.ndarray) -> np.ndarray:
        """``dF/dtheta`` of ``F = -P G`` (for stiff solvers), from the exact Jacobian ``J = dG/dtheta``.

        With ``s_i = (u_i . g_{u_i}) / |u_i|^2``, ``F_{u_i} = -(g_{u_i} - s_i u_i)`` and, differentiating,
        ``dF_{u_i} = -(I - u_i u_i^T / |u_i|^2) dg_{u_i} + (u_i g_{u_i}^T / |u_i|^2 - 2 s_i u_i u_i^T / |u_i|^2
        + s_i I) du_i``: the rows of ``u_i`` are ``-P J`` plus that matrix in the ``(u_i, u_i)`` block; the rows
        of ``V`` and ``c`` are ``-J``. A block with ``u_i = 0`` (left unchanged by ``P``) has ``-J`` rows.
        """
        theta = np.asarray(theta, dtype=float)
        grad = _gradient(self.problem, theta)
        jac_g = _gradient_jacobian(self.problem, theta)
        idx = self.problem.layout.neuron_blocks()  # (H, q)
        u = theta[..., idx]  # (..., H, q)
        gu = grad[..., idx]
        uu = np.sum(u * u, axis=-1)  # (..., H)
        live = uu > 0
        inv = np.divide(1.0, uu, out=np.zeros_like(uu), where=live)
        s = np.sum(gu * u, axis=-1) * inv
        rows = jac_g[..., idx, :]  # (..., H, q, n): dg_u
        along = np.einsum("...hq,...hqn->...hn", u, rows) * inv[..., None]  # u^T dg_u / |u|^2
        out = -jac_g
        out[..., idx, :] = -(rows - u[..., None] * along[..., None, :])
        eye = np.eye(idx.shape[1])
        block = (u[..., :, None] * gu[..., None, :] - 2.0 * s[..., None, None] * u[..., :, None] * u[..., None, :]) \
            * inv[..., None, None] + s[..., None, None] * eye
        out[..., idx[:, :, None], idx[:, None, :]] += block
        return out

    def prepare(self, theta0: np.ndarray) -> np.ndarray:
        return project_to_manifold(self.problem, theta0)

    def retract(self, theta: np.ndarray) -> np.ndarray:
        """Back onto ``M`` after a step of a solver that does not conserve ``|u_i|`` exactly (realization
        and risk unchanged): :func:`project_to_manifold`."""
        return project_to_manifold(self.problem, theta)


FLOWS = {"standard": StandardFlow, "normalized": NormalizedFlow}


def make_flow(name: str, problem):
    """The vector field called ``name`` (``"standard"`` or ``"normalized"``) for ``problem``."""
    try:
        return FLOWS[name](problem)
    except KeyError:
        raise ValueError(f"flow: unknown flow {name!r}; expected one of {sorted(FLOWS)}") from None
