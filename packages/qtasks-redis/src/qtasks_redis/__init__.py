"""qtasks-redis: a Redis broker and result storage for qtasks.

``pip install qtasks-redis`` and ``QueueTasks(broker="redis://host/0")`` (or
``QTASKS_BROKER=redis://...``) is all it takes: the ``qtasks`` entry point registers the
components. Importing this package imports nothing heavy; the classes load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qtasks_redis.broker import RedisBroker, RedisDelivery
    from qtasks_redis.client import RedisClient, RedisUnavailable
    from qtasks_redis.storage import RedisStorage

__all__ = ["RedisBroker", "RedisClient", "RedisDelivery", "RedisStorage", "RedisUnavailable"]

_HOMES = {
    "RedisBroker": "qtasks_redis.broker",
    "RedisDelivery": "qtasks_redis.broker",
    "RedisClient": "qtasks_redis.client",
    "RedisUnavailable": "qtasks_redis.client",
    "RedisStorage": "qtasks_redis.storage",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'qtasks_redis' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
