"""qtasks-postgres: a PostgreSQL broker and result storage for qtasks.

``pip install qtasks-postgres`` and ``QueueTasks(broker="postgresql://user@host/db")`` (or
``QTASKS_BROKER=postgresql://...``) is all it takes: the ``qtasks`` entry point registers the
components. Importing this package imports nothing heavy; the classes load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qtasks_postgres.broker import PostgresBroker, PostgresDelivery
    from qtasks_postgres.database import Database, PostgresUnavailable
    from qtasks_postgres.storage import PostgresStorage

__all__ = ["Database", "PostgresBroker", "PostgresDelivery", "PostgresStorage", "PostgresUnavailable"]

_HOMES = {
    "PostgresBroker": "qtasks_postgres.broker",
    "PostgresDelivery": "qtasks_postgres.broker",
    "Database": "qtasks_postgres.database",
    "PostgresUnavailable": "qtasks_postgres.database",
    "PostgresStorage": "qtasks_postgres.storage",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'qtasks_postgres' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
