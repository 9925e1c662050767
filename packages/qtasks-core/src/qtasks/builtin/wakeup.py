"""Cross-process wake-ups without a server: datagrams to Unix sockets in a private directory.

Each listener binds a socket in a directory keyed by a resource (a database path), mode 0700,
owned by the user, under the temp dir; a notifier sends a datagram to every listener of a
channel. Filesystem sockets only: no network port. Where Unix sockets are missing (Windows), or
the directory is not private (someone else made it first), ``listen`` returns False, nothing is
sent, and callers poll instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import stat
import tempfile
import uuid
from collections.abc import Callable

from qtasks.log import get_logger


class Wakeup:
    def __init__(self, path: str) -> None:
        digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
        self.dir = os.path.join(tempfile.gettempdir(), f"qtasks-{os.getuid() if hasattr(os, 'getuid') else 0}-{digest}")
        self._token = uuid.uuid4().hex[:12]  # this instance's sockets end with it (one per channel)
        self._sender: socket.socket | None = None
        self._listeners: list[tuple[socket.socket, str]] = []

    def notify(self, channel: str, payload: bytes = b"") -> None:
        """Wake the listeners of ``channel`` in every process (safe from any thread)."""
        if not hasattr(socket, "AF_UNIX"):
            return
        try:
            names = os.listdir(self.dir) if self._private() else []
        except FileNotFoundError:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in names:
            if name.startswith(channel + ".") and not name.endswith(self._token):
                path = os.path.join(self.dir, name)
                try:
                    self._sender.sendto(payload, path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # its process is gone
                except OSError:
                    pass  # its buffer is full: it has a wake-up pending anyway

    def listen(self, channel: str, callback: Callable[[bytes], None]) -> bool:
        """Call ``callback(payload)`` on the running loop for each wake-up; False if unsupported."""
        if not hasattr(socket, "AF_UNIX"):
            return False
        path = os.path.join(self.dir, f"{channel}.{self._token}")  # short: a socket path has ~104 bytes
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            if not self._private():
                raise PermissionError(f"{self.dir} is not this user's alone")
            sock.bind(path)  # fails on a path too long for a socket (a deep temp dir)
        except OSError as exc:
            sock.close()
            get_logger("qtasks.wakeup").warning("wakeup.unavailable", error=str(exc), fallback="polling")
            return False
        sock.setblocking(False)

        def readable() -> None:
            while True:
                try:
                    callback(sock.recv(65536))
                except (BlockingIOError, InterruptedError):
                    return

        asyncio.get_running_loop().add_reader(sock.fileno(), readable)
        self._listeners.append((sock, path))
        return True

    def _private(self) -> bool:
        """Whether the directory is this user's alone: another may have made one of its name first."""
        found = os.lstat(self.dir)
        return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & 0o077

    def close(self) -> None:
        for sock, path in self._listeners:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._listeners.clear()
        if self._sender is not None:
            self._sender.close()
            self._sender = None
