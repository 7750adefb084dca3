"""Butcher tableaux of explicit embedded Runge-Kutta pairs.

An ``s``-stage explicit Runge-Kutta method for the autonomous ODE ``y' = f(y)`` takes a step ``h`` by

    k_i     = f(y_n + h * sum_{j < i} a_ij k_j),      i = 1..s   (c_i = sum_j a_ij: the stage times)
    y_{n+1} = y_n + h * sum_i b_i k_i                              (order p: local error O(h^{p+1}))
    err     = h * sum_i (b_i - bhat_i) k_i                         (bhat: the embedded method, order q)

so ``err = y_{n+1} - yhat_{n+1} = O(h^{q+1})`` estimates the local error of the lower-order solution; the
step-size controller (:mod:`reluflow.dynamics.solvers.controllers`) works with the exponent ``1 / (q + 1)``.

All pairs here are *FSAL* (first same as last): the last row of ``A`` is ``b`` and ``c_s = 1``, so the last
stage is ``f(y_{n+1})`` and is reused as the first stage of the next step (7 evaluations per step cost 6;
DOP853's 13 cost 12).

Coefficients are stored as exact rationals (``fractions.Fraction``), parsed from the fractions or decimal
expansions of the published methods, so the order conditions can be checked in exact arithmetic (see
``tests/test_integrate_explicit.py``). The float arrays used by the solver are the correctly rounded
values of these rationals; ``b_error`` is formed in exact arithmetic before rounding.

Pairs
-----
``dopri5``  Dormand & Prince (1980), order 5(4), 7 stages: the DOPRI5 / ode45 method (HNW I, II.5, Table 5.2).
``tsit5``   Tsitouras (2011), order 5(4), 7 stages, chosen to minimise the principal error of the 5th-order
            solution under only the first-column simplifying assumption; usually a little cheaper than dopri5
            at the same accuracy.
``dop853``  Dormand & Prince's 8th-order 12-stage method with the error estimator of Hairer's DOP853
            (HNW I, II.10): two embedded estimators, of orders 5 and 3, combined into
            ``err = err5^2 / sqrt(err5^2 + 0.01 err3^2)`` which behaves like ``O(h^8)`` (``error_order = 7``).

Why DOP853 as the high-order pair: gradient flows at tight tolerance (``rtol ~ 1e-10``, the energy
identity is checked to ``1e-8``) are where an 8th-order method pays; DOP853 is the reference code of
HNW and of ``scipy.integrate.solve_ivp(method="DOP853")``, so our implementation can be compared with an
independent one using the same coefficients, and its combined estimator is robust when the 5th-order
estimate is accidentally small. Verner's 7(6)/8(7) pairs have more efficient embedded pairs but no
such independent reference in our stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

__all__ = ["ButcherTableau", "TABLEAUX", "DOPRI5", "TSIT5", "DOP853", "get_tableau"]


def _q(value) -> Fraction:
    """Exact rational from an int, a ``"p/q"`` string or a decimal string (``"1.25e-2"``)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(str(value))


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """An explicit embedded Runge-Kutta pair (see the module docstring for the formulas).

    Attributes
    ----------
    name : short name (``"dopri5"``, ...).
    c_exact : (s,) stage times ``c_i``.
    a_exact : (s, s) strictly lower triangular ``a_ij`` (rows as tuples).
    b_exact : (s,) weights of the propagated solution, order ``order``.
    b_error_exact : (s,) ``b - bhat``, ``bhat`` the embedded weights of order ``error_order``.
    order : ``p``, the order of ``b``.
    error_order : ``q``: the error estimate is ``O(h^{q+1})``; the controller uses exponent ``1/(q+1)``.
    fsal : the last stage is ``f(y_{n+1})`` (last row of ``A`` equals ``b`` and ``c_s = 1``).
    b_error_low_exact : ``b - bhat_low`` for a second, lower-order estimator (DOP853's 3rd-order one),
        combined with the first as ``err5^2 / sqrt(err5^2 + 0.01 err3^2)``; ``None`` for a single estimator.
    embedded_orders : orders of the embedded weight vectors ``bhat`` (and ``bhat_low``), for checking.
    """

    name: str
    c_exact: tuple
    a_exact: tuple
    b_exact: tuple
    b_error_exact: tuple
    order: int
    error_order: int
    fsal: bool
    b_error_low_exact: tuple | None = None
    embedded_orders: tuple = ()

    def __post_init__(self):
        s = len(self.c_exact)
        if len(self.a_exact) != s or any(len(row) != s for row in self.a_exact):
            raise ValueError(f"tableau {self.name}: A must be {s} x {s}")
        for vec in (self.b_exact, self.b_error_exact) + (
            (self.b_error_low_exact,) if self.b_error_low_exact is not None else ()
        ):
            if len(vec) != s:
                raise ValueError(f"tableau {self.name}: weight vectors must have {s} entries")
        if any(self.a_exact[i][j] != 0 for i in range(s) for j in range(i, s)):
            raise ValueError(f"tableau {self.name}: A must be strictly lower triangular (explicit method)")
        if self.fsal and (tuple(self.a_exact[-1]) != tuple(self.b_exact) or self.c_exact[-1] != 1):
            raise ValueError(f"tableau {self.name}: FSAL needs last row of A == b and c_s == 1")

    @property
    def stages(self) -> int:
        return len(self.c_exact)

    @cached_property
    def c(self) -> np.ndarray:
        return np.array([float(x) for x in self.c_exact])

    @cached_property
    def a(self) -> np.ndarray:
        return np.array([[float(x) for x in row] for row in self.a_exact])

    @cached_property
    def b(self) -> np.ndarray:
        return np.array([float(x) for x in self.b_exact])

    @cached_property
    def b_error(self) -> np.ndarray:
        return np.array([float(x) for x in self.b_error_exact])

    @cached_property
    def b_error_low(self) -> np.ndarray | None:
        if self.b_error_low_exact is None:
            return None
        return np.array([float(x) for x in self.b_error_low_exact])

    def __repr__(self) -> str:
        return f"ButcherTableau({self.name!r}, stages={self.stages}, order={self.order}({self.error_order}))"


def _lower(rows, s):
    """Strictly lower triangular ``s x s`` matrix of Fractions from the rows ``2..s`` (row 1 is zero)."""
    out = [[Fraction(0)] * s]
    for i, row in enumerate(rows, start=1):
        r = [_q(v) for v in row] + [Fraction(0)] * (s - len(row))
        if len(row) != i:
            raise ValueError(f"row {i + 1} of A must have {i} entries, got {len(row)}")
        out.append(r)
    return tuple(tuple(r) for r in out)


def _sparse(entries: dict, s: int) -> list:
    out = [Fraction(0)] * s
    for j, v in entries.items():
        out[j] = _q(v)
    return out


# --------------------------------------------------------------------------------------------------------
# Dormand-Prince 5(4): exact rationals (HNW I, Table II.5.2).
_DP5_A = _lower(
    [
        ["1/5"],
        ["3/40", "9/40"],
        ["44/45", "-56/15", "32/9"],
        ["19372/6561", "-25360/2187", "64448/6561", "-212/729"],
        ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"],
        ["35/384", "0", "500/1113", "125/192", "-2187/6784", "11/84"],
    ],
    7,
)
_DP5_B = _DP5_A[-1][:6] + (Fraction(0),)
_DP5_BHAT = tuple(_q(v) for v in ["5179/57600", "0", "7571/16695", "393/640", "-92097/339200", "187/2100", "1/40"])

DOPRI5 = ButcherTableau(
    name="dopri5",
    c_exact=tuple(_q(v) for v in ["0", "1/5", "3/10", "4/5", "8/9", "1", "1"]),
    a_exact=_DP5_A,
    b_exact=_DP5_B,
    b_error_exact=tuple(b - bh for b, bh in zip(_DP5_B, _DP5_BHAT)),
    order=5,
    error_order=4,
    fsal=True,
    embedded_orders=(4,),
)

# --------------------------------------------------------------------------------------------------------
# Tsitouras 5(4) (Comput. Math. Appl. 62 (2011) 770-775). c2, c3, c4 are the paper's free parameters; the
# other coefficients solve the order conditions; they are given here to 40 significant digits (from the
# high-precision expansions distributed with Tsitouras's method), so the order conditions hold to ~1e-39.
_TS5_A = _lower(
    [
        ["161/1000"],
        ["-0.008480655492356988544426874250230774675121", "0.3354806554923569885444268742502307746751"],
        [
            "2.897153057105493432130432594192938764925",
            "-6.359448489975074843148159912383825625953",
            "4.362295432869581411017727318190886861028",
        ],
        [
            "5.325864828439256604428877920840511317836",
            "-11.74888356406282787774717033978577296189",
            "7.495539342889836208304604784564358155659",
            "-0.09249506636175524925650207933207191611350",
        ],
        [
            "5.861455442946420028659251486982647890394",
            "-12.92096931784710929170611868178335939542",
            "8.159367898576158643180400794539253485182",
            "-0.07158497328140099722453054252582973869127",
            "-0.02826905039406838290900305721271224146718",
        ],
        [
            "0.09646076681806522951816731316512876333712",
            "1/100",
            "0.4798896504144995747752495322905965199130",
            "1.379008574103741893192274821856872770756",
            "-3.290069515436080679901047585711363850116",
            "2.324710524099773982415355918398765796109",
        ],
    ],
    7,
)
_TS5_B = _TS5_A[-1][:6] + (Fraction(0),)
_TS5_BHAT = tuple(
    _q(v)
    for v in [
        "0.09468075576583945807478876255758922856118",
        "0.009183565540343253096776363936645313759814",
        "0.4877705284247615707855642599631228241517",
        "1.234297566930478985655109673884237654036",
        "-2.707712349983525454881109975059321670690",
        "1.866628418170587035753719399566211498666",
        "1/66",
    ]
)

TSIT5 = ButcherTableau(
    name="tsit5",
    c_exact=tuple(_q(v) for v in ["0", "161/1000", "327/1000", "9/10", "0.9800255409045096857298102862870245954942", "1", "1"]),
    a_exact=_TS5_A,
    b_exact=_TS5_B,
    b_error_exact=tuple(b - bh for b, bh in zip(_TS5_B, _TS5_BHAT)),
    order=5,
    error_order=4,
    fsal=True,
    embedded_orders=(4,),
)

# --------------------------------------------------------------------------------------------------------
# DOP853 (Hairer, Norsett & Wanner, code dop853.f; HNW I, II.10): 12 stages + the FSAL stage f(y_{n+1}),
# coefficients to 30 significant digits as published with the code.
_D8_ROWS = [
    {0: "5.26001519587677318785587544488e-2"},
    {0: "1.97250569845378994544595329183e-2", 1: "5.91751709536136983633785987549e-2"},
    {0: "2.95875854768068491816892993775e-2", 2: "8.87627564304205475450678981324e-2"},
    {
        0: "2.41365134159266685502369798665e-1",
        2: "-8.84549479328286085344864962717e-1",
        3: "9.24834003261792003115737966543e-1",
    },
    {
        0: "3.7037037037037037037037037037e-2",
        3: "1.70828608729473871279604482173e-1",
        4: "1.25467687566822425016691814123e-1",
    },
    {
        0: "3.7109375e-2",
        3: "1.70252211019544039314978060272e-1",
        4: "6.02165389804559606850219397283e-2",
        5: "-1.7578125e-2",
    },
    {
        0: "3.70920001185047927108779319836e-2",
        3: "1.70383925712239993810214054705e-1",
        4: "1.07262030446373284651809199168e-1",
        5: "-1.53194377486244017527936158236e-2",
        6: "8.27378916381402288758473766002e-3",
    },
    {
        0: "6.24110958716075717114429577812e-1",
        3: "-3.36089262944694129406857109825",
        4: "-8.68219346841726006818189891453e-1",
        5: "2.75920996994467083049415600797e1",
        6: "2.01540675504778934086186788979e1",
        7: "-4.34898841810699588477366255144e1",
    },
    {
        0: "4.77662536438264365890433908527e-1",
        3: "-2.48811461997166764192642586468",
        4: "-5.90290826836842996371446475743e-1",
        5: "2.12300514481811942347288949897e1",
        6: "1.52792336328824235832596922938e1",
        7: "-3.32882109689848629194453265587e1",
        8: "-2.03312017085086261358222928593e-2",
    },
    {
        0: "-9.3714243008598732571704021658e-1",
        3: "5.18637242884406370830023853209",
        4: "1.09143734899672957818500254654",
        5: "-8.14978701074692612513997267357",
        6: "-1.85200656599969598641566180701e1",
        7: "2.27394870993505042818970056734e1",
        8: "2.49360555267965238987089396762",
        9: "-3.0467644718982195003823669022",
    },
    {
        0: "2.27331014751653820792359768449",
        3: "-1.05344954667372501984066689879e1",
        4: "-2.00087205822486249909675718444",
        5: "-1.79589318631187989172765950534e1",
        6: "2.79488845294199600508499808837e1",
        7: "-2.85899827713502369474065508674",
        8: "-8.87285693353062954433549289258",
        9: "1.23605671757943030647266201528e1",
        10: "6.43392746015763530355970484046e-1",
    },
    {  # the weights b (row 13 = FSAL stage f(y_{n+1}))
        0: "5.42937341165687622380535766363e-2",
        5: "4.45031289275240888144113950566",
        6: "1.89151789931450038304281599044",
        7: "-5.8012039600105847814672114227",
        8: "3.1116436695781989440891606237e-1",
        9: "-1.52160949662516078556178806805e-1",
        10: "2.01365400804030348374776537501e-1",
        11: "4.47106157277725905176885569043e-2",
    },
]
_D8_A = _lower([_sparse(row, i + 1) for i, row in enumerate(_D8_ROWS)], 13)
_D8_B = _D8_A[-1][:12] + (Fraction(0),)
# b - bhat5 (5th-order estimator), as published
_D8_E5 = tuple(
    _sparse(
        {
            0: "0.1312004499419488073250102996e-1",
            5: "-0.1225156446376204440720569753e+1",
            6: "-0.4957589496572501915214079952",
            7: "0.1664377182454986536961530415e+1",
            8: "-0.3503288487499736816886487290",
            9: "0.3341791187130174790297318841",
            10: "0.8192320648511571246570742613e-1",
            11: "-0.2235530786388629525884427845e-1",
        },
        13,
    )
)
# bhat3 (3rd-order estimator): weights on stages 1, 9 and 12
_D8_BHAT3 = _sparse(
    {0: "0.244094488188976377952755905512", 8: "0.733846688281611857341361741547", 11: "0.220588235294117647058823529412e-1"},
    13,
)

DOP853 = ButcherTableau(
    name="dop853",
    c_exact=tuple(
        _q(v)
        for v in [
            "0",
            "0.526001519587677318785587544488e-01",
            "0.789002279381515978178381316732e-01",
            "0.118350341907227396726757197510",
            "0.281649658092772603273242802490",
            "0.333333333333333333333333333333",
            "0.25",
            "0.307692307692307692307692307692",
            "0.651282051282051282051282051282",
            "0.6",
            "0.857142857142857142857142857142",
            "1",
            "1",
        ]
    ),
    a_exact=_D8_A,
    b_exact=_D8_B,
    b_error_exact=_D8_E5,
    order=8,
    error_order=7,
    fsal=True,
    b_error_low_exact=tuple(b - bh for b, bh in zip(_D8_B, _D8_BHAT3)),
    embedded_orders=(5, 3),
)

TABLEAUX = {t.name: t for t in (DOPRI5, TSIT5, DOP853)}


def get_tableau(tableau) -> ButcherTableau:
    """A :class:`ButcherTableau` from itself or its name; ``ValueError`` naming ``tableau`` otherwise."""
    if isinstance(tableau, ButcherTableau):
        return tableau
    if isinstance(tableau, str) and tableau.lower() in TABLEAUX:
        return TABLEAUX[tableau.lower()]
    raise ValueError(f"tableau: unknown method {tableau!r}; choose one of {sorted(TABLEAUX)}")
