"""Fixtures for the kafka tests: topic and group names of this test's own on the session's
server, and helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

import pytest


@pytest.fixture
def kafka_app_url(kafka_url: str) -> str:
    """The session's server, with topics and groups of this test's own (``?prefix=...``)."""
    return with_prefix(kafka_url)


def with_prefix(url: str, prefix: str | None = None) -> str:
    return with_params(url, prefix=prefix or "t" + uuid.uuid4().hex[:12])


def with_params(url: str, **params: str) -> str:
    """``url`` with these query parameters added (it may have some already)."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


async def eventually(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)
