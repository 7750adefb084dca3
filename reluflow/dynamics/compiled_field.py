"""The standard flow of a d = 1 problem as a compiled field: a step's stages in one compiled call.

Why. On small networks a solver step is bound by its calls, not by its arithmetic: at H = 1 an evaluation of
``G`` for 16 runs is a few microseconds of kernel behind ten of Python (the field, the problem, the kernel's
dispatch), and a Rodas4 step makes five of them. Here the vector field ``f = -G`` of
:class:`~reluflow.dynamics.flows.StandardFlow` is evaluated inside the compiled loop over a Rosenbrock step's
stages, by the same kernel (:func:`reluflow.kernels.exact1d_numba._rows`) with the same arguments, followed by
the same stage arithmetic (:func:`reluflow.dynamics.solvers.rosenbrock._dense_stage`): each operation is the
one of the uncompiled loop, in the same order, so the numbers are the same bits.

The same for an explicit pair's stages (:class:`~reluflow.dynamics.solvers.explicit.ExplicitRungeKutta`):
each stage point by the pair's own :func:`~reluflow.dynamics.solvers.explicit._stage_point`, then ``-G`` there.

The kernel is called statically (a compiled function passed as an argument would be recompiled in every new
process: numba cannot cache it), so this module is specific to the exact d = 1 kernel, the one law whose small
networks are overhead-bound; other fields take the solvers' general path.
"""

from __future__ import annotations

import numba
import numpy as np

from reluflow.dynamics.solvers.explicit import _stage_point
from reluflow.dynamics.solvers.rosenbrock import _dense_stage
from reluflow.kernels.exact1d_numba import _rows

__all__ = ["StandardField1D"]


@numba.njit(cache=True, error_model="numpy")
def _rosenbrock_dense_stages(H, arguments, kind, A, lu, piv, work, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy,
                             arg, fs, risk):  # fmt: skip
    """Every stage of one Rosenbrock step (``s = U.shape[0]``) from ``y (m, n)`` with ``f0 = f(y)``: the stage
    arguments' ``f = -G`` by the exact d = 1 kernel (``H`` and the table's ``arguments``), then
    :func:`_dense_stage` with the coefficient rows ``c[i, :i]`` and ``a[i + 1, :i + 1]``. ``fs (m, n)``,
    ``risk (m,)``: scratch."""
    s = U.shape[0]
    m, n = y.shape
    for i in range(s):
        if i == 0:
            stage_f = f0
        else:
            _rows(arg, H, *arguments, risk, fs)
            for row in range(m):
                for col in range(n):
                    fs[row, col] = -fs[row, col]
            stage_f = fs
        a_next = a[i + 1, : i + 1] if i + 1 < s else a[0, :0]
        _dense_stage(kind, A, lu, piv, work, stage_f, U, Ue, i, c[i, :i], h, h_gamma, r, r_energy, f0, y, a_next,
                     arg)  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def _negative_gradient(H, arguments, theta, out, risk):
    """``out = -G(theta)`` by the exact d = 1 kernel, as :meth:`StandardFlow.rhs` computes it."""
    _rows(theta, H, *arguments, risk, out)
    m, n = out.shape
    for row in range(m):
        for col in range(n):
            out[row, col] = -out[row, col]


@numba.njit(cache=True, error_model="numpy")
def _explicit_stages(H, arguments, y, h, K, stage_idx, stage_w, fsal, point, y_new, risk):
    """Stages ``1 .. s - 1`` of an explicit pair from ``y (m, n)`` with ``K[0, :m] = f(y)``: the stage point by
    :func:`_stage_point` with the nonzero coefficients ``stage_idx[i], stage_w[i]`` of row ``i``, then
    ``K[i, :m] = -G(point)``; with ``fsal`` the last point is ``y_new``."""
    s = K.shape[0]
    m = y.shape[0]
    for i in range(1, s):
        target = y_new if (fsal and i == s - 1) else point
        _stage_point(y, h, K, stage_idx[i], stage_w[i], target)
        _negative_gradient(H, arguments, target, K[i, :m], risk)


class StandardField1D:
    """``f = -G`` of a d = 1 problem with a density, for the solvers' compiled stage loops.

    ``width`` and ``arguments`` are the kernel's (:func:`reluflow.kernels.exact1d_numba.kernel_arguments`,
    prepared once per problem). It stands for the same field as :meth:`StandardFlow.rhs`; a solver given one uses
    it where it pays (the dense Rosenbrock step) and ``rhs`` elsewhere.
    """

    def __init__(self, width: int, arguments: tuple):
        self.width = int(width)
        self.arguments = arguments
        self._scratch = (np.empty((0, 0)), np.empty(0))

    def _buffers(self, m: int, n: int):
        fs, risk = self._scratch
        if fs.shape[0] < m or fs.shape[1] != n:
            fs, risk = np.empty((m, n)), np.empty(m)
            self._scratch = (fs, risk)
        return fs[:m], risk[:m]

    def rosenbrock_dense_stages(self, factors, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy, arg) -> None:
        """The stages of one step into ``U, Ue`` (as the solver's own loop fills them); ``factors``: the dense
        system's ``(kind, A, lu, piv, work)``; ``c``, ``a``: the tableau's ``(s, s)`` coefficient matrices."""
        m, n = y.shape
        fs, risk = self._buffers(m, n)
        _rosenbrock_dense_stages(self.width, self.arguments, *factors, y, f0, h, h_gamma, c, a, U, Ue, r, r_energy,
                                 arg, fs, risk)  # fmt: skip

    def explicit_stages(self, y, h, K, stage_idx, stage_w, fsal, point, y_new) -> None:
        """Stages ``1 .. s - 1`` of an explicit pair into ``K[1:, :m]`` (as the method's own loop fills them);
        ``stage_idx``, ``stage_w``: per stage the nonzero coefficients of its row (tuples of arrays)."""
        m, n = y.shape
        _, risk = self._buffers(m, n)
        _explicit_stages(self.width, self.arguments, y, h, K, stage_idx, stage_w, fsal, point, y_new, risk)
