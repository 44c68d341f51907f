"""The search tests read the shared tiny trained run (tests/conftest.py: tiny_run)."""

import pytest


@pytest.fixture(scope="package")
def run(tiny_run):
    return tiny_run
