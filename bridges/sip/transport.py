"""asyncio transports for SIP: UDP, TCP, TLS and WebSocket (RFC 7118).

The only module of the SIP stack that touches sockets. It turns datagrams
and byte streams into whole messages (``framing.SipStreamFramer`` on
streams) and hands them, with the ``Flow`` they arrived on, to one
callback; it sends bytes on a given flow or to a target, reusing an open
connection to the same peer (RFC 3261 §18, connection reuse). It knows
nothing of transactions or dialogs.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from bridges.sip.flow import Flow
from bridges.sip.framing import SipStreamFramer
from bridges.sip.message import SipParseError
from gateway.log import get_logger

log = get_logger(__name__)

_conn_ids = itertools.count(1)


@dataclass(frozen=True)
class Limits:
    """Caps on what a peer may make us buffer."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    max_datagram: int = 65535
    #: SO_RCVBUF for UDP listeners in bytes (0: the kernel default).
    udp_receive_buffer: int = 0
    max_connections: int = 4096
    idle_timeout: float = 600.0


OnMessage = Callable[[bytes, Flow], None]


class _Connection:
    """One stream connection (TCP/TLS); feeds the framer, sends bytes."""

    def __init__(self, layer: SipTransportLayer, transport_name: str) -> None:
        self.layer = layer
        self.name = transport_name
        self.conn_id = next(_conn_ids)
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.framer = SipStreamFramer(
            max_header_bytes=layer.limits.max_header_bytes,
            max_body_bytes=layer.limits.max_body_bytes,
        )
        self._idle: asyncio.TimerHandle | None = None

    def _arm_idle(self) -> None:
        """A peer that sends no whole message for ``idle_timeout`` loses its slot."""
        if self._idle is not None:
            self._idle.cancel()
        if self.transport is not None:
            self._idle = asyncio.get_running_loop().call_later(
                self.layer.limits.idle_timeout, self.transport.close
            )

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._arm_idle()
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        self.flow = Flow(self.name, (local[0], local[1]), (remote[0], remote[1]), self.conn_id)
        self.layer._connections[self.conn_id] = self
        self.layer._by_remote[(self.name, self.flow.remote)] = self

    def feed(self, data: bytes) -> None:
        assert self.flow is not None and self.transport is not None
        try:
            frames = self.framer.feed(data)
        except SipParseError as exc:
            # A framing error leaves the stream unusable: answer if we can, close.
            log.info("closing SIP stream after framing error", reason=exc.reason)
            self.layer.on_stream_error(exc, self.flow)
            self.transport.close()
            return
        if frames:
            self._arm_idle()  # only whole messages or pings count as activity
        for frame in frames:
            if frame is None:
                self.transport.write(b"\r\n")  # RFC 5626 pong
            else:
                self.layer.on_message(frame, self.flow)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def lost(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.layer._connections.pop(self.conn_id, None)
        if self.flow is not None:
            key = (self.name, self.flow.remote)
            if self.layer._by_remote.get(key) is self:
                del self.layer._by_remote[key]


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self.conn.layer._connections) >= self.conn.layer.limits.max_connections:
            transport.abort()
            return
        self.conn.attach(transport)

    def data_received(self, data: bytes) -> None:
        self.conn.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost()


class _UdpSocket:
    """A SIP UDP listener that drains its socket in batches.

    asyncio's datagram transport reads one datagram per event-loop turn; under
    a burst the kernel buffer overflows while the loop is busy (seen as
    RcvbufErrors and SIP retransmissions at ~400 calls/s). Reading until the
    socket is empty (bounded per turn) keeps up with far fewer loop turns.
    """

    BATCH = 64

    def __init__(self, layer: SipTransportLayer, sock: socket.socket) -> None:
        self.layer = layer
        self.sock = sock
        name = sock.getsockname()
        self.local = (str(name[0]), int(name[1]))
        self.closed = False
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(self.BATCH):
            try:
                data, addr = self.sock.recvfrom(self.layer.limits.max_datagram)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP port unreachable and friends: the transaction layer times out.
                log.debug("udp error", error=str(exc))
                return
            if data in (b"\r\n\r\n", b"\r\n"):
                if data == b"\r\n\r\n":
                    self.sendto(b"\r\n", addr)  # keep-alive answered
                continue
            remote = (str(addr[0]), int(addr[1]))
            self.layer.on_message(data, Flow("udp", self.local, remote))

    def sendto(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send one datagram; a full send buffer drops it (SIP retransmits)."""
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            log.debug("udp send buffer full: datagram dropped")
            return False
        except OSError as exc:
            log.debug("udp send failed", error=str(exc))
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


class SipTransportLayer:
    """Listening sockets and connections for every configured transport."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        limits: Limits | None = None,
        on_stream_error: Callable[[SipParseError, Flow], None] | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_stream_error = on_stream_error or (lambda _e, _f: None)
        self.limits = limits or Limits()
        self._udp: dict[tuple[str, int], _UdpSocket] = {}
        self._servers: list[asyncio.Server] = []
        self._ws_runners: list[web.AppRunner] = []
        self._connections: dict[int, _Connection] = {}
        self._by_remote: dict[tuple[str, tuple[str, int]], _Connection] = {}
        self._ws: dict[int, tuple[web.WebSocketResponse, Flow]] = {}
        self._pending_ws_sends: set[asyncio.Future[None]] = set()
        self.listening: dict[str, tuple[str, int]] = {}

    # --- listening ---------------------------------------------------------------
    async def listen(
        self, transport: str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Open a listener; returns the bound (host, port)."""
        loop = asyncio.get_running_loop()
        if transport == "udp":
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _type, _proto, _name, address = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                if self.limits.udp_receive_buffer:
                    # Capped by net.core.rmem_max; see sip.limits.udp_receive_buffer.
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_RCVBUF, self.limits.udp_receive_buffer
                    )
                sock.bind(address)
            except OSError:
                sock.close()
                raise
            udp = _UdpSocket(self, sock)
            self._udp[udp.local] = udp
            bound = udp.local
        elif transport in ("tcp", "tls"):
            if transport == "tls" and ssl_context is None:
                raise ValueError("TLS needs an SSL context")
            server = await loop.create_server(
                lambda: _StreamProtocol(_Connection(self, transport)),
                host,
                port,
                ssl=ssl_context if transport == "tls" else None,
                reuse_address=True,
            )
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            bound = (sock[0], sock[1])
        elif transport in ("ws", "wss"):
            bound = await self._listen_ws(transport, host, port, ssl_context)
        else:
            raise ValueError(f"unknown SIP transport {transport!r}")
        self.listening[transport] = bound
        return bound

    async def _listen_ws(
        self, transport: str, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> tuple[str, int]:
        app = web.Application()

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(
                protocols=("sip",),
                max_msg_size=self.limits.max_body_bytes + self.limits.max_header_bytes,
            )
            await ws.prepare(request)
            if ws.ws_protocol != "sip":
                await ws.close(code=1002, message=b"subprotocol sip required")
                return ws
            peer = request.transport.get_extra_info("peername") if request.transport else None
            remote = (str(peer[0]), int(peer[1])) if peer else ("0.0.0.0", 0)  # noqa: S104
            conn_id = next(_conn_ids)
            flow = Flow(transport, (host, port), remote, conn_id)
            self._ws[conn_id] = (ws, flow)
            try:
                async for msg in ws:
                    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                        data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                        self.on_message(data, flow)
            finally:
                self._ws.pop(conn_id, None)
            return ws

        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        self._ws_runners.append(runner)
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:
            sock = server.sockets[0].getsockname()
            return (sock[0], sock[1])
        return (host, port)

    # --- sending -----------------------------------------------------------------
    def send(self, data: bytes, flow: Flow) -> bool:
        """Send on an existing flow (the connection a request came in on, or UDP)."""
        if flow.transport == "udp":
            udp = self._udp.get(flow.local) or next(iter(self._udp.values()), None)
            if udp is None or udp.closed:
                return False
            return udp.sendto(data, flow.remote)
        if flow.transport in ("ws", "wss"):
            entry = self._ws.get(flow.conn_id)
            if entry is None:
                return False
            task = asyncio.ensure_future(entry[0].send_str(data.decode("utf-8", "replace")))
            self._pending_ws_sends.add(task)
            task.add_done_callback(self._pending_ws_sends.discard)
            return True
        conn = self._connections.get(flow.conn_id) or self._by_remote.get(
            (flow.transport, flow.remote)
        )
        if conn is None:
            return False
        conn.send(data)
        return True

    async def connect(
        self,
        transport: str,
        remote: tuple[str, int],
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Flow:
        """A flow to ``remote``: UDP needs none; streams reuse an open connection."""
        if transport == "udp":
            if not self._udp:
                raise ConnectionError("no UDP listener to send from")
            local = next(iter(self._udp))
            return Flow("udp", local, remote)
        existing = self._by_remote.get((transport, remote))
        if existing is not None and existing.flow is not None:
            return existing.flow
        if transport not in ("tcp", "tls"):
            raise ConnectionError(f"cannot open outgoing {transport} connections")
        loop = asyncio.get_running_loop()
        conn = _Connection(self, transport)
        await loop.create_connection(
            lambda: _StreamProtocol(conn),
            remote[0],
            remote[1],
            ssl=ssl_context if transport == "tls" else None,
            server_hostname=server_hostname if transport == "tls" else None,
        )
        if conn.flow is None:
            raise ConnectionError("connection refused by the connection cap")
        return conn.flow

    @property
    def connection_count(self) -> int:
        """Open stream connections (TCP/TLS/WS)."""
        return len(self._connections) + len(self._ws)

    async def close(self) -> None:
        """Close every socket."""
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        for server in self._servers:
            server.close()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for ws, _flow in list(self._ws.values()):
            await ws.close()
        for runner in self._ws_runners:
            await runner.cleanup()
        self._ws_runners.clear()
