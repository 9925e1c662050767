"""Fixtures for the postgres tests: names of this test's own on the session's server, and helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

import pytest


@pytest.fixture
def postgres_app_url(postgres_dsn: str) -> str:
    """The session's server, with tables of this test's own (``?prefix=...``)."""
    return with_prefix(postgres_dsn)


def with_prefix(url: str, prefix: str | None = None) -> str:
    return with_params(url, prefix=prefix or "t" + uuid.uuid4().hex[:12])


def with_params(url: str, **params: str) -> str:
    """``url`` with these query parameters added (it may have some already)."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


async def eventually(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)
