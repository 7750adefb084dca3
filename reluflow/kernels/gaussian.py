"""Exact risk, generalized gradient and its Jacobian for Gaussian inputs: the numpy reference path.

Problem (MATH.md sections 1, 2 and "Gaussian inputs"). ``N(x) = c + V relu(W x + b)``, ``x ~ N(mean, cov)``
in ``R^d``, target ``f_m(x) = x^T Q[m] x + A[m].x + c0[m] + sum_j TV[m, j] relu(TW[j].x + Tb[j])``,
risk ``L = E |N(x) - f(x)|^2``, generalized gradient ``G`` with strict active sets (relu'(0) = 0).

Whitening. ``x = mean + L u``, ``L L^T = cov`` (Cholesky), ``u ~ N(0, I)``. Every neuron ``p`` (the ``H``
student neurons, then the ``Ht`` teacher neurons) has the preactivation ``z_p = a_p.u + beta_p`` with
``a_p = L^T w_p``, ``beta_p = b_p + w_p.mean``; write ``s_p = |a_p|``, ``e_p = a_p / s_p``, ``h_p = beta_p / s_p``
(``z_p / s_p`` is a standard normal shifted by ``h_p``: the neuron is active with probability ``Phi(h_p)``).
The residual is ``r_m = P_m(u) + sum_q C[m, q] relu(z_q)`` with ``C = [V | -TV]`` and the quadratic
``P_m = gamma_m + alpha_m.u + u^T B_m u`` (``B_m = -L^T Q_m L``, ``alpha_m = -L^T (A_m + 2 Q_m mean)``,
``gamma_m = c_m - c0_m - A_m.mean - mean^T Q_m mean``). ``theta' = (a, beta, V, c)`` depends linearly on
``theta``: ``theta' = T theta``, so ``G = T^T G'`` (``G_W[i] = L g_a[i] + mean G_b[i]``) and ``J = T^T J' T``.

Every expectation is reduced to one or two standard normals by Stein's identity ``E[u g(u)] = E[grad g]``
(``E[u 1_i] = e_i phi(h_i)``, ``E[u relu_q] = a_q Phi(h_q)``, ``E[u 1_i relu_q] = e_i Dn(i, q) + a_q P(i, q)``,
...) and by conditioning on ``z_i = 0`` (``u = -h_i e_i + y``, ``y ~ N(0, I - e_i e_i^T)``). For a pair
``(p, q)`` with ``s_p, s_q > 0``, ``(X, Y) = (e_p.u, e_q.u)`` is standard bivariate normal with correlation
``rho = e_p.e_q`` and ``A = {X > -h_p, Y > -h_q}``. With ``r = sqrt(1 - rho^2)``, ``t_pq = (h_q - rho h_p) / r``
(so that ``P(z_q > 0 | z_p = 0) = Phi(t_pq)``):

    P(p, q)  = E[1_p 1_q]        = BVN(h_p, h_q; rho)                          (Genz's algorithm)
    M1(p, q) = E[1_p relu_q]     = s_q (rho phi_p Phi(t_pq) + phi_q Phi(t_qp) + h_q P)
    K(p, q)  = E[relu_p relu_q]  = s_p s_q ((rho + h_p h_q) P + h_q phi_p Phi(t_pq) + h_p phi_q Phi(t_qp)
                                            + r phi_p phi(t_pq))
    CR(p, q) = E[relu_q | z_p = 0] = s_q (r phi(t_pq) + (h_q - rho h_p) Phi(t_pq)),  Dn = phi_p CR
    U(p, q)  = E[u 1_p 1_q]      = e_p phi_p Phi(t_pq) + e_q phi_q Phi(t_qp)
    W(p, q)  = E[u u^T 1_p 1_q]  = P I - h_p phi_p Phi(t_pq) e_p e_p^T - h_q phi_q Phi(t_qp) e_q e_q^T
                                   + (phi_p phi(t_pq) / r) (e_q e_p^T + e_p e_q^T - rho (e_p e_p^T + e_q e_q^T))

(``phi_p = phi(h_p)``, ``Phi`` and ``phi`` the standard normal cdf and density). Limits, evaluated exactly:
``r = 0`` and ``rho = +1`` (parallel; every pair in d = 1, and ``p = q``): ``A = {X > -min(h_p, h_q)}``;
``rho = -1`` (anti-parallel): ``A = {-h_p < X < h_q}``, an interval, possibly empty; ``s_p = 0``
(``w_p = 0``): the neuron is the constant ``relu(beta_p)``, active everywhere or nowhere, and the pair
expectations factorize. Near the limits ``1 - rho = |e_q - e_p|^2 / 2`` and ``1 + rho = |e_q + e_p|^2 / 2``
are formed from the difference (sum) of the unit vectors, never as ``1 - rho``; ``t_pq`` is
``((h_q - h_p) + (1 - rho) h_p) / r`` (``((h_q + h_p) - (1 + rho) h_p) / r`` when ``rho < 0``), and the last
matrix of ``W`` is ``(1 - rho)(e_p e_p^T + e_q e_q^T) - (e_q - e_p)(e_q - e_p)^T`` (or ``(e_q + e_p)(...)^T -
(1 + rho)(...)``), of size ``O(r^2)`` and computed to ``O(eps r)``: no accuracy is lost as ``rho -> +-1``
beyond the conditioning of the problem itself. Upper tails use ``Phi(-h) = erfc(h / sqrt 2) / 2``,
never ``1 - Phi(h)``; interval probabilities subtract the two smaller tails.

Risk and gradient (``E[P_m] = gamma_m + tr B_m``, ``B_ee = e^T B e``):

    L       = sum_m ( E[P_m^2] + sum_q C[m,q] (2 E[P_m relu_q] + sum_p C[m,p] K(p,q)) )
    E[P^2]  = (gamma + tr B)^2 + |alpha|^2 + 2 tr(B^2)
    E[P relu_q] = (gamma + tr B) R0_q + s_q (alpha.e_q) Phi_q + s_q B_ee phi_q,    R0_q = E[relu_q] = s_q (phi_q + h_q Phi_q)
    S0[m,i] = E[1_i r_m]   = (gamma + tr B) Phi_i + (alpha.e_i) phi_i - B_ee h_i phi_i + sum_q C[m,q] M1(i,q)
    S1[m,i] = E[u 1_i r_m] = phi_i e_i (gamma + tr B - h_i alpha.e_i + (h_i^2 - 1) B_ee) + Phi_i alpha
                             + 2 phi_i B e_i + sum_q C[m,q] (e_i Dn(i,q) + a_q P(i,q))
    S2[m,i] = E[relu_i r_m] = E[P_m relu_i] + sum_q C[m,q] K(i,q)
    G_b[i] = 2 sum_m V[m,i] S0[m,i],  g_a[i] = 2 sum_m V[m,i] S1[m,i],  G_V = 2 S2,  G_c[m] = 2 E[r_m].

Jacobian (see :func:`gradient_jacobian`): the Gauss-Newton part ``2 E[dN^T dN]`` (``2 (V_i.V_j) W(i,j)``,
``2 (V_i.V_j) U(i,j)``, ``2 (V_i.V_j) P(i,j)``, ``2 V[m,i] (e_i Dn(i,j) + a_j P(i,j))``, ``2 V[m,i] M1(i,j)``,
``2 K(i,j)``, ...), the terms ``2 S1``, ``2 S0`` of ``d^2 N / (d w_i d V[m,i])``, and the moving-boundary terms
``2 E[delta(z_i) (1, u, u u^T) V_i.r] = (2 phi_i / s_i) E[(1, u, u u^T) V_i.r | z_i = 0]``.

Accuracy. Every quantity is a sum of terms bounded by its natural scale (the expectation of the absolute
values of its integrand's terms), each computed to a few ulps, except: the closed forms of truncated
moments cancel in the far tails, so relative to the natural scale the error of a neuron ``|h|`` standard
deviations into its dead side may grow like ``|h|^3 eps`` (a bound: 1e-13 at ``|h| = 8``; measured below
1e-15 there); the risk is a sum of terms of size ``E[(|N| + |f|)^2]``, so a risk far below that scale (a
student close to its teacher) is resolved only to ``eps E[(|N| + |f|)^2]``; and the bivariate normal
probability is accurate to about 1e-16 absolute and to 1e-13 of the smaller marginal tail for thresholds
within 10 standard deviations (measured: 1.3e-16, 5e-14; :func:`bivariate_normal_upper`).

Batching. ``theta`` has any leading batch shape. All reductions over ``d``, neurons and outputs are
explicit sums in a fixed order over the small axes, elementwise across runs (no BLAS), and the
transcendental functions are applied to contiguous arrays, so each run's numbers are bitwise
independent of the batch. :mod:`reluflow.kernels.gaussian_numba` computes the same numbers with compiled
per-run kernels (same formulas, same order of operations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import erfc

from reluflow.model.network import check_theta, n_params, unpack

__all__ = [
    "target_terms",
    "GaussianTarget",
    "Prepared",
    "bivariate_normal_upper",
    "check_inputs",
    "evaluate_target",
    "gradient_jacobian",
    "normal_cdf",
    "normal_pdf",
    "risk_and_gradient",
]

SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
SQRT_2PI = 2.5066282746310002
TWO_PI = 6.283185307179586
INV_FOUR_PI = 0.07957747154594767
#: Genz's switch between the two representations of the bivariate normal probability
BVN_SWITCH = 0.925
_x, _w = np.polynomial.legendre.leggauss(20)
#: 20-point Gauss-Legendre rule on [0, 1]: nodes (1 + x) / 2 and weights w (summing to 2)
GL_HALF_NODES = 0.5 * (1.0 + _x)
GL_WEIGHTS = _w.copy()
for _array in (GL_HALF_NODES, GL_WEIGHTS):
    _array.setflags(write=False)
del _x, _w, _array


# ---- target -------------------------------------------------------------------------------------------


def _float_array(value, name: str) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: must be an array of numbers: {err}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: entries must be finite")
    return array


@dataclass(frozen=True, eq=False)
class GaussianTarget:
    """``f_m(x) = x^T Q[m] x + A[m].x + c0[m] + sum_j TV[m, j] relu(TW[j].x + Tb[j])``, ``f: R^d -> R^k``.

    A quadratic polynomial plus a ReLU teacher network with ``Ht >= 0`` neurons: the canonical form of
    every target the package offers for Gaussian inputs (affine: ``Q = 0``, ``Ht = 0``).

    Attributes (float64, read-only copies): ``Q (k, d, d)``, stored as its symmetric part
    ``(Q + Q^T) / 2`` (the only part ``x^T Q x`` sees; unchanged if ``Q`` is symmetric); ``A (k, d)``;
    ``c0 (k,)``; ``TW (Ht, d)``; ``Tb (Ht,)``; ``TV (k, Ht)``. Inconsistent shapes or non-finite entries
    raise ``ValueError`` naming the field. :meth:`from_pieces` builds one from its pieces.
    """

    Q: np.ndarray
    A: np.ndarray
    c0: np.ndarray
    TW: np.ndarray
    Tb: np.ndarray
    TV: np.ndarray

    def __post_init__(self):
        arrays = {
            name: _float_array(getattr(self, name), f"target.{name}") for name in ("Q", "A", "c0", "TW", "Tb", "TV")
        }
        Q = arrays["Q"]
        if Q.ndim != 3 or Q.shape[1] != Q.shape[2] or Q.shape[0] < 1 or Q.shape[1] < 1:
            raise ValueError(f"target.Q: expected shape (k, d, d) with k, d >= 1, got {Q.shape}")
        k, d = Q.shape[0], Q.shape[1]
        ht = arrays["TW"].shape[0] if arrays["TW"].ndim == 2 else -1
        expected = {"A": (k, d), "c0": (k,), "TW": (max(ht, 0), d), "Tb": (max(ht, 0),), "TV": (k, max(ht, 0))}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(
                    f"target.{name}: expected shape {shape} (k = {k}, d = {d} from Q), got {arrays[name].shape}"
                )
        arrays["Q"] = 0.5 * (Q + np.swapaxes(Q, 1, 2))
        for name, array in arrays.items():
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def input_dim(self) -> int:
        return int(self.Q.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.Q.shape[0])

    @property
    def teacher_width(self) -> int:
        return int(self.TW.shape[0])

    @classmethod
    def from_pieces(
        cls, d: int, k: int = 1, *, quadratic=None, linear=None, constant=None, teacher=None
    ) -> GaussianTarget:
        """The sum of the given pieces (absent pieces are zero) as a target ``R^d -> R^k``.

        quadratic : ``Q`` of shape ``(k, d, d)`` (or ``(d, d)`` when ``k = 1``).
        linear : ``A`` of shape ``(k, d)`` (or ``(d,)`` when ``k = 1``).
        constant : ``c0`` of shape ``(k,)``, or a number (every output).
        teacher : ``(TW, Tb, TV)``, shapes ``(Ht, d)``, ``(Ht,)``, ``(k, Ht)`` (``TV`` may be ``(Ht,)`` when ``k = 1``):
            the network ``x -> TV relu(TW x + Tb)``.
        """
        for name, value in (("d", d), ("k", k)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")

        def piece(value, name, shape):
            if value is None:
                return np.zeros(shape)
            array = _float_array(value, name)
            if array.shape == shape[1:] and shape[0] == 1 and name != "constant":
                array = array[None]
            if name == "constant" and array.ndim == 0:
                array = np.full(shape, float(array))
            if array.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
            return array

        Q = piece(quadratic, "quadratic", (k, d, d))
        A = piece(linear, "linear", (k, d))
        c0 = piece(constant, "constant", (k,))
        if teacher is None:
            TW, Tb, TV = np.zeros((0, d)), np.zeros(0), np.zeros((k, 0))
        else:
            try:
                TW, Tb, TV = teacher
            except (TypeError, ValueError):
                raise ValueError("teacher: must be a triple (TW, Tb, TV)") from None
            TW, Tb, TV = (_float_array(x, f"teacher.{n}") for x, n in ((TW, "TW"), (Tb, "Tb"), (TV, "TV")))
            if TW.ndim != 2 or TW.shape[1] != d:
                raise ValueError(f"teacher.TW: expected shape (Ht, d = {d}), got {TW.shape}")
            if k == 1 and TV.ndim == 1:
                TV = TV[None]
        return cls(Q=Q, A=A, c0=c0, TW=TW, Tb=Tb, TV=TV)


def evaluate_target(target: GaussianTarget, x) -> np.ndarray:
    """``f(x)`` at points ``x (P, d)``; returns ``(P, k)``.

    ``f_m = c0_m + sum_j A[m,j] x_j + sum_j x_j sum_l Q[m,j,l] x_l + sum_t TV[m,t] relu(Tb_t + sum_j TW[t,j] x_j)``,
    every sum accumulated in the order written (no BLAS), so each point's value is independent of the others.
    """
    if not isinstance(target, GaussianTarget):
        raise ValueError(f"target: must be a GaussianTarget, got {type(target).__name__}")  # noqa: TRY004  (the package reports every bad argument as ValueError)
    x = _float_array(x, "x")
    d, k = target.input_dim, target.output_dim
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x: expected shape (P, d = {d}), got {x.shape}")
    out = np.empty((x.shape[0], k))
    hidden = []
    for t in range(target.teacher_width):
        z = np.full(x.shape[0], target.Tb[t])
        for j in range(d):
            z = z + target.TW[t, j] * x[:, j]
        hidden.append(np.maximum(z, 0.0))
    for m in range(k):
        value = np.full(x.shape[0], target.c0[m])
        for j in range(d):
            value = value + target.A[m, j] * x[:, j]
        for j in range(d):
            inner = target.Q[m, j, 0] * x[:, 0]
            for l in range(1, d):
                inner = inner + target.Q[m, j, l] * x[:, l]
            value = value + x[:, j] * inner
        for t in range(target.teacher_width):
            value = value + target.TV[m, t] * hidden[t]
        out[:, m] = value
    return out


# ---- inputs, whitening ------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """The theta-independent data of a problem, in whitened coordinates ``x = mean + L u``."""

    L: np.ndarray  # (d, d) lower Cholesky factor of cov
    mean: np.ndarray  # (d,)
    teacher_a: np.ndarray  # (Ht, d): L^T TW_t
    teacher_beta: np.ndarray  # (Ht,): Tb_t + TW_t . mean
    TV: np.ndarray  # (k, Ht)
    alpha: np.ndarray  # (k, d): -L^T (A_m + 2 Q_m mean)
    B: np.ndarray  # (k, d, d): -L^T Q_m L (symmetric)
    gamma0: np.ndarray  # (k,): c0_m + A_m . mean + mean^T Q_m mean  (gamma_m = c_m - gamma0_m)
    trace_B: np.ndarray  # (k,)
    trace_B2: np.ndarray  # (k,): tr(B_m^2) = sum B_m[i, j]^2


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = cov`` (Cholesky-Banachiewicz, sums in a fixed order, no LAPACK).

    Uses the lower triangle of ``cov``; ``ValueError`` if a pivot is not positive (``cov`` not positive definite).
    """
    d = cov.shape[0]
    L = np.zeros((d, d))
    for i in range(d):
        for j in range(i + 1):
            acc = cov[i, j]
            for t in range(j):
                acc -= L[i, t] * L[j, t]
            if i == j:
                if not acc > 0.0:
                    raise ValueError(f"cov: not positive definite (pivot {i} is {acc!r})")
                L[i, i] = math.sqrt(acc)
            else:
                L[i, j] = acc / L[j, j]
    return L


def target_terms(target, key: str = "target") -> GaussianTarget:
    """The canonical form of a model target (:mod:`reluflow.model.targets`): ``affine``, ``polynomial`` of
    degree <= 2, ``relu_network``, and their ``sum``/``stack``. Any other kind has no closed-form Gaussian
    expectation here: :class:`~reluflow.model.validation.ConfigError` naming ``key``."""
    from reluflow.model import targets as T
    from reluflow.model.validation import fail

    d, k = target.input_dim, target.output_dim
    Q, A, c0 = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    teachers = []

    def add(node, rows, path):
        nonlocal Q, A, c0
        if isinstance(node, T.Affine):
            A[rows] += node.slope
            c0[rows] += node.intercept
        elif isinstance(node, T.Polynomial) and node.degree <= 2:  # d = 1, increasing powers
            coefficients = np.zeros((node.output_dim, 3))
            coefficients[:, : node.coefficients.shape[1]] = node.coefficients
            c0[rows] += coefficients[:, 0]
            A[rows, 0] += coefficients[:, 1]
            Q[rows, 0, 0] += coefficients[:, 2]
        elif isinstance(node, T.PolynomialTerms) and node.degree <= 2:
            for powers, coefficient in zip(node.powers, node.coefficients):
                nonzero = np.flatnonzero(powers)
                if powers.sum() == 0:
                    c0[rows] += coefficient
                elif powers.sum() == 1:
                    A[rows, nonzero[0]] += coefficient
                elif nonzero.size == 1:  # x_j^2
                    Q[rows, nonzero[0], nonzero[0]] += coefficient
                else:  # x_i x_j, i != j: split over the two symmetric entries
                    i, j = nonzero
                    Q[rows, i, j] += 0.5 * coefficient
                    Q[rows, j, i] += 0.5 * coefficient
        elif isinstance(node, T.ReluNetwork):
            V = np.zeros((k, node.width))
            V[rows] = node.V
            teachers.append((node.W, node.b, V))
            c0[rows] += node.c
        elif isinstance(node, T.Sum):
            for t, term in enumerate(node.terms):
                add(term, rows, f"{path}.terms[{t}]")
        elif isinstance(node, T.Stack):
            for m, component in enumerate(node.components):
                add(component, [rows[m]], f"{path}.components[{m}]")
        else:
            fail(f"{path}.kind", f"{node.kind!r} (degree {node.degree}) has no exact expectation under a gaussian "
                                 f"input law; use affine, polynomial of degree <= 2, relu_network or their sum")

    add(target, list(range(k)), key)
    if teachers:
        teacher = tuple(np.concatenate(parts, axis=-1 if i == 2 else 0) for i, parts in enumerate(zip(*teachers)))
    else:
        teacher = None
    return GaussianTarget.from_pieces(d, k, quadratic=Q, linear=A, constant=c0, teacher=teacher)


def check_inputs(theta, d, H, k, mean, cov, target):
    """Validate the arguments; returns ``(theta2d (M, n) C-contiguous, batch shape, Prepared)``.

    ``ValueError`` naming the argument: ``d, H, k`` positive integers; ``target`` a :class:`GaussianTarget`
    with input dimension ``d`` and output dimension ``k``; ``mean`` finite of shape ``(d,)``; ``cov`` finite,
    ``(d, d)``, symmetric (to 64 eps of its largest entry; the lower triangle is used) and positive definite;
    ``theta`` finite of shape ``(..., n)``, ``n = d H + H + k H + k``.
    """
    d, H, k = _positive_int(d, "d"), _positive_int(H, "H"), _positive_int(k, "k")
    if not isinstance(target, GaussianTarget):
        raise ValueError(f"target: must be a GaussianTarget, got {type(target).__name__}")  # noqa: TRY004  (the package reports every bad argument as ValueError)
    if target.input_dim != d or target.output_dim != k:
        raise ValueError(f"target: maps R^{target.input_dim} -> R^{target.output_dim}, expected R^{d} -> R^{k}")
    mean = _float_array(mean, "mean").reshape(-1) if np.ndim(mean) <= 1 else _float_array(mean, "mean")
    if mean.shape != (d,):
        raise ValueError(f"mean: expected shape ({d},), got {mean.shape}")
    cov = _float_array(cov, "cov")
    if cov.shape != (d, d):
        raise ValueError(f"cov: expected shape ({d}, {d}), got {cov.shape}")
    if np.max(np.abs(cov - cov.T)) > 64 * np.finfo(float).eps * np.max(np.abs(cov)):
        raise ValueError("cov: must be symmetric")
    L = cholesky(cov)
    theta = check_theta(theta, n_params(d, H, k))
    batch = theta.shape[:-1]
    theta2d = np.ascontiguousarray(theta.reshape(-1, theta.shape[-1]), dtype=np.float64)
    return theta2d, batch, _prepare(L, mean, target)


def _prepare(L: np.ndarray, mean: np.ndarray, target: GaussianTarget) -> Prepared:
    """The whitened target (module docstring), every sum in a fixed order."""
    d, k, ht = target.input_dim, target.output_dim, target.teacher_width
    Q, A, c0 = target.Q, target.A, target.c0
    teacher_a = np.zeros((ht, d))
    teacher_beta = np.empty(ht)
    for t in range(ht):
        teacher_a[t] = _whiten_rows(L, target.TW[t][None])[0]
        acc = target.Tb[t]
        for j in range(d):
            acc += mean[j] * target.TW[t, j]
        teacher_beta[t] = acc
    alpha = np.empty((k, d))
    B = np.empty((k, d, d))
    gamma0 = np.empty(k)
    for m in range(k):
        g = np.empty(d)
        for i in range(d):
            acc = 0.0
            for j in range(d):
                acc += Q[m, i, j] * mean[j]
            g[i] = A[m, i] + 2.0 * acc
        alpha[m] = -_whiten_rows(L, g[None])[0]
        QL = np.zeros((d, d))  # (Q L)[i, l] = sum_{j >= l} Q[i, j] L[j, l]
        for i in range(d):
            for l in range(d):
                acc = 0.0
                for j in range(l, d):
                    acc += Q[m, i, j] * L[j, l]
                QL[i, l] = acc
        LQL = _whiten_rows(L, QL.T)  # row l: L^T (Q L)[:, l] = (L^T Q L)[:, l]
        B[m] = -0.5 * (LQL + LQL.T)
        acc = c0[m]
        for i in range(d):
            acc += A[m, i] * mean[i]
        for i in range(d):
            inner = 0.0
            for j in range(d):
                inner += Q[m, i, j] * mean[j]
            acc += mean[i] * inner
        gamma0[m] = acc
    trace_B = np.array([sum(B[m, i, i] for i in range(d)) for m in range(k)]).reshape(k)
    trace_B2 = np.array([sum(B[m, i, j] * B[m, i, j] for i in range(d) for j in range(d)) for m in range(k)]).reshape(k)
    out = Prepared(L, mean.copy(), teacher_a, teacher_beta, np.array(target.TV), alpha, B, gamma0, trace_B, trace_B2)
    for array in out:
        array.setflags(write=False)
    return out


def _whiten_rows(L: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a[..., k] = sum_{l >= k} L[l, k] w[..., l]`` (``a = L^T w`` per row), summed in increasing ``l``."""
    d = L.shape[0]
    a = np.empty(w.shape)
    for kk in range(d):
        acc = L[kk, kk] * w[..., kk]
        for l in range(kk + 1, d):
            acc = acc + L[l, kk] * w[..., l]
        a[..., kk] = acc
    return a


def _unwhiten_rows(L: np.ndarray, mean: np.ndarray, g_a: np.ndarray, g_beta: np.ndarray) -> np.ndarray:
    """``T^T`` on one neuron block: ``g_w[..., l] = sum_{k <= l} L[l, k] g_a[..., k] + mean_l g_beta``."""
    d = L.shape[0]
    g = np.empty(g_a.shape)
    for l in range(d):
        acc = L[l, 0] * g_a[..., 0]
        for kk in range(1, l + 1):
            acc = acc + L[l, kk] * g_a[..., kk]
        g[..., l] = acc + mean[l] * g_beta
    return g


# ---- special functions --------------------------------------------------------------------------------


def normal_cdf(x):
    """``Phi(x) = erfc(-x / sqrt 2) / 2``: relative accuracy in both tails (``Phi(-x)`` is never ``1 - Phi(x)``)."""
    return 0.5 * erfc(-SQRT1_2 * np.asarray(x, dtype=float))


def normal_pdf(x):
    """``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``."""
    x = np.asarray(x, dtype=float)
    return INV_SQRT_2PI * np.exp(np.ascontiguousarray(-0.5 * (x * x)))


def _exp(x):
    return np.exp(np.ascontiguousarray(x))


def bivariate_normal_upper(h, k, rho, one_minus_rho=None, one_plus_rho=None) -> np.ndarray:
    """``P(X > h, Y > k)`` for standard normals ``X, Y`` with correlation ``rho`` in ``(-1, 1)`` (elementwise).

    Genz's algorithm (A. Genz, Statistics and Computing 14 (2004) 251-260, after Drezner & Wesolowsky 1990):

    - ``|rho| < 0.925``: ``Phi(-h) Phi(-k) + (1 / 2 pi) int_0^{asin rho} exp(-(h^2 - 2 h k sin t + k^2) / (2 cos^2 t)) dt``;
    - ``|rho| >= 0.925``: ``Phi(-max(h, k))`` (``rho > 0``) or the interval probability ``P(h < X < -k)``
      (``rho < 0``) minus the probability of a thin wedge, integrated in ``sqrt(1 - rho^2)`` after subtracting
      its two-term asymptotic expansion, which is integrated in closed form.

    Changes: both integrals use two panels of 20 Gauss-Legendre points (Genz: one panel of 6, 12 or 20,
    enough for 1e-16 absolute but not for tail probabilities, whose integrand peaks with a width
    ~ 1 / max(|h|, |k|): one panel loses 1e-8 of the smaller marginal at ``|h|, |k| = 10``); the cut-offs at
    ``exp(-100)`` are dropped except the one that prevents an overflow; ``1 - rho^2 = (1 - rho)(1 + rho)``
    from the accurate factors ``one_minus_rho``, ``one_plus_rho`` when given (else computed from ``rho``);
    the interval probability is a difference of the two smaller tails.

    Absolute error about 1e-16; relative to ``min(Phi(-h), Phi(-k))``, the natural scale of the probability,
    below 1e-13 for ``|h|, |k| <= 10`` (measured against 40-digit quadrature: 5e-14; ``exp`` of arguments up
    to ``(h^2 + k^2) / 2`` and the cancellation among the terms of the expansion, whose coefficients grow
    like ``h k / 8``, cost a few dozen ulps there).
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (h, k, rho)))
    shape = h.shape
    h, k, rho = (np.ascontiguousarray(v).reshape(-1) for v in (h, k, rho))
    omr = (
        (1.0 - rho)
        if one_minus_rho is None
        else np.broadcast_to(np.asarray(one_minus_rho, dtype=float), shape).reshape(-1)
    )
    opr = (
        (1.0 + rho)
        if one_plus_rho is None
        else np.broadcast_to(np.asarray(one_plus_rho, dtype=float), shape).reshape(-1)
    )
    out = np.empty(h.shape)
    low = np.abs(rho) < BVN_SWITCH
    with np.errstate(over="ignore"):  # exponents may overflow to -inf: exp takes its exact limit 0
        if np.any(low):
            out[low] = _bvn_low(h[low], k[low], rho[low])
        high = ~low
        if np.any(high):
            out[high] = _bvn_high(h[high], k[high], rho[high], omr[high], opr[high])
    return out.reshape(shape)


def _bvn_low(h, k, rho):
    hs = 0.5 * (h * h + k * k)
    hk = h * k
    half_asr = 0.5 * np.arcsin(rho)
    acc = np.zeros(h.shape)
    for panel in (0.0, 1.0):  # two panels [0, asin(rho) / 2], [asin(rho) / 2, asin(rho)]
        for node, weight in zip(GL_HALF_NODES, GL_WEIGHTS):
            sn = np.sin(np.ascontiguousarray(half_asr * (panel + node)))
            acc = acc + weight * _exp((sn * hk - hs) / (1.0 - sn * sn))
    return acc * (half_asr * INV_FOUR_PI) + normal_cdf(-h) * normal_cdf(-k)


def _bvn_high(h, k, rho, omr, opr):
    negative = rho < 0.0
    k = np.where(negative, -k, k)
    hk = h * k
    as_ = omr * opr
    a = np.sqrt(as_)
    bs = (h - k) * (h - k)
    c = (4.0 - hk) / 8.0
    d = (12.0 - hk) / 16.0
    asr = -(bs / as_ + hk) / 2.0
    bvn = a * _exp(asr) * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_ * as_ / 5.0)
    # exp(-hk/2) Phi(-b/a): for hk <= -100 the product is below exp(-1300) (b^2 >= 4 |hk|, a^2 <= 0.15)
    moderate = hk > -100.0
    b = np.sqrt(bs)
    tail = (
        _exp(np.where(moderate, -hk / 2.0, 0.0))
        * SQRT_2PI
        * normal_cdf(-b / a)
        * b
        * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0)
    )
    bvn = bvn - np.where(moderate, tail, 0.0)
    half_a = 0.5 * a
    acc = np.zeros(h.shape)
    for panel in (0.0, 1.0):  # two panels [0, a/2], [a/2, a] in x = sqrt(xs)
        for node, weight in zip(GL_HALF_NODES, GL_WEIGHTS):
            x = half_a * (panel + node)
            xs = x * x
            rs = np.sqrt(1.0 - xs)
            asr_x = -(bs / xs + hk) / 2.0
            sp = 1.0 + c * xs * (1.0 + d * xs)
            opr_s = 1.0 + rs
            # exp(asr) exp(-hk (1 - rs) / (2 (1 + rs))) / rs with 1 - rs = xs / (1 + rs); one exponential (no overflow)
            ep = _exp(asr_x - hk * xs / (2.0 * opr_s * opr_s)) / rs
            acc = acc + weight * (ep - _exp(asr_x) * sp)
    wedge = -(bvn + (0.5 * half_a) * acc) / TWO_PI
    upper = np.maximum(h, k)
    positive_part = wedge + normal_cdf(-upper)
    lo, hi = h, k  # rho < 0: P(X > h, Y > -k) = P(h < X < k) - wedge
    interval = np.where(
        lo >= 0.0,
        normal_cdf(-lo) - normal_cdf(-hi),
        np.where(hi <= 0.0, normal_cdf(hi) - normal_cdf(lo), 1.0 - normal_cdf(lo) - normal_cdf(-hi)),
    )
    negative_part = -wedge + np.where(hi > lo, interval, 0.0)
    return np.clip(np.where(negative, negative_part, positive_part), 0.0, 1.0)


# ---- neurons and pairs (module docstring) ---------------------------------------------------------------

#: a neuron whose threshold lies more than this many standard deviations from 0 is the constant it is to
#: double precision (``phi(h)`` underflows beyond 38.6, ``Phi(h)`` is 0 or 1): it is handled as ``w = 0``
#: (the exact limit of every formula), which keeps ``h^2`` finite
CONSTANT_NEURON_H = 1e150
#: a pair with ``r = sqrt(1 - rho^2)`` at most this is handled as exactly parallel or anti-parallel: the
#: difference is ``O(r)``, and ``r^2`` and the nodes of the wedge integral stay above the underflow threshold
PARALLEL_R = 1e-150


class Neurons(NamedTuple):
    """Per-run, per-neuron data: ``H`` student neurons then the ``Ht`` teacher neurons (``N = H + Ht``)."""

    a: np.ndarray  # (M, N, d) whitened inner weights L^T w
    beta: np.ndarray  # (M, N)
    C: np.ndarray  # (M, k, N) residual coefficients [V | -TV]
    gamma: np.ndarray  # (M, k) c - gamma0
    s: np.ndarray  # (M, N) |a|
    e: np.ndarray  # (M, N, d) a / s (0 for a constant neuron)
    h: np.ndarray  # (M, N) beta / s (0 for a constant neuron)
    constant: np.ndarray  # (M, N) bool: s = 0 (or |h| > CONSTANT_NEURON_H)
    Phi: np.ndarray  # P(z > 0)
    PhiC: np.ndarray  # P(z <= 0), never 1 - Phi
    phi: np.ndarray  # phi(h) (0 for a constant neuron)
    psi: np.ndarray  # E[relu(Z + h)] = phi(h) + h Phi(h)
    R0: np.ndarray  # E[relu(z)]


def neurons(theta2d: np.ndarray, d: int, H: int, k: int, prep: Prepared) -> Neurons:
    """Whitened neurons of ``theta2d (M, n)`` (module docstring)."""
    M = theta2d.shape[0]
    W, b, V, c = unpack(theta2d, d, H, k)
    ht = prep.teacher_beta.shape[0]
    N = H + ht
    a = np.empty((M, N, d))
    a[:, :H] = _whiten_rows(prep.L, W)
    a[:, H:] = prep.teacher_a
    beta = np.empty((M, N))
    acc = b
    for j in range(d):
        acc = acc + prep.mean[j] * W[:, :, j]
    beta[:, :H] = acc
    beta[:, H:] = prep.teacher_beta
    C = np.empty((M, k, N))
    C[:, :, :H] = V
    C[:, :, H:] = -prep.TV
    gamma = c - prep.gamma0
    s2 = a[..., 0] * a[..., 0]
    for j in range(1, d):
        s2 = s2 + a[..., j] * a[..., j]
    s = np.sqrt(s2)
    constant = ~(s > 0.0) | (np.abs(beta) > CONSTANT_NEURON_H * s)
    s_safe = np.where(constant, 1.0, s)
    e = np.where(constant[..., None], 0.0, a / s_safe[..., None])
    h = np.where(constant, 0.0, beta / s_safe)
    Phi = np.where(constant, np.where(beta > 0.0, 1.0, 0.0), normal_cdf(h))
    PhiC = np.where(constant, np.where(beta > 0.0, 0.0, 1.0), normal_cdf(-h))
    phi = np.where(constant, 0.0, normal_pdf(h))
    psi = phi + h * Phi
    R0 = np.where(constant, np.maximum(beta, 0.0), s * psi)
    return Neurons(a, beta, C, gamma, s, e, h, constant, Phi, PhiC, phi, psi, R0)


class Pairs(NamedTuple):
    """Per-run pair quantities over all ``(p, q)`` in ``N x N`` (module docstring)."""

    P: np.ndarray  # E[1_p 1_q] (exactly symmetric)
    M1: np.ndarray  # E[1_p relu_q]
    K: np.ndarray  # E[relu_p relu_q] (exactly symmetric)
    CR: np.ndarray  # E[relu_q | z_p = 0] (0 when p is constant)
    Dn: np.ndarray  # phi_p CR
    # for the Jacobian: U = mu_p e_p + mu_q e_q, W = P I - nu_p e_p e_p^T - nu_q e_q e_q^T + lam X
    mu_p: np.ndarray
    mu_q: np.ndarray
    nu_p: np.ndarray
    nu_q: np.ndarray
    lam: np.ndarray
    X: np.ndarray  # (M, N, N, d, d): (1 - rho)(e_p e_p^T + e_q e_q^T) - (e_q - e_p)(e_q - e_p)^T, or its rho < 0 form
    v: np.ndarray  # (M, N, N, d): e_q - rho e_p (generic pairs; 0 otherwise)
    Phi_t: np.ndarray  # P(z_q > 0 | z_p = 0) for generic pairs
    phi_t_over_r: np.ndarray  # phi(t_pq) / r for generic pairs


def pairs(nr: Neurons, jacobian: bool = False) -> Pairs:
    """The pair expectations of the module docstring, each branch (generic, parallel, anti-parallel,
    constant neuron) evaluated by its own exact formula."""
    M, N, d = nr.e.shape
    e = nr.e
    ep, eq = e[:, :, None, :], e[:, None, :, :]
    rho = ep[..., 0] * eq[..., 0]
    for j in range(1, d):
        rho = rho + ep[..., j] * eq[..., j]
    delta = eq - ep
    sigma = eq + ep
    omr_d = delta[..., 0] * delta[..., 0]
    opr_s = sigma[..., 0] * sigma[..., 0]
    for j in range(1, d):
        omr_d = omr_d + delta[..., j] * delta[..., j]
        opr_s = opr_s + sigma[..., j] * sigma[..., j]
    omr_d = 0.5 * omr_d
    opr_s = 0.5 * opr_s
    pos = rho >= 0.0
    omr = np.where(pos, omr_d, 2.0 - opr_s)
    opr = np.where(pos, 2.0 - omr_d, opr_s)
    r = np.sqrt(omr * opr)

    const_p, const_q = nr.constant[:, :, None], nr.constant[:, None, :]
    either_constant = const_p | const_q
    gen = ~either_constant & (r > PARALLEL_R)
    par = ~either_constant & ~(r > PARALLEL_R) & pos
    anti = ~either_constant & ~(r > PARALLEL_R) & ~pos

    def P_(x):  # per-neuron (M, N) -> p-axis
        return x[:, :, None]

    def Q_(x):  # per-neuron (M, N) -> q-axis
        return x[:, None, :]

    hp, hq = P_(nr.h), Q_(nr.h)
    sp, sq = P_(nr.s), Q_(nr.s)
    phip, phiq = P_(nr.phi), Q_(nr.phi)
    Phip, Phiq = P_(nr.Phi), Q_(nr.Phi)

    # generic: t_pq = (h_q - rho h_p) / r with the numerator formed from the accurate 1 -+ rho
    c_pq = np.where(pos, (hq - hp) + omr * hp, (hq + hp) - opr * hp)
    c_qp = np.where(pos, (hp - hq) + omr * hq, (hp + hq) - opr * hq)
    r_safe = np.where(gen, r, 1.0)
    t_pq = np.where(gen, c_pq / r_safe, 0.0)
    t_qp = np.where(gen, c_qp / r_safe, 0.0)
    Phi_tpq, Phi_tqp = normal_cdf(t_pq), normal_cdf(t_qp)
    phi_tpq = normal_pdf(t_pq)
    upper = np.triu(np.ones((N, N), dtype=bool))
    P_gen = np.zeros((M, N, N))
    once = gen & upper  # P is symmetric: evaluated for p <= q, mirrored
    P_gen[once] = bivariate_normal_upper(
        (-np.broadcast_to(hp, gen.shape))[once],
        (-np.broadcast_to(hq, gen.shape))[once],
        rho[once],
        omr[once],
        opr[once],
    )
    P_gen = np.where(upper, P_gen, np.swapaxes(P_gen, 1, 2))

    # parallel: A = {X > -m}, m = min(h_p, h_q); anti-parallel: A = {-h_p < X < h_q}
    p_is_min = hp <= hq
    m_ = np.where(p_is_min, hp, hq)
    big = np.where(p_is_min, hq, hp)
    Phi_m = np.where(p_is_min, Phip, Phiq)
    phi_m = np.where(p_is_min, phip, phiq)
    psi_m = np.where(p_is_min, P_(nr.psi), Q_(nr.psi))
    nonempty = hp + hq > 0.0
    PhiCp, PhiCq = P_(nr.PhiC), Q_(nr.PhiC)
    P_anti = np.where(
        nonempty, np.where(hp <= 0.0, Phip - PhiCq, np.where(hq <= 0.0, Phiq - PhiCp, 1.0 - PhiCp - PhiCq)), 0.0
    )

    P = np.where(gen, P_gen, np.where(par, Phi_m, np.where(anti, P_anti, Phip * Phiq)))
    M1 = np.where(
        gen,
        sq * (rho * phip * Phi_tpq + phiq * Phi_tqp + hq * P),
        np.where(
            par,
            sq * (psi_m + (hq - m_) * Phi_m),
            np.where(anti, np.where(nonempty, sq * (hq * P + phiq - phip), 0.0), Phip * Q_(nr.R0)),
        ),
    )
    M2_m = (1.0 + m_ * m_) * Phi_m + m_ * phi_m
    K = np.where(
        gen,
        sp * sq * ((rho + hp * hq) * P + hq * phip * Phi_tpq + hp * phiq * Phi_tqp + r * phip * phi_tpq),
        np.where(
            par,
            sp * sq * (M2_m + (big - m_) * psi_m),
            np.where(
                anti,
                np.where(nonempty, sp * sq * ((hp * hq - 1.0) * P + hq * phip + hp * phiq), 0.0),
                P_(nr.R0) * Q_(nr.R0),
            ),
        ),
    )
    K = np.where(upper, K, np.swapaxes(K, 1, 2))  # exactly symmetric: the upper triangle, mirrored
    CR = np.where(
        gen,
        sq * (r * phi_tpq + c_pq * Phi_tpq),
        np.where(
            par,
            sq * np.maximum(hq - hp, 0.0),
            np.where(anti, sq * np.maximum(hq + hp, 0.0), np.where(const_p, 0.0, Q_(nr.R0))),
        ),
    )
    Dn = phip * CR
    if not jacobian:
        return Pairs(P, M1, K, CR, Dn, *([None] * 9))

    phiq_Phiq = phiq * Phi_tqp
    mu_p = np.where(
        gen, phip * Phi_tpq, np.where(par, phi_m, np.where(anti, np.where(nonempty, phip - phiq, 0.0), phip * Phiq))
    )
    mu_q = np.where(gen, phiq_Phiq, np.where(par | anti, 0.0, phiq * Phip))
    nu_p = np.where(
        gen,
        hp * phip * Phi_tpq,
        np.where(par, m_ * phi_m, np.where(anti, np.where(nonempty, hp * phip + hq * phiq, 0.0), Phiq * (hp * phip))),
    )
    nu_q = np.where(gen, hq * phiq_Phiq, np.where(par | anti, 0.0, Phip * (hq * phiq)))
    lam = np.where(gen, phip * phi_tpq / r_safe, 0.0)
    Ep = ep[..., :, None] * ep[..., None, :]
    Eq = eq[..., :, None] * eq[..., None, :]
    X = np.where(
        pos[..., None, None],
        omr[..., None, None] * (Ep + Eq) - delta[..., :, None] * delta[..., None, :],
        sigma[..., :, None] * sigma[..., None, :] - opr[..., None, None] * (Ep + Eq),
    )
    v = np.where(
        gen[..., None], np.where(pos[..., None], delta + omr[..., None] * ep, sigma - opr[..., None] * ep), 0.0
    )
    return Pairs(
        P,
        M1,
        K,
        CR,
        Dn,
        mu_p,
        mu_q,
        nu_p,
        nu_q,
        lam,
        X,
        v,
        np.where(gen, Phi_tpq, 0.0),
        np.where(gen, phi_tpq / r_safe, 0.0),
    )


# ---- risk and gradient ----------------------------------------------------------------------------------


def _dot_last(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sum_j x[..., j] y[..., j]`` accumulated in increasing ``j``."""
    acc = x[..., 0] * y[..., 0]
    for j in range(1, x.shape[-1]):
        acc = acc + x[..., j] * y[..., j]
    return acc


class Polynomial(NamedTuple):
    """Per output ``m``: ``g = gamma_m + tr B_m`` (M,), ``ae = alpha_m.e`` (M, N), ``Be = B_m e`` (M, N, d), ``Bee = e^T B_m e``."""

    g: np.ndarray
    ae: np.ndarray
    Be: np.ndarray
    Bee: np.ndarray


def polynomial_terms(nr: Neurons, prep: Prepared, m: int) -> Polynomial:
    d = nr.e.shape[-1]
    B = prep.B[m]
    Be = np.empty(nr.e.shape)
    for i in range(d):
        Be[..., i] = _dot_last(np.broadcast_to(B[i], nr.e.shape), nr.e)
    return Polynomial(
        nr.gamma[:, m] + prep.trace_B[m],
        _dot_last(np.broadcast_to(prep.alpha[m], nr.e.shape), nr.e),
        Be,
        _dot_last(nr.e, Be),
    )


class Sums(NamedTuple):
    """``S0[m, i] = E[1_i r_m]`` (M, k, H), ``S1[m, i] = E[u 1_i r_m]`` (M, k, H, d), ``S2[m, i] = E[relu_i r_m]``, ``Er[m] = E[r_m]``."""

    S0: np.ndarray
    S1: np.ndarray
    S2: np.ndarray
    Er: np.ndarray
    EPR: np.ndarray  # (M, k, N): E[P_m relu_q]


def sums(nr: Neurons, pr: Pairs, prep: Prepared, H: int) -> tuple[np.ndarray, Sums]:
    """The risk ``(M,)`` and the active-set integrals of the module docstring (sums over ``q`` in increasing order)."""
    M, k, N = nr.C.shape
    d = nr.e.shape[-1]
    S0 = np.empty((M, k, H))
    S1 = np.empty((M, k, H, d))
    S2 = np.empty((M, k, H))
    Er = np.empty((M, k))
    EPR = np.empty((M, k, N))
    hi, phii, Phii, ei = nr.h[:, :H], nr.phi[:, :H], nr.Phi[:, :H], nr.e[:, :H]
    risk = None
    for m in range(k):
        pol = polynomial_terms(nr, prep, m)
        g = pol.g[:, None]
        EPR[:, m] = g * nr.R0 + (nr.s * pol.ae) * nr.Phi + (nr.s * pol.Bee) * nr.phi
        acc = pol.g * pol.g + sum(prep.alpha[m, j] * prep.alpha[m, j] for j in range(d)) + 2.0 * prep.trace_B2[m]
        for q in range(N):
            inner = 2.0 * EPR[:, m, q]
            for p in range(N):
                inner = inner + nr.C[:, m, p] * pr.K[:, p, q]
            acc = acc + nr.C[:, m, q] * inner
        risk = acc if risk is None else risk + acc
        ae, Bee, Be = pol.ae[:, :H], pol.Bee[:, :H], pol.Be[:, :H]
        s0 = g * Phii + ae * phii - (Bee * hi) * phii
        s1 = (
            (phii * (g - hi * ae + (hi * hi - 1.0) * Bee))[..., None] * ei
            + Phii[..., None] * prep.alpha[m]
            + (2.0 * phii)[..., None] * Be
        )
        s2 = EPR[:, m, :H]
        er = pol.g
        for q in range(N):
            cq = nr.C[:, m, q]
            s0 = s0 + cq[:, None] * pr.M1[:, :H, q]
            s1 = s1 + cq[:, None, None] * (ei * pr.Dn[:, :H, q, None] + nr.a[:, None, q, :] * pr.P[:, :H, q, None])
            s2 = s2 + cq[:, None] * pr.K[:, :H, q]
            er = er + cq * nr.R0[:, q]
        S0[:, m], S1[:, m], S2[:, m], Er[:, m] = s0, s1, s2, er
    return risk, Sums(S0, S1, S2, Er, EPR)


def _gradient(theta2d, d, H, k, prep, nr, sm) -> np.ndarray:
    """``G = T^T G'``: ``G_W[i] = L g_a[i] + mean G_b[i]``, ``G_b = G_beta``, ``G_V = 2 S2``, ``G_c = 2 E[r]``."""
    M = theta2d.shape[0]
    V = theta2d[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
    g_beta = V[:, 0] * sm.S0[:, 0]
    g_a = V[:, 0, :, None] * sm.S1[:, 0]
    for m in range(1, k):
        g_beta = g_beta + V[:, m] * sm.S0[:, m]
        g_a = g_a + V[:, m, :, None] * sm.S1[:, m]
    g_beta = 2.0 * g_beta
    g_a = 2.0 * g_a
    grad = np.empty_like(theta2d)
    grad[:, : d * H] = _unwhiten_rows(prep.L, prep.mean, g_a, g_beta).reshape(M, d * H)
    grad[:, d * H : d * H + H] = g_beta
    grad[:, d * H + H : d * H + H + k * H] = (2.0 * sm.S2).reshape(M, k * H)
    grad[:, d * H + H + k * H :] = 2.0 * sm.Er
    return grad


def risk_and_gradient(
    theta, d: int, H: int, k: int, mean, cov, target: GaussianTarget
) -> tuple[np.ndarray, np.ndarray]:
    """Exact risk ``L = E|N(x) - f(x)|^2`` and generalized gradient ``G`` for ``x ~ N(mean, cov)`` (numpy).

    Parameters
    ----------
    theta : (..., n) array, ``n = d H + H + k H + k``, layout ``W (H x d) | b | V (k x H) | c`` (MATH.md section 1).
    d, H, k : input dimension, hidden width, output dimension.
    mean : (d,) array; cov : (d, d) symmetric positive definite array.
    target : :class:`GaussianTarget` from ``R^d`` to ``R^k``.

    Returns
    -------
    risk : (...) array; grad : (..., n) array, ``G`` with strict active sets (relu'(0) = 0), in the layout
    of ``theta``. Formulas and accuracy: module docstring. ``ValueError`` names a bad argument.
    """
    theta2d, batch, prep = check_inputs(theta, d, H, k, mean, cov, target)
    with np.errstate(over="ignore"):  # t_pq = c / r may overflow to +-inf for r near 1e-150: Phi, phi take their limits
        nr = neurons(theta2d, d, H, k, prep)
        pr = pairs(nr)
    risk, sm = sums(nr, pr, prep, H)
    grad = _gradient(theta2d, d, H, k, prep, nr, sm)
    return risk.reshape(batch), grad.reshape(batch + (theta2d.shape[1],))


# ---- Jacobian -----------------------------------------------------------------------------------------------


def _outer(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x[..., :, None] * y[..., None, :]


def kink_terms(nr: Neurons, pr: Pairs, prep: Prepared, V: np.ndarray, H: int):
    """``E[V_i.r | z_i = 0]``, ``E[u V_i.r | z_i = 0]``, ``E[u u^T V_i.r | z_i = 0]`` and ``2 phi_i / s_i``.

    Given ``z_i = 0``, ``u = -h_i e_i + y`` with ``y ~ N(0, S)``, ``S = I - e_i e_i^T``. For the quadratic part
    (``p1 = alpha - 2 h B e``): ``E[P] = gamma + tr B - h alpha.e + (h^2 - 1) B_ee``, ``E[u P] = -h E[P] e + S p1``,
    ``E[u u^T P] = (h^2 e e^T + S) E[P] - h (e (S p1)^T + (S p1) e^T) + 2 S B S``. For a neuron ``q``
    (``v = e_q - rho e_i``, ``|v| = r``; ``v = 0`` in the parallel limits and for a constant ``q``):
    ``E[relu_q] = CR``, ``E[u relu_q] = -h CR e + s_q Phi(t) v``, ``E[u u^T relu_q] = CR (I + (h^2 - 1) e e^T)
    - h (e m^T + m e^T) + s_q (phi(t) / r) v v^T`` with ``m = s_q Phi(t) v`` (Stein's identity for ``y``).
    """
    _, k, N = nr.C.shape
    d = nr.e.shape[-1]
    h, e = nr.h[:, :H], nr.e[:, :H]
    ee = _outer(e, e)
    eye = np.eye(d)
    S = eye - ee
    VC = V[:, 0, :, None] * nr.C[:, 0, None, :]
    for m in range(1, k):
        VC = VC + V[:, m, :, None] * nr.C[:, m, None, :]
    k0 = k1 = k2 = None
    for m in range(k):
        pol = polynomial_terms(nr, prep, m)
        ae, Be, Bee = pol.ae[:, :H], pol.Be[:, :H], pol.Bee[:, :H]
        alpha, B = prep.alpha[m], prep.B[m]
        EP = pol.g[:, None] - h * ae + (h * h - 1.0) * Bee
        Sp1 = (alpha - ae[..., None] * e) - (2.0 * h)[..., None] * (Be - Bee[..., None] * e)
        EuP = (-h * EP)[..., None] * e + Sp1
        SBS = B - _outer(e, Be) - _outer(Be, e) + Bee[..., None, None] * ee
        EuuP = (
            ((h * h)[..., None, None] * ee + S) * EP[..., None, None]
            - h[..., None, None] * (_outer(e, Sp1) + _outer(Sp1, e))
            + 2.0 * SBS
        )
        Vm = V[:, m]
        k0 = Vm * EP if k0 is None else k0 + Vm * EP
        k1 = Vm[..., None] * EuP if k1 is None else k1 + Vm[..., None] * EuP
        k2 = Vm[..., None, None] * EuuP if k2 is None else k2 + Vm[..., None, None] * EuuP
    for q in range(N):
        cr = pr.CR[:, :H, q]
        sq = nr.s[:, q, None]
        vq = pr.v[:, :H, q]
        mq = (sq * pr.Phi_t[:, :H, q])[..., None] * vq
        cu = (-h * cr)[..., None] * e + mq
        cuu = (
            cr[..., None, None] * (eye + (h * h - 1.0)[..., None, None] * ee)
            - h[..., None, None] * (_outer(e, mq) + _outer(mq, e))
            + (sq * pr.phi_t_over_r[:, :H, q])[..., None, None] * _outer(vq, vq)
        )
        vc = VC[:, :, q]
        k0 = k0 + vc * cr
        k1 = k1 + vc[..., None] * cu
        k2 = k2 + vc[..., None, None] * cuu
    factor = np.where(nr.constant[:, :H], 0.0, 2.0 * nr.phi[:, :H] / np.where(nr.constant[:, :H], 1.0, nr.s[:, :H]))
    return k0, k1, k2, factor


def whitened_jacobian(theta2d, d, H, k, prep, nr, pr, sm) -> np.ndarray:
    """``J' = dG'/dtheta'`` in whitened coordinates (``theta' = (a, beta, V, c)``, layout of ``theta``); upper
    triangle computed, lower triangle its mirror image. Blocks: :func:`gradient_jacobian`."""
    M, n = theta2d.shape
    V = theta2d[:, d * H + H : d * H + H + k * H].reshape(M, k, H)
    dH = d * H
    oV, oc = dH + H, dH + H + k * H
    VV = V[:, 0, :, None] * V[:, 0, None, :]
    for m in range(1, k):
        VV = VV + V[:, m, :, None] * V[:, m, None, :]
    e, a = nr.e[:, :H], nr.a[:, :H]
    ei, ej = e[:, :, None, :], e[:, None, :, :]
    s = slice(0, H)
    P, M1, K, Dn = pr.P[:, s, s], pr.M1[:, s, s], pr.K[:, s, s], pr.Dn[:, s, s]
    U = pr.mu_p[:, s, s, None] * ei + pr.mu_q[:, s, s, None] * ej
    W = (
        P[..., None, None] * np.eye(d)
        - pr.nu_p[:, s, s, None, None] * _outer(ei, ei)
        - pr.nu_q[:, s, s, None, None] * _outer(ej, ej)
        + pr.lam[:, s, s, None, None] * pr.X[:, s, s]
    )
    k0, k1, k2, factor = kink_terms(nr, pr, prep, V, H)
    diag = np.arange(H)
    J = np.zeros((M, n, n))
    Jaa = 2.0 * VV[..., None, None] * W  # (M, i, j, d, d)
    Jaa[:, diag, diag] = Jaa[:, diag, diag] + factor[..., None, None] * k2
    J[:, :dH, :dH] = Jaa.transpose(0, 1, 3, 2, 4).reshape(M, dH, dH)
    Jab = 2.0 * VV[..., None] * U  # (M, i, j, d)
    Jab[:, diag, diag] = Jab[:, diag, diag] + factor[..., None] * k1
    J[:, :dH, dH : dH + H] = Jab.transpose(0, 1, 3, 2).reshape(M, dH, H)
    Jbb = 2.0 * VV * P
    Jbb[:, diag, diag] = Jbb[:, diag, diag] + factor * k0
    J[:, dH : dH + H, dH : dH + H] = Jbb
    for m in range(k):
        Vm = V[:, m, :, None]  # V[m, i] over rows i
        Jav = 2.0 * Vm[..., None] * (ei * Dn[..., None] + a[:, None, :, :] * P[..., None])  # (M, i, j, d)
        Jav[:, diag, diag] = Jav[:, diag, diag] + 2.0 * sm.S1[:, m]
        J[:, :dH, oV + m * H : oV + (m + 1) * H] = Jav.transpose(0, 1, 3, 2).reshape(M, dH, H)
        Jbv = 2.0 * Vm * M1
        Jbv[:, diag, diag] = Jbv[:, diag, diag] + 2.0 * sm.S0[:, m]
        J[:, dH : dH + H, oV + m * H : oV + (m + 1) * H] = Jbv
        J[:, :dH, oc + m] = (2.0 * V[:, m, :, None] * (e * nr.phi[:, :H, None])).reshape(M, dH)
        J[:, dH : dH + H, oc + m] = 2.0 * V[:, m] * nr.Phi[:, :H]
        J[:, oV + m * H : oV + (m + 1) * H, oV + m * H : oV + (m + 1) * H] = 2.0 * K
        J[:, oV + m * H : oV + (m + 1) * H, oc + m] = 2.0 * nr.R0[:, :H]
        J[:, oc + m, oc + m] = 2.0
    return _mirror_upper(J)


def _mirror_upper(J: np.ndarray) -> np.ndarray:
    upper = np.triu(np.ones(J.shape[-2:], dtype=bool))
    return np.where(upper, J, np.swapaxes(J, -1, -2))


def _unwhiten_jacobian(J: np.ndarray, d: int, H: int, prep: Prepared) -> np.ndarray:
    """``T^T J' T`` (``T``: ``a_i = L^T w_i``, ``beta_i = b_i + mean.w_i``), then the upper triangle mirrored."""
    dH = d * H

    def right(X):  # X T on the last axis
        Y = X.copy()
        Y[..., :dH] = _unwhiten_rows(
            prep.L, prep.mean, X[..., :dH].reshape(X.shape[:-1] + (H, d)), X[..., dH : dH + H]
        ).reshape(X.shape[:-1] + (dH,))
        return Y

    JT = right(J)
    return _mirror_upper(np.swapaxes(right(np.swapaxes(JT, 1, 2)), 1, 2))


def gradient_jacobian(theta, d: int, H: int, k: int, mean, cov, target: GaussianTarget) -> np.ndarray:
    """Jacobian ``J = dG/dtheta`` of the generalized gradient for ``x ~ N(mean, cov)``: the Hessian of ``L``.

    Same arguments as :func:`risk_and_gradient`; returns ``(..., n, n)``, exactly symmetric (the lower
    triangle mirrors the upper one). The velocity ``-G`` of the gradient flow has Jacobian ``-J``.

    In whitened coordinates (module docstring; ``J = T^T J' T``), with ``V_i.V_j = sum_m V[m,i] V[m,j]``:

        J'[a_i, a_j]    = 2 (V_i.V_j) W(i,j)  + delta_ij (2 phi_i / s_i) E[u u^T V_i.r | z_i = 0]
        J'[a_i, beta_j] = 2 (V_i.V_j) U(i,j)  + delta_ij (2 phi_i / s_i) E[u V_i.r | z_i = 0]
        J'[beta_i, beta_j] = 2 (V_i.V_j) P(i,j) + delta_ij (2 phi_i / s_i) E[V_i.r | z_i = 0]
        J'[a_i, V[m,j]] = 2 V[m,i] (e_i Dn(i,j) + a_j P(i,j)) + 2 delta_ij S1[m,i]
        J'[beta_i, V[m,j]] = 2 V[m,i] M1(i,j) + 2 delta_ij S0[m,i]
        J'[a_i, c_m] = 2 V[m,i] e_i phi_i,   J'[beta_i, c_m] = 2 V[m,i] Phi_i
        J'[V[m,i], V[m',j]] = 2 delta_mm' K(i,j),   J'[V[m,i], c_m'] = 2 delta_mm' R0_i,   J'[c_m, c_m'] = 2 delta_mm'

    The first terms are the Gauss-Newton matrix ``2 E[(dN/dtheta')^T (dN/dtheta')]``; ``S1, S0`` come from
    ``d^2 N_m / (d(a_i, beta_i) d V[m,i]) = (u, 1) 1_i``; the ``delta_ij`` kink terms from moving the boundary of the
    active set: ``d/dbeta_i E[1_i g] = E[delta(z_i) g] = (phi_i / s_i) E[g | z_i = 0]`` (the density of ``z_i`` at 0),
    and ``d/da_i`` likewise with a factor ``u``.

    Where ``G`` is not differentiable. For a Gaussian law ``L`` is C^1 and ``G`` is C^1 (all the expectations
    above are continuous) wherever no neuron has ``w_i = b_i = 0``: a neuron with ``s_i > 0`` has a density
    and the expectations are smooth in ``(a_i, beta_i)``, parallel or not (``W(i,j)`` and the conditional
    expectations are continuous as ``rho -> +-1``); a neuron with ``w_i = 0 != b_i`` is a constant, and every
    term carrying its boundary is ``O(exp(-b_i^2 / (2 s^2)) / s^3)`` as ``s = |L^T w_i| -> 0``, which vanishes
    with all its derivatives, so ``G`` is differentiable there too and the value returned (no kink term, the
    constant neuron's Gauss-Newton blocks) is the derivative. At ``w_i = b_i = 0``, ``G_b[i]`` jumps (from 0 for
    ``b_i < 0`` to ``2 E[V_i.r]`` for ``b_i > 0``) and ``L`` has a kink in ``b_i``; the value returned is the limit
    of ``J`` along ``w_i = 0, b_i -> 0-`` (there ``J`` is the true derivative): neuron ``i`` is dead, so its rows
    and columns (``w_i, b_i, V[:, i]``) vanish, consistent with relu'(0) = 0 and with the d = 1 kernels.
    """
    theta2d, batch, prep = check_inputs(theta, d, H, k, mean, cov, target)
    nr = neurons(theta2d, d, H, k, prep)
    with np.errstate(over="ignore"):  # as in risk_and_gradient
        pr = pairs(nr, jacobian=True)
    _, sm = sums(nr, pr, prep, H)
    J = _unwhiten_jacobian(whitened_jacobian(theta2d, d, H, k, prep, nr, pr, sm), d, H, prep)
    n = theta2d.shape[1]
    return J.reshape(batch + (n, n))
