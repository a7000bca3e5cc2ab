"""RtpEndpoint and RtpPortAllocator on real UDP sockets, loopback only.

Peers are either other RtpEndpoints or bare non-blocking sockets playing a
phone behind NAT (one socket named in "SDP", another that really sends).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway import metrics
from gateway.errors import NotAcceptable
from gateway.media.capabilities import SRTP_KEY_SALT_LENGTH
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp_transport import (
    ReceivedPacket,
    RtpEndpoint,
    RtpEndpointOptions,
    RtpPeer,
    RtpPortAllocator,
    RtpPortsExhausted,
    SourceLatch,
)
from gateway.media.srtp import SrtpContext, SrtpFailure

pytestmark = pytest.mark.integration

SSRC = 0x5EED_0001
OpenEndpoint = Callable[..., Awaitable[RtpEndpoint]]


def rtp(seq: int, ssrc: int = SSRC, pt: int = 0, size: int = 160) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, ssrc) + bytes([seq & 0xFF]) * size
    )


def rtcp_sr(ssrc: int = SSRC, count: int = 1) -> bytes:
    body = struct.pack("!IIIII", 0xE000_0000, count, 160 * count, count, 160 * count)
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + body


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Let the loop run until ``condition`` holds (loopback UDP is fast, not instant)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def next_packet(endpoint: RtpEndpoint, timeout: float = 3.0) -> ReceivedPacket:
    return await asyncio.wait_for(anext(endpoint), timeout)


async def recv(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
    data, addr = await asyncio.wait_for(
        asyncio.get_running_loop().sock_recvfrom(sock, 4096), timeout
    )
    return data, (addr[0], addr[1])


async def nothing_arrives(sock: socket.socket, wait: float = 0.2) -> bool:
    try:
        await recv(sock, wait)
    except TimeoutError:
        return True
    return False


def udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((host, 0))
    return sock


def address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


def peer_of(endpoint: RtpEndpoint, *, mux: bool = False, **changes: object) -> RtpPeer:
    """What ``endpoint``'s own SDP would tell the other side."""
    fields: dict[str, object] = {
        "address": endpoint.host,
        "port": endpoint.port,
        "rtcp_port": endpoint.rtcp_port,
        "rtcp_mux": mux,
        "payload_types": frozenset({0, 101}),
    }
    fields.update(changes)
    return RtpPeer(**fields)  # type: ignore[arg-type]


def open_descriptors() -> int:
    """How many file descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


def free_range(pairs: int) -> int:
    """An even base port whose next ``2 * pairs`` UDP ports are free on loopback now."""
    for _ in range(100):
        base = random.randrange(30000, 32000, 2)
        try:
            for port in range(base, base + 2 * pairs):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


@pytest.fixture
def allocator() -> RtpPortAllocator:
    # Below the kernel's ephemeral range, at a random spot so parallel runs
    # rarely meet; ports other processes hold are skipped by open() anyway.
    base = random.randrange(20000, 30000, 2)
    return RtpPortAllocator(base, base + 39)


@pytest.fixture
async def endpoints(
    allocator: RtpPortAllocator,
) -> AsyncIterator[OpenEndpoint]:
    """Factory: ``await endpoints(host="127.0.0.1", **open_kwargs)``; all closed in teardown."""
    opened: list[RtpEndpoint] = []

    async def open_endpoint(host: str = "127.0.0.1", **kwargs: Any) -> RtpEndpoint:
        endpoint = await RtpEndpoint.open(allocator, host, **kwargs)
        opened.append(endpoint)
        return endpoint

    yield open_endpoint
    for endpoint in opened:
        endpoint.close()
        await asyncio.wait_for(endpoint.wait_closed(), 2)
    assert allocator.available == allocator.capacity


def srtp_pair(suite: str) -> tuple[SrtpContext, SrtpContext]:
    a, b = (os.urandom(SRTP_KEY_SALT_LENGTH[suite]) for _ in range(2))
    return SrtpContext(suite, a, b), SrtpContext(suite, b, a)


# --- port allocation -------------------------------------------------------------------------


def test_allocator_hands_out_even_ports_and_fails_clearly_when_exhausted() -> None:
    allocator = RtpPortAllocator(10001, 10008)  # odd start: first pair is 10002/10003
    ports = [allocator.allocate() for _ in range(3)]
    assert ports == [10002, 10004, 10006]
    assert allocator.available == 0
    with pytest.raises(RtpPortsExhausted, match="10001-10008") as exhausted:
        allocator.allocate()
    assert exhausted.value.sip_status == 503


def test_allocator_reuses_freed_ports_after_the_others() -> None:
    allocator = RtpPortAllocator(10000, 10007)
    first, second = allocator.allocate(), allocator.allocate()
    allocator.release(first)
    assert allocator.allocate() == 10004  # never used yet
    assert allocator.allocate() == 10006
    assert allocator.allocate() == first  # the freed one, once nothing fresher is left
    allocator.release(second)
    assert allocator.allocate() == second
    with pytest.raises(ValueError, match="not allocated"):
        allocator.release(10001)


@pytest.mark.parametrize(("low", "high"), [(80, 10000), (10000, 10000), (10001, 10002), (1, 70000)])
def test_allocator_refuses_unusable_ranges(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="RTP port range"):
        RtpPortAllocator(low, high)


async def test_open_binds_the_pair_and_mux_binds_one(
    endpoints: OpenEndpoint,
) -> None:
    pair = await endpoints()
    assert pair.port % 2 == 0 and pair.rtcp_port == pair.port + 1
    for port in (pair.port, pair.port + 1):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
            pytest.raises(OSError) as taken,
        ):
            probe.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
    muxed = await endpoints(rtcp_mux=True)
    assert muxed.rtcp_port is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", muxed.port + 1))  # left free


async def test_ports_held_by_other_processes_are_skipped(
    endpoints: OpenEndpoint, allocator: RtpPortAllocator
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", allocator.min_port + 1))  # the first pair's RTCP port
        endpoint = await endpoints()
    assert endpoint.port == allocator.min_port + 2
    assert allocator.available == allocator.capacity - 1  # the skipped pair went back


async def test_exhaustion_and_reuse_with_real_sockets() -> None:
    base = free_range(2)
    allocator = RtpPortAllocator(base, base + 3)
    first = await RtpEndpoint.open(allocator, "127.0.0.1")
    second = await RtpEndpoint.open(allocator, "127.0.0.1")
    with pytest.raises(RtpPortsExhausted):
        await RtpEndpoint.open(allocator, "127.0.0.1")
    first.close()
    await asyncio.wait_for(first.wait_closed(), 2)
    third = await RtpEndpoint.open(allocator, "127.0.0.1")
    assert third.port == first.port
    for endpoint in (second, third):
        endpoint.close()
        await asyncio.wait_for(endpoint.wait_closed(), 2)
    assert allocator.available == 2


# --- two endpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("mux", [False, True], ids=["rtcp-port", "rtcp-mux"])
@pytest.mark.parametrize("suite", [None, *sorted(SRTP_KEY_SALT_LENGTH)])
async def test_two_endpoints_exchange_rtp_and_rtcp(
    endpoints: OpenEndpoint, suite: str | None, mux: bool
) -> None:
    alice, bob = await endpoints(rtcp_mux=mux), await endpoints(rtcp_mux=mux)
    keys = srtp_pair(suite) if suite else (None, None)
    alice.connect(peer_of(bob, mux=mux), keys[0])
    bob.connect(peer_of(alice, mux=mux), keys[1])
    for seq in range(3):
        assert alice.send_rtp(rtp(seq))
        assert bob.send_rtp(rtp(1000 + seq, ssrc=7))
    assert alice.send_rtcp(rtcp_sr())
    got_bob = [await next_packet(bob) for _ in range(4)]
    got_alice = [await next_packet(alice) for _ in range(3)]
    # Two sockets without mux: RTCP may overtake RTP.
    (report,) = [p for p in got_bob if p.rtcp]
    assert [p.data for p in got_bob if not p.rtcp] == [rtp(0), rtp(1), rtp(2)]
    assert report.data == rtcp_sr()
    assert report.source == ("127.0.0.1", alice.port if mux else alice.port + 1)
    assert [p.data for p in got_alice] == [rtp(1000, ssrc=7), rtp(1001, ssrc=7), rtp(1002, ssrc=7)]
    assert bob.rtp_latch.latched == ("127.0.0.1", alice.port)
    if suite:
        assert bob.srtp is not None and bob.srtp.unprotected == 4


async def test_the_endpoint_leaves_packet_counting_to_the_session(
    endpoints: OpenEndpoint,
) -> None:
    """gatewayd_rtp_packets_total is counted once, by the RtpSession above the endpoint
    (both counted every packet of a MediaStream before)."""

    def counted() -> list[float]:
        return [metrics.RTP_PACKETS.labels(direction=d)._value.get() for d in ("in", "out")]

    before = counted()
    alice, bob = await endpoints(rtcp_mux=True), await endpoints(rtcp_mux=True)
    alice.connect(peer_of(bob, mux=True), None)
    bob.connect(peer_of(alice, mux=True), None)
    for seq in range(3):
        assert alice.send_rtp(rtp(seq))
    assert [(await next_packet(bob)).data for _ in range(3)] == [rtp(0), rtp(1), rtp(2)]
    assert (alice.stats.rtp_out, bob.stats.rtp_in) == (3, 3)
    assert counted() == before


async def test_a_wrong_srtp_key_is_counted_and_never_delivered(
    endpoints: OpenEndpoint,
) -> None:
    alice, bob = await endpoints(), await endpoints()
    alice_keys, _ = srtp_pair("AES_CM_128_HMAC_SHA1_80")
    _, stranger_keys = srtp_pair("AES_CM_128_HMAC_SHA1_80")
    alice.connect(peer_of(bob), alice_keys)
    bob.connect(peer_of(alice), stranger_keys)
    for seq in range(5):
        alice.send_rtp(rtp(seq))
    await until(lambda: bob.stats.srtp_failures[SrtpFailure.AUTH] == 5)
    assert bob.stats.rtp_in == 0 and bob.rtp_latch.latched is None


async def test_packets_before_connect_are_dropped(
    endpoints: OpenEndpoint,
) -> None:
    endpoint = await endpoints()
    with udp() as early:
        await asyncio.get_running_loop().sock_sendto(early, rtp(1), ("127.0.0.1", endpoint.port))
        await until(lambda: endpoint.stats.unlatched == 1)
    assert not endpoint.send_rtp(rtp(1))  # nowhere to send yet
    assert endpoint.stats.send_drops == 1


# --- latching ---------------------------------------------------------------------------------


async def test_nated_peer_gets_our_rtp_at_its_real_address(
    endpoints: OpenEndpoint,
) -> None:
    loop = asyncio.get_running_loop()
    endpoint = await endpoints(options=RtpEndpointOptions(latch_packets=3))
    with udp() as in_sdp, udp() as real, udp() as third:
        endpoint.connect(RtpPeer(*address(in_sdp), payload_types=frozenset({0})))
        endpoint.send_rtp(rtp(1))  # before latching: to the SDP address
        assert (await recv(in_sdp))[0] == rtp(1)

        target = ("127.0.0.1", endpoint.port)
        for seq in (10, 11):
            await loop.sock_sendto(real, rtp(seq), target)
        await until(lambda: endpoint.stats.unlatched == 2)
        assert endpoint.rtp_latch.latched is None
        await loop.sock_sendto(real, rtp(12), target)
        packet = await next_packet(endpoint)
        assert (packet.data, packet.source) == (rtp(12), address(real))
        assert endpoint.rtp_latch.latched == address(real)

        endpoint.send_rtp(rtp(2))
        assert await recv(real) == (rtp(2), ("127.0.0.1", endpoint.port))
        assert await nothing_arrives(in_sdp)

        # Once latched, a third address is ignored, even with the right SSRC and PT.
        for seq in (13, 14, 15, 16):
            await loop.sock_sendto(third, rtp(seq), target)
        await until(lambda: endpoint.stats.foreign == 4)
        await loop.sock_sendto(real, rtp(17), target)
        assert (await next_packet(endpoint)).data == rtp(17)
        endpoint.send_rtp(rtp(3))
        assert (await recv(real))[0] == rtp(3)
        assert await nothing_arrives(third, 0.05)


async def test_learning_needs_in_sequence_packets_of_a_negotiated_type(
    endpoints: OpenEndpoint,
) -> None:
    loop = asyncio.get_running_loop()
    endpoint = await endpoints(options=RtpEndpointOptions(latch_packets=3))
    endpoint.connect(RtpPeer("127.0.0.1", 9, payload_types=frozenset({0, 8})))
    target = ("127.0.0.1", endpoint.port)
    learning = [rtp(1), rtp(2), rtp(4), rtp(5), rtp(6, pt=96), rtp(7, ssrc=1), rtp(8)]
    with udp() as phone:
        for packet in [*learning, b"\x00\x01garbage"]:
            await loop.sock_sendto(phone, packet, target)
        await until(lambda: endpoint.stats.unlatched + endpoint.stats.malformed == 8)
        assert endpoint.stats.malformed == 2  # PT 96, garbage
        # 1 2 | gap | 4 5 | other SSRC | 8: never three in a row
        assert endpoint.rtp_latch.latched is None
        for seq in (9, 10):
            await loop.sock_sendto(phone, rtp(seq, pt=8), target)
        assert (await next_packet(endpoint)).data == rtp(10, pt=8)  # 8, 9, 10 in sequence


async def test_srtp_latches_on_the_first_packet_that_authenticates(
    endpoints: OpenEndpoint,
) -> None:
    loop = asyncio.get_running_loop()
    ours, phone_keys = srtp_pair("AES_CM_128_HMAC_SHA1_80")
    _, forger_keys = srtp_pair("AES_CM_128_HMAC_SHA1_80")
    endpoint = await endpoints()
    with udp() as in_sdp, udp() as real, udp() as forger:
        endpoint.connect(RtpPeer(*address(in_sdp)), ours)
        target = ("127.0.0.1", endpoint.port)
        await loop.sock_sendto(forger, forger_keys.protect_rtp(rtp(1)), target)
        await until(lambda: endpoint.stats.srtp_failures[SrtpFailure.AUTH] == 1)
        assert endpoint.rtp_latch.latched is None  # a wrong key proves nothing

        await loop.sock_sendto(real, phone_keys.protect_rtp(rtp(2)), target)
        assert (await next_packet(endpoint)).data == rtp(2)
        assert endpoint.rtp_latch.latched == address(real)
        endpoint.send_rtp(rtp(3))
        assert phone_keys.unprotect_rtp((await recv(real))[0]) == rtp(3)

        # A genuine packet relayed from elsewhere is dropped before any SRTP work.
        await loop.sock_sendto(forger, phone_keys.protect_rtp(rtp(4)), target)
        await until(lambda: endpoint.stats.foreign == 1)
        assert ours.unprotected == 1


async def test_rtcp_port_latches_to_the_host_rtp_latched_to(
    endpoints: OpenEndpoint,
) -> None:
    loop = asyncio.get_running_loop()
    endpoint = await endpoints(options=RtpEndpointOptions(latch_packets=1))
    assert endpoint.rtcp_port is not None
    with udp() as in_sdp, udp() as real_rtp, udp() as real_rtcp:
        endpoint.connect(RtpPeer(*address(in_sdp)))
        await loop.sock_sendto(real_rtcp, rtcp_sr(), ("127.0.0.1", endpoint.rtcp_port))
        await until(lambda: endpoint.stats.unlatched == 1)  # RTP has not latched yet
        await loop.sock_sendto(real_rtp, rtp(1), ("127.0.0.1", endpoint.port))
        await loop.sock_sendto(real_rtcp, rtcp_sr(count=2), ("127.0.0.1", endpoint.rtcp_port))
        assert (await next_packet(endpoint)).data == rtp(1)
        report = await next_packet(endpoint)
        assert (report.rtcp, report.data) == (True, rtcp_sr(count=2))
        endpoint.send_rtcp(rtcp_sr(count=3))
        assert (await recv(real_rtcp))[0] == rtcp_sr(count=3)


async def test_reinvite_to_the_same_address_keeps_the_latch(
    endpoints: OpenEndpoint,
) -> None:
    endpoint = await endpoints(options=RtpEndpointOptions(latch_packets=1))
    with udp() as real:
        endpoint.connect(RtpPeer("127.0.0.1", 9))
        await asyncio.get_running_loop().sock_sendto(real, rtp(1), ("127.0.0.1", endpoint.port))
        await next_packet(endpoint)
        endpoint.connect(RtpPeer("127.0.0.1", 9, payload_types=frozenset({8})))
        assert endpoint.rtp_latch.latched == address(real)
        endpoint.connect(RtpPeer("127.0.0.1", 11))  # the peer moved: learn again
        assert endpoint.rtp_latch.latched is None
        assert endpoint.rtp_latch.destination == ("127.0.0.1", 11)


# --- queue, callbacks, lifecycle ----------------------------------------------------------------


async def test_queue_overflow_drops_the_oldest_and_counts(
    endpoints: OpenEndpoint,
) -> None:
    drops = metrics.REGISTRY.get_sample_value("gatewayd_media_queue_drops_total") or 0.0
    sender, receiver = (
        await endpoints(),
        await endpoints(options=RtpEndpointOptions(receive_queue=4)),
    )
    sender.connect(peer_of(receiver))
    receiver.connect(peer_of(sender))
    for seq in range(10):
        sender.send_rtp(rtp(seq))
    await until(lambda: receiver.stats.rtp_in == 10)
    assert receiver.stats.queue_drops == 6
    assert [(await next_packet(receiver)).data for _ in range(4)] == [rtp(s) for s in range(6, 10)]
    assert metrics.REGISTRY.get_sample_value("gatewayd_media_queue_drops_total") == drops + 6


async def test_callback_gets_packets_and_its_errors_are_contained(
    endpoints: OpenEndpoint,
) -> None:
    seen: list[ReceivedPacket] = []

    def on_packet(packet: ReceivedPacket) -> None:
        seen.append(packet)
        if len(seen) == 1:
            raise RuntimeError("a buggy consumer")

    sender = await endpoints()
    receiver = await endpoints(on_packet=on_packet)
    sender.connect(peer_of(receiver))
    receiver.connect(peer_of(sender))
    errors = metrics.REGISTRY.get_sample_value(
        "gatewayd_internal_errors_total", {"component": "rtp"}
    )
    for seq in range(3):
        sender.send_rtp(rtp(seq))
    await until(lambda: len(seen) == 3)
    assert [p.data for p in seen] == [rtp(0), rtp(1), rtp(2)]
    after = metrics.REGISTRY.get_sample_value(
        "gatewayd_internal_errors_total", {"component": "rtp"}
    )
    assert after == (errors or 0.0) + 1


async def test_close_ends_iteration_and_frees_every_descriptor(
    allocator: RtpPortAllocator,
) -> None:
    before = open_descriptors()
    opened = [await RtpEndpoint.open(allocator, "127.0.0.1") for _ in range(6)]
    opened.append(await RtpEndpoint.open(allocator, "::1", rtcp_mux=True))
    assert open_descriptors() == before + 13
    alice, bob = opened[0], opened[1]
    alice.connect(peer_of(bob))
    bob.connect(peer_of(alice))
    alice.send_rtp(rtp(1))

    async def read_all(endpoint: RtpEndpoint) -> list[bytes]:
        return [packet.data async for packet in endpoint]

    reader = asyncio.create_task(read_all(bob))
    await until(lambda: bob.stats.rtp_in == 1)
    await asyncio.sleep(0)
    for endpoint in opened:
        endpoint.close()
    assert await asyncio.wait_for(reader, 2) == [rtp(1)]
    for endpoint in opened:
        await asyncio.wait_for(endpoint.wait_closed(), 2)
    assert open_descriptors() == before
    assert allocator.available == allocator.capacity
    assert not alice.send_rtp(rtp(2))


async def test_hold_address_sends_nothing(
    endpoints: OpenEndpoint,
) -> None:
    endpoint = await endpoints()
    endpoint.connect(RtpPeer("0.0.0.0", 4000))  # c=0.0.0.0: RFC 2543 hold
    assert not endpoint.send_rtp(rtp(1))
    assert endpoint.stats.send_drops == 1
    with pytest.raises(NotAcceptable, match="not an IP address"):
        endpoint.connect(RtpPeer("pbx.example.org", 4000))


async def test_socket_buffers_are_set(
    endpoints: OpenEndpoint,
) -> None:
    endpoint = await endpoints(options=RtpEndpointOptions(socket_buffer_bytes=32768))
    assert endpoint._rtp is not None  # the only way to see the kernel's value
    sock = endpoint._rtp.get_extra_info("socket")
    # Linux doubles what was asked (for its bookkeeping); the default is far above.
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 65536
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 65536


# --- IPv6 -------------------------------------------------------------------------------------


async def test_ipv6_endpoints_exchange_srtp(
    endpoints: OpenEndpoint,
) -> None:
    alice, bob = await endpoints("::1", rtcp_mux=True), await endpoints("::1", rtcp_mux=True)
    keys = srtp_pair("AEAD_AES_256_GCM")
    alice.connect(peer_of(bob, mux=True), keys[0])
    bob.connect(peer_of(alice, mux=True), keys[1])
    assert alice.send_rtp(bytearray(rtp(1)))  # what RtpSession.send_rtp hands out
    alice.send_rtcp(rtcp_sr())
    first = await next_packet(bob)
    assert (first.data, first.source) == (rtp(1), ("::1", alice.port))
    assert (await next_packet(bob)).data == rtcp_sr()


async def test_dual_stack_endpoint_latches_and_answers_an_ipv4_peer(
    endpoints: OpenEndpoint,
) -> None:
    endpoint = await endpoints("::", options=RtpEndpointOptions(latch_packets=1))
    with udp() as phone:
        endpoint.connect(RtpPeer("192.0.2.1", 4000))  # a private address behind NAT
        await asyncio.get_running_loop().sock_sendto(phone, rtp(1), ("127.0.0.1", endpoint.port))
        assert (await next_packet(endpoint)).source == address(phone)  # not ::ffff:127.0.0.1
        endpoint.send_rtp(rtp(2))
        assert (await recv(phone))[0] == rtp(2)


def test_source_latch_rules() -> None:
    """The sans-IO core on its own: the signalled address latches at once, a new one
    after N in-sequence packets of one SSRC; afterwards only the latched source passes."""
    sdp, nat, other = ("10.0.0.5", 4000), ("203.0.113.9", 61000), ("198.51.100.1", 5000)
    latch = SourceLatch(sdp, required=2)
    assert latch.destination == sdp
    assert not latch.learn(nat, SSRC, 100)
    assert not latch.learn(other, SSRC, 101)  # another source restarts the count
    assert not latch.learn(nat, SSRC, 102)
    assert latch.learn(nat, SSRC, 103)
    assert latch.destination == latch.latched == nat
    assert not latch.learn(other, SSRC, 104)
    assert not latch.learn(sdp, SSRC, 105)  # latched is final, even against the SDP address
    assert latch.learn(nat, 99, 7)
    direct = SourceLatch(sdp, required=5)
    assert direct.learn(sdp, SSRC, 1) and direct.latched == sdp
    # Sequence numbers wrap.
    wrap = SourceLatch(None, required=2)
    assert not wrap.learn(nat, SSRC, 65535)
    assert wrap.learn(nat, SSRC, 0)


async def test_a_signalled_ssrc_is_required_while_learning(
    endpoints: OpenEndpoint,
) -> None:
    loop = asyncio.get_running_loop()
    endpoint = await endpoints(options=RtpEndpointOptions(latch_packets=1))
    endpoint.connect(RtpPeer("127.0.0.1", 9, ssrc=SSRC))
    with udp() as phone:
        await loop.sock_sendto(phone, rtp(1, ssrc=1234), ("127.0.0.1", endpoint.port))
        await until(lambda: endpoint.stats.malformed == 1)
        await loop.sock_sendto(phone, rtp(2), ("127.0.0.1", endpoint.port))
        assert (await next_packet(endpoint)).data == rtp(2)
        # Latched: the peer may now change SSRC (a transfer behind a B2BUA).
        await loop.sock_sendto(phone, rtp(3, ssrc=1234), ("127.0.0.1", endpoint.port))
        assert (await next_packet(endpoint)).data == rtp(3, ssrc=1234)


def test_peer_from_a_negotiated_stream() -> None:
    pcmu = NegotiatedCodec(0, "PCMU", 8000)
    renumbered = NegotiatedCodec(96, "opus", 48000, 2, send_payload_type=111)
    event = NegotiatedCodec(101, "telephone-event", 8000)
    stream = NegotiatedStream(
        0, "audio", "RTP/AVP", accepted=True, codecs=(pcmu, renumbered), telephone_event=event,
        remote_address="203.0.113.5", remote_port=5004, remote_rtcp_address="203.0.113.6",
        remote_rtcp_port=5009,
    )  # fmt: skip
    peer = RtpPeer.from_stream(stream)
    assert peer.payload_types == {0, 96, 111, 101}
    assert peer.rtp_target == ("203.0.113.5", 5004)
    assert peer.rtcp_target == ("203.0.113.6", 5009)
    assert RtpPeer("203.0.113.5", 5004).rtcp_target == ("203.0.113.5", 5005)
    assert RtpPeer("203.0.113.5", 5004, rtcp_mux=True).rtcp_target == ("203.0.113.5", 5004)
