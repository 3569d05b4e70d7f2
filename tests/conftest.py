"""Shared test fixtures: where the public ground truth lives, and oracles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "testdata"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/testdata, or skip the test with a reason when absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs ../shared/testdata/{'/'.join(parts)} (public ground truth; present in CI)")
    return p


@pytest.fixture
def shared() -> Path:
    """The shared test-data folder (skips when absent)."""
    return shared_path()


@pytest.fixture
def tshark() -> str:
    """Path of the tshark binary (skips with what to install when absent)."""
    exe = shutil.which("tshark")
    if not exe:
        pytest.skip("needs tshark (apt-get install tshark; `make test` installs it when run as root)")
    return exe


@pytest.fixture
def case(tmp_path: Path):
    """A fresh empty case in a temporary folder."""
    import forensics

    c = forensics.open_case(tmp_path / "case")
    yield c
    c.close()
