"""The model layer: what a problem is, as validated data.

The parameter layout and realization of a shallow ReLU network (:mod:`.network`), target functions
(:mod:`.targets`), input laws (:mod:`.measures`), the d = 1 piecewise tables of target and density
(:mod:`.piecewise`) and the checks of configuration data that name the offending key (:mod:`.validation`).
Nothing here evaluates a risk; it imports nothing else of reluflow.
"""
