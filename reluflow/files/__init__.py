"""The files layer: everything reluflow writes or reads on disk.

Trajectory files (:mod:`.trajectories`, schema ``reluflow-trajectories/1``), initialization files
(:mod:`.initializations`), atomic output (:mod:`.atomic`: temporary file, fsync, rename) and provenance
(:mod:`.provenance`: package version, git revision, configuration as JSON).
"""
