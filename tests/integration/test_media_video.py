"""Video through the SIP relay with real baresip (fakevideo source, VP8 or H.264).

Two baresips call each other through ``RelayService``: the same codec on both
legs is passed through, different codecs are transcoded by the router. What
baresip received and decoded is read from its ``video_debug`` (RTP counters and
the ``vidisp`` frame counter); what the gateway received is seen with router taps,
which tell keyframes apart by parsing the payloads here (RFC 7741, RFC 6184), so
the test does not depend on the depacketizers it checks.

Facts about Debian 12's baresip 1.0.0 / libre the tests rely on:
- its encoders make a keyframe at the start and then only when asked (PLI);
- its decoders send a PLI when they see a frame they cannot decode (a gap).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bridges.sip.endpoint import SipEndpoint
from bridges.sip.media import SipMedia
from bridges.sip.relay import RelayedCall, RelayService, RelayTarget
from gateway.media.router import Route, Router
from gateway.media.rtp import header_sizes
from gateway.media.stream import MediaStream
from mediacodecs.executor import MediaExecutor
from mediacodecs.transcode import VideoTranscoder
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, RtpStats

pytestmark = pytest.mark.integration

_H264_IDR = 5
_H264_STAP_A = 24
_H264_FU_A = 28


# --- keyframes, parsed here --------------------------------------------------------------


def vp8_is_keyframe(payload: bytes) -> bool:
    """RFC 7741: the first packet of a frame (S=1, PID=0) whose P bit is 0."""
    if not payload:
        return False
    first = payload[0]
    start, partition = bool(first & 0x10), first & 0x07
    pos = 1
    if first & 0x80:  # X: extension octet I L T K
        ext = payload[pos]
        pos += 1
        if ext & 0x80:  # I: PictureID, 15 bits when M is set
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if not start or partition != 0 or pos >= len(payload):
        return False
    return not payload[pos] & 0x01  # the inverse key frame flag


def h264_is_keyframe(payload: bytes) -> bool:
    """RFC 6184: an IDR NAL unit (type 5) alone, in a STAP-A, or starting an FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == _H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F == _H264_IDR
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            if payload[pos + 2] & 0x1F == _H264_IDR:
                return True
            pos += 2 + size
        return False
    return nal_type == _H264_IDR


@dataclass
class KeyframeTap:
    """Router tap: when keyframes (and how many packets) arrived on one stream."""

    codec: str
    packets: int = 0
    keyframes: list[float] = field(default_factory=list)

    def __call__(self, _stream: object, data: bytes, _arrival: float) -> None:
        self.packets += 1
        header, size = header_sizes(data)
        payload = bytes(data[header : header + size])
        is_key = vp8_is_keyframe if self.codec == "vp8" else h264_is_keyframe
        if is_key(payload):
            self.keyframes.append(time.monotonic())

    def since(self, moment: float) -> list[float]:
        return [t for t in self.keyframes if t >= moment]


# --- the relay rig -------------------------------------------------------------------------


@dataclass
class VideoCall:
    router: Router
    relayed: RelayedCall
    caller: Baresip
    callee: Baresip

    @property
    def caller_video(self) -> MediaStream:
        """Our stream facing the caller."""
        return self.relayed.inbound_media.streams[1]

    @property
    def callee_video(self) -> MediaStream:
        """Our stream facing the callee."""
        return self.relayed.outbound_media.streams[1]

    def route(self, source: MediaStream) -> Route:
        return next(r for r in self.router.routes() if r.source is source)


async def video_call(
    sip: SipEndpoint,
    executor: MediaExecutor,
    baresip: Callable[..., Baresip],
    caller_video: str,
    callee_video: str,
) -> VideoCall:
    callee = baresip("bob", codecs=("PCMU",), video=callee_video)
    caller = baresip("alice", codecs=("PCMU",), video=caller_video)
    router = Router(executor)
    target = RelayTarget(callee.contact_uri, ("127.0.0.1", callee.sip_port), answer_timeout=5)
    relay = RelayService(sip, target, router, lambda: SipMedia("127.0.0.1"))
    sip.services["relay"] = relay.handle
    port = sip.local_address("udp")[1]
    await in_thread(lambda: caller.dial(f"sip:relay@127.0.0.1:{port}"))
    await in_thread(lambda: caller.wait_event("CALL_ESTABLISHED", timeout=8))
    await wait_for(lambda: len(router.routes()) == 4)
    (relayed,) = relay.calls.values()
    return VideoCall(router, relayed, caller, callee)


async def video_stats(ua: Baresip) -> RtpStats:
    stats = await in_thread(ua.video_stats)
    assert isinstance(stats, RtpStats)
    return stats


def frames_displayed(stats: RtpStats) -> int:
    """``vidisp: fakevideo W x H frames=N``: frames baresip decoded and displayed."""
    found = re.search(r"vidisp: \S+ \d+ x \d+ frames=(\d+)", stats.raw)
    return int(found.group(1)) if found else 0


def keyframes_received(stats: RtpStats) -> int:
    found = re.search(r"n_keyframes=(\d+)", stats.raw)
    return int(found.group(1)) if found else 0


def transcoder_of(route: Route) -> VideoTranscoder:
    plans = [p for p in route._plans.values() if hasattr(p, "transcoder")]
    (plan,) = plans
    transcoder = plan.transcoder
    assert isinstance(transcoder, VideoTranscoder)
    return transcoder


async def hang_up(call: VideoCall, sip: SipEndpoint) -> None:
    await in_thread(call.caller.hangup)
    await in_thread(lambda: call.callee.wait_event("CALL_CLOSED", timeout=5))
    await wait_for(lambda: sip.calls.active == 0)
    assert call.router.routes() == []


# --- tests -----------------------------------------------------------------------------------


async def test_vp8_to_vp8_is_passed_through_both_ways(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip]
) -> None:
    call = await video_call(sip, executor, baresip, "vp8", "vp8")
    await asyncio.sleep(1.0)
    before = [await video_stats(call.caller), await video_stats(call.callee)]
    await asyncio.sleep(2.0)
    after = [await video_stats(call.caller), await video_stats(call.callee)]
    for source in (call.caller_video, call.callee_video):
        route = call.route(source)
        assert route.mode == "passthrough", route.stats
        assert route.stats.forwarded > 50, route.stats
        assert route.stats.transcoded_in == 0
    for ua, old, new in zip((call.caller, call.callee), before, after, strict=True):
        assert new.rx_packets > old.rx_packets + 20, f"{ua.user} got no video:\n{new.raw}"
        assert frames_displayed(new) > frames_displayed(old) + 20, new.raw
    await hang_up(call, sip)


@pytest.mark.parametrize(("caller_video", "callee_video"), [("vp8", "h264"), ("h264", "vp8")])
async def test_vp8_and_h264_are_transcoded_both_ways(
    sip: SipEndpoint,
    executor: MediaExecutor,
    baresip: Callable[..., Baresip],
    caller_video: str,
    callee_video: str,
) -> None:
    call = await video_call(sip, executor, baresip, caller_video, callee_video)
    await asyncio.sleep(1.0)
    before = [await video_stats(call.caller), await video_stats(call.callee)]
    await asyncio.sleep(2.0)
    after = [await video_stats(call.caller), await video_stats(call.callee)]

    # Caller -> callee: transcoded on the gateway, decoded by the callee.
    forward = call.route(call.caller_video)
    assert forward.mode == "transcode", forward.stats
    transcoder = transcoder_of(forward)
    assert transcoder.frames_decoded > 30, forward.stats
    assert transcoder.frames_encoded > 20, forward.stats
    assert forward.stats.transcoded_out > 20
    assert after[1].rx_packets > before[1].rx_packets + 20, after[1].raw
    assert frames_displayed(after[1]) > frames_displayed(before[1]) + 20, after[1].raw

    # Callee -> caller. baresip 1.0.0 answers our H.264 offer (PT 97-100) with
    # PT 100 but sends PT 99, another number we offered for H.264: taken
    # (NegotiatedStream.also_received), as rtpengine and Pexip do.
    backward = call.route(call.callee_video)
    assert backward.mode == "transcode", backward.stats
    transcoder = transcoder_of(backward)
    assert transcoder.frames_decoded > 30, backward.stats
    assert transcoder.frames_encoded > 20, backward.stats
    assert after[0].rx_packets > before[0].rx_packets + 20, after[0].raw
    assert frames_displayed(after[0]) > frames_displayed(before[0]) + 20, after[0].raw
    await hang_up(call, sip)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_our_pli_is_answered_with_a_keyframe(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip], codec: str
) -> None:
    # The caller's codec is ``codec``; the callee's is the other one (or VP8).
    call = await video_call(sip, executor, baresip, codec, "vp8")
    tap = KeyframeTap(codec)
    call.router.tap(call.caller_video, tap)
    await asyncio.sleep(1.5)  # past the keyframe that starts the stream
    quiet_from = time.monotonic()
    await asyncio.sleep(1.0)
    assert tap.packets > 10, "no video from the caller"
    assert tap.since(quiet_from) == [], "baresip sends keyframes unasked: the test proves nothing"
    asked = time.monotonic()
    call.caller_video.request_keyframe()
    await wait_for(lambda: bool(tap.since(asked)), timeout=2.0)
    assert tap.since(asked)[0] - asked < 1.0
    await hang_up(call, sip)


class _Gate:
    """Wraps a callable; while closed, calls are swallowed (packets lost)."""

    def __init__(self, inner: Callable[..., object]) -> None:
        self.inner = inner
        self.open = True

    def __call__(self, *args: object) -> object:
        return self.inner(*args) if self.open else False


async def test_pli_from_the_callee_reaches_the_caller_on_passthrough(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip]
) -> None:
    call = await video_call(sip, executor, baresip, "vp8", "vp8")
    tap = KeyframeTap("vp8")
    call.router.tap(call.caller_video, tap)
    await asyncio.sleep(1.5)
    route = call.route(call.caller_video)
    assert route.mode == "passthrough"
    requests = route.stats.keyframe_requests
    quiet_from = time.monotonic()
    # Lose one second of the caller's video on its way to the callee: the
    # callee's decoder breaks and it sends a PLI, which must go to the caller.
    gate = _Gate(route.feed)
    route.feed = gate  # type: ignore[method-assign,assignment]
    await asyncio.sleep(1.0)
    assert tap.since(quiet_from) == [], "keyframe before any request"
    gate.open = False
    await asyncio.sleep(1.0)
    gate.open = True
    await wait_for(lambda: route.stats.keyframe_requests > requests, timeout=3.0)
    await wait_for(lambda: bool(tap.since(quiet_from)), timeout=2.0)
    await hang_up(call, sip)


async def test_pli_from_the_callee_reaches_the_encoder_when_transcoding(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip]
) -> None:
    call = await video_call(sip, executor, baresip, "h264", "vp8")
    await asyncio.sleep(1.5)
    route = call.route(call.caller_video)
    assert route.mode == "transcode"
    asked: list[float] = []
    original = route.keyframe_requested

    def keyframe_requested() -> None:
        asked.append(time.monotonic())
        original()

    route.keyframe_requested = keyframe_requested  # type: ignore[method-assign]
    start = await video_stats(call.callee)
    # Lose a second of our encoder's output: the callee asks for a keyframe,
    # which the route must turn into a keyframe from the encoder.
    gate = _Gate(call.callee_video.send_rtp)
    call.callee_video.send_rtp = gate  # type: ignore[method-assign,assignment]
    gate.open = False
    await asyncio.sleep(1.0)
    gate.open = True
    await wait_for(lambda: bool(asked), timeout=3.0)
    await asyncio.sleep(1.0)
    end = await video_stats(call.callee)
    assert keyframes_received(end) > keyframes_received(start), end.raw
    await hang_up(call, sip)
