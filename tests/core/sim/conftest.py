"""Shared fixtures of the sim tests: the anyio backend and a fresh sim server per test."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
