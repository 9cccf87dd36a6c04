"""Fixtures shared by the tests; helpers live in support.py."""

import pytest
from support import run_cli


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """One artifact cache for the whole session. Tests that build the standard tiny artifacts (batch 1, seed 0,
    the builds parity makes) share it, so each is lowered once: the ExecuTorch target tests, parity and the runner
    contract reuse each other's builds. A test that damages, perturbs or force-rebuilds an artifact, or that
    asserts a fresh build, uses its own ``tmp_path`` instead."""
    return tmp_path_factory.mktemp("artifacts")
