"""Trunk registration against a real Kamailio registrar with digest auth.

Our ``TrunkManager`` drives a real ``SipEndpoint`` on loopback. Kamailio's
``location`` table is proven the way a caller sees it: an INVITE to the AOR
sent to Kamailio reaches our endpoint (through ``lookup("location")``) while
we are registered, and gets Kamailio's 404 once we have un-REGISTERed.
Kamailio's own log (one ``REQ REGISTER`` line per request, with its Call-ID)
shows the challenge round trip, the refresh and the un-REGISTER.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridges.sip.call import SipCall
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.message import SipResponse, parse_message
from bridges.sip.outgoing import build_ack, build_request, via_value
from bridges.sip.registration import RegistrationState
from bridges.sip.trunks import TrunkManager
from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import SystemClock
from gateway.settings import Settings, SipSettings, SipTimers, SipTrunk
from tests.support import kamailio as kamailio_support
from tests.support.kamailio import KamailioServer
from tests.support.net import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "gw", "gw-Pa55:word"
# Short grants so that a refresh happens within the test; the settings model
# insists on >= 60 s, which is right for operators, so tests copy past it.
EXPIRES = 8
REFRESH_AFTER = 4.0  # refresh_delay(8) = max(min(6.4, 3), 4)


@pytest.fixture
def kamailio_registrar(
    kamailio: Callable[..., KamailioServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., KamailioServer]:
    """The shared ``kamailio`` factory, its registrar also granting bindings as short as 5 s."""
    text = kamailio_support.TEMPLATE.read_text()
    anchor = 'modparam("registrar", "max_expires", 3600)'
    assert anchor in text, "the Kamailio template changed: adapt this fixture"
    patched = tmp_path / "kamailio.cfg"
    patched.write_text(text.replace(anchor, f'{anchor}\nmodparam("registrar", "min_expires", 5)'))
    monkeypatch.setattr(kamailio_support, "TEMPLATE", patched)

    def start(users: dict[str, str]) -> KamailioServer:
        return kamailio(users, auth_invite=False)

    return start


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("gatewayd_sip_trunk_up", {"trunk": name})


def registers(server: KamailioServer) -> list[str]:
    """The Call-ID of each REGISTER Kamailio received, in order."""
    return re.findall(r"\{1 REGISTER (\S+)\} (?:<script>: )?REQ REGISTER ", server.log_text())


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (bounded) for something the event loop's other tasks make true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def invite_through(server: KamailioServer, user: str, timeout: float = 5.0) -> SipResponse:
    """INVITE sip:user@kamailio from a plain UDP socket; ACK and return the final response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        invite = build_request(
            "INVITE",
            server.uri(user),
            via=via_value("udp", "127.0.0.1", port, f"z9hG4bKprobe{time.monotonic_ns()}"),
            from_value=f"<sip:caller@127.0.0.1:{port}>;tag=c{port}",
            to_value=f"<{server.uri(user)}>",
            call_id=f"probe-{time.monotonic_ns()}@127.0.0.1",
            cseq=1,
            contact=f"<sip:caller@127.0.0.1:{port}>",
        )
        sock.sendto(bytes(invite), ("127.0.0.1", server.port))
        sock.settimeout(timeout)
        while True:
            message = parse_message(sock.recv(65535))
            assert isinstance(message, SipResponse)
            if message.status >= 200:
                sock.sendto(bytes(build_ack(invite, message)), ("127.0.0.1", server.port))
                return message


async def start_endpoint() -> SipEndpoint:
    settings = Settings(
        sip=SipSettings(
            host="127.0.0.1",
            port=free_port(),
            transports=["udp", "tcp"],
            echo_user="",
            timers=SipTimers(t1=0.05, t2=0.5, t4=0.5),  # Timer F = 3.2 s
        )
    )
    endpoint = SipEndpoint(CallRegistry())
    await endpoint.start(settings)
    return endpoint


def trunk_for(server: KamailioServer, name: str, **changes: Any) -> SipTrunk:
    trunk = SipTrunk(
        name=name,
        registrar=f"sip:{server.address}",
        username=USER,
        password=SecretStr(PASSWORD),
        options_interval=1.0,
    )
    return trunk.model_copy(update={"expires": EXPIRES, **changes})


def leftover_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_register_refresh_and_unregister_at_kamailio(
    kamailio_registrar: Callable[..., KamailioServer],
) -> None:
    server = kamailio_registrar({USER: PASSWORD})
    endpoint = await start_endpoint()
    calls: list[str] = []

    async def answer_busy(call: SipCall) -> None:
        assert call.invite is not None
        calls.append(call.invite.uri)
        await call.reject(486)

    endpoint.services[USER] = answer_busy
    manager = TrunkManager(endpoint, SystemClock(), unregister_timeout=2.0)
    try:
        await manager.start([trunk_for(server, "kam")])
        assert gauge("kam") == 0.0, "down until the registrar said yes"
        await until(lambda: bool(manager.is_up("kam")), 5, "the first registration")
        up_at = time.monotonic()
        assert gauge("kam") == 1.0
        client = manager.client("kam")
        assert client is not None and client.granted == EXPIRES
        assert len(registers(server)) == 2, "REGISTER, 401, REGISTER with credentials, 200"

        # Kamailio's location table has our contact: a call to the AOR reaches us.
        busy = await asyncio.to_thread(invite_through, server, USER)
        assert busy.status == 486, busy
        host, port = endpoint.local_address("udp")
        assert calls == [f"sip:{USER}@{host}:{port}"]

        samples: list[float | None] = []

        def refreshed() -> bool:
            samples.append(gauge("kam"))
            return len(registers(server)) >= 3 and client.state is RegistrationState.REGISTERED

        await until(refreshed, REFRESH_AFTER + 3, "the refresh")
        assert REFRESH_AFTER - 0.5 < time.monotonic() - up_at < REFRESH_AFTER + 1.5
        assert set(samples) == {1.0}, "never down across the refresh"
        assert len(registers(server)) == 3, "the refresh re-used the nonce: no 401"

        await manager.stop()
        sent = registers(server)
        assert len(sent) == 4, "the un-REGISTER"
        assert len(set(sent)) == 1, "one Call-ID for every REGISTER (RFC 3261 §10.2.4)"
        assert client.state is RegistrationState.IDLE and client.last_status == 200
        assert gauge("kam") == 0.0

        gone = await asyncio.to_thread(invite_through, server, USER)
        assert gone.status == 404, "un-REGISTER removed the binding"
        assert len(calls) == 1
    finally:
        await manager.stop()
        await endpoint.stop()
    assert not leftover_tasks(), leftover_tasks()


async def test_wrong_password_fails_without_looping(
    kamailio_registrar: Callable[..., KamailioServer],
) -> None:
    server = kamailio_registrar({USER: PASSWORD})
    endpoint = await start_endpoint()
    manager = TrunkManager(endpoint, SystemClock(), unregister_timeout=1.0)
    try:
        await manager.start([trunk_for(server, "bad", password=SecretStr("not-it"))])
        client = manager.client("bad")
        assert client is not None
        await until(lambda: client.state is RegistrationState.FAILED, 5, "the refusal")
        assert client.last_status == 401
        tries = len(registers(server))
        # Kamailio mints nonces per second: the same nonce refused twice ends
        # it after one answer; a fresh one gets one more answer.
        assert tries in (2, 3), "one answer per challenge, then stop"
        await asyncio.sleep(1.5)
        assert len(registers(server)) == tries, "no retry with refused credentials"
        assert gauge("bad") == 0.0
        await manager.stop()
        assert len(registers(server)) == tries, "nothing to un-REGISTER"
    finally:
        await manager.stop()
        await endpoint.stop()
    assert not leftover_tasks()


async def test_options_keepalive_marks_a_trunk_up_and_down(
    kamailio_registrar: Callable[..., KamailioServer],
) -> None:
    server = kamailio_registrar({})
    endpoint = await start_endpoint()
    manager = TrunkManager(endpoint, SystemClock())
    probe = trunk_for(server, "probe", registration=False, username=None, password=None)
    probe = probe.model_copy(update={"options_interval": 0.5})
    try:
        await manager.start([probe])
        await until(lambda: manager.is_up("probe") is True, 5, "Kamailio's 200 Keepalive")
        assert gauge("probe") == 1.0
        assert "REQ OPTIONS" in server.log_text()
        await asyncio.to_thread(server.stop)
        # Timer F is 3.2 s with these timers; then the gauge drops.
        await until(lambda: manager.is_up("probe") is False, 6, "the keep-alive timeout")
        assert gauge("probe") == 0.0
    finally:
        await manager.stop()
        await endpoint.stop()
    assert not leftover_tasks()
