"""Fixtures for end-to-end tests on the real Pulumi engine (local file backend).

These tests fail, rather than skip, when the toolchain is missing: CI installs
it with ``make setup``, and a silently skipped engine test would hide exactly
the breakage it exists to catch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from automation.toolchain import Toolchain, find_toolchain


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """The installed Pulumi toolchain (``scripts/install-pulumi``)."""
    return find_toolchain()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private state folder: local backend plus passphrase file."""
    d = tmp_path / "state"
    d.mkdir()
    return d
