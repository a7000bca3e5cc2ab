"""Locating SIP servers: RFC 3263 (NAPTR, SRV, A/AAAA) through dnspython's asyncio resolver.

``SipResolver.resolve(uri)`` turns a SIP or SIPS URI into an ordered list of
``SipTarget`` (transport, IP address, port) to try one after the other:

- a numeric host (or ``maddr``) is used as it is, no DNS at all;
- an explicit port means A/AAAA of the host on that port (§4.2);
- a transport (``;transport=`` or the caller's) means SRV for that
  transport, then A/AAAA on the default port (§4.1, §4.2);
- otherwise NAPTR picks transports (``SIP+D2U``, ``SIP+D2T``,
  ``SIPS+D2T``; only the latter for a SIPS URI) in order/preference, each
  leading to SRV records; without usable NAPTR records, SRV is queried for
  every supported transport; without SRV, A/AAAA on 5060 (5061 for SIPS).

SRV records are ordered by priority and, within one priority, by the
weighted random selection of RFC 2782 (randomness injected, so tests are
deterministic). Answers are kept in a small TTL cache read with the injected
clock; "no such record" is cached too (briefly), DNS failures are not.
Nothing here logs: names may be personal (a host name of a private trunk).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from bridges.sip.addressing import parse_uri
from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_PORTS",
    "ResolutionError",
    "SipResolver",
    "SipTarget",
    "order_srv",
]

#: RFC 3263 §4.2: the port when neither the URI nor SRV gives one.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# NAPTR service field -> transport (RFC 3263 §4.1; SCTP and WS are not offered).
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
_SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}

_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_SRV = dns.rdatatype.SRV
_NAPTR = dns.rdatatype.NAPTR


class ResolutionError(GatewayError):
    """No target could be found for a SIP URI (or the name servers did not answer).

    A UAC that cannot locate the next hop answers or reports 503 (RFC 3263 §4.3).
    """

    sip_status = 503
    http_status = 503
    reason = "Service Unavailable"


@dataclass(frozen=True, slots=True)
class SipTarget:
    """One place to send a request: transport, IP address, port."""

    transport: str
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as the transports want it."""
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class _Located:
    """A parsed SIP URI reduced to what server location needs."""

    host: str
    port: int | None
    transport: str | None
    secure: bool


def _locate_fields(uri: str, transport: str | None) -> _Located:
    parsed = parse_uri(uri)
    scheme = parsed.scheme.lower()
    if scheme not in ("sip", "sips"):
        raise ValueError(f"cannot locate a server for a {scheme}: URI")
    params = {str(k).lower(): v for k, v in parsed.parameters.items()}
    # maddr overrides the host (RFC 3263 §4: "the maddr parameter ... is used").
    host = str(params.get("maddr") or parsed.host).strip("[]")
    chosen = params.get("transport") or transport
    chosen = chosen.lower() if isinstance(chosen, str) else None
    secure = scheme == "sips"
    if chosen is not None:
        if chosen not in DEFAULT_PORTS:
            raise ValueError(f"unsupported SIP transport {chosen!r}")
        if secure and chosen != "tls":
            # RFC 3261 §26.2.2 is about sips over TCP; our only TCP-TLS transport is tls.
            chosen = "tls"
    return _Located(host, parsed.port, chosen, secure)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def order_srv(records: Iterable[SRV], rng: random.Random) -> list[SRV]:
    """RFC 2782 order: ascending priority; within a priority, weighted random.

    Weight-0 records go first in the running sum (as the RFC says), so they
    are picked only when the random number lands on 0: rarely, but not never.
    """
    by_priority: dict[int, list[SRV]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[SRV] = []
    for priority in sorted(by_priority):
        remaining = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


class SipResolver:
    """RFC 3263 server location with a TTL cache (one per process is enough).

    ``resolver``: a configured ``dns.asyncresolver.Resolver``; by default one
    reading /etc/resolv.conf, created on first use (numeric hosts never need
    it). ``using_nameserver`` builds one for a given server and port.
    ``supported``: the transports we can send on, in the order we prefer them
    when DNS leaves the choice to us.
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        supported: Sequence[str] = ("udp", "tcp", "tls"),
        lifetime: float = 4.0,
        cache_size: int = 512,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        prefer_ipv6: bool = False,
    ) -> None:
        unknown = set(supported) - DEFAULT_PORTS.keys()
        if unknown or not supported:
            raise ValueError(f"supported transports must be some of {sorted(DEFAULT_PORTS)}")
        self._resolver = resolver
        self._clock = clock or SystemClock()
        # Only spreads load over equal servers; no secret depends on it.
        self._rng = rng or random.Random()  # noqa: S311
        self.supported = tuple(supported)
        self.lifetime = lifetime
        self._cache_size = cache_size
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._prefer_ipv6 = prefer_ipv6
        self._cache: dict[tuple[str, int], tuple[float, tuple[dns.rdata.Rdata, ...]]] = {}
        #: DNS queries sent (cache misses); tests and debugging read it.
        self.queries = 0

    @classmethod
    def using_nameserver(
        cls,
        host: str,
        port: int = 53,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        lifetime: float = 4.0,
    ) -> SipResolver:
        """A resolver that asks only ``host:port`` (no /etc/resolv.conf, no search list)."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        return cls(resolver, clock=clock, rng=rng, lifetime=lifetime)

    async def resolve(self, uri: str, *, transport: str | None = None) -> list[SipTarget]:
        """Ordered targets for ``uri``; ``transport`` applies when the URI names none.

        Raises ``ValueError`` for a URI that is not sip:/sips: and
        ``ResolutionError`` when DNS yields nothing usable.
        """
        where = _locate_fields(uri, transport)
        if where.transport is not None and where.transport not in self.supported:
            raise ResolutionError(f"transport {where.transport} is not supported here")
        if _is_ip(where.host):
            chosen = where.transport or ("tls" if where.secure else "udp")
            return [SipTarget(chosen, where.host, where.port or DEFAULT_PORTS[chosen])]
        if where.port is not None:
            chosen = where.transport or ("tls" if where.secure else "udp")
            return self._require(await self._addresses(where.host, chosen, where.port), uri)
        if where.transport is not None:
            targets = await self._srv_targets(where.host, [where.transport])
            if not targets:
                port = DEFAULT_PORTS[where.transport]
                targets = await self._addresses(where.host, where.transport, port)
            return self._require(targets, uri)
        targets = await self._naptr_targets(where.host, where.secure)
        if not targets:
            wanted = ["tls"] if where.secure else list(self.supported)
            targets = await self._srv_targets(
                where.host, [t for t in wanted if t in self.supported]
            )
        if not targets:
            chosen = "tls" if where.secure else "udp"
            if chosen not in self.supported:
                raise ResolutionError(f"no usable server for {uri!r}")
            targets = await self._addresses(where.host, chosen, DEFAULT_PORTS[chosen])
        return self._require(targets, uri)

    @staticmethod
    def _require(targets: list[SipTarget], uri: str) -> list[SipTarget]:
        if not targets:
            raise ResolutionError(f"no address found for {uri!r}")
        unique: list[SipTarget] = []
        for target in targets:
            if target not in unique:
                unique.append(target)
        return unique

    # --- the three steps ---------------------------------------------------------------------
    async def _naptr_targets(self, host: str, secure: bool) -> list[SipTarget]:
        records = [r for r in await self._query(host, _NAPTR) if isinstance(r, NAPTR)]
        usable: list[tuple[int, int, str, str]] = []
        for record in records:
            service = record.service.decode("ascii", "replace").upper()
            chosen = _NAPTR_SERVICES.get(service)
            flags = record.flags.decode("ascii", "replace").lower()
            if chosen is None or chosen not in self.supported or flags != "s":
                continue  # another service, or a regexp/"a" record SIP does not use
            if secure and chosen != "tls":
                continue
            usable.append((record.order, record.preference, chosen, str(record.replacement)))
        targets: list[SipTarget] = []
        for _order, _pref, chosen, replacement in sorted(usable, key=lambda u: u[:2]):
            targets += await self._srv_records(replacement, chosen)
        return targets

    async def _srv_targets(self, host: str, transports: Sequence[str]) -> list[SipTarget]:
        targets: list[SipTarget] = []
        name = host.rstrip(".")
        for chosen in transports:
            targets += await self._srv_records(f"{_SRV_PREFIXES[chosen]}.{name}", chosen)
        return targets

    async def _srv_records(self, name: str, transport: str) -> list[SipTarget]:
        records = [r for r in await self._query(name, _SRV) if isinstance(r, SRV)]
        if len(records) == 1 and records[0].target == dns.name.root:
            return []  # RFC 2782: "." says the service is decidedly not available
        targets: list[SipTarget] = []
        for record in order_srv(records, self._rng):
            if record.target != dns.name.root:
                targets += await self._addresses(str(record.target), transport, record.port)
        return targets

    async def _addresses(self, host: str, transport: str, port: int) -> list[SipTarget]:
        order = (_AAAA, _A) if self._prefer_ipv6 else (_A, _AAAA)
        targets: list[SipTarget] = []
        for rdtype in order:
            for record in await self._query(host, rdtype):
                if isinstance(record, A | AAAA):
                    targets.append(SipTarget(transport, str(record.address), port))
        return targets

    # --- DNS with a cache ------------------------------------------------------------------------
    async def _query(self, name: str, rdtype: int) -> tuple[dns.rdata.Rdata, ...]:
        qname = dns.name.from_text(name)  # absolute: no search list
        key = (qname.to_text().lower(), rdtype)
        now = self._clock.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        resolver = self._resolver
        if resolver is None:
            resolver = self._resolver = dns.asyncresolver.Resolver()
        self.queries += 1
        try:
            answer = await resolver.resolve(
                qname, dns.rdatatype.RdataType.make(rdtype), lifetime=self.lifetime, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._store(key, now + self._negative_ttl, ())
            return ()
        except dns.resolver.NoNameservers:
            return ()  # SERVFAIL/REFUSED for this name: try the next step, cache nothing
        except dns.exception.Timeout as exc:
            # The name servers are silent: every further query would wait as long.
            raise ResolutionError("DNS query timed out") from exc
        records = tuple(answer)
        ttl = min(float(answer.rrset.ttl), self._max_ttl) if answer.rrset is not None else 0.0
        self._store(key, now + ttl, records)
        return records

    def _store(
        self, key: tuple[str, int], expires: float, records: tuple[dns.rdata.Rdata, ...]
    ) -> None:
        if expires <= self._clock.monotonic():
            return
        cache = self._cache
        cache.pop(key, None)
        if len(cache) >= self._cache_size:
            now = self._clock.monotonic()
            for stale in [k for k, (until, _) in cache.items() if until <= now]:
                del cache[stale]
            while len(cache) >= self._cache_size:
                del cache[next(iter(cache))]  # oldest insertion first
        cache[key] = (expires, records)

    def clear_cache(self) -> None:
        """Forget every cached answer (e.g. after the operator changed DNS)."""
        self._cache.clear()
