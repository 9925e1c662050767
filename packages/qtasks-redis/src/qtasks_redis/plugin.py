"""Registers the ``redis`` broker and storage for ``redis://``, ``rediss://`` and ``unix://``.

Import-light on purpose: the core imports every plugin module to build an app's plugin manager,
so redis-py is imported by the factories, only in an app that selects these components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtasks.hookspecs import hookimpl

if TYPE_CHECKING:
    from qtasks.registry import ComponentRequest, Registry

SCHEMES = ("redis", "rediss", "unix")


def make_broker(request: ComponentRequest) -> Any:
    from qtasks_redis.broker import RedisBroker
    from qtasks_redis.client import RedisClient

    return RedisBroker(RedisClient(request.url), request.config.dead_letter_ttl)


def make_storage(request: ComponentRequest) -> Any:
    """A storage on the app's broker's client when that is a redis broker on the same server and
    prefix (one set of connections per app: a submit is one pipeline; the broker's claim then
    reads the records and its deliveries offer ``ack_with``, see ``RedisBroker.storage``), else
    on a client of its own."""
    from qtasks_redis.broker import RedisBroker
    from qtasks_redis.client import RedisClient, split_url
    from qtasks_redis.storage import RedisStorage

    broker = request.broker
    if isinstance(broker, RedisBroker) and (broker.client.url, broker.client.keys.prefix) == split_url(request.url):
        broker.storage = storage = RedisStorage(broker.client, request.serializer)
        return storage
    return RedisStorage(RedisClient(request.url), request.serializer)


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_broker("redis", make_broker, schemes=SCHEMES)
    registry.add_storage("redis", make_storage, schemes=SCHEMES)
