"""Dialog features between two real endpoints (and a SIPp UAS): late offer,
INFO, re-INVITE glare (491 and retry), reliable provisionals (PRACK)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bridges.sip.call import CallState, SipCall
from bridges.sip.echo import EchoMedia, EchoService
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.message import SipRequest
from gateway.calls import CallRegistry
from gateway.settings import load_settings
from tests.support.net import free_port
from tests.support.sipp import SippUas

pytestmark = pytest.mark.integration

Pair = tuple[SipEndpoint, SipEndpoint, EchoService]


async def _endpoint() -> SipEndpoint:
    settings = load_settings(f"sip:\n  port: {free_port()}\n  timers: {{t1: 0.1, t2: 1, t4: 1}}\n")
    sip = SipEndpoint(CallRegistry())
    await sip.start(settings)
    return sip


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    caller, callee = await _endpoint(), await _endpoint()
    echo = EchoService("127.0.0.1")
    callee.services["echo"] = echo.handle
    yield caller, callee, echo
    await caller.stop()
    await callee.stop()


async def _call_echo(caller: SipEndpoint, callee: SipEndpoint, media: EchoMedia) -> SipCall:
    port = callee.local_address("udp")[1]
    call = await caller.invite(
        f"sip:echo@127.0.0.1:{port}", media.offer(), remote=("127.0.0.1", port)
    )
    media.bind(call)
    assert await call.wait_answered(timeout=5), call.end_reason
    return call


def _their_call(callee: SipEndpoint) -> SipCall:
    (call,) = list(callee._dialogs.values())
    return call


async def test_late_offer_answer_travels_in_the_ack(pair: Pair) -> None:
    caller, callee, echo = pair
    media = await EchoMedia("127.0.0.1").open()
    try:
        port = callee.local_address("udp")[1]
        call = await caller.invite(f"sip:echo@127.0.0.1:{port}", b"", remote=("127.0.0.1", port))
        media.bind(call)

        async def answer(_call: SipCall, offer: bytes | None) -> bytes | None:
            return media.answer(offer) if offer is not None else None

        call.on_offer = answer
        assert await call.wait_answered(timeout=5)
        theirs = _their_call(callee)
        await asyncio.sleep(0.3)  # the ACK with our answer
        assert call.local_sdp and b"m=audio" in call.local_sdp
        assert theirs.remote_sdp == call.local_sdp
        assert echo.calls[theirs.call_id].last is not None  # the echo made the offer
        await call.hangup("done")
    finally:
        media.close()


async def test_info_reaches_the_other_side(pair: Pair) -> None:
    caller, callee, _echo = pair
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await _call_echo(caller, callee, media)
        received: list[SipRequest] = []

        def on_info(_call: SipCall, request: SipRequest) -> None:
            received.append(request)

        _their_call(callee).on_info = on_info
        response = await call.info(b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay")
        assert response is not None and response.status == 200
        assert len(received) == 1 and b"Signal=5" in received[0].body
        await call.hangup("done")
    finally:
        media.close()


async def test_reinvite_glare_is_resolved_by_491_and_retry(pair: Pair) -> None:
    caller, callee, _echo = pair
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await _call_echo(caller, callee, media)
        theirs = _their_call(callee)
        assert theirs.local_sdp is not None
        ours_sdp = media.offer()
        results = await asyncio.wait_for(
            asyncio.gather(call.reinvite(ours_sdp), theirs.reinvite(theirs.local_sdp)), 15
        )
        statuses = sorted(r.status if r is not None else 0 for r in results)
        assert statuses == [200, 200], statuses  # both went through, one after a 491
        assert call.state is CallState.ESTABLISHED and theirs.state is CallState.ESTABLISHED
        await call.hangup("done")
    finally:
        media.close()


UAS_100REL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas that sends a reliable 180">
  <recv request="INVITE">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="invite_via"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Require: 100rel
RSeq: 1
Content-Length: 0

  ]]></send>
  <recv request="PRACK"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

  ]]></send>
  <send><![CDATA[
SIP/2.0 200 OK
Via:[$invite_via]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 INVITE
Contact: <sip:[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

  ]]></send>
</scenario>
"""


async def test_reliable_provisional_is_pracked(
    pair: Pair, sipp_uas: Callable[..., SippUas]
) -> None:
    caller, _callee, _echo = pair
    uas = sipp_uas(UAS_100REL, calls=1)
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await caller.invite(
            f"sip:service@{uas.address}", media.offer(), remote=("127.0.0.1", uas.port)
        )
        media.bind(call)
        assert await call.wait_answered(timeout=5), call.end_reason
        assert call.provisional == [180] and call.last_rseq == 1
        await call.hangup("done")
    finally:
        media.close()
    result = await asyncio.to_thread(uas.stop)
    assert result.failed == 0 and result.successful == 1, result.describe()
