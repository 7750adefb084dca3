"""The affine-target setting of JR Theorems 1.2 and 1.3 and its reference risks (docs/MATH.md section 5).

Both theorems take ``d = k = 1``, ``f(x) = alpha x + beta`` and the uniform law on ``[a, b]``; the reference
values below are derived for exactly that setting, so a scenario of either kind refuses any other problem
when its configuration is resolved (:func:`check_affine_uniform`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from reluflow.model.validation import fail

__all__ = ["check_affine_uniform", "affine_parameters", "add_threshold_columns", "affine_critical_value",
           "single_neuron_threshold", "check_standard_flows"]


def check_affine_uniform(problem: Mapping[str, Any], key: str, theorem: str) -> None:
    """Refuse a problem (the normalized configuration at ``key.problem``) outside the affine-target setting."""
    target = problem.get("target", {})
    if target.get("kind") != "affine":
        fail(f"{key}.problem.target.kind", f"{theorem} needs an affine target, got {target.get('kind')!r}")
    net = problem.get("network", {})
    if net.get("input_dim", 1) != 1 or net.get("output_dim", 1) != 1:
        fail(f"{key}.problem.network", f"{theorem} and its reference risks are stated for d = k = 1, got "
                                       f"input_dim = {net.get('input_dim', 1)}, output_dim = {net.get('output_dim', 1)}")
    measure = problem.get("measure", {}).get("kind")
    if measure != "uniform":
        fail(f"{key}.problem.measure.kind", f"{theorem} and its reference risks are stated for the uniform law, "
                                            f"got {measure!r}")
    slope = np.asarray(target["slope"], dtype=float).reshape(-1)
    intercept = np.asarray(target.get("intercept", 0.0), dtype=float).reshape(-1)
    if slope.size != 1 or intercept.size != 1:
        fail(f"{key}.problem.target", "slope and intercept must be single numbers (k = 1)")


def check_standard_flows(flows: Mapping[str, Mapping], key: str, theorem: str) -> None:
    """Refuse flows other than the standard gradient flow (the flow the JR theorems are about)."""
    for label, settings in flows.items():
        if settings["flow"] != "standard":
            fail(f"{key}.flows", f"{theorem} is about the standard gradient flow; flow {label!r} is "
                                 f"{settings['flow']!r} (use the explore kind for other flows)")


def affine_parameters(problem: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """``(alpha, beta, a, b)`` of a problem that passed :func:`check_affine_uniform`."""
    target = problem["target"]
    slope = np.asarray(target["slope"], dtype=float).reshape(-1)
    intercept = np.asarray(target.get("intercept", 0.0), dtype=float).reshape(-1)
    a, b = (float(v) for v in problem.get("domain", [0.0, 1.0]))
    return float(slope[0]), float(intercept[0]), a, b


def add_threshold_columns(spec: Mapping[str, Any], table, threshold) -> dict:
    """Columns ``alpha``, ``beta``, ``threshold = threshold(alpha, a, b)`` and ``below_threshold`` (initial risk
    below it) of each run's case; returns ``{case: (alpha, beta, threshold)}``."""
    values = {}
    for case in spec["cases"]:
        alpha, beta, a, b = affine_parameters(case["problem"])
        values[case["case"]] = (alpha, beta, threshold(alpha, a, b))
    for column, index in (("alpha", 0), ("beta", 1), ("threshold", 2)):
        table[column] = table["case"].map(lambda c, i=index: values[c][i])
    table["below_threshold"] = table["initial_risk"] < table["threshold"]
    return values


def affine_critical_value(alpha: float, a: float, b: float) -> float:
    """``alpha^2 (b - a)^2 / 972``: the risk of the H = 2 critical point of docs/MATH.md section 5.

    On ``[0, 1]`` the neurons ``(-1, 2/3, -2/3 alpha)``, ``(1, -1/3, 2/3 alpha)`` and ``c = beta + alpha/2`` give
    ``G = 0`` and ``L = alpha^2/972``. For ``[a, b]`` substitute ``x = a + (b - a) u``: the uniform law on
    ``[a, b]`` becomes the uniform law on ``[0, 1]``, the target becomes ``alpha (b - a) u + (alpha a + beta)``
    and a network in ``x`` is a network in ``u`` (affine inner maps compose), so the critical value becomes
    ``(alpha (b - a))^2 / 972``. For ``H > 2``, the same point padded with dead neurons (kinks outside
    ``[a, b]``, outer weight 0) is critical with the same risk, so the value bounds the threshold of JR
    Theorem 1.2 for every ``H >= 2``.
    """
    return alpha**2 * (b - a) ** 2 / 972.0


def single_neuron_threshold(alpha: float, a: float, b: float) -> float:
    """``alpha^2 (b - a)^2 / 12 = Var(alpha X)``, ``X ~ U[a, b]``: a dead neuron plus the best constant."""
    return alpha**2 * (b - a) ** 2 / 12.0
