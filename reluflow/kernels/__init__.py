"""Exact evaluation kernels: the risk ``L``, the generalized gradient ``G`` and its Jacobian, batched over runs.

Each input law has a numpy reference path and, beside it, a compiled (numba) path that gives the same
numbers: for d = 1 densities :mod:`.exact1d` / :mod:`.exact1d_numba` and :mod:`.jacobian1d` /
:mod:`.jacobian1d_numba`; for Gaussian inputs in any d :mod:`.gaussian` / :mod:`.gaussian_numba` (risk,
``G`` and the Jacobian); for d = 2 with a polynomial density on a square :mod:`.exact2d` /
:mod:`.exact2d_numba`; for discrete measures in any d :mod:`.discrete`. Kernels take arrays and the
model's data (:mod:`reluflow.model`); :class:`reluflow.Problem` chooses among them. For the stiff solver,
:mod:`.structured1d` factorizes ``sigma I - J`` of a d = 1 problem in O(H log H) per run (compiled part in
:mod:`._structured1d_kernel`).
"""
