"""The experiments layer: a workflow configuration turned into runs, and runs turned into conclusions.

:mod:`.config` resolves and checks a configuration into scenarios, cases, flows and batches;
:mod:`.seeding` and :mod:`.initialization` draw each run's initial parameters from its own stream;
:mod:`.kinds` holds the scenario kinds (preconditions, verdict, figure and caption of each);
:mod:`.checks` the per-run table and the thresholds the verdicts share; :mod:`.summary` and
:mod:`.plotting` the aggregation stage and the figures' common style.
"""
