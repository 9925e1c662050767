"""The core's contract suites against a real Redis-protocol server (Valkey, or QTASKS_TEST_REDIS_URL)."""

from __future__ import annotations

import pytest
from qtasks.testing.contract import BrokerContract, StorageContract

pytestmark = pytest.mark.redis


class TestRedisBroker(BrokerContract):
    @pytest.fixture
    def broker_spec(self, redis_url: str) -> str:
        return redis_url


class TestRedisStorage(StorageContract):
    @pytest.fixture
    def storage_spec(self, redis_url: str) -> str:
        return redis_url
