"""Fixtures for the redis tests: a key prefix per test on the session's server, and helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest


@pytest.fixture
def redis_app_url(redis_url: str) -> str:
    """The session's server, with key names of this test's own (``?prefix=...``)."""
    return with_prefix(redis_url)


def with_prefix(url: str, prefix: str | None = None) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix or 't' + uuid.uuid4().hex[:12]}"


async def eventually(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)
