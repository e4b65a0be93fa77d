"""Fixtures of the dataset-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from prevad import Store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """A fresh empty store."""
    return Store.init(tmp_path / "store")
