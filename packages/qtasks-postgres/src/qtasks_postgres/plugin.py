"""Registers the ``postgres`` broker and storage for ``postgres://`` and ``postgresql://`` URLs.

Import-light on purpose: the core imports every plugin module to build an app's plugin manager,
so asyncpg is imported by the factories, only in an app that selects these components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtasks.hookspecs import hookimpl

if TYPE_CHECKING:
    from qtasks.registry import ComponentRequest, Registry

SCHEMES = ("postgres", "postgresql")


def make_broker(request: ComponentRequest) -> Any:
    from qtasks_postgres.broker import PostgresBroker
    from qtasks_postgres.database import Database
    from qtasks_postgres.target import parse

    return PostgresBroker(Database(parse(request.url)), request.config.dead_letter_ttl)


def make_storage(request: ComponentRequest) -> Any:
    """A storage on the app's broker's pool when that is a postgres broker on the same database,
    schema and prefix (one pool per app: a submit is one round trip, and a success is stored and
    acked in one), else on a pool of its own."""
    from qtasks_postgres.broker import PostgresBroker
    from qtasks_postgres.database import Database
    from qtasks_postgres.storage import PostgresStorage
    from qtasks_postgres.target import parse

    target = parse(request.url)
    broker = request.broker
    if isinstance(broker, PostgresBroker) and broker.db.target.key == target.key:
        broker.storage = PostgresStorage(broker.db, request.serializer)  # its deliveries ack_with
        return broker.storage
    return PostgresStorage(Database(target), request.serializer)


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_broker("postgres", make_broker, schemes=SCHEMES)
    registry.add_storage("postgres", make_storage, schemes=SCHEMES)
