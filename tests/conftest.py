"""Shared fixtures: the committed real-data subsets, and quiet, reproducible torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the whole session (module-scoped fixtures that train included): on a small
    shared CPU, OpenMP threads waiting on each other cost far more than they gain for these tiny models
    (measured 30x slower under load). Subprocesses choose their own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A fresh $RESNETS_CACHE for the session (subprocesses inherit it): tests neither read what earlier runs
    left in the user's cache (format rankings, ONNX exports, decoded data) nor fill it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(tmp_path_factory.mktemp("resnets-cache")))
        yield


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
