"""Where an app's rows live: the server (a DSN for asyncpg) and the names under which they live.

A ``postgres://`` or ``postgresql://`` URL is read by asyncpg (user, password, host, port,
database, ``sslmode`` and the other libpq parameters), except for three query parameters that are
qtasks' own and are taken out first:

* ``schema`` -- the schema of the tables (default: the connection's ``current_schema()``,
  usually ``public``); created if it does not exist;
* ``prefix`` -- the start of every table, function and channel name (default ``qtasks``), so
  apps can share a schema: ``postgresql://host/db?prefix=billing``;
* ``pool_size`` -- connections in the app's pool at most (default 10).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from qtasks.errors import ConfigError
from qtasks.registry import mask_url

#: The URL used when the component is chosen by name (``broker="postgres"``): asyncpg then takes
#: everything from the ``PG*`` environment variables and libpq's defaults.
DEFAULT_URL = "postgresql://"
DEFAULT_PREFIX = "qtasks"
DEFAULT_POOL_SIZE = 10
OWN_PARAMETERS = ("schema", "prefix", "pool_size")
PREFIX_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: PostgreSQL's reserved key words, which cannot name a schema unquoted (qtasks' SQL names it
#: unquoted): those marked "reserved" and "reserved (can be function or type)" in the appendix
#: "SQL Key Words" of its manual, version 18 (``pg_get_keywords()``, catcodes R and T). A prefix
#: needs no such list: it is always followed by ``_queue``, ``_apply2``...
_RESERVED = """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast check
    collate collation column concurrently constraint create cross current_catalog current_date
    current_role current_schema current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign freeze from full grant group having ilike in
    initially inner intersect into is isnull join lateral leading left like limit localtime
    localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
    references returning right select session_user similar some symmetric system_user table
    tablesample then to trailing true union unique user using variadic verbose when where window
    with
"""
RESERVED_WORDS = frozenset(_RESERVED.split())


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed URL: ``dsn`` for asyncpg, ``shown`` for messages (password masked)."""

    dsn: str
    shown: str
    schema: str | None
    prefix: str
    pool_size: int = DEFAULT_POOL_SIZE

    @property
    def key(self) -> tuple[str, str | None, str]:
        """Two components with the same key share one pool."""
        return self.dsn, self.schema, self.prefix


def parse(url: str | None) -> Target:
    """Split ``url`` into asyncpg's DSN and qtasks' own parameters; ``ConfigError`` if they are bad."""
    url = url or DEFAULT_URL
    shown = mask_url(url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OWN_PARAMETERS}
    rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMETERS])
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not PREFIX_NAME.fullmatch(prefix):
        raise ConfigError(
            f"bad prefix {prefix!r} in PostgreSQL URL {shown!r}: use lowercase letters, digits and _ "
            "(at most 40, not starting with a digit)"
        )
    schema = own.get("schema") or None
    if schema is not None and (fault := schema_fault(schema)):
        raise ConfigError(f"bad schema {schema!r} in PostgreSQL URL {shown!r}: {fault}")
    size = own.get("pool_size", str(DEFAULT_POOL_SIZE))
    if not (size.isascii() and size.isdigit()) or not 1 <= int(size) <= 1000:  # isdigit() alone takes '²'
        raise ConfigError(f"bad pool_size {size!r} in PostgreSQL URL {shown!r}: a whole number from 1 to 1000")
    return Target(dsn, shown, schema, prefix, int(size))


def schema_fault(name: str) -> str | None:
    """Why ``name`` cannot be the schema of qtasks' tables; None if it can."""
    if not SCHEMA_NAME.fullmatch(name):
        return "use lowercase letters, digits and _ (at most 63, not starting with a digit)"
    if name in RESERVED_WORDS:
        return f"{name!r} is a reserved word of PostgreSQL's SQL, and qtasks' statements name the schema unquoted"
    return None


@dataclass(frozen=True, slots=True)
class Names:
    """The fully qualified names of one app's tables and functions, and its two channels."""

    schema: str
    prefix: str

    def table(self, what: str) -> str:
        return f"{self.schema}.{self.prefix}_{what}"

    @property
    def queue(self) -> str:
        return self.table("queue")

    @property
    def dead(self) -> str:
        return self.table("dead")

    @property
    def records(self) -> str:
        return self.table("records")

    @property
    def apply(self) -> str:
        """The apply function (``apply2``: its publish arrays carry task ids; workers of the
        versions before keep calling their ``apply``, which is left in place)."""
        return self.table("apply2")

    @property
    def channel(self) -> str:
        """The stem of the NOTIFY channels: readable when short enough, else a digest (channel
        names are at most 63 bytes)."""
        stem = f"{self.schema}.{self.prefix}"
        return stem if len(stem) <= 56 else "qtasks." + hashlib.sha256(stem.encode()).hexdigest()[:32]

    @property
    def queue_channel(self) -> str:
        """Payload: a queue name that got ready messages ('' for any)."""
        return f"{self.channel}:queue"

    @property
    def done_channel(self) -> str:
        """Payload: ids of records that became final, one per line ('' for any)."""
        return f"{self.channel}:done"
