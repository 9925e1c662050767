"""qtasks-kafka: a Kafka broker for qtasks.

``pip install qtasks-kafka`` and ``QueueTasks(broker="kafka://host:9092")`` (or
``QTASKS_BROKER=kafka://...``) is all it takes: the ``qtasks`` entry point registers the broker.
Results need a storage (Kafka is a log, not a key-value store): the default ``sqlite``, or
``redis://`` / ``postgresql://``. Importing this package imports nothing heavy; the classes load
on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qtasks_kafka.broker import KafkaBroker
    from qtasks_kafka.client import KafkaUnavailable
    from qtasks_kafka.delivery import KafkaDelivery
    from qtasks_kafka.target import Target

__all__ = ["KafkaBroker", "KafkaDelivery", "KafkaUnavailable", "Target"]

_HOMES = {
    "KafkaBroker": "qtasks_kafka.broker",
    "KafkaDelivery": "qtasks_kafka.delivery",
    "KafkaUnavailable": "qtasks_kafka.client",
    "Target": "qtasks_kafka.target",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'qtasks_kafka' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
