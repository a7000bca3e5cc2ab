"""RFC 3263 server location against a real DNS server on loopback (real packets, real dnspython).

``ZoneServer`` is a tiny authoritative server: an asyncio UDP endpoint on
127.0.0.1:<free port> answering from a dict of records, counting the queries
it gets, and able to stay silent (to test time-outs).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import cast

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dns.rdtypes.IN.SRV import SRV

from bridges.sip.resolver import ResolutionError, SipResolver, SipTarget, order_srv
from gateway.clock import FakeClock

Zone = Mapping[tuple[str, str], Sequence[str]]


class ZoneServer(asyncio.DatagramProtocol):
    """Answers A/AAAA/SRV/NAPTR queries from ``zone`` ((name, type) -> rdata texts)."""

    def __init__(self, zone: Zone, ttl: int = 60) -> None:
        self.zone = {(n.lower().rstrip(".") + ".", t): list(v) for (n, t), v in zone.items()}
        self.ttl = ttl
        self.queries: Counter[tuple[str, str]] = Counter()
        self.silent = False
        self.servfail: set[str] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        if self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self.zone:
            response.answer.append(
                dns.rrset.from_text_list(name, self.ttl, "IN", rdtype, self.zone[(name, rdtype)])
            )
        elif not any(n == name for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        # else: the name exists with other types -> NOERROR, empty answer (NoAnswer)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)

    def count(self, rdtype: str | None = None) -> int:
        """Queries seen, of one type or all."""
        return sum(n for (_, t), n in self.queries.items() if rdtype in (None, t))


ZONE: Zone = {
    # NAPTR: TLS first, then TCP, then UDP; one service we do not speak, one non-"s" record.
    ("example.test", "NAPTR"): [
        '30 10 "S" "SIP+D2U" "" _sip._udp.example.test.',
        '10 10 "S" "SIPS+D2T" "" _sips._tcp.example.test.',
        '20 10 "S" "SIP+D2T" "" _sip._tcp.example.test.',
        '5 10 "S" "SIP+D2S" "" _sip._sctp.example.test.',
        '1 10 "U" "E2U+sip" "!^.*$!sip:info@example.test!" .',
        '2 10 "U" "SIP+D2U" "!^.*$!sip:x@udp1.example.test!" .',
    ],
    ("_sips._tcp.example.test", "SRV"): ["0 0 5061 tls1.example.test."],
    ("_sip._tcp.example.test", "SRV"): [
        "20 0 5060 tcp-backup.example.test.",
        "10 0 5070 tcp1.example.test.",
    ],
    ("_sip._udp.example.test", "SRV"): ["10 0 5080 udp1.example.test."],
    ("_sip._sctp.example.test", "SRV"): ["10 0 5090 sctp.example.test."],
    ("tls1.example.test", "A"): ["192.0.2.1"],
    ("tcp1.example.test", "A"): ["192.0.2.2"],
    ("tcp1.example.test", "AAAA"): ["2001:db8::2"],
    ("tcp-backup.example.test", "A"): ["192.0.2.3"],
    ("udp1.example.test", "A"): ["192.0.2.4"],
    ("sctp.example.test", "A"): ["192.0.2.99"],
    # No NAPTR, SRV for UDP and TCP only.
    ("srvonly.test", "A"): ["198.51.100.9"],
    ("_sip._udp.srvonly.test", "SRV"): ["10 0 5062 host.srvonly.test."],
    ("_sip._tcp.srvonly.test", "SRV"): ["10 0 5063 host.srvonly.test."],
    ("host.srvonly.test", "A"): ["198.51.100.1"],
    # Neither NAPTR nor SRV: A/AAAA on the default port.
    ("plain.test", "A"): ["203.0.113.5", "203.0.113.6"],
    ("plain.test", "AAAA"): ["2001:db8::5"],
    # SRV target "." says: no such service here.
    ("_sip._tcp.closed.test", "SRV"): ["0 0 0 ."],
    ("closed.test", "A"): ["203.0.113.77"],
}


@pytest.fixture
async def dns_server() -> AsyncIterator[ZoneServer]:
    """The zone above, served on 127.0.0.1:<free port>."""
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: ZoneServer(ZONE), local_addr=("127.0.0.1", 0)
    )
    try:
        yield server
    finally:
        transport.close()


def resolver_for(server: ZoneServer, clock: FakeClock | None = None, **kw: float) -> SipResolver:
    assert server.transport is not None
    port = server.transport.get_extra_info("sockname")[1]
    return SipResolver.using_nameserver(
        "127.0.0.1", port, clock=clock or FakeClock(), rng=random.Random(7), **kw
    )


def t(transport: str, host: str, port: int) -> SipTarget:
    return SipTarget(transport, host, port)


async def test_numeric_hosts_need_no_dns(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.resolve("sip:192.0.2.10") == [t("udp", "192.0.2.10", 5060)]
    assert await resolver.resolve("sips:192.0.2.10") == [t("tls", "192.0.2.10", 5061)]
    assert await resolver.resolve("sip:[2001:db8::1]:5070;transport=tcp") == [
        t("tcp", "2001:db8::1", 5070)
    ]
    assert await resolver.resolve("sip:gw@example.test;maddr=192.0.2.20", transport="tcp") == [
        t("tcp", "192.0.2.20", 5060)
    ]
    assert dns_server.count() == 0


async def test_explicit_port_is_a_and_aaaa_only(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    targets = await resolver.resolve("sip:tcp1.example.test:5999;transport=tcp")
    assert targets == [t("tcp", "192.0.2.2", 5999), t("tcp", "2001:db8::2", 5999)]
    assert dns_server.count("NAPTR") == dns_server.count("SRV") == 0


async def test_naptr_orders_transports_and_srv_orders_servers(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    targets = await resolver.resolve("sip:registrar@example.test")
    assert targets == [
        t("tls", "192.0.2.1", 5061),  # NAPTR order 10
        t("tcp", "192.0.2.2", 5070),  # order 20, SRV priority 10
        t("tcp", "2001:db8::2", 5070),
        t("tcp", "192.0.2.3", 5060),  # order 20, SRV priority 20
        t("udp", "192.0.2.4", 5080),  # order 30
    ]
    # SCTP, the ENUM-style record and the regexp ("U") record were skipped unasked.
    assert dns_server.queries[("_sip._sctp.example.test.", "SRV")] == 0
    assert dns_server.queries[(".", "SRV")] == 0


async def test_sips_uri_takes_only_tls_naptr_records(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.resolve("sips:example.test") == [t("tls", "192.0.2.1", 5061)]


async def test_transport_given_skips_naptr(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    targets = await resolver.resolve("sip:example.test", transport="udp")
    assert targets == [t("udp", "192.0.2.4", 5080)]
    assert dns_server.count("NAPTR") == 0
    # the URI's own transport parameter wins over the caller's
    targets = await resolver.resolve("sip:example.test;transport=tcp", transport="udp")
    assert targets[0] == t("tcp", "192.0.2.2", 5070)


async def test_supported_transports_filter_naptr(dns_server: ZoneServer) -> None:
    assert dns_server.transport is not None
    dns_resolver = dns.asyncresolver.Resolver(configure=False)
    dns_resolver.nameservers = ["127.0.0.1"]
    dns_resolver.port = dns_server.transport.get_extra_info("sockname")[1]
    resolver = SipResolver(dns_resolver, clock=FakeClock(), supported=("udp",))
    assert await resolver.resolve("sip:example.test") == [t("udp", "192.0.2.4", 5080)]
    with pytest.raises(ResolutionError):
        await resolver.resolve("sips:example.test")


async def test_without_naptr_srv_is_queried_per_transport(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.resolve("sip:srvonly.test") == [
        t("udp", "198.51.100.1", 5062),
        t("tcp", "198.51.100.1", 5063),
    ]
    assert dns_server.queries[("_sips._tcp.srvonly.test.", "SRV")] == 1


async def test_without_naptr_and_srv_a_records_on_default_port(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    udp = await resolver.resolve("sip:plain.test")
    # IPv4 before IPv6; within one record set DNS gives no order.
    assert set(udp[:2]) == {t("udp", "203.0.113.5", 5060), t("udp", "203.0.113.6", 5060)}
    assert udp[2:] == [t("udp", "2001:db8::5", 5060)]
    tls = await resolver.resolve("sips:plain.test")
    assert {(x.transport, x.port) for x in tls} == {("tls", 5061)} and len(tls) == 3
    tcp = await resolver.resolve("sip:plain.test", transport="tcp")
    assert {(x.transport, x.port) for x in tcp} == {("tcp", 5060)} and len(tcp) == 3


async def test_srv_dot_target_means_no_service(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    # "." is not a host to look up; the A record of the domain is the fallback (§4.2).
    assert await resolver.resolve("sip:closed.test", transport="tcp") == [
        t("tcp", "203.0.113.77", 5060)
    ]
    assert dns_server.queries[(".", "A")] == 0


async def test_unknown_name_is_a_resolution_error(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    with pytest.raises(ResolutionError) as caught:
        await resolver.resolve("sip:nowhere.test")
    assert caught.value.sip_status == 503


async def test_answers_are_cached_for_their_ttl(dns_server: ZoneServer) -> None:
    clock = FakeClock()
    resolver = resolver_for(dns_server, clock)
    first = await resolver.resolve("sip:example.test")
    sent = dns_server.count()
    assert sent == resolver.queries > 0
    clock.advance(29)  # within the 60 s TTL and the 30 s negative TTL (empty AAAA)
    assert await resolver.resolve("sip:example.test") == first
    assert dns_server.count() == sent, "answered from the cache within the TTL"
    clock.advance(2)
    await resolver.resolve("sip:example.test")
    negative = dns_server.count() - sent
    assert 0 < negative < sent, "only the empty answers expired after 30 s"
    clock.advance(30)
    await resolver.resolve("sip:example.test")
    assert dns_server.count() == 2 * sent + negative, "asked again once the TTL ran out"


async def test_negative_answers_are_cached_briefly(dns_server: ZoneServer) -> None:
    clock = FakeClock()
    resolver = resolver_for(dns_server, clock)
    for _ in range(2):
        with pytest.raises(ResolutionError):
            await resolver.resolve("sip:nowhere.test")
    assert dns_server.queries[("nowhere.test.", "NAPTR")] == 1
    clock.advance(31)
    with pytest.raises(ResolutionError):
        await resolver.resolve("sip:nowhere.test")
    assert dns_server.queries[("nowhere.test.", "NAPTR")] == 2


async def test_servfail_falls_through_to_the_next_step_and_is_not_cached(
    dns_server: ZoneServer,
) -> None:
    dns_server.servfail.add("_sip._udp.srvonly.test.")
    resolver = resolver_for(dns_server)
    assert await resolver.resolve("sip:srvonly.test") == [t("tcp", "198.51.100.1", 5063)]
    dns_server.servfail.clear()
    assert (await resolver.resolve("sip:srvonly.test"))[0] == t("udp", "198.51.100.1", 5062)


async def test_silent_name_server_fails_fast(dns_server: ZoneServer) -> None:
    dns_server.silent = True
    resolver = resolver_for(dns_server, lifetime=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ResolutionError, match="timed out"):
        await resolver.resolve("sip:example.test")
    assert loop.time() - started < 2.0, "one time-out, not one per lookup step"
    assert dns_server.count() >= 1


async def test_refuses_non_sip_uris() -> None:
    with pytest.raises(ValueError, match="tel"):
        await SipResolver().resolve("tel:+4930123")


def srv(priority: int, weight: int, name: str) -> SRV:
    return SRV(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, dns.rdatatype.SRV, priority, weight, 5060, dns.name.from_text(name)
    )


def test_srv_weights_share_load_within_a_priority() -> None:
    records = [srv(20, 0, "last"), srv(10, 90, "heavy"), srv(10, 10, "light"), srv(10, 0, "zero")]
    rng = random.Random(1)
    firsts: Counter[str] = Counter()
    for _ in range(2000):
        ordered = order_srv(records, rng)
        assert str(ordered[-1].target) == "last.", "a lower priority never comes first"
        assert {str(r.target) for r in ordered[:3]} == {"heavy.", "light.", "zero."}
        firsts[str(ordered[0].target)] += 1
    assert 1650 < firsts["heavy."] < 1950  # 90 %
    assert 100 < firsts["light."] < 300  # 10 %
    assert firsts["zero."] < 60  # only when the draw is exactly 0


def test_srv_all_zero_weights_keep_every_record() -> None:
    records = [srv(10, 0, "a"), srv(10, 0, "b")]
    assert sorted(str(r.target) for r in order_srv(records, random.Random(3))) == ["a.", "b."]
