"""Registers the ``kafka`` broker for ``kafka://`` URLs.

Import-light on purpose: the core imports every plugin module to build an app's plugin manager,
so aiokafka is imported by the factory, only in an app that selects this broker. There is no
Kafka storage: a log is not a key-value store, so an app pairs this broker with a storage
(``sqlite``, the default, or ``redis://`` / ``postgresql://``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtasks.hookspecs import hookimpl

if TYPE_CHECKING:
    from qtasks.registry import ComponentRequest, Registry

SCHEMES = ("kafka",)


def make_broker(request: ComponentRequest) -> Any:
    from qtasks_kafka.broker import KafkaBroker
    from qtasks_kafka.target import parse

    return KafkaBroker(parse(request.url), request.config.dead_letter_ttl)


@hookimpl
def qtasks_register_components(registry: Registry) -> None:
    registry.add_broker("kafka", make_broker, schemes=SCHEMES)
