"""Fixtures of the suites that run on every backend: ``backend`` (chosen with ``kit.on``) and
``project``, the workers' directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.kit import FIXTURES, SETTINGS, Backend, make_project, with_prefix


@pytest.fixture(scope="session")
def backend_server(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The backend's name and the URL of the session's server (its fixture starts it or fails
    loudly; none for SQLite). Session-scoped, so it is set up before a test's environment is
    cleaned of QTASKS_* settings, as when a test names the server's fixture itself."""
    fixture = FIXTURES.get(request.param)
    return request.param, request.getfixturevalue(fixture) if fixture else None


@pytest.fixture
def backend(backend_server: tuple[str, str | None]) -> Backend:
    """The backend, with names (keys, tables, topics and groups) of this test's own."""
    name, url = backend_server
    return Backend(name, with_prefix(url) if url else None, **SETTINGS[name])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)
