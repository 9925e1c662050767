"""The core's broker contract against a real Kafka-protocol server (Tansu, or QTASKS_TEST_KAFKA_URL).

There is no Kafka storage (a log is not a key-value store), so there is no storage contract here."""

from __future__ import annotations

import pytest
from qtasks.testing.contract import BrokerContract

from tests.kafka.conftest import with_prefix

pytestmark = pytest.mark.kafka


class TestKafkaBroker(BrokerContract):
    @pytest.fixture
    def broker_spec(self, kafka_url: str) -> str:
        return with_prefix(kafka_url, "contract")
