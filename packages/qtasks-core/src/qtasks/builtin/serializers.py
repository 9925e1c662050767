"""The JSON serializer (the default) and conversions for common non-JSON types."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

from qtasks.hookspecs import hookimpl
from qtasks.registry import Registry


class JsonSerializer:
    """JSON, ASCII-escaped (so any Python string round-trips, lone surrogates included). Objects
    JSON does not know go through ``default`` (the encode-value hook)."""

    def __init__(self, default: Callable[[Any], Any] | None = None) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=default, allow_nan=False)
        self._decoder = json.JSONDecoder()

    def dumps(self, obj: Any) -> bytes:
        return self._encoder.encode(obj).encode()

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data.decode() if isinstance(data, bytes | bytearray | memoryview) else data)


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_serializer("json", lambda request: JsonSerializer(request.serializer))


@hookimpl(trylast=True)
def qtasks_encode_value(value: Any) -> Any:
    """Dates and times as ISO text, UUIDs and decimals as text, enums by value, sets as lists,
    dataclasses as dicts."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return None
