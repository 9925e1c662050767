"""Where an app's messages live: the cluster (bootstrap servers, credentials) and the names and
timings qtasks uses there, read from a ``kafka://`` URL.

``kafka://[user:password@]host[:port][,host2[:port2]...][?option=value&...]``; the port defaults
to 9092. With a user and password, SASL is used (``PLAIN`` unless ``sasl_mechanism`` says
``SCRAM-SHA-256`` or ``SCRAM-SHA-512``). The options are listed in :data:`OPTIONS`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from qtasks.errors import ConfigError
from qtasks.registry import mask_url

#: The URL used when the broker is chosen by name (``broker="kafka"``).
DEFAULT_URL = "kafka://127.0.0.1:9092"
DEFAULT_PORT = 9092

#: option -> (default, lowest, highest) for the whole-number options.
NUMBERS: dict[str, tuple[int, int, int]] = {
    "partitions": (8, 1, 10_000),  # of each queue topic created by qtasks
    "replication": (0, 0, 100),  # 0: min(3, brokers in the cluster)
    "session_timeout_ms": (10_000, 100, 3_600_000),
    "heartbeat_interval_ms": (3_000, 10, 3_600_000),
    "rebalance_timeout_ms": (0, 0, 3_600_000),  # 0: the session timeout
    "fetch_max_wait_ms": (20, 1, 60_000),
    "buffer": (256, 1, 100_000),  # records read ahead per queue
    "hold_ms": (10_000, 100, 3_600_000),  # an early message is held this long, then re-queued
}
TEXTS = ("prefix", "group", "security_protocol", "sasl_mechanism", "client_id")
OPTIONS = (*NUMBERS, *TEXTS)
PREFIX_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")
#: the end of a mapped name: a queue name that ends like this is mapped too, so that it cannot
#: equal the mapped form of another name
DIGEST_END = re.compile(r"-[0-9a-f]{12}$")
#: Kafka refuses longer topic names
MAX_TOPIC = 249
#: queue names longer than this are cut and get a digest (as since the first release)
MAX_NAME = 200
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed URL: ``bootstrap`` for aiokafka, ``shown`` for messages (password masked)."""

    bootstrap: tuple[str, ...]
    shown: str
    prefix: str = "qtasks"
    group: str = "qtasks"
    numbers: dict[str, int] = field(default_factory=lambda: {k: v[0] for k, v in NUMBERS.items()})
    security: dict[str, Any] = field(default_factory=dict)
    client_id: str = "qtasks"

    def topic(self, queue: str) -> str:
        """The topic of ``queue``: ``<prefix>.<queue>``. A queue name with characters Kafka does
        not allow in topic names, one too long for Kafka's 249 characters, or one ending like a
        digest (``-`` and 12 hex digits) gets the characters replaced, is cut, and gets a digest
        of the name appended: every mapped name ends in a digest and no name kept as it is does,
        so two queues share a topic only if their digests collide."""
        room = MAX_TOPIC - len(self.prefix) - 1  # the prefix is at most 100: room >= 148
        name = TOPIC_CHARS.sub("_", queue)
        if name != queue or not queue or len(queue) > min(MAX_NAME, room) or DIGEST_END.search(queue):
            name = f"{name[: min(MAX_NAME, room - 13)]}-{hashlib.sha256(queue.encode()).hexdigest()[:12]}"
        return f"{self.prefix}.{name}"

    def group_id(self, queue: str) -> str:
        """The consumer group of ``queue``: one group per queue, shared by every worker. (Kafka
        sets no limit on the length of a group id.)"""
        return f"{self.group}.{self.topic(queue).removeprefix(self.prefix + '.')}"

    @property
    def dead_topic(self) -> str:
        """Dead letters of every queue, and the tombstones of purged ones."""
        return f"{self.prefix}-dead"

    @property
    def control_topic(self) -> str:
        """Purge marks and hand-out counts (``control.py``)."""
        return f"{self.prefix}-control"

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments common to aiokafka's producer, consumers and admin."""
        return {"bootstrap_servers": list(self.bootstrap), "client_id": self.client_id, **self.security}

    def consumer_options(self) -> dict[str, Any]:
        """The group consumer's timings (Tansu and small test clusters want them short)."""
        n = self.numbers
        return {
            "session_timeout_ms": n["session_timeout_ms"],
            "heartbeat_interval_ms": n["heartbeat_interval_ms"],
            "rebalance_timeout_ms": n["rebalance_timeout_ms"] or n["session_timeout_ms"],
            "fetch_max_wait_ms": n["fetch_max_wait_ms"],
        }


def parse(url: str | None) -> Target:
    """Read ``url``; ``ConfigError`` naming the URL (password masked) if anything is wrong."""
    url = url or DEFAULT_URL
    shown = mask_url(url)
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ConfigError(f"bad Kafka URL {shown!r}: expected kafka://host:port[,host:port][?options]")
    netloc, _, query = rest.partition("?")
    netloc = netloc.rstrip("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
        if "@" in query:  # a '?' in the credentials, which the masked URL may show: hide all
            hidden = f"kafka://***@{query.rpartition('@')[2]}"
            raise ConfigError(
                f"bad Kafka URL {hidden!r}: an '@' after the '?'"
                " (percent-encode a '?' in a password, an '@' in an option)"
            )
    bootstrap = tuple(_host(h, shown) for h in hosts.split(",")) if hosts else ()
    if not bootstrap:
        raise ConfigError(f"bad Kafka URL {shown!r}: no host")
    own = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(own) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} in Kafka URL {shown!r}; known: {', '.join(OPTIONS)}")
    numbers = {k: _number(k, own.get(k), shown) for k in NUMBERS}
    prefix = own.get("prefix", "qtasks")
    group = own.get("group", prefix)
    for name, value in (("prefix", prefix), ("group", group)):
        if not PREFIX_NAME.fullmatch(value):
            raise ConfigError(
                f"bad {name} {value!r} in Kafka URL {shown!r}: use letters, digits, '.', '_' and '-' (at most 100)"
            )
    return Target(
        bootstrap,
        shown,
        prefix,
        group,
        numbers,
        _security(userinfo, own, shown),
        own.get("client_id") or "qtasks",
    )


def _host(text: str, shown: str) -> str:
    """``host:port`` of one piece after the last '@' (so never a piece of the credentials)."""
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = port, str(DEFAULT_PORT)
    if not host or not _whole(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"bad Kafka URL {shown!r}: {text!r} is not host:port")
    return f"{host}:{int(port)}"


def _number(name: str, text: str | None, shown: str) -> int:
    default, low, high = NUMBERS[name]
    if text is None:
        return default
    if not _whole(text) or not low <= int(text) <= high:
        raise ConfigError(f"bad {name} {text!r} in Kafka URL {shown!r}: a whole number from {low} to {high}")
    return int(text)


def _whole(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²', which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _security(userinfo: str, own: dict[str, str], shown: str) -> dict[str, Any]:
    """aiokafka's security options: SASL when the URL has credentials, TLS when asked."""
    # split before decoding: a percent-encoded ':' belongs to the user name
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    protocol = own.get("security_protocol") or ("SASL_PLAINTEXT" if user else "PLAINTEXT")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"bad security_protocol {protocol!r} in Kafka URL {shown!r}: one of {', '.join(PROTOCOLS)}")
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = own.get("sasl_mechanism", "PLAIN")
        if mechanism not in MECHANISMS:
            raise ConfigError(
                f"bad sasl_mechanism {mechanism!r} in Kafka URL {shown!r}: one of {', '.join(MECHANISMS)}"
            )
        options.update(sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

        options["ssl_context"] = create_ssl_context()
    return options
