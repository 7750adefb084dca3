"""Risk and generalized gradient for a discrete input law ``mu = sum_p w_p delta_{x_p}`` (any d).

With ``z_{p,i} = w_i . x_p + b_i`` (:func:`reluflow.model.network.preactivations`), the active set
``A_{p,i} = [z_{p,i} > 0]`` (strict: relu'(0) = 0), ``N(x_p) = c + V relu(z_p)`` and the residual
``r_p = N(x_p) - f(x_p)`` (MATH.md section 2, the integrals being finite sums):

    L         = sum_p w_p |r_p|^2
    G_W[i,j]  = 2 sum_p w_p A_{p,i} (V[:,i] . r_p) x_{p,j}
    G_b[i]    = 2 sum_p w_p A_{p,i} (V[:,i] . r_p)
    G_V[m,i]  = 2 sum_p w_p relu(z_{p,i}) r_{p,m}
    G_c[m]    = 2 sum_p w_p r_{p,m}

These are exact for the measure (no quadrature error). Wherever no ``z_{p,i}`` is zero, ``L`` is
differentiable and ``G = grad L``. A data point exactly on a kink (``z_{p,i} = 0``) contributes nothing
to the ``W``/``b`` components of neuron ``i``: JR's ``G`` uses the pointwise limit ``R_r' -> 1_(0, inf)``,
which is 0 at 0 (relu'(0) = 0, MATH.md section 2).

Batched over ``theta (M, n)``. Every sum over points or outputs is taken per row (a sum along the last,
contiguous axis or an accumulation in a fixed order), never through a BLAS product whose blocking would
depend on ``M``; runs are processed in chunks to bound memory. Each row's result is therefore bitwise the
same whatever else is in the batch.
"""

from __future__ import annotations

import numpy as np

from reluflow.model.network import n_params, preactivations, unpack

#: elements of one (runs x points x neurons) work array per chunk (~16 MB of float64)
CHUNK_ELEMENTS = 2**21


def risk_and_gradient(
    theta: np.ndarray,
    points: np.ndarray,
    weights: np.ndarray,
    values: np.ndarray,
    width: int,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """``L`` and ``G`` of every row of ``theta (M, n)`` for the measure ``sum_p weights[p] delta_{points[p]}``.

    ``points (P, d)``, ``weights (P,)``, ``values (P, k)`` = the target at the points, ``width`` = H.
    Returns ``risk (M,)`` and ``grad (M, n)`` with ``n = d H + H + k H + k``.
    """
    theta = np.asarray(theta, dtype=float)
    points = np.ascontiguousarray(points, dtype=float)
    weights = np.ascontiguousarray(weights, dtype=float)
    values = np.ascontiguousarray(values, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"points: expected shape (P, d), got {points.shape}")
    n_points, d = points.shape
    if weights.shape != (n_points,):
        raise ValueError(f"weights: expected shape ({n_points},), got {weights.shape}")
    if values.ndim != 2 or values.shape[0] != n_points:
        raise ValueError(f"values: expected shape ({n_points}, k), got {values.shape}")
    k = values.shape[1]
    n = n_params(d, width, k)
    if theta.ndim != 2 or theta.shape[1] != n:
        raise ValueError(f"theta: expected shape (M, n_params = {n}), got {theta.shape}")
    m_runs = theta.shape[0]
    risk = np.empty(m_runs)
    grad = np.empty((m_runs, n))
    rows = max(1, chunk_elements // max(1, n_points * max(width, k)))
    for start in range(0, m_runs, rows):
        stop = min(start + rows, m_runs)
        risk[start:stop], grad[start:stop] = _chunk(theta[start:stop], points, weights, values, d, width, k)
    return risk, grad


def _chunk(theta, points, weights, values, d, width, k):
    W, b, V, c = unpack(theta, d, width, k)
    z = preactivations(W, b, points)  # (m, P, H)
    active = z > 0.0
    hidden = np.where(active, z, 0.0)
    residual = np.empty(z.shape[:-1] + (k,))  # (m, P, k)
    for m in range(k):
        residual[..., m] = (c[:, None, m] + np.sum(V[:, None, m, :] * hidden, axis=-1)) - values[:, m]
    risk = np.sum(weights * np.sum(residual * residual, axis=-1), axis=-1)

    weighted = weights[:, None] * residual  # w_p r_{p,m}, (m, P, k)
    weighted_t = np.ascontiguousarray(np.swapaxes(weighted, -1, -2))  # (m, k, P)
    # s_{p,i} = V[:, i] . (w_p r_p), accumulated over outputs in a fixed order
    back = V[:, None, 0, :] * weighted[..., 0:1]
    for m in range(1, k):
        back = back + V[:, None, m, :] * weighted[..., m : m + 1]
    back_t = np.ascontiguousarray(np.swapaxes(np.where(active, back, 0.0), -1, -2))  # (m, H, P)
    hidden_t = np.ascontiguousarray(np.swapaxes(hidden, -1, -2))  # (m, H, P)

    g_w = np.empty(W.shape)
    for j in range(d):
        g_w[..., j] = 2.0 * np.sum(back_t * points[:, j], axis=-1)
    g_b = 2.0 * np.sum(back_t, axis=-1)
    g_v = np.empty(V.shape)
    for m in range(k):
        g_v[:, m, :] = 2.0 * np.sum(hidden_t * weighted_t[:, m, None, :], axis=-1)
    g_c = 2.0 * np.sum(weighted_t, axis=-1)
    m_rows = theta.shape[0]
    grad = np.concatenate([g_w.reshape(m_rows, -1), g_b, g_v.reshape(m_rows, -1), g_c], axis=-1)
    return risk, grad
