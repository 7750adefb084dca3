"""Shared fixtures: one complete run of the test configuration, reused by the workflow tests."""

from __future__ import annotations

import pytest
from workflow_runner import copy_project, run_snakemake


@pytest.fixture(scope="session")
def completed_workflow(tmp_path_factory):
    """A temporary project copy in which ``snakemake --cores 2 --configfile config/test.yaml`` has run.

    Tests must not modify it; tests that mutate results make their own copy.
    """
    workdir = copy_project(tmp_path_factory.mktemp("workflow"))
    proc = run_snakemake(workdir)
    return workdir, proc
