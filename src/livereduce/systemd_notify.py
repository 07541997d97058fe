"""systemd's notify protocol (``sd_notify``): ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``,
``RELOADING=1``, ``MAINPID=`` to the datagram socket systemd names in ``$NOTIFY_SOCKET`` (``Type=notify`` and
``Type=notify-reload`` units), through the ``sdnotify`` library.

The notifier never raises: a problem is one WARNING on logger ``livereduce.status`` (again only after it went
away and came back), and the daemon carries on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import sdnotify

_log = logging.getLogger("livereduce.status")

SEND_TIMEOUT = 1.0
"""Seconds a notification may block (a full socket buffer) before it is dropped with a warning."""


class _Connection(sdnotify.SystemdNotifier):
    """sdnotify's notifier connected to an explicit address.

    sdnotify 0.3.2 reads the address only from ``$NOTIFY_SOCKET`` inside its constructor (where it also maps a
    leading ``@`` to ``\\0``, the abstract namespace); this constructor takes the address as an argument and
    applies the same mapping. ``debug=True`` makes the library's :meth:`notify` raise instead of swallowing
    every error, so :class:`Notifier` can report it.

    Raises:
        OSError: the socket cannot be created or connected.
        ValueError: the address is not a valid socket path.
    """

    def __init__(self, address: str) -> None:  # the base constructor reads only $NOTIFY_SOCKET
        self.debug = True
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.socket.settimeout(SEND_TIMEOUT)
            self.socket.connect("\0" + address[1:] if address.startswith("@") else address)
        except (OSError, ValueError):
            self.socket.close()
            raise

    def close(self) -> None:
        self.socket.close()


class Notifier:
    """systemd ``sd_notify`` over ``$NOTIFY_SOCKET`` (a datagram socket); does nothing when it is unset.

    An address starting with ``@`` is a Linux abstract socket (``@name`` is ``\\0name``). The socket is
    connected on the first message; after a failure the next message reconnects. Messages are UTF-8.

    Attributes:
        enabled: a socket address is set (messages are sent, or at least attempted).
    """

    def __init__(self, socket_path: str | None = None) -> None:
        """``socket_path``: the socket's address; default ``os.environ.get("NOTIFY_SOCKET")``."""
        self._address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.enabled: bool = bool(self._address)
        self._connection: _Connection | None = None
        self._warned = False
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Start-up (or a reload) is complete: ``READY=1``."""
        self._send("READY=1")

    def main_pid(self, pid: int) -> None:
        """The daemon's process is the service's main process: ``MAINPID=<pid>``.

        Under a wrapper that does not exec (``nsd-app-wrap.sh``'s ``pixi_launch`` is a shell function), systemd's
        ``$MAINPID`` would otherwise be the wrapper's shell, and ``ExecReload=/bin/kill -HUP $MAINPID`` would kill
        the shell instead of reloading the daemon (needs ``NotifyAccess=all``, as the units set).
        """
        self._send(f"MAINPID={pid}")

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status``: ``STATUS=<text>`` (line breaks become spaces)."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Keep-alive for ``WatchdogSec=``: ``WATCHDOG=1``."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon begins to stop: ``STOPPING=1``."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A reload begins: ``RELOADING=1`` plus ``MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`` (one datagram).

        systemd >= 253 requires ``MONOTONIC_USEC`` with ``RELOADING=1`` for ``Type=notify-reload`` units (older
        versions ignore it). Call :meth:`ready` when the reload is complete.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Close the socket (a later message reopens it)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _send(self, message: str) -> None:
        if not self._address:
            return
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = _Connection(self._address)
                # sdnotify encodes with Latin-1; the protocol is UTF-8: pass the UTF-8 bytes as Latin-1 text,
                # which the library turns back into exactly these bytes.
                self._connection.notify(message.encode("utf-8").decode("latin-1"))
            except (OSError, ValueError) as err:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None
                if not self._warned:
                    self._warned = True
                    _log.warning("cannot notify systemd via '%s': %s", self._address, err)
                return
            self._warned = False
