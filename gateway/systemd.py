"""systemd's notify protocol (sd_notify), without libsystemd.

The protocol is one datagram per state change on the unix socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). It is
small enough that a dependency would cost more than it saves; the
``sdnotify`` package on PyPI is unmaintained since 2017 and lacks the
abstract-namespace case.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from gateway.log import get_logger

log = get_logger(__name__)


class SystemdNotifier:
    """Sends READY=1, STOPPING=1, WATCHDOG=1 and STATUS= to systemd.

    Without ``NOTIFY_SOCKET`` (not run by systemd, or Type=simple) every call
    is a no-op, so callers never need to check.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self._sock: socket.socket | None = None
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) listens."""
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; returns False when nothing listens or sending failed."""
        if self._address is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        """READY=1 with a human status line (shown by ``systemctl status``)."""
        return self.notify(ready=1, status=status, mainpid=os.getpid())

    def stopping(self, status: str) -> bool:
        """STOPPING=1: systemd knows the drain has begun."""
        return self.notify(stopping=1, status=status)

    def reloading(self) -> bool:
        """RELOADING=1 while SIGHUP is handled; follow with ready()."""
        return self.notify(reloading=1)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the event loop is alive."""
        return self.notify(watchdog=1)

    def status(self, status: str) -> bool:
        """STATUS=...: a free-text line."""
        return self.notify(status=status)

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
