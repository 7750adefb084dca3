"""The dynamics layer: vector fields of the flows, the solvers that integrate them, and what is computed
from a trajectory's end.

:mod:`.flows` (standard and normalized gradient flow, with Jacobians), :mod:`.settings` (how one flow is
integrated: :class:`~.settings.FlowSettings`), :mod:`.solvers` (one driver loop, explicit pairs, Rosenbrock,
gradient descent), :mod:`.certify` (polishing a final state to a certified critical point), :mod:`.classify`
(the type of that point) and :mod:`.asymptotics` (the fitted decay of the risk).
"""
