"""The component registry: which plugin provides which broker, storage or serializer."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qtasks.config import Config
from qtasks.errors import DuplicateComponentError, PluginLoadFailure, UnknownComponentError

SLOTS = ("broker", "storage", "serializer")
#: Where a URL scheme nobody registered would come from.
INSTALL_HINTS = {
    **dict.fromkeys(("redis", "rediss", "unix"), "qtasks-redis"),
    **dict.fromkeys(("postgres", "postgresql"), "qtasks-postgres"),
    "kafka": "qtasks-kafka",
}


@dataclass(frozen=True, slots=True)
class ComponentRequest:
    """What a factory gets: the URL (None when chosen by name), the config, the serializer, and
    for a storage the app's broker (a backend providing both may share its client with it)."""

    url: str | None
    config: Config
    serializer: Any = None
    broker: Any = None


Factory = Callable[[ComponentRequest], Any]


@dataclass(frozen=True, slots=True)
class Entry:
    slot: str
    name: str
    factory: Factory
    schemes: tuple[str, ...]
    provider: str


def mask_url(url: str) -> str:
    """The URL with any password (``user:pw@``, ``?password=``, ``?sslpassword=``) as ``***``, safe to print."""
    masked = re.sub(r"(//[^/@:]*:)(?:[^?#]*|[^/]*)@", r"\1***@", url)  # to an @ past any @ / ? # it holds
    return re.sub(r"([?&](?:ssl_?)?password=)[^&#]*", r"\1***", masked, flags=re.IGNORECASE)


@dataclass
class Registry:
    """Filled by :func:`~qtasks.hookspecs.qtasks_register_components`; resolves names and URLs."""

    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    schemes: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: Sequence[PluginLoadFailure] = ()
    provider: str = "?"
    disabled: frozenset[str] = frozenset()

    def for_provider(self, provider: str) -> Registry:
        """A view that records ``provider`` as the source of what is added through it."""
        return Registry(self.entries, self.schemes, self.failures, provider, self.disabled)

    def add_broker(self, name: str, factory: Factory, *, schemes: Sequence[str] = ()) -> None:
        self.add("broker", name, factory, schemes=schemes)

    def add_storage(self, name: str, factory: Factory, *, schemes: Sequence[str] = ()) -> None:
        self.add("storage", name, factory, schemes=schemes)

    def add_serializer(self, name: str, factory: Factory) -> None:
        self.add("serializer", name, factory)

    def add(self, slot: str, name: str, factory: Factory, *, schemes: Sequence[str] = ()) -> None:
        if slot not in SLOTS or not callable(factory):
            raise ValueError(f"{self.provider}: bad registration {slot!r} {name!r}")
        if (slot, name) in self.entries:
            raise DuplicateComponentError(slot, name, [self.entries[slot, name].provider, self.provider])
        for scheme in schemes:
            if (slot, scheme) in self.schemes:
                owner = self.entries[slot, self.schemes[slot, scheme]].provider
                raise DuplicateComponentError(slot, f"{scheme}://", [owner, self.provider])
            self.schemes[slot, scheme] = name
        self.entries[slot, name] = Entry(slot, name, factory, tuple(schemes), self.provider)

    def names(self, slot: str) -> list[str]:
        return [name for (s, name) in self.entries if s == slot]

    def lookup(self, slot: str, spec: str) -> tuple[Entry, str | None]:
        """The entry for a name or URL, and the URL (None for a bare name)."""
        scheme = spec.split("://", 1)[0] if "://" in spec else None
        name = self.schemes.get((slot, scheme)) if scheme else spec
        entry = self.entries.get((slot, name)) if name else None
        if entry is not None:
            return entry, spec if scheme else None
        shown, key, hint = mask_url(spec), scheme or spec, ""
        failed = [f for f in self.failures if f.name == key or INSTALL_HINTS.get(key) == f.distribution]
        if failed:
            hint = f"It would come from a plugin that failed to load: {failed[0]}"
        elif key in INSTALL_HINTS and (name := INSTALL_HINTS[key].removeprefix("qtasks-")) in self.disabled:
            hint = f"Plugin {name!r} ({INSTALL_HINTS[key]}) is disabled by QTASKS_DISABLE_PLUGINS."
        elif key in INSTALL_HINTS:
            hint = f"Install it: pip install {INSTALL_HINTS[key]}"
        available = [f"{s}://" for (sl, s) in self.schemes if sl == slot] if scheme else self.names(slot)
        raise UnknownComponentError(slot, shown, available, hint)

    def create(self, slot: str, spec: str, config: Config, serializer: Any = None, broker: Any = None) -> Any:
        entry, url = self.lookup(slot, spec)
        return entry.factory(ComponentRequest(url, config, serializer, broker))
