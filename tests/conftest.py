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


# Files whose tests lower models or start many CLI processes: they run first, so that pytest-xdist's workers finish
# on short tests and neither waits long for the other at the end.
SLOWEST_FILES = ("test_target_executorch.py", "test_cli.py", "test_parity.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: the order within a file is kept
