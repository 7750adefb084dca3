"""Parameter layout and realization of a shallow ReLU network (MATH.md section 1).

Input dimension ``d``, hidden width ``H``, output dimension ``k``. A parameter vector ``theta`` holds,
in this order,

    W (H x d, row-major; row i = w_i) | b (H) | V (k x H, row-major; row m = output m) | c (k)

so ``n_params = d H + H + k H + k``, and the realization is ``N(x) = c + V relu(W x + b)``.

Every function takes any leading batch shape ``(...)`` on ``theta`` and keeps it. Reductions are
written per row (elementwise products, sums over the last axis, accumulation in a fixed order), never
through BLAS matrix products, so each row's numbers are bitwise independent of the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def n_params(d: int, H: int, k: int) -> int:
    """``d H + H + k H + k``: the number of real parameters of a network ``R^d -> R^k`` with ``H`` neurons."""
    return d * H + H + k * H + k


@dataclass(frozen=True)
class ParameterLayout:
    """Where each block of ``theta`` lives (MATH.md section 1): the one owner of these offsets.

    ``W`` (``H x d``, row-major: ``W[i, j]`` at ``i d + j``), ``b`` (at ``d H + i``), ``V`` (``k x H``,
    row-major: ``V[m, i]`` at ``d H + H + m H + i``), ``c`` (at ``d H + H + k H + m``).
    """

    input_dim: int
    width: int
    output_dim: int

    @property
    def n_params(self) -> int:
        return n_params(self.input_dim, self.width, self.output_dim)

    @property
    def offsets(self) -> tuple[int, int, int]:
        """Flat index of the first entry of ``b``, of ``V`` and of ``c``."""
        d, h, k = self.input_dim, self.width, self.output_dim
        return d * h, d * h + h, d * h + h + k * h

    @property
    def W(self) -> slice:
        return slice(0, self.offsets[0])

    @property
    def b(self) -> slice:
        return slice(self.offsets[0], self.offsets[1])

    @property
    def V(self) -> slice:
        return slice(self.offsets[1], self.offsets[2])

    @property
    def c(self) -> slice:
        return slice(self.offsets[2], self.n_params)

    def V_row(self, m: int) -> slice:
        """The outer weights of output ``m``, ``V[m, :]``."""
        start = self.offsets[1] + m * self.width
        return slice(start, start + self.width)

    def neuron_blocks(self) -> np.ndarray:
        """Flat indices of each neuron's inner block ``u_i = (w_i, b_i)``, shape ``(H, d + 1)``."""
        d, h = self.input_dim, self.width
        return np.concatenate([np.arange(d * h).reshape(h, d), (d * h + np.arange(h))[:, None]], axis=1)

    def outer_weights(self) -> np.ndarray:
        """Flat indices of each neuron's outer weights ``V[:, i]``, shape ``(H, k)``."""
        h, k = self.width, self.output_dim
        return self.offsets[1] + np.arange(k * h).reshape(k, h).T

    def coordinates(self) -> dict[str, np.ndarray]:
        """The coordinates of a ``param`` axis: flat index, name, block (0 W, 1 b, 2 V, 3 c), neuron, input
        and output index (-1 where they do not apply)."""
        d, h, k = self.input_dim, self.width, self.output_dim
        names, block, neuron, inp, out = [], [], [], [], []
        for i in range(h):
            for j in range(d):
                names.append(f"W[{i},{j}]"), block.append(0), neuron.append(i), inp.append(j), out.append(-1)
        for i in range(h):
            names.append(f"b[{i}]"), block.append(1), neuron.append(i), inp.append(-1), out.append(-1)
        for m in range(k):
            for i in range(h):
                names.append(f"V[{m},{i}]"), block.append(2), neuron.append(i), inp.append(-1), out.append(m)
        for m in range(k):
            names.append(f"c[{m}]"), block.append(3), neuron.append(-1), inp.append(-1), out.append(m)
        return {
            "param": np.arange(len(names), dtype=np.int32),
            "param_name": np.array(names, dtype=str),
            "param_block": np.array(block, dtype=np.int8),
            "param_neuron": np.array(neuron, dtype=np.int32),
            "param_input": np.array(inp, dtype=np.int32),
            "param_output": np.array(out, dtype=np.int32),
        }


def check_theta(theta, n: int, name: str = "theta") -> np.ndarray:
    """``theta`` as a float array of shape ``(..., n)`` with finite entries, else ``ValueError`` naming it."""
    try:
        array = np.asarray(theta, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: must be an array of numbers of shape (..., {n}): {err}") from None
    if array.ndim == 0:
        raise ValueError(f"{name}: must have shape (..., n_params = {n}), got a scalar")
    if array.shape[-1] != n:
        raise ValueError(f"{name}: last axis has length {array.shape[-1]}, expected n_params = {n}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name}: entries must be finite, found {array[tuple(bad)]!r} at index {tuple(int(i) for i in bad)}")
    return array


def unpack(theta, d: int, H: int, k: int):
    """Split ``theta (..., n_params)`` into views ``W (..., H, d)``, ``b (..., H)``, ``V (..., k, H)``, ``c (..., k)``."""
    theta = np.asarray(theta, dtype=float)
    n = n_params(d, H, k)
    if theta.ndim == 0 or theta.shape[-1] != n:
        got = "a scalar" if theta.ndim == 0 else f"last axis of length {theta.shape[-1]}"
        raise ValueError(f"theta: expected shape (..., n_params = {n}) for d = {d}, H = {H}, k = {k}, got {got}")
    batch = theta.shape[:-1]
    i_b, i_v, i_c = ParameterLayout(d, H, k).offsets
    W = theta[..., :i_b].reshape(batch + (H, d))
    b = theta[..., i_b:i_v]
    V = theta[..., i_v:i_c].reshape(batch + (k, H))
    c = theta[..., i_c:]
    return W, b, V, c


def pack(W, b, V, c) -> np.ndarray:
    """Inverse of :func:`unpack`: ``W (..., H, d)``, ``b (..., H)``, ``V (..., k, H)``, ``c (..., k)`` -> ``theta (..., n)``.

    The leading batch shapes of the four blocks must agree.
    """
    W, b, V, c = (np.asarray(x, dtype=float) for x in (W, b, V, c))
    if W.ndim < 2:
        raise ValueError(f"W: must have shape (..., H, d), got {W.shape}")
    batch, (H, d) = W.shape[:-2], W.shape[-2:]
    if V.ndim < 2:
        raise ValueError(f"V: must have shape (..., k, H), got {V.shape}")
    k = V.shape[-2]
    for name, array, shape in (("b", b, batch + (H,)), ("V", V, batch + (k, H)), ("c", c, batch + (k,))):
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (from W {W.shape} and V {V.shape}), got {array.shape}")
    parts = [W.reshape(batch + (H * d,)), b, V.reshape(batch + (k * H,)), c]
    return np.concatenate(parts, axis=-1)


def preactivations(W: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``z[..., p, i] = b_i + sum_j W[i, j] x[p, j]`` for ``W (..., H, d)``, ``b (..., H)``, ``x (P, d)``.

    The sum is accumulated in the fixed order ``j = 0, ..., d-1`` (``b_i + W[i,0] x_0 + W[i,1] x_1 + ...``),
    so the result of every row is the same whatever the batch; for ``d = 1`` it is ``b_i + w_i x`` with a
    single rounding of each operation. Neuron ``i`` is active at ``x_p`` iff ``z[..., p, i] > 0`` (strict).
    """
    z = b[..., None, :] + W[..., None, :, 0] * x[:, None, 0]
    for j in range(1, x.shape[1]):
        z = z + W[..., None, :, j] * x[:, None, j]
    return z


def realization(theta, x, d: int, H: int, k: int) -> np.ndarray:
    """``N_theta(x) = c + V relu(W x + b)`` at points ``x (P, d)``; returns ``(..., P, k)``.

    ``N_m(x_p) = c_m + sum_i V[m, i] relu(z_{p,i})``, the sum over neurons taken along the last axis of
    an elementwise product (per row, not a BLAS product).
    """
    W, b, V, c = unpack(theta, d, H, k)
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x: expected shape (P, d = {d}), got {x.shape}")
    hidden = np.maximum(preactivations(W, b, x), 0.0)  # (..., P, H)
    out = np.empty(hidden.shape[:-1] + (k,))
    for m in range(k):
        out[..., m] = c[..., None, m] + np.sum(V[..., None, m, :] * hidden, axis=-1)
    return out
