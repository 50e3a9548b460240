"""Shared fixtures: the committed real-data subsets, and quiet, reproducible torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
