"""Fixtures shared by the tests; helpers live in support.py."""

import pytest
from support import run_cli


@pytest.fixture
def cli():
    return run_cli
