"""An OpenTelemetry SDK per test, passed explicitly: the global providers are never set here, so
the ``otel`` entry point stays a no-op for the rest of the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otel.kit import Sdk


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    found = Sdk()
    yield found
    found.shutdown()
