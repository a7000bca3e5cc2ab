"""The real daemon's SIP transports, end to end: UDP, TCP, TLS, WS, WSS and IPv6.

Each transport carries an OPTIONS and an echo call (INVITE -> 200 -> ACK,
one RTP packet reflected, BYE -> 200) from the small clients of
``tests.support.sip_client`` (raw sockets, asyncio streams, aiohttp's
WebSocket client). Then the
stream rules of RFC 3261 §18 and RFC 5626: answers on the connection the
request came in on, framing by Content-Length whatever the segmentation,
CRLFCRLF keep-alives, the connection cap and no leaked descriptors; and
RFC 3581 received/rport. The TLS contexts of ``bridges.sip.tls`` are also
checked in-process against the test CA of ``tests.support.tls``.

Every wait is bounded; every socket is closed in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bridges.sip.message import SipResponse, parse_message
from bridges.sip.tls import (
    INTERMEDIATE_CIPHERS,
    TlsSetupError,
    client_context,
    server_context,
    server_hostname,
)
from gateway.settings import SipTls
from tests.support.daemon import Daemon
from tests.support.net import free_port
from tests.support.sip_client import (
    TIMEOUT,
    Channel,
    SipTestClient,
    StreamChannel,
    UdpChannel,
    WsChannel,
    assert_no_calls_left,
    channel,
    error_records,
    have_ipv6_loopback,
    hostport,
    metrics_of,
    simple_request,
    sync_datagram,
    sync_stream,
    wait_until,
)
from tests.support.tls import IssuedCertificate, ThrowawayCa

pytestmark = pytest.mark.integration

Start = Callable[..., Daemon]
FAST_TIMERS = {"t1": 0.05, "t2": 0.5, "t4": 0.5}
SERVER_NAME = "gw.test"


# --- plain transports: UDP, TCP, WS on IPv4; UDP and TCP on IPv6 ------------------------------


@dataclass
class PlainNode:
    """A daemon with udp, tcp and ws listeners."""

    daemon: Daemon
    host: str
    ws_port: int

    def port(self, transport: str) -> int:
        """The listening port for ``transport``."""
        return self.ws_port if transport == "ws" else self.daemon.sip_port


def start_plain_node(gatewayd: Start, host: str = "127.0.0.1") -> PlainNode:
    """udp + tcp (+ ws on IPv4) with fast timers."""
    ws_port = free_port()
    transports = ["udp", "tcp", "ws"] if host == "127.0.0.1" else ["udp", "tcp"]
    daemon = gatewayd(
        {
            "sip": {
                "host": host,
                "transports": transports,
                "ws_port": ws_port,
                "timers": FAST_TIMERS,
            },
            # IPv6 peers get IPv6 media (the media address is what SDP advertises).
            **({"media": {"address6": host}} if ":" in host else {}),
        }
    )
    return PlainNode(daemon, host, ws_port)


async def open_plain(node: PlainNode, transport: str) -> Channel:
    """A client channel of ``transport`` to ``node``."""
    port = node.port(transport)
    if transport == "udp":
        return await UdpChannel.open(node.host, port)
    if transport == "tcp":
        return await StreamChannel.open("tcp", node.host, port)
    return await WsChannel.open("ws", node.host, port)


@pytest.mark.parametrize("transport", ["udp", "tcp", "ws"])
async def test_options_and_echo_call(gatewayd: Start, transport: str) -> None:
    node = start_plain_node(gatewayd)
    async with channel(lambda: open_plain(node, transport)) as ch:
        client = SipTestClient(ch, node.host, node.port(transport))
        await client.options()
        await client.echo_call(node.host)
    assert_no_calls_left(node.daemon)
    assert error_records(node.daemon) == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_options_and_echo_call_over_ipv6(gatewayd: Start, transport: str) -> None:
    if not have_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    node = start_plain_node(gatewayd, "::1")
    async with channel(lambda: open_plain(node, transport)) as ch:
        client = SipTestClient(ch, node.host, node.port(transport))
        response = await client.options()
        assert response.top_via.received == "::1"
        await client.echo_call(node.host)
    assert_no_calls_left(node.daemon)


async def test_websocket_needs_the_sip_subprotocol(gatewayd: Start) -> None:
    node = start_plain_node(gatewayd)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.ws_connect(f"ws://127.0.0.1:{node.ws_port}/") as ws,
    ):
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1002


# --- TLS and WSS -------------------------------------------------------------------------------


@dataclass
class TlsNode:
    """A daemon with udp, tls and wss listeners and the CA that signed its certificate."""

    daemon: Daemon
    ca: ThrowawayCa
    tls_port: int
    wss_port: int


def start_tls_node(gatewayd: Start, pki: Path) -> TlsNode:
    """Certificate for gw.test, 127.0.0.1 and ::1 from a fresh CA; ``sip.tls`` pointing at it."""
    ca = ThrowawayCa(pki)
    server = ca.issue("gw", dns_names=[SERVER_NAME], ip_addresses=["127.0.0.1", "::1"])
    tls_port, wss_port = free_port(), free_port()
    daemon = gatewayd(
        {
            "sip": {
                "transports": ["udp", "tls", "wss"],
                "tls_port": tls_port,
                "wss_port": wss_port,
                "timers": FAST_TIMERS,
                "tls": {
                    "cert_file": str(server.cert_file),
                    "key_file": str(server.key_file),
                    "ca_file": str(ca.ca_file),
                },
            }
        }
    )
    return TlsNode(daemon, ca, tls_port, wss_port)


#: A refused handshake: an alert, or the server dropping the connection.
TLS_REFUSED = (ssl.SSLError, ConnectionResetError)


def tls11_only_client() -> ssl.SSLContext:
    """A client that offers nothing newer than TLS 1.1 (and checks nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


async def handshake(
    port: int, client: ssl.SSLContext, sni: str | None, host: str = "127.0.0.1"
) -> str:
    """Connect, complete a TLS handshake, return the protocol version; then close."""
    async with asyncio.timeout(TIMEOUT):
        _reader, writer = await asyncio.open_connection(host, port, ssl=client, server_hostname=sni)
    try:
        version = writer.get_extra_info("ssl_object").version()
        assert isinstance(version, str)
        return version
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await writer.wait_closed()


async def test_tls_options_and_echo_call_with_sni(gatewayd: Start, tmp_path: Path) -> None:
    node = start_tls_node(gatewayd, tmp_path)
    context = node.ca.client_context()

    async def open_tls() -> StreamChannel:
        return await StreamChannel.open(
            "tls", "127.0.0.1", node.tls_port, ssl_context=context, sni=SERVER_NAME
        )

    async with channel(open_tls) as ch:
        assert ch.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        assert ch.ssl_object.server_hostname == SERVER_NAME
        peer = ch.ssl_object.getpeercert()
        assert peer is not None and ("DNS", SERVER_NAME) in peer.get("subjectAltName", ())
        client = SipTestClient(ch, "127.0.0.1", node.tls_port)
        await client.options()
        await client.echo_call("127.0.0.1")
    assert_no_calls_left(node.daemon)
    assert error_records(node.daemon) == []


async def test_tls_handshake_needs_the_right_ca_and_name(gatewayd: Start, tmp_path: Path) -> None:
    node = start_tls_node(gatewayd, tmp_path / "pki")
    stranger = ThrowawayCa(tmp_path / "other", name="someone else's CA")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await handshake(node.tls_port, stranger.client_context(), SERVER_NAME)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await handshake(node.tls_port, node.ca.client_context(), "elsewhere.test")
    if await tls11_handshake_possible(node.ca):
        with pytest.raises(TLS_REFUSED):
            await handshake(node.tls_port, tls11_only_client(), None)
    # The failed handshakes hurt nobody: the right client is served.
    assert await handshake(node.tls_port, node.ca.client_context(), SERVER_NAME)
    async with channel(
        lambda: StreamChannel.open(
            "tls", "127.0.0.1", node.tls_port, ssl_context=node.ca.client_context(), sni=SERVER_NAME
        )
    ) as ch:
        await SipTestClient(ch, "127.0.0.1", node.tls_port).options()
    assert error_records(node.daemon) == []


async def test_wss_options_and_echo_call(gatewayd: Start, tmp_path: Path) -> None:
    node = start_tls_node(gatewayd, tmp_path)
    context = node.ca.client_context()

    async def open_wss() -> WsChannel:
        return await WsChannel.open(
            "wss", "127.0.0.1", node.wss_port, ssl_context=context, sni=SERVER_NAME
        )

    async with channel(open_wss) as ch:
        client = SipTestClient(ch, "127.0.0.1", node.wss_port)
        await client.options()
        await client.echo_call("127.0.0.1")
    # The wss port speaks only TLS: a plain ws:// client gets no WebSocket.
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await (await WsChannel.open("ws", "127.0.0.1", node.wss_port)).close()
    assert_no_calls_left(node.daemon)
    assert error_records(node.daemon) == []


async def test_ws_and_wss_side_by_side(gatewayd: Start, tmp_path: Path) -> None:
    ca = ThrowawayCa(tmp_path)
    server = ca.issue("gw", dns_names=[SERVER_NAME], ip_addresses=["127.0.0.1"])
    ws_port, wss_port = free_port(), free_port()
    gatewayd(
        {
            "sip": {
                "transports": ["udp", "ws", "wss"],
                "ws_port": ws_port,
                "wss_port": wss_port,
                "tls": {"cert_file": str(server.cert_file), "key_file": str(server.key_file)},
            }
        }
    )
    async with channel(lambda: WsChannel.open("ws", "127.0.0.1", ws_port)) as ch:
        await SipTestClient(ch, "127.0.0.1", ws_port).options()
    async with channel(
        lambda: WsChannel.open("wss", "127.0.0.1", wss_port, ssl_context=ca.client_context())
    ) as ch:
        await SipTestClient(ch, "127.0.0.1", wss_port).options()


# --- bridges.sip.tls in-process: policy, SNI, CA, bad files ------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> tuple[ThrowawayCa, IssuedCertificate]:
    """A CA and a server certificate for gw.test / 127.0.0.1."""
    ca = ThrowawayCa(tmp_path / "pki")
    return ca, ca.issue("gw", dns_names=[SERVER_NAME], ip_addresses=["127.0.0.1"])


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[tuple[int, list[str | None]]]:
    """A TLS server on 127.0.0.1 that records the SNI of each handshake."""
    names: list[str | None] = []

    def record(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record

    async def serve(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], names
    finally:
        server.close()
        async with asyncio.timeout(TIMEOUT):
            await server.wait_closed()


async def tls11_handshake_possible(ca: ThrowawayCa) -> bool:
    """Whether this OpenSSL can still speak TLS 1.1 at all (a permissive control server)."""
    leaf = ca.issue("control", ip_addresses=["127.0.0.1"])
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.load_cert_chain(leaf.cert_file, leaf.key_file)
    async with tls_server(permissive) as (port, _names):
        try:
            return await handshake(port, tls11_only_client(), None) == "TLSv1.1"
        except OSError:
            return False


def test_server_context_follows_the_intermediate_policy(
    pki: tuple[ThrowawayCa, IssuedCertificate],
) -> None:
    _ca, leaf = pki
    context = server_context(SipTls(cert_file=leaf.cert_file, key_file=leaf.key_file))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    assert context.options & ssl.OP_NO_TICKET and context.options & ssl.OP_NO_COMPRESSION
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    allowed = set(INTERMEDIATE_CIPHERS.split(":"))
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and set(tls12) <= allowed
    assert not [c for c in context.get_ciphers() if "CBC" in c["description"]]


async def test_contexts_handshake_with_sni_and_reject_strangers(
    pki: tuple[ThrowawayCa, IssuedCertificate], tmp_path: Path
) -> None:
    ca, leaf = pki
    settings = SipTls(cert_file=leaf.cert_file, key_file=leaf.key_file, ca_file=ca.ca_file)
    stranger = ThrowawayCa(tmp_path / "other", name="someone else's CA")
    async with tls_server(server_context(settings)) as (port, names):
        assert await handshake(port, client_context(settings), server_hostname("GW.test."))
        assert names[-1] == SERVER_NAME  # SNI carries the name we dialled
        assert await handshake(port, client_context(settings), server_hostname("[127.0.0.1]"))
        assert names[-1] is None  # no SNI for an IP literal (RFC 6066 §3); IP SAN checked
        wrong_ca = SipTls(
            cert_file=leaf.cert_file, key_file=leaf.key_file, ca_file=stranger.ca_file
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, client_context(wrong_ca), SERVER_NAME)
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(port, client_context(settings), "elsewhere.test")
        lab = wrong_ca.model_copy(update={"verify_peer": False})
        assert await handshake(port, client_context(lab), "elsewhere.test")


async def test_server_context_refuses_tls_1_1(pki: tuple[ThrowawayCa, IssuedCertificate]) -> None:
    ca, leaf = pki
    if not await tls11_handshake_possible(ca):
        pytest.skip("this OpenSSL cannot offer TLS 1.1, so its refusal cannot be shown")
    context = server_context(SipTls(cert_file=leaf.cert_file, key_file=leaf.key_file))
    async with tls_server(context) as (port, _names):
        with pytest.raises(TLS_REFUSED):
            await handshake(port, tls11_only_client(), None)


def test_system_store_is_used_without_a_ca_file(
    pki: tuple[ThrowawayCa, IssuedCertificate],
) -> None:
    _ca, leaf = pki
    context = client_context(SipTls(cert_file=leaf.cert_file, key_file=leaf.key_file))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert client_context(None).verify_mode is ssl.CERT_REQUIRED


def test_unloadable_files_name_their_key(
    pki: tuple[ThrowawayCa, IssuedCertificate], tmp_path: Path
) -> None:
    _ca, leaf = pki
    with pytest.raises(TlsSetupError, match=r"sip\.tls\.cert_file/key_file: .*No such file"):
        server_context(SipTls(cert_file=leaf.cert_file, key_file=tmp_path / "missing.key"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match=r"sip\.tls\.ca_file: "):
        client_context(SipTls(cert_file=leaf.cert_file, key_file=leaf.key_file, ca_file=garbage))


# --- TCP stream rules (blocking sockets: byte-exact control of what is written) -------------


def test_tcp_answers_on_the_same_connection_and_keeps_it(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"timers": FAST_TIMERS}})
    # A listener at the address our Via names: the daemon must not connect there.
    decoy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen(1)
        decoy.settimeout(0.3)
        with sync_stream(daemon.sip_port) as stream:
            sent_by = hostport("127.0.0.1", decoy.getsockname()[1])
            for _ in range(3):
                stream.sock.sendall(stream.options(sent_by=sent_by))
                assert stream.response().status == 200
            with pytest.raises(TimeoutError):
                decoy.accept()[0].close()
    finally:
        decoy.close()


def test_tcp_framing_survives_one_byte_writes(gatewayd: Start) -> None:
    daemon = gatewayd()
    with sync_stream(daemon.sip_port) as stream:
        data = stream.options()
        for i in range(len(data)):
            stream.sock.sendall(data[i : i + 1])
            time.sleep(0.0005)  # let each byte arrive in a segment of its own
        response = stream.response()
        assert response.status == 200
        assert response.call_id == parse_message(data).call_id


def test_tcp_two_messages_in_one_write_are_both_answered(gatewayd: Start) -> None:
    daemon = gatewayd()
    with sync_stream(daemon.sip_port) as stream:
        first, second = stream.options(), stream.options()
        stream.sock.sendall(first + second)
        answered = {stream.response().call_id, stream.response().call_id}
        assert answered == {parse_message(first).call_id, parse_message(second).call_id}


def test_keepalive_ping_is_answered_with_crlf(gatewayd: Start) -> None:
    daemon = gatewayd()
    with sync_stream(daemon.sip_port) as stream:
        for _ in range(2):
            stream.sock.sendall(b"\r\n\r\n")
            assert stream.raw() == b"\r\n"  # RFC 5626 §4.4.1: ping, pong
        stream.sock.sendall(stream.options())
        assert stream.response().status == 200  # the connection is still in service
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.settimeout(TIMEOUT)
        udp.sendto(b"\r\n\r\n", ("127.0.0.1", daemon.sip_port))
        assert udp.recv(100) == b"\r\n"
    finally:
        udp.close()


def test_tcp_message_without_content_length_gets_400_and_close(gatewayd: Start) -> None:
    daemon = gatewayd()
    with sync_stream(daemon.sip_port) as stream:
        stream.sock.sendall(stream.options(content_length=False))
        response = stream.response()
        assert response.status == 400
        assert stream.closed_by_peer()
    samples = metrics_of(daemon)
    assert samples['gatewayd_sip_parse_errors_total{reason="content_length"}'] == 1


def test_tcp_connection_cap_refuses_extra_connections(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"limits": {"max_connections": 3}}})
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(sync_stream(daemon.sip_port)) for _ in range(3)]
        for stream in held:
            stream.sock.sendall(stream.options())
            assert stream.response().status == 200
        with sync_stream(daemon.sip_port) as extra:
            with contextlib.suppress(ConnectionError):
                extra.sock.sendall(extra.options())
            assert extra.closed_by_peer(), "the fourth connection is dropped unanswered"
        held[0].close()

        def served() -> bool:
            with sync_stream(daemon.sip_port) as again:
                try:
                    again.sock.sendall(again.options())
                    return again.response(1.0).status == 200
                except (ConnectionError, TimeoutError):
                    return False

        assert wait_until(served), "a freed slot is usable again"


def count_fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_tcp_connections_leak_no_file_descriptors(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"timers": FAST_TIMERS}})
    pid = daemon.proc.pid

    def cycle(i: int) -> None:
        with sync_stream(daemon.sip_port) as stream:
            kind = i % 4
            if kind == 0:  # a whole exchange, orderly close
                stream.sock.sendall(stream.options())
                assert stream.response().status == 200
            elif kind == 1:  # a whole exchange, then a reset
                stream.sock.sendall(stream.options())
                assert stream.response().status == 200
                stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == 2:  # half a message, then gone
                stream.sock.sendall(stream.options()[:40])
            # kind 3: connect and leave at once

    idle = count_fds(pid)
    for i in range(8):  # warm-up: anything allocated once and kept is not a leak
        cycle(i)
    wait_until(lambda: count_fds(pid) <= idle, timeout=1.0)
    before = count_fds(pid)
    for i in range(100):
        cycle(i)
    assert wait_until(lambda: count_fds(pid) <= before), (
        f"{count_fds(pid)} descriptors open after 100 connections, {before} before"
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_via_gets_received_and_rport(gatewayd: Start, transport: str) -> None:
    daemon = gatewayd()
    # The Via names port 9 (discard): the answer must follow rport to our real port.
    request = bytes(simple_request("OPTIONS", transport, "127.0.0.1:9"))
    if transport == "udp":
        with sync_datagram(daemon.sip_port) as dgram:
            dgram.send(request)
            data, port = dgram.receive(), dgram.port
    else:
        with sync_stream(daemon.sip_port) as stream:
            stream.sock.sendall(request)
            frame, port = stream.next_frame(), stream.port
            assert frame is not None
            data = frame
    response = parse_message(data)
    assert isinstance(response, SipResponse) and response.status == 200
    via = response.top_via
    assert via.rport == port and via.received == "127.0.0.1"
    assert f";rport={port}".encode() in data and b";received=127.0.0.1" in data
    assert via.sent_by == ("127.0.0.1", 9)
