"""Interop with a real baresip: it calls our echo, we call it; CANCEL, hold, BYE both ways.

Media is checked for real: baresip sends a 1 kHz tone (ausine); our echo
reflects it, so the tone must be the dominant frequency in what baresip
records, and RTP counters must move both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bridges.sip.call import CallState
from bridges.sip.echo import EchoMedia, EchoService
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.session_timer import SessionTimer
from gateway.calls import CallRegistry
from gateway.settings import load_settings
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.daemon import Daemon
from tests.support.net import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SipEndpoint, EchoService]]:
    settings = load_settings(
        f"sip:\n  port: {free_port()}\n  timers: {{t1: 0.1, t2: 1.0, t4: 1.0}}\n"
    )
    registry = CallRegistry()
    sip = SipEndpoint(registry)
    echo = EchoService("127.0.0.1")
    sip.services["echo"] = echo.handle
    await sip.start(settings)
    yield sip, echo
    await sip.stop()


def _assert_tone(ua: Baresip) -> None:
    wav = ua.wait_recording(timeout=5)
    assert abs(dominant_frequency(wav) - 1000) < 20, "the echoed tone did not come back"


async def test_baresip_calls_our_echo_and_hears_its_tone(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, echo = endpoint
    port = sip.local_address("udp")[1]
    ua = baresip("alice", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(f"sip:echo@127.0.0.1:{port}"))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(2.0)
    (media,) = echo.calls.values()
    audio = media.stats[0]
    assert audio.received > 50 and audio.sent > 50  # ~50 packets/s each way
    stats = ua.audio_stats()
    assert stats.tx_packets > 50
    await in_thread(ua.hangup)
    await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    await wait_for(lambda: sip.calls.active == 0)
    _assert_tone(ua)


async def test_hold_and_resume_by_reinvite(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, echo = endpoint
    port = sip.local_address("udp")[1]
    ua = baresip("bob", codecs=("PCMA",))
    await in_thread(lambda: ua.dial(f"sip:echo@127.0.0.1:{port}"))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    (media,) = echo.calls.values()
    await in_thread(ua.hold)
    await wait_for(lambda: media.last is not None and "recvonly" in str(media.last))
    await in_thread(ua.resume)
    await wait_for(lambda: media.last is not None and "sendrecv" in str(media.last))
    assert sip.calls.active == 1
    (call,) = [c for c in sip._dialogs.values()]
    assert call.state is CallState.ESTABLISHED
    await call.hangup("test over")  # BYE from our side
    await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    assert sip.calls.active == 0


async def test_we_call_baresip_with_media_and_it_hangs_up(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, _echo = endpoint
    ua = baresip("carol", codecs=("PCMA", "PCMU"))
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await sip.invite(ua.contact_uri, media.offer(), remote=("127.0.0.1", ua.sip_port))
        media.bind(call)
        assert await call.wait_answered(timeout=5)
        assert call.remote_sdp is not None and b"PCMA/8000" in call.remote_sdp
        await asyncio.sleep(2.0)
        assert media.stats[0].received > 50 and media.stats[0].sent > 50
        await in_thread(ua.hangup)  # BYE from baresip
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.end_reason == "remote hangup"
        _assert_tone(ua)
    finally:
        media.close()
    assert sip.calls.active == 0


async def test_cancel_before_answer(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, _echo = endpoint
    ua = baresip("dave", codecs=("PCMU",), answermode="manual")
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await sip.invite(ua.contact_uri, media.offer(), remote=("127.0.0.1", ua.sip_port))
        media.bind(call)
        await in_thread(lambda: ua.wait_event("CALL_INCOMING", timeout=5))
        await wait_for(lambda: bool(call.provisional))
        await call.hangup("changed my mind")
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.final_status == 487
        await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    finally:
        media.close()
    assert sip.calls.active == 0


@pytest.fixture
def daemon_for_drain(gatewayd: Callable[..., Daemon]) -> Daemon:
    return gatewayd({"drain_timeout": 1})


def test_daemon_hangs_up_baresip_when_drain_time_is_up(
    daemon_for_drain: Daemon, baresip: Callable[..., Baresip]
) -> None:
    ua = baresip("erin", codecs=("PCMU",))
    ua.dial(f"sip:echo@127.0.0.1:{daemon_for_drain.sip_port}")
    ua.wait_event("CALL_ESTABLISHED", timeout=5)
    daemon_for_drain.stop(timeout=10)
    assert daemon_for_drain.proc.returncode == 0
    ua.wait_event("CALL_CLOSED", timeout=5)


async def test_session_refresh_by_us_keeps_the_call(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, _echo = endpoint
    ua = baresip("frank", codecs=("PCMU",))
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await sip.invite(ua.contact_uri, media.offer(), remote=("127.0.0.1", ua.sip_port))
        media.bind(call)
        assert await call.wait_answered(timeout=5)
        # A short interval instead of RFC 4028's 90 s floor, so the test is quick.
        call.session_timer = SessionTimer(2, we_refresh=True)
        sip.arm_session_timer(call)
        dialog = call.dialog
        assert dialog is not None
        await wait_for(lambda: dialog.local_seq >= 3, timeout=6)  # two refreshes went out
        assert call.state is CallState.ESTABLISHED
        assert call.session_timer_handle is not None  # and the next one is armed
        await call.hangup("done")
    finally:
        media.close()


async def test_session_expiry_without_refresh_ends_the_call(
    endpoint: tuple[SipEndpoint, EchoService], baresip: Callable[..., Baresip]
) -> None:
    sip, _echo = endpoint
    ua = baresip("grace", codecs=("PCMU",))
    media = await EchoMedia("127.0.0.1").open()
    try:
        call = await sip.invite(ua.contact_uri, media.offer(), remote=("127.0.0.1", ua.sip_port))
        media.bind(call)
        assert await call.wait_answered(timeout=5)
        call.session_timer = SessionTimer(3, we_refresh=False)  # the peer should refresh
        sip.arm_session_timer(call)
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.end_reason == "session timer expired"
        await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    finally:
        media.close()


@pytest.mark.parametrize(
    ("codec", "mediaenc"),
    [("opus", None), ("G722", None), ("PCMU", "srtp-mand"), ("opus", "srtp-mand")],
)
async def test_echo_with_each_codec_and_sdes_srtp(
    endpoint: tuple[SipEndpoint, EchoService],
    baresip: Callable[..., Baresip],
    codec: str,
    mediaenc: str | None,
) -> None:
    sip, echo = endpoint
    port = sip.local_address("udp")[1]
    ua = baresip(f"u{codec.lower()}", codecs=(codec,), mediaenc=mediaenc)
    await in_thread(lambda: ua.dial(f"sip:echo@127.0.0.1:{port}"))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(2.0)
    (media,) = echo.calls.values()
    assert media.stats[0].received > 50 and media.stats[0].sent > 50
    if mediaenc:
        audio = media.streams[0]
        assert audio.negotiated is not None and audio.negotiated.srtp is not None
    await in_thread(ua.hangup)
    await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    _assert_tone(ua)
