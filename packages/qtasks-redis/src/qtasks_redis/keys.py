"""Where everything lives in Redis. Every key starts with the prefix (``qtasks`` by default).

Per queue ``Q``:

* ``<p>:q:Q:ready`` -- sorted set of message seqs ready to run, scored by priority; equal
  priorities sort by seq (fixed-width hex), which is publish order.
* ``<p>:q:Q:later`` -- sorted set of seqs scored by the time (ms) they fall due: delayed
  messages, delayed retries, and leased messages (score = lease deadline).
* ``<p>:q:Q:msgs`` -- hash: ``seq`` -> body, ``seq:p`` -> priority (when not 0),
  ``seq:n`` -> deliveries so far, ``seq:t`` -> token of the current lease, ``seq:i`` -> task id.
* ``<p>:q:Q:posted`` -- list of messages published with priority 0 and no eta (or one that has
  passed), as ``"<task id>\n<body>"`` (the id through :func:`escape_id`), not yet given a seq: a
  publish is then three plain commands, not a script, and the next claim moves them to
  ``ready`` in publish order.
* ``<p>:q:Q:in`` -- list where a message body may be pushed by hand (``RPUSH``); the next fetch
  turns it into a message of priority 0.
* ``<p>:q:Q:wake`` -- list holding at most one token; blocked fetches wait on it.

Shared: ``<p>:seq`` (message counter), ``<p>:dead`` (sorted set of dead-letter ids by expiry),
``<p>:dead:body`` and ``<p>:dead:info`` (hashes).

Records: ``<p>:r:<task id>``, a string ``"<status>\\n<data>"`` with a TTL, and while someone
waits for it ``<p>:w:<task id>``, the set of reply channels (``<p>:reply:<random>``, one per
waiting storage) its final version is published to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def escape_id(task_id: str) -> str:
    """A task id as it goes before a newline (a posted entry, a pushed record): its backslashes and
    newlines escaped. An id holding neither (a uuid) is left as it is."""
    if "\\" in task_id or "\n" in task_id:
        return task_id.replace("\\", "\\\\").replace("\n", "\\n")
    return task_id


def unescape_id(escaped: str) -> str:
    """The task id :func:`escape_id` was given (``claim.lua`` does the same for posted entries)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], escaped) if "\\" in escaped else escaped


@dataclass(frozen=True, slots=True)
class QueueKeys:
    name: str
    ready: str
    later: str
    msgs: str
    inbox: str
    wake: str
    posted: str

    @property
    def claim(self) -> tuple[str, ...]:
        """The keys the claim script takes for this queue, in its order."""
        return (self.ready, self.later, self.msgs, self.inbox, self.wake, self.posted)


@dataclass
class Keys:
    """Key names under one prefix; queue keys are built once per queue name."""

    prefix: str = "qtasks"
    _queues: dict[str, QueueKeys] = field(default_factory=dict, repr=False)

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def dead(self) -> tuple[str, str, str]:
        return f"{self.prefix}:dead", f"{self.prefix}:dead:body", f"{self.prefix}:dead:info"

    def queue(self, name: str) -> QueueKeys:
        found = self._queues.get(name)
        if found is None:
            base = f"{self.prefix}:q:{name}"
            found = QueueKeys(
                name, f"{base}:ready", f"{base}:later", f"{base}:msgs", f"{base}:in", f"{base}:wake", f"{base}:posted"
            )
            self._queues[name] = found
        return found

    def record(self, task_id: str) -> str:
        return f"{self.prefix}:r:{task_id}"

    def waiters(self, task_id: str) -> str:
        return f"{self.prefix}:w:{task_id}"

    def reply(self, name: str) -> str:
        return f"{self.prefix}:reply:{name}"
