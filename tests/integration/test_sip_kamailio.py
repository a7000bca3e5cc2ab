"""Through a real Kamailio: proxy digest auth on our INVITE, Record-Route, and
our BYE following the route set; and calls to a SIPp UAS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bridges.sip.echo import EchoMedia
from bridges.sip.endpoint import SipEndpoint
from gateway.calls import CallRegistry
from gateway.settings import load_settings
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.kamailio import KamailioServer
from tests.support.net import free_port
from tests.support.sipp import SippUas

pytestmark = pytest.mark.integration


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    settings = load_settings(f"sip:\n  port: {free_port()}\n")
    sip = SipEndpoint(CallRegistry())
    await sip.start(settings)
    yield sip
    await sip.stop()


async def test_call_through_kamailio_with_proxy_auth_and_route_set(
    endpoint: SipEndpoint,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio({"gw": "gw-secret", "bob": "bob-secret"})
    bob = baresip("bob", registrar=proxy.address, password="bob-secret", codecs=("PCMU",))
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await endpoint.invite(
            proxy.uri("bob"), media.offer(), remote=("127.0.0.1", proxy.port),
            from_uri=proxy.uri("gw"), credentials=("gw", "gw-secret"),
        )  # fmt: skip
        media.bind(call)
        assert await call.wait_answered(timeout=8), f"ended: {call.end_reason}"
        assert call.invite is not None and call.invite.cseq_number == 2  # after the 407
        dialog = call.dialog
        assert dialog is not None and dialog.route_set, "Kamailio record-routes"
        assert f":{proxy.port}" in dialog.route_set[0]
        await asyncio.sleep(1.5)
        assert media.stats[0].received > 25 and media.stats[0].sent > 25
        await call.hangup("done")
        await asyncio.to_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
        log = proxy.log_text()
        assert "BYE" in log, "the BYE went through the proxy (loose routing)"
        wav = await asyncio.to_thread(bob.wait_recording)
        assert abs(dominant_frequency(wav) - 1000) < 20
    finally:
        media.close()
    assert endpoint.calls.active == 0


async def test_wrong_password_ends_the_call_without_looping(
    endpoint: SipEndpoint, kamailio: Callable[..., KamailioServer]
) -> None:
    proxy = kamailio({"gw": "right"})
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await endpoint.invite(
            proxy.uri("nobody"), media.offer(), remote=("127.0.0.1", proxy.port),
            from_uri=proxy.uri("gw"), credentials=("gw", "wrong"),
        )  # fmt: skip
        media.bind(call)
        assert not await call.wait_answered(timeout=8)
        assert call.final_status == 407
        assert call.invite is not None and call.invite.cseq_number <= 3
    finally:
        media.close()


async def test_calls_to_a_sipp_uas(endpoint: SipEndpoint, sipp_uas: Callable[..., SippUas]) -> None:
    uas = sipp_uas()
    for _ in range(3):
        media = await EchoMedia("127.0.0.1").open()
        try:
            call = await endpoint.invite(
                f"sip:service@{uas.address}", media.offer(), remote=("127.0.0.1", uas.port)
            )
            media.bind(call)
            assert await call.wait_answered(timeout=5)
            await call.hangup("done")
            assert call.end_reason == "done"
        finally:
            media.close()
    assert endpoint.calls.active == 0
