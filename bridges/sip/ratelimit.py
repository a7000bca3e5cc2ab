"""Abuse resistance for the SIP edge: peer access lists and per-source rate limits.

Sans-IO: callers pass ``now``. Scanners (sipvicious & co.) send bursts of
OPTIONS/REGISTER/INVITE from one address; a token bucket per source address
caps unauthenticated requests, and the table of buckets is bounded so a
spoofed-source flood cannot grow memory.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> list[IPNetwork]:
    """``["10.0.0.0/8", "::1"]`` -> networks; raises ValueError naming the bad entry."""
    out: list[IPNetwork] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return out


class PeerAccessList:
    """Allow/deny by source address. Deny wins; an empty allow list allows all."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = parse_networks(allow)
        self.deny = parse_networks(deny)

    def permits(self, host: str) -> bool:
        """Whether requests from ``host`` may be processed."""
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        if any(addr in net for net in self.deny):
            return False
        return not self.allow or any(addr in net for net in self.allow)


class SourceRateLimiter:
    """A token bucket per source address, in a bounded LRU table."""

    def __init__(self, rate: float, burst: int, max_sources: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source``; False when it is over its rate."""
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
