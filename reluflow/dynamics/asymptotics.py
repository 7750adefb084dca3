"""The asymptotic behaviour of a run's risk, as data: power law or exponential decay to its limit.

Near a limit point the risk of a ReLU-network gradient flow often decays like a power of ``t`` (for one
neuron whose kink creeps to the interval's end, ``L ~ t^-3``), elsewhere exponentially. Over the last
``decades`` decades of saved flow times we fit the excess ``e(t) = L(Theta_t) - L_inf`` by

- a power law ``log e = log C - p log t`` (``exponent = p``), and
- an exponential ``log e = log C - lambda t`` (``rate = lambda``),

both by least squares on ``log e``, and keep the model with the smaller residual. ``L_inf`` is the risk of
the certified critical point (:mod:`reluflow.dynamics.certify`) when it does not exceed the last saved risk (the
flow decreases the risk), else the fit is not made. Points where ``e`` is at the rounding level of ``L``
(``e <= 64 eps max(L_inf, 0)`` or ``e <= 0``) carry no information and are dropped, and so are points
below an absolute ``noise_floor``: a risk that has reached zero is computed from residuals
``r = N - f`` that are themselves rounded to ``~eps |f|``, so it scatters at ``~eps^2 E|f|^2``
(``1e-32`` for a unit-size target) and a line through that scatter means nothing. :mod:`reluflow.simulate`
passes ``(64 eps)^2 L(0)``, ``L(0) = E|f|^2`` the risk of the zero network. A run whose excess is at
rounding level over the whole window is ``"settled"``.
"""

from __future__ import annotations

import numpy as np

DECAY_KINDS = ("power", "exponential", "settled", "undetermined")

_EPS = np.finfo(float).eps


def fit_decay(t, risk, limit, decades: float = 2.0, min_points: int = 4, noise_floor: float = 0.0):
    """``(kind, exponent, rate)`` for one run; NaN where a model does not apply.

    ``t`` and ``risk`` are the saved times and risks, ``limit`` the run's limit risk ``L_inf``,
    ``noise_floor`` the absolute rounding level of the risk (module docstring).
    """
    t = np.asarray(t, dtype=float)
    risk = np.asarray(risk, dtype=float)
    finite = np.isfinite(risk) & (t > 0)
    if not np.isfinite(limit) or not np.any(finite):
        return "undetermined", np.nan, np.nan
    t_end = t[finite][-1]
    window = finite & (t >= t_end * 10.0 ** (-decades))
    excess = risk - limit
    floor = max(64 * _EPS * max(limit, 0.0), noise_floor)
    informative = window & (excess > floor)
    if np.count_nonzero(window) >= min_points and not np.any(informative):
        return "settled", np.nan, np.nan
    if np.count_nonzero(informative) < min_points:
        return "undetermined", np.nan, np.nan
    tt, le = t[informative], np.log(excess[informative])
    power = np.polyfit(np.log(tt), le, 1, full=True)
    expo = np.polyfit(tt, le, 1, full=True)
    res_power = power[1][0] if power[1].size else 0.0
    res_expo = expo[1][0] if expo[1].size else 0.0
    exponent, rate = -power[0][0], -expo[0][0]
    kind = "power" if res_power <= res_expo else "exponential"
    return kind, float(exponent), float(rate)


def fit_decays(t, risk, limits, decades: float = 2.0, noise_floor: float = 0.0):
    """:func:`fit_decay` for every run: ``kind (M,) str``, ``exponent (M,)``, ``rate (M,)``.

    A run's limit is its certified critical risk when that is at most its last finite saved risk (up to
    rounding); otherwise the fit is ``"undetermined"``.
    """
    risk = np.asarray(risk, dtype=float)
    m = risk.shape[0]
    kinds = np.empty(m, dtype=object)
    exps, rates = np.full(m, np.nan), np.full(m, np.nan)
    for i in range(m):
        finite = np.flatnonzero(np.isfinite(risk[i]))
        limit = limits[i]
        if finite.size == 0 or not np.isfinite(limit) or limit > risk[i, finite[-1]] * (1 + 64 * _EPS):
            kinds[i] = "undetermined"
            continue
        kinds[i], exps[i], rates[i] = fit_decay(t, risk[i], limit, decades=decades, noise_floor=noise_floor)
    return kinds.astype(str), exps, rates
