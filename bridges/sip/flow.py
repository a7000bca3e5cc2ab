"""Where a SIP message came from or goes to; shared by the sans-IO core and the transports."""

from __future__ import annotations

from dataclasses import dataclass

STREAM_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})


@dataclass(frozen=True)
class Flow:
    """Transport, both ends, and the connection a message travels on."""

    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    #: 0 for UDP; otherwise the id of the connection (responses go back on it).
    conn_id: int = 0

    @property
    def reliable(self) -> bool:
        """Stream transports need no SIP retransmissions (Timers A, E, G off)."""
        return self.transport in STREAM_TRANSPORTS
