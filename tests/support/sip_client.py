"""SIP test clients for the real daemon: UDP, TCP, TLS and WebSocket, async and blocking.

``Channel`` subclasses carry whole SIP messages over one socket or
connection (asyncio; aiohttp for RFC 7118 WebSockets); ``SipTestClient``
is a minimal user agent on a channel (OPTIONS, an echo call with RTP).
``SyncStream`` / ``SyncDatagram`` are blocking sockets for tests that need
byte-exact control of what is written and when. Also here: what a SIP
test reads back from the daemon (metrics, error log records).

Every wait is bounded by ``TIMEOUT`` unless the caller passes its own.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import os
import re
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp

from bridges.sip.framing import SipStreamFramer
from bridges.sip.message import SipMessage, SipRequest, SipResponse, parse_message
from bridges.sip.outgoing import build_ack, build_request
from tests.support.daemon import Daemon

TIMEOUT = 5.0
#: RFC 7118 §5.2: a browser cannot know its address, so its Via names an .invalid host.
WS_VIA_HOST = "df7jal23ls0d.invalid"


# --- small helpers --------------------------------------------------------------------------


def hostport(host: str, port: int) -> str:
    """``127.0.0.1:5060`` or ``[::1]:5060``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def have_ipv6_loopback() -> bool:
    """Whether ::1 can be bound on this machine."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def metrics_of(daemon: Daemon) -> dict[str, float]:
    """Every sample of /metrics as ``name{labels}`` -> value."""
    status, _headers, body = daemon.http("/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def error_records(daemon: Daemon) -> list[dict[str, Any]]:
    """Log records at ERROR or above, or carrying a traceback."""
    return [
        r
        for r in daemon.log_records()
        if r.get("level") in ("error", "critical") or "exception" in r
    ]


def sdp_offer(host: str, rtp_port: int) -> bytes:
    """A plain RTP/AVP audio offer (PCMU + telephone-event) for ``host``."""
    family = "IP6" if ":" in host else "IP4"
    return (
        "v=0\r\n"
        f"o=- 1 1 IN {family} {host}\r\n"
        "s=-\r\n"
        f"c=IN {family} {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n"
    ).encode()


def sdp_audio_target(sdp: bytes) -> tuple[str, int]:
    """Where an answer wants audio: (c= address, m=audio port)."""
    text = sdp.decode()
    conn = re.search(r"^c=IN IP[46] (\S+)\r?$", text, re.M)
    media = re.search(r"^m=audio (\d+) ", text, re.M)
    assert conn and media, f"no c= or m=audio in the answer:\n{text}"
    return conn.group(1), int(media.group(1))


# --- channels: one client socket or connection, whole SIP messages in and out ---------------


class Channel(abc.ABC):
    """A client end of one SIP transport (datagram socket, stream, WebSocket)."""

    #: "udp", "tcp", "tls", "ws" or "wss".
    transport: str
    #: The Via sent-by we announce.
    sent_by: str

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Write one message."""

    @abc.abstractmethod
    async def _next_message_bytes(self) -> bytes:
        """Wait for the next whole message; ConnectionError when the daemon closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the socket (idempotent, bounded)."""

    async def receive(self, timeout: float = TIMEOUT) -> SipMessage:
        """The next SIP message, parsed."""
        async with asyncio.timeout(timeout):
            return parse_message(await self._next_message_bytes())


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait(data)


class UdpChannel(Channel):
    """A connected UDP socket: the daemon's answers come from the address we sent to."""

    transport = "udp"

    def __init__(self, dgram: asyncio.DatagramTransport, proto: _Datagrams) -> None:
        self.dgram = dgram
        self.proto = proto
        local = dgram.get_extra_info("sockname")
        self.sent_by = hostport(local[0], local[1])

    @classmethod
    async def open(cls, host: str, port: int) -> UdpChannel:
        """A socket on ``host`` (any port) connected to the daemon at ``host:port``."""
        loop = asyncio.get_running_loop()
        dgram, proto = await loop.create_datagram_endpoint(
            _Datagrams, local_addr=(host, 0), remote_addr=(host, port)
        )
        return cls(dgram, proto)

    async def send(self, data: bytes) -> None:
        self.dgram.sendto(data)

    async def _next_message_bytes(self) -> bytes:
        while True:
            data = await self.proto.queue.get()
            if data.strip(b"\r\n"):
                return data

    async def close(self) -> None:
        self.dgram.close()


class StreamChannel(Channel):
    """TCP or TLS: frames the byte stream with the project's own framer."""

    def __init__(
        self, transport: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.transport = transport
        self.reader = reader
        self.writer = writer
        local = writer.get_extra_info("sockname")
        self.sent_by = hostport(local[0], local[1])
        self.framer = SipStreamFramer()
        self.frames: deque[bytes] = deque()

    @classmethod
    async def open(
        cls,
        transport: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sni: str | None = None,
    ) -> StreamChannel:
        """Connect (and for TLS, complete the handshake) within the timeout."""
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, server_hostname=sni if ssl_context else None
            )
        return cls(transport, reader, writer)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The TLS session (TLS channels only)."""
        obj = self.writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        return obj

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _next_message_bytes(self) -> bytes:
        while not self.frames:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self.frames.extend(f for f in self.framer.feed(data) if f is not None)
        return self.frames.popleft()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()


class WsChannel(Channel):
    """RFC 7118: one SIP message per WebSocket message, subprotocol "sip"."""

    def __init__(
        self, transport: str, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self.transport = transport
        self.session = session
        self.ws = ws
        self.sent_by = WS_VIA_HOST

    @classmethod
    async def open(
        cls,
        transport: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sni: str | None = None,
    ) -> WsChannel:
        """Open ``ws://`` or ``wss://host:port/`` asking for the "sip" subprotocol."""
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        try:
            ws = await session.ws_connect(
                f"{transport}://{hostport(host, port)}/",
                protocols=("sip",),
                ssl=ssl_context if ssl_context is not None else True,
                server_hostname=sni,
            )
        except BaseException:
            await session.close()
            raise
        return cls(transport, session, ws)

    async def send(self, data: bytes) -> None:
        await self.ws.send_str(data.decode())

    async def _next_message_bytes(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data).encode()
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        raise ConnectionError(f"WebSocket ended: {msg.type.name} {msg.data!r}")

    async def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(2):
                await self.ws.close()
        await self.session.close()


C = TypeVar("C", bound=Channel)


@contextlib.asynccontextmanager
async def channel(opener: Callable[[], Awaitable[C]]) -> AsyncIterator[C]:
    """``async with channel(lambda: UdpChannel.open(...)) as ch``: always closed."""
    ch = await opener()
    try:
        yield ch
    finally:
        await ch.close()


# --- a minimal user agent on top of a channel -------------------------------------------------


_ids = itertools.count(1)


def unique(prefix: str) -> str:
    """A token unique within this test run (branches, tags, Call-IDs)."""
    return f"{prefix}{os.getpid()}x{next(_ids)}"


class SipTestClient:
    """Builds requests with our Via/From/Contact and waits for their final answer."""

    def __init__(self, ch: Channel, host: str, port: int) -> None:
        self.ch = ch
        self.target = hostport(host, port)
        suffix = "" if ch.transport == "udp" else f";transport={ch.transport}"
        self.uri_suffix = suffix
        self.contact = f"<sip:probe@{ch.sent_by}{suffix}>"

    def uri(self, user: str) -> str:
        """The Request-URI for ``user`` at the daemon."""
        return f"sip:{user}@{self.target}{self.uri_suffix}"

    def via(self) -> str:
        """A top Via with a fresh branch, asking for rport."""
        proto = self.ch.transport.upper()
        return f"SIP/2.0/{proto} {self.ch.sent_by};branch={unique('z9hG4bK')};rport"

    def request(
        self,
        method: str,
        user: str,
        *,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        """A new out-of-dialog request to ``user``."""
        return build_request(
            method,
            self.uri(user),
            via=self.via(),
            from_value=f"<sip:probe@{self.ch.sent_by}>;tag={unique('t')}",
            to_value=f"<{self.uri(user)}>",
            call_id=unique("c") + "@test",
            cseq=1,
            contact=self.contact,
            headers=headers or [],
            body=body,
        )

    def in_dialog(
        self, method: str, invite: SipRequest, answer: SipResponse, cseq: int
    ) -> SipRequest:
        """ACK/BYE in the dialog the 2xx ``answer`` to ``invite`` created."""
        to_value = answer.headers.get("To")
        from_value = invite.headers.get("From")
        assert to_value and from_value
        return build_request(
            method,
            str(answer.contacts[0].uri),
            via=self.via(),
            from_value=from_value,
            to_value=to_value,
            call_id=invite.call_id,
            cseq=cseq,
        )

    async def final_response(self, request: SipRequest, timeout: float = TIMEOUT) -> SipResponse:
        """The final response to ``request`` (provisionals and strays skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ch.receive(timeout)
                if (
                    isinstance(msg, SipResponse)
                    and msg.status >= 200
                    and msg.branch == request.branch
                    and msg.cseq_method == request.method
                ):
                    return msg

    async def transact(self, request: SipRequest) -> SipResponse:
        """Send ``request``, wait for its final response (and ACK a failed INVITE)."""
        await self.ch.send(bytes(request))
        response = await self.final_response(request)
        if request.method == "INVITE" and response.status >= 300:
            await self.ch.send(bytes(build_ack(request, response)))
        return response

    async def options(self, user: str = "anyone") -> SipResponse:
        """OPTIONS to ``user``; asserts the capabilities are there."""
        response = await self.transact(self.request("OPTIONS", user))
        assert response.status == 200, response
        assert "INVITE" in response.headers.getlist("Allow")
        assert response.to_tag
        return response

    async def echo_call(self, media_host: str) -> None:
        """INVITE sip:echo -> 200 with SDP -> ACK; RTP packets come back; BYE -> 200."""
        loop = asyncio.get_running_loop()
        rtp, rtp_proto = await loop.create_datagram_endpoint(_Datagrams, local_addr=(media_host, 0))
        try:
            rtp_port = rtp.get_extra_info("sockname")[1]
            invite = self.request("INVITE", "echo", body=sdp_offer(media_host, rtp_port))
            answer = await self.transact(invite)
            assert answer.status == 200, answer
            assert answer.to_tag and answer.contacts and answer.body
            await self.ch.send(bytes(self.in_dialog("ACK", invite, answer, 1)))
            # A few packets: a new RTP source is on probation (RFC 3550 A.1) and
            # its first packet is not forwarded.
            for seq in range(1, 6):
                packet = struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, 0x1234ABCD) + b"\xff" * 160
                rtp.sendto(packet, sdp_audio_target(answer.body))
            async with asyncio.timeout(TIMEOUT):
                echoed = await rtp_proto.queue.get()
            assert echoed[12:] == packet[12:], "the echo reflects the payload"
            assert echoed[8:12] != packet[8:12], "with its own SSRC"
            bye = await self.transact(self.in_dialog("BYE", invite, answer, 2))
            assert bye.status == 200, bye
        finally:
            rtp.close()


def assert_no_calls_left(daemon: Daemon) -> None:
    """The call registry is empty again (bounded wait)."""
    assert wait_until(lambda: metrics_of(daemon)["gatewayd_calls_active"] == 0)


# --- blocking sockets: byte-exact control of what is written and when ------------------------


def simple_request(
    method: str,
    transport: str,
    sent_by: str,
    *,
    user: str = "anyone",
    target: str = "127.0.0.1",
    call_id: str | None = None,
) -> SipRequest:
    """An out-of-dialog request with a fresh branch, tag and (unless given) Call-ID."""
    uri = f"sip:{user}@{target}" + ("" if transport == "udp" else f";transport={transport}")
    return build_request(
        method,
        uri,
        via=f"SIP/2.0/{transport.upper()} {sent_by};branch={unique('z9hG4bK')};rport",
        from_value=f"<sip:probe@{sent_by}>;tag={unique('t')}",
        to_value=f"<sip:{user}@{target}>",
        call_id=call_id or unique("c") + "@test",
        cseq=1,
        contact=f"<sip:probe@{sent_by}>",
    )


class SyncStream:
    """A blocking TCP client that cuts the daemon's answers with the project's framer."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = self.sock.getsockname()
        self.sent_by = hostport(local[0], local[1])
        self.port: int = local[1]
        self.framer = SipStreamFramer()
        self.frames: deque[bytes | None] = deque()

    def options(self, *, sent_by: str | None = None, content_length: bool = True) -> bytes:
        """An OPTIONS over TCP with a fresh branch and Call-ID (Via ``sent_by`` if given)."""
        data = bytes(simple_request("OPTIONS", "tcp", sent_by or self.sent_by))
        if not content_length:
            data = re.sub(rb"Content-Length: *\d+\r\n", b"", data)
            assert b"Content-Length" not in data
        return data

    def next_frame(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next message (bytes) or keep-alive pong (None); ConnectionError on close."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the daemon")
            self.frames.extend(self.framer.feed(data))
        return self.frames.popleft()

    def response(self, timeout: float = TIMEOUT) -> SipResponse:
        """The next message, which must be a response."""
        frame = self.next_frame(timeout)
        assert frame is not None, "expected a response, got a keep-alive pong"
        message = parse_message(frame)
        assert isinstance(message, SipResponse)
        return message

    def raw(self, timeout: float = TIMEOUT) -> bytes:
        """Whatever one recv() returns (bypassing the framer)."""
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def closed_by_peer(self, timeout: float = TIMEOUT) -> bool:
        """True once the daemon closes or resets the connection (without sending more)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@contextlib.contextmanager
def sync_stream(
    port: int, host: str = "127.0.0.1", *, source: str | None = None
) -> Iterator[SyncStream]:
    """A SyncStream that is closed whatever happens."""
    stream = SyncStream(port, host, source=source)
    try:
        yield stream
    finally:
        stream.close()


class SyncDatagram:
    """A blocking UDP socket on ``source`` (any loopback address) talking to the daemon."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.target = (host, port)
        self.sock.bind((source, 0))
        local = self.sock.getsockname()
        self.sent_by = hostport(local[0], local[1])
        self.port: int = local[1]

    def send(self, data: bytes | SipMessage) -> None:
        """One datagram to the daemon."""
        self.sock.sendto(data if isinstance(data, bytes) else bytes(data), self.target)

    def receive(self, timeout: float = TIMEOUT) -> bytes:
        """The next datagram; TimeoutError when none comes in time."""
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def responses_until_quiet(self, quiet: float, limit: float = TIMEOUT) -> list[SipResponse]:
        """Every response until none came for ``quiet`` seconds (at most ``limit`` in all)."""
        out: list[SipResponse] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                data = self.receive(min(quiet, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                break
            message = parse_message(data)
            if isinstance(message, SipResponse):
                out.append(message)
        return out

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@contextlib.contextmanager
def sync_datagram(
    port: int, *, source: str = "127.0.0.1", host: str = "127.0.0.1"
) -> Iterator[SyncDatagram]:
    """A SyncDatagram that is closed whatever happens."""
    sock = SyncDatagram(port, source=source, host=host)
    try:
        yield sock
    finally:
        sock.close()
