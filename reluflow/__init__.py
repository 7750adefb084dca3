"""reluflow: gradient flows of shallow ReLU networks.

Public API (kept stable; outside checks use it):

- :class:`reluflow.Problem` with ``Problem.from_config(mapping)``, ``n_params``,
  ``realization(theta, x)``, ``risk(theta)``, ``generalized_gradient(theta)``;
- :func:`reluflow.simulate` (batched flows, see :mod:`reluflow.simulate`).

The mathematics is stated in ``docs/MATH.md`` (a copy of the project's shared notes).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("reluflow")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

try:  # the pieces land one issue at a time; the package must import at every stage
    from reluflow.problem import Problem  # noqa: F401

    __all__.append("Problem")
except ImportError:  # pragma: no cover - only while the core is being built
    pass
