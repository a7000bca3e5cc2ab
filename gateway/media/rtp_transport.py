"""UDP transport of RTP and RTCP for SIP legs: ports, sockets, latching.

The only socket code of the media plane: ``RtpPortAllocator`` hands out port
pairs; ``RtpEndpoint`` owns the socket(s) of one stream, applies SRTP and
delivers plain RTP/RTCP bytes to a callback or a bounded queue.

Symmetric RTP with latching (rtpengine's "learning", Asterisk's "symmetric
RTP"): we send to the address in the peer's SDP until packets prove where
the peer really is, then "latch" to their source for good, so a phone
behind NAT that writes its private address in SDP still hears us. Proof is
an SRTP packet that authenticates, or for plain RTP a packet from the SDP
address or ``latch_packets`` in-sequence packets of one SSRC with a
negotiated payload type from one new address. Once latched, packets from
other addresses are dropped and counted before any SRTP work is spent.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.errors import NotAcceptable, Unavailable
from gateway.log import get_logger
from gateway.media.negotiation import NegotiatedStream
from gateway.media.rtp import is_rtcp
from gateway.media.srtp import SrtpContext, SrtpError, SrtpFailure

log = get_logger(__name__)

Address = tuple[str, int]  # canonical IP text (IPv4-mapped IPv6 unmapped), port

_RTP_HEADER = struct.Struct("!BBHII")
# Log the 1st failure of a kind per endpoint, then every 1000th: a peer
# with a wrong key sends 50 packets a second.
_LOG_EVERY = 1000


class RtpPortsExhausted(Unavailable):
    """No RTP port pair is free in the configured range (SIP 503)."""


class RtpPortAllocator:
    """Even RTP ports from ``min_port``-``max_port``, each with the odd port above.

    The odd port is reserved with its even one, mux or not, so a stream can
    always bind it for RTCP. Freed ports go to the back of the line: reused
    only after every other one, so late packets of an ended call rarely
    reach a new one.
    """

    def __init__(self, min_port: int, max_port: int) -> None:
        if not 1024 <= min_port < max_port <= 65535:
            raise ValueError(f"RTP port range {min_port}-{max_port} must lie in 1024-65535")
        self.min_port, self.max_port = min_port, max_port
        self._free: deque[int] = deque(range(min_port + min_port % 2, max_port, 2))
        if not self._free:
            raise ValueError(f"RTP port range {min_port}-{max_port} holds no even/odd pair")
        self._used: set[int] = set()
        self.capacity = len(self._free)

    @property
    def available(self) -> int:
        """Pairs not handed out."""
        return len(self._free)

    def allocate(self) -> int:
        """An even RTP port (RTCP: the next one); ``RtpPortsExhausted`` if none is left."""
        if not self._free:
            raise RtpPortsExhausted(f"RTP ports {self.min_port}-{self.max_port} all in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back; releasing a port twice is a bug and raises ``ValueError``."""
        if port not in self._used:
            raise ValueError(f"RTP port {port} was not allocated")
        self._used.remove(port)
        self._free.append(port)


def canonical_ip(host: str) -> str:
    """``host`` as canonical text; IPv4-mapped IPv6 becomes IPv4. ``ValueError`` if not an IP."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _signalled(host: str | None, port: int) -> Address | None:
    """Where SDP says to send; None for hold (c=0.0.0.0, RFC 3264 8.4) or no port."""
    if host is None or not port:
        return None
    try:
        ip = canonical_ip(host)
    except ValueError:
        raise NotAcceptable(f"media address {host!r} is not an IP address") from None
    return None if ipaddress.ip_address(ip).is_unspecified else (ip, port)


@dataclass(frozen=True)
class RtpPeer:
    """The peer's side of one stream as its SDP states it. ``payload_types``:
    the numbers its RTP may carry (empty: any); ``ssrc``: if signalled."""

    address: str | None
    port: int
    rtcp_address: str | None = None
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    payload_types: frozenset[int] = frozenset()
    ssrc: int | None = None

    @classmethod
    def from_stream(cls, stream: NegotiatedStream) -> RtpPeer:
        """The peer of a negotiated stream."""
        events = [stream.telephone_event] if stream.telephone_event else []
        codecs = [*stream.codecs, *stream.auxiliary, *events, *stream.also_received]
        # Either number may arrive: RFC 3264 wants the offerer's, peers that
        # renumbered in their answer sometimes send their own, and some send
        # another number of the codec that we listed (``also_received``).
        types = {c.payload_type for c in codecs} | {c.sending_payload_type for c in codecs}
        rtcp = (stream.remote_rtcp_address, stream.remote_rtcp_port, stream.rtcp_mux)
        return cls(stream.remote_address, stream.remote_port, *rtcp, frozenset(types))

    @property
    def rtp_target(self) -> Address | None:
        """The signalled RTP destination, None on hold."""
        return _signalled(self.address, self.port)

    @property
    def rtcp_target(self) -> Address | None:
        """The signalled RTCP destination (RFC 3605 a=rtcp, else port + 1)."""
        if self.rtcp_mux or not self.port:
            return self.rtp_target
        port = self.rtcp_port if self.rtcp_port is not None else self.port + 1
        return _signalled(self.rtcp_address or self.address, port)


class SourceLatch:
    """Symmetric RTP for one socket, sans-IO: which source we accept and answer.
    ``lock`` latches on proof (SRTP authentication), ``learn`` decides for plain RTP."""

    def __init__(self, signalled: Address | None, required: int) -> None:
        if required < 1:
            raise ValueError("latching needs at least one packet")
        self.signalled, self.required = signalled, required
        self.latched: Address | None = None
        self._candidate: tuple[Address, int] | None = None
        self._last_seq = self._seen = 0

    @property
    def destination(self) -> Address | None:
        """Where to send now."""
        return self.latched or self.signalled

    def lock(self, source: Address) -> None:
        """Latch to ``source`` for good."""
        self.latched, self._candidate = source, None

    def learn(self, source: Address, ssrc: int, seq: int) -> bool:
        """Whether to accept a plain RTP packet whose PT and SSRC were checked.

        Latches at once on the signalled address, on a new one after
        ``required`` consecutive in-sequence packets of one SSRC from it.
        """
        if self.latched is not None:
            return source == self.latched
        if source == self.signalled:
            self.lock(source)
            return True
        if self._candidate == (source, ssrc) and seq == (self._last_seq + 1) & 0xFFFF:
            self._seen += 1
        else:
            self._candidate, self._seen = (source, ssrc), 1
        self._last_seq = seq
        if self._seen >= self.required:
            self.lock(source)
        return self.latched is not None


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """One plain RTP or RTCP packet (SRTP removed), where and when it came from."""

    data: bytes
    rtcp: bool
    source: Address
    arrival: float


@dataclass
class EndpointStats:
    """What an endpoint did with packets; every dropped packet lands in one field."""

    rtp_in: int = 0
    rtcp_in: int = 0
    rtp_out: int = 0
    rtcp_out: int = 0
    srtp_failures: Counter[SrtpFailure] = field(default_factory=Counter)
    foreign: int = 0  # from another address after latching
    unlatched: int = 0  # from an address not (yet) proven, or before ``connect``
    malformed: int = 0  # not RTP/RTCP (STUN, garbage) or an unexpected PT/SSRC
    queue_drops: int = 0  # oldest packets pushed out of the receive queue
    send_drops: int = 0  # nowhere to send, wrong address family, or send buffer full
    send_errors: int = 0  # the kernel refused a datagram


@dataclass(frozen=True)
class RtpEndpointOptions:
    """Limits of one endpoint (from the ``media`` settings).

    ``socket_buffer_bytes`` sets SO_RCVBUF and SO_SNDBUF (0: kernel default;
    Linux doubles it, capped at net.core.rmem_max/wmem_max).
    ``send_buffer_bytes`` caps what asyncio may queue when the socket is full.
    """

    receive_queue: int = 256
    socket_buffer_bytes: int = 0
    latch_packets: int = 3
    send_buffer_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.receive_queue < 1 or self.latch_packets < 1 or self.socket_buffer_bytes < 0:
            raise ValueError(f"invalid RTP endpoint options: {self}")


def _bind(host: str, port: int, options: RtpEndpointOptions) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # "::" takes IPv4 peers too, as ::ffff:a.b.c.d.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        if options.socket_buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.socket_buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.socket_buffer_bytes)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Datagrams(asyncio.DatagramProtocol):
    """Forwards one socket's events to its endpoint."""

    def __init__(self, endpoint: RtpEndpoint, rtcp_socket: bool) -> None:
        self.endpoint, self.rtcp_socket = endpoint, rtcp_socket

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self.endpoint._datagram(data, addr, rtcp_socket=self.rtcp_socket)
        except Exception:
            metrics.ERRORS.labels(component="rtp").inc()
            log.exception("RTP packet handling failed", port=self.endpoint.port)

    def error_received(self, exc: Exception) -> None:
        self.endpoint._send_failed(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint._socket_closed()


class RtpEndpoint:
    """The UDP socket(s) of one RTP stream, with SRTP and latching.

    ``await RtpEndpoint.open(allocator, host)``, then ``connect`` once
    offer/answer is done; ``send_rtp`` / ``send_rtcp``; read with ``async for
    packet in endpoint`` or an ``on_packet`` callback. ``close()`` closes the
    sockets, ``wait_closed()`` waits until they are closed and the ports freed.
    """

    def __init__(
        self,
        allocator: RtpPortAllocator,
        host: str,
        port: int,
        *,
        options: RtpEndpointOptions,
        on_packet: Callable[[ReceivedPacket], None] | None,
        clock: Clock,
    ) -> None:
        # Use ``open``: the constructor does not bind.
        self.host, self.port = host, port
        self._allocator, self._options, self._clock = allocator, options, clock
        self._on_packet = on_packet
        self._ipv6 = ":" in host
        self.stats = EndpointStats()
        self.peer: RtpPeer | None = None
        self.srtp: SrtpContext | None = None
        self.rtp_latch = SourceLatch(None, options.latch_packets)
        self.rtcp_latch = SourceLatch(None, options.latch_packets)
        self.rtcp_port: int | None = None  # None with rtcp-mux
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._open_sockets = 0
        self._queue: deque[ReceivedPacket] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        allocator: RtpPortAllocator,
        host: str,
        *,
        rtcp_mux: bool = False,
        options: RtpEndpointOptions | None = None,
        on_packet: Callable[[ReceivedPacket], None] | None = None,
        clock: Clock | None = None,
    ) -> RtpEndpoint:
        """Bind a port pair on ``host`` (an IPv4 or IPv6 literal; "::" takes both).

        ``rtcp_mux`` binds the RTP port only: for when mux is already agreed.
        Ports other processes hold are skipped.
        """
        options, clock = options or RtpEndpointOptions(), clock or SystemClock()
        host = canonical_ip(host)  # a typo in the bind address must fail here
        for _ in range(allocator.available):
            port = allocator.allocate()
            sockets: list[socket.socket] = []
            try:
                sockets.append(_bind(host, port, options))
                if not rtcp_mux:
                    sockets.append(_bind(host, port + 1, options))
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                allocator.release(port)
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            endpoint = cls(allocator, host, port, options=options, on_packet=on_packet, clock=clock)
            await endpoint._attach(sockets)
            return endpoint
        raise RtpPortsExhausted("every free RTP port pair is held by another process")

    async def _attach(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for index, sock in enumerate(sockets):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Datagrams, self, index == 1), sock=sock
                )
            except BaseException:
                for unattached in sockets[index:]:
                    unattached.close()
                self.close()  # the port is released once attached sockets are closed
                raise
            self._open_sockets += 1
            if index == 0:
                self._rtp = transport
            else:
                self._rtcp, self.rtcp_port = transport, self.port + 1

    def connect(self, peer: RtpPeer, srtp: SrtpContext | None = None) -> None:
        """Start (or, on a re-INVITE, update) the stream with the peer's SDP data.

        Learning starts again only if the signalled address changed, so a
        session refresh does not cost a NATed peer its first packets.
        """
        if not peer.rtcp_mux and self._rtcp is None:
            raise ValueError("peer refuses rtcp-mux but the endpoint was opened for mux only")
        if self.peer is None or peer.rtp_target != self.rtp_latch.signalled:
            self.rtp_latch = SourceLatch(peer.rtp_target, self._options.latch_packets)
        if self.peer is None or peer.rtcp_target != self.rtcp_latch.signalled:
            self.rtcp_latch = SourceLatch(peer.rtcp_target, self._options.latch_packets)
        self.peer, self.srtp = peer, srtp

    # --- sending -----------------------------------------------------------------------------

    def send_rtp(self, packet: bytes | bytearray) -> bool:
        """Send one RTP packet (protected if SRTP); False if it was dropped."""
        sent = self._send(packet, rtcp=False)
        if sent:
            self.stats.rtp_out += 1  # gatewayd_rtp_packets_total: counted by the RtpSession
        return sent

    def send_rtcp(self, packet: bytes | bytearray) -> bool:
        """Send one RTCP compound packet (protected if SRTP); False if it was dropped."""
        sent = self._send(packet, rtcp=True)
        self.stats.rtcp_out += sent
        return sent

    def _send(self, data: bytes | bytearray, *, rtcp: bool) -> bool:
        if self._closing:
            return False
        if self.srtp is not None:
            try:
                data = self.srtp.protect_rtcp(data) if rtcp else self.srtp.protect_rtp(data)
            except SrtpError as exc:
                self._srtp_failed(exc, "protect")
                return False
        transport, target = self._rtp, self.rtp_latch.destination
        if rtcp and self._rtcp is not None and not (self.peer and self.peer.rtcp_mux):
            transport, target = self._rtcp, self.rtcp_latch.destination
        if target is not None and (":" in target[0]) != self._ipv6:
            # A dual-stack socket reaches IPv4 as ::ffff:a.b.c.d; others cannot cross.
            target = ("::ffff:" + target[0], target[1]) if self.host == "::" else None
        queued: int = getattr(transport, "get_write_buffer_size", lambda: 0)()
        if transport is None or target is None or queued > self._options.send_buffer_bytes:
            # On hold, not learned yet, or the kernel buffer is full and asyncio
            # queues: drop, as a late media packet is worth nothing.
            self.stats.send_drops += 1
            return False
        transport.sendto(data, target)
        return True

    def _send_failed(self, exc: Exception) -> None:
        self.stats.send_errors += 1
        if self.stats.send_errors % _LOG_EVERY == 1:
            log.warning("RTP send failed", port=self.port, error=str(exc))

    # --- receiving -----------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[Any, ...], *, rtcp_socket: bool) -> None:
        if self._closing:
            return
        if self.peer is None:
            self._drop("unlatched")  # before offer/answer is done, nobody is expected
            return
        source = (canonical_ip(addr[0]) if self._ipv6 else addr[0], int(addr[1]))
        rtcp = is_rtcp(data)
        # Version 2 only: STUN (0-3) and DTLS (20-63) keep-alives land here too (RFC 7983).
        if len(data) < 8 or data[0] >> 6 != 2 or (rtcp_socket and not rtcp):
            self._drop("malformed")
        elif not rtcp:
            self._receive_rtp(data, source)
        elif not rtcp_socket:
            # RTCP on the RTP port is taken even without agreed mux: peers mux anyway.
            self._receive_rtcp(data, source, self.rtp_latch)
        elif self.peer.rtcp_mux:
            self._drop("foreign")
        else:
            self._receive_rtcp(data, source, self.rtcp_latch)

    def _receive_rtp(self, data: bytes, source: Address) -> None:
        latch = self.rtp_latch
        if latch.latched is not None and source != latch.latched:
            self._drop("foreign")
            return
        if self.srtp is not None:
            plain = self._unprotect(data, source, latch, rtcp=False)
            if plain is None:
                return
            data = plain
        elif not self._expected_rtp(data):
            self._drop("malformed")
            return
        elif latch.latched is None:
            _, _, seq, _, ssrc = _RTP_HEADER.unpack_from(data)
            if not latch.learn(source, ssrc, seq):
                self._drop("unlatched")
                return
            self._latched(latch, source)
        self.stats.rtp_in += 1  # gatewayd_rtp_packets_total: counted by the RtpSession
        self._deliver(ReceivedPacket(data, False, source, self._clock.monotonic()))

    def _expected_rtp(self, data: bytes) -> bool:
        assert self.peer is not None
        payload_type = data[1] & 0x7F
        if len(data) < 12 + 4 * (data[0] & 0x0F) or 64 <= payload_type <= 95:
            return False  # 64-95 belong to RTCP on a muxed port (RFC 5761 section 4)
        if self.peer.payload_types and payload_type not in self.peer.payload_types:
            return False
        # A signalled SSRC binds only while learning: once latched, the peer
        # may switch SSRC (a transfer behind a B2BUA).
        ssrc = int.from_bytes(data[8:12], "big")
        return self.rtp_latch.latched is not None or self.peer.ssrc in (None, ssrc)

    def _receive_rtcp(self, data: bytes, source: Address, latch: SourceLatch) -> None:
        on_rtcp_port = latch is self.rtcp_latch
        if latch.latched is not None and source != latch.latched:
            self._drop("foreign")
            return
        if self.srtp is not None:
            plain = self._unprotect(data, source, latch, rtcp=True)
            if plain is None:
                return
            data = plain
        elif latch.latched is None:
            # Plain RTCP proves nothing by itself: take it from the signalled
            # address, or on the RTCP port from the host RTP latched to (a
            # NAT maps the RTCP port separately but keeps the address).
            rtp_host = self.rtp_latch.latched[0] if self.rtp_latch.latched else None
            if source != latch.signalled and not (on_rtcp_port and source[0] == rtp_host):
                self._drop("unlatched")
                return
            if on_rtcp_port:
                self._latched(latch, source)
        self.stats.rtcp_in += 1
        self._deliver(ReceivedPacket(data, True, source, self._clock.monotonic()))

    def _unprotect(
        self, data: bytes, source: Address, latch: SourceLatch, rtcp: bool
    ) -> bytes | None:
        # The first packet that authenticates is the proof latching waits for.
        assert self.srtp is not None
        try:
            plain = self.srtp.unprotect_rtcp(data) if rtcp else self.srtp.unprotect_rtp(data)
        except SrtpError as exc:
            self._srtp_failed(exc, "unprotect")
            return None
        if latch.latched is None:
            self._latched(latch, source)
        return plain

    def _latched(self, latch: SourceLatch, source: Address) -> None:
        latch.lock(source)
        what = "RTCP" if latch is self.rtcp_latch else "RTP"
        log.info("media source latched", what=what, port=self.port, source=source[0])

    def _drop(self, reason: Literal["foreign", "unlatched", "malformed"]) -> None:
        # Counted per endpoint; no Prometheus metric exists for these yet.
        setattr(self.stats, reason, getattr(self.stats, reason) + 1)

    def _srtp_failed(self, exc: SrtpError, operation: str) -> None:
        count = self.stats.srtp_failures[exc.failure] = self.stats.srtp_failures[exc.failure] + 1
        if count % _LOG_EVERY == 1:
            log.warning("SRTP packet refused", op=operation, count=count, error=exc.message)

    def _deliver(self, packet: ReceivedPacket) -> None:
        if self._on_packet is not None:
            try:
                self._on_packet(packet)
            except Exception:
                metrics.ERRORS.labels(component="rtp").inc()
                log.exception("RTP packet callback failed", port=self.port)
            return
        if len(self._queue) >= self._options.receive_queue:
            # Drop the oldest: a media packet late by a whole queue is useless.
            self._queue.popleft()
            self.stats.queue_drops += 1
            metrics.MEDIA_QUEUE_DROPS.inc()
        self._queue.append(packet)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> RtpEndpoint:
        return self

    async def __anext__(self) -> ReceivedPacket:
        """The next packet, waiting for it; the iteration ends when the endpoint closes."""
        while not self._queue:
            if self._closing:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets; the ports return to the allocator once they are closed.
        Readers waiting for a packet stop; queued packets are discarded."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if not self._open_sockets:
            self._release()

    async def wait_closed(self) -> None:
        """Wait until the sockets are closed and the ports released."""
        await asyncio.shield(self._closed)

    def _socket_closed(self) -> None:
        self._open_sockets -= 1
        if self._open_sockets == 0:
            self._release()

    def _release(self) -> None:
        if not self._closed.done():
            self._allocator.release(self.port)
            self._closed.set_result(None)
