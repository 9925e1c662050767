"""The contract suites against the built-in memory and sqlite components."""

from __future__ import annotations

from pathlib import Path

import pytest
from qtasks.testing.contract import BrokerContract, StorageContract


class TestMemoryBroker(BrokerContract):
    shared_instances = False

    @pytest.fixture
    def broker_spec(self) -> str:
        return "memory"


class TestMemoryStorage(StorageContract):
    shared_instances = False

    @pytest.fixture
    def storage_spec(self) -> str:
        return "memory"


class TestSqliteBroker(BrokerContract):
    @pytest.fixture
    def broker_spec(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'contract.db'}"


class TestSqliteStorage(StorageContract):
    @pytest.fixture
    def storage_spec(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'contract.db'}"
