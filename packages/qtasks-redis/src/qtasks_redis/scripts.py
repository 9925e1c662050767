"""The Lua scripts that make every queue operation one atomic step on the server.

Each script lives in ``lua/<name>.lua`` and is sent as ``EVALSHA``; the client loads it after a
``NOSCRIPT`` reply (a new or restarted server). ``prelude.lua`` (server time, wake-up tokens,
burying dead letters) is prepended to every script. Sources are read on first use, not at import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: bytes
    sha: str


@cache
def script(name: str) -> Script:
    """The script ``lua/<name>.lua`` with the prelude, and its SHA1 for ``EVALSHA``."""
    folder = resources.files("qtasks_redis") / "lua"
    source = ((folder / "prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()).encode()
    return Script(name, source, hashlib.sha1(source).hexdigest())


#: Every script, loaded together when a client connects.
NAMES = (
    "publish",
    "claim",
    "ack",
    "nack",
    "extend",
    "dead_letter",
    "depth",
    "purge",
    "dead_letters",
    "purge_dead",
    "save",
    "wait",
)
