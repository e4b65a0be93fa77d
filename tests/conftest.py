"""Shared fixtures. Nothing here downloads: models are tiny and built locally."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test imports transformers / prefect: a missing hub model must fail at once
# instead of retrying for ~45 s, and Prefect must not phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# One intra-op thread: the tests' models are tiny (threads only add contention), and seeded
# training results (the learning tests) then do not depend on the machine's core count.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference material folder (`../shared` next to the repository, or $LAGOVAD_SHARED)."""
    path = Path(os.environ.get("LAGOVAD_SHARED", REPO_ROOT.parent / "shared"))
    if not (path / "benchmarks").is_dir():
        pytest.fail(f"reference folder not found at {path}; set LAGOVAD_SHARED")
    return path


@pytest.fixture(scope="session")
def benchmarks_dir(shared_dir: Path) -> Path:
    """Real test-split annotations of the seven benchmarks."""
    return shared_dir / "benchmarks"


@pytest.fixture(scope="session")
def robbery102_mp4(benchmarks_dir: Path) -> Path:
    """The real UCF-Crime test video Robbery102_x264.mp4 (1827 frames)."""
    return benchmarks_dir / "videos" / "Robbery102_x264.mp4"
