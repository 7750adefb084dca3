"""reluflow: gradient flows of shallow ReLU networks.

Public API (kept stable; outside checks use it):

- :class:`reluflow.Problem` with ``Problem.from_config(mapping)``, ``n_params``,
  ``realization(theta, x)``, ``risk(theta)``, ``generalized_gradient(theta)``;
- :func:`reluflow.simulate` (batched flows, see :mod:`reluflow.simulate`).

The mathematics is stated in ``docs/MATH.md`` (a copy of the project's shared notes).
"""

from reluflow.files.provenance import package_version
from reluflow.problem import Problem
from reluflow.simulate import simulate  # the function: ``reluflow.simulate`` (the module is reluflow.simulate too,

# but once this name is bound, ``reluflow.simulate`` is the function; ``from reluflow.simulate import ...`` still
# reaches the module through sys.modules)

__version__ = package_version()

__all__ = ["Problem", "__version__", "simulate"]
