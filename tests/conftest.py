"""Fixtures shared by the tests; helpers live in support.py."""

import os

import pytest
from support import run_cli


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """One artifact cache for the whole session, shared by every pytest-xdist worker. Tests that build the standard
    tiny artifacts (batch 1, seed 0, the builds parity makes) share it, so each is lowered once: the ExecuTorch
    target tests, parity and the runner contract reuse each other's builds, and a worker that asks for an artifact
    another is building waits for it (the cache's per-key lock). A test that damages, perturbs or force-rebuilds an
    artifact, or that asserts a fresh build, uses its own ``tmp_path`` instead."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return tmp_path_factory.mktemp("artifacts")
    shared = tmp_path_factory.getbasetemp().parent / "artifacts"  # the workers' base folders share this parent
    shared.mkdir(exist_ok=True)
    return shared
