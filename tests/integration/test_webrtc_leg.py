"""Browser legs with real aiortc peers as the browsers, on loopback.

peer A -> leg A ==(Passthrough, no decoding)==> leg B -> peer B, and back.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiortc.rtp import RtpPacket, wrap_rtx

from gateway import metrics
from gateway.clock import FakeClock
from gateway.errors import BadRequest
from gateway.settings import WebRtcSettings
from gateway.webrtc import EncodedPayload, LegState, Passthrough, WebRtcLeg
from gateway.webrtc import aiortc_fastpath as fastpath
from gateway.webrtc import aiortc_internals as internals
from tests.support.webrtc import (
    BrowserPeer,
    _strip_candidates,
    offering_leg_to_peer,
    peer_to_answering_leg,
)

pytestmark = pytest.mark.integration

SETTINGS = WebRtcSettings(ice_addresses=["127.0.0.1"])


def _gauge() -> float:
    return float(metrics.WEBRTC_LEGS_ACTIVE._value.get())


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition that real media makes true (polling, bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@dataclass
class Call:
    peer_a: BrowserPeer
    peer_b: BrowserPeer
    leg_a: WebRtcLeg
    leg_b: WebRtcLeg
    passthrough: Passthrough
    clock: FakeClock
    seen_at_a: dict[str, list[bytes]]


def _collector(into: list[bytes]) -> Callable[[EncodedPayload], None]:
    return lambda payload: into.append(payload.payload)


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    clock = FakeClock()
    peer_a, peer_b = BrowserPeer(), BrowserPeer()
    leg_a, leg_b = WebRtcLeg(SETTINGS, clock=clock), WebRtcLeg(SETTINGS, clock=clock)
    seen_at_a: dict[str, list[bytes]] = {"audio": [], "video": []}
    for kind in ("audio", "video"):
        leg_a.subscribe(kind, _collector(seen_at_a[kind]))
    await peer_to_answering_leg(peer_a, leg_a)  # the browser calls in
    await offering_leg_to_peer(leg_b, peer_b)  # the gateway calls out
    await asyncio.wait_for(asyncio.gather(leg_a.connected.wait(), leg_b.connected.wait()), 15)
    passthrough = Passthrough(leg_a, leg_b, clock=clock)
    yield Call(peer_a, peer_b, leg_a, leg_b, passthrough, clock, seen_at_a)
    passthrough.close()
    for closable in (leg_a, leg_b, peer_a, peer_b):
        await closable.close()


async def test_media_flows_through_without_decoding(call: Call) -> None:
    peer_b = call.peer_b
    await _until(lambda: peer_b.video_frames >= 30 and peer_b.loud_audio_frames >= 25)
    assert call.leg_a.state is call.leg_b.state is LegState.CONNECTED
    assert call.leg_a.send_codec("video") == call.leg_b.send_codec("video") == "VP8"
    assert call.leg_b.send_codec("audio") == "opus"
    # The gateway never decoded: no decoder thread on its receivers, no encoder
    # on its senders but the passthrough one ...
    for leg in (call.leg_a, call.leg_b):
        assert not leg.receivers_decoding()
        assert leg._pc is not None
        for sender in leg._pc.getSenders():
            assert isinstance(internals.encoder_of(sender), internals.PassthroughEncoder)
    # ... and B's browser got byte for byte the payloads A's browser sent.
    for kind in ("audio", "video"):
        sent = call.seen_at_a[kind]
        received = [p.payload for p in peer_b.rtp[kind]]
        assert len(received) > 20
        start = sent.index(received[0])
        assert received == sent[start : start + len(received)], kind
    # and the other way round, B -> A
    await _until(lambda: call.peer_a.video_frames >= 30 and call.peer_a.loud_audio_frames >= 25)
    assert call.passthrough.a_to_b.stats.dropped == 0


async def test_h264_passes_through_when_the_offer_prefers_it() -> None:
    peer_a, peer_b = BrowserPeer(audio=False, video_codec="H264"), BrowserPeer(audio=False)
    leg_a, leg_b = WebRtcLeg(SETTINGS), WebRtcLeg(SETTINGS)
    await peer_to_answering_leg(peer_a, leg_a)
    assert leg_a.send_codec("video") == "H264"
    offer = await leg_b.create_offer(prefer={"video": leg_a.send_codec("video")})
    await leg_b.accept_answer(await peer_b.answer(offer))
    assert leg_b.send_codec("video") == "H264"
    await asyncio.wait_for(asyncio.gather(leg_a.connected.wait(), leg_b.connected.wait()), 15)
    passthrough = Passthrough(leg_a, leg_b)
    await _until(lambda: peer_b.video_frames >= 20)
    assert passthrough.a_to_b.stats.dropped == 0
    assert not leg_a.receivers_decoding() and not leg_b.receivers_decoding()
    unknown = WebRtcLeg(SETTINGS)
    with pytest.raises(BadRequest, match="no video codec"):
        await unknown.create_offer(prefer={"video": "AV1"})
    assert unknown.state is LegState.NEW
    passthrough.close()
    for closable in (leg_a, leg_b, peer_a, peer_b, unknown):
        await closable.close()


async def test_keyframe_request_from_b_reaches_a(call: Call) -> None:
    peer_a, peer_b = call.peer_a, call.peer_b
    await _until(lambda: len(peer_b.rtp["video"]) > 0 and peer_b.video_frames >= 10)
    call.clock.advance(10)  # past the pacing of the requests made at connect
    asked_before = peer_a.keyframe_requests
    keyframes_before = peer_b.video_keyframes()
    forwarded_before = call.passthrough.a_to_b.stats.keyframe_requests
    # B's browser lost a picture: its receiver sends a PLI to leg B.
    await internals.send_pli(peer_b.receivers["video"], peer_b.rtp["video"][-1].ssrc)
    await _until(lambda: peer_a.keyframe_requests > asked_before)
    await _until(lambda: peer_b.video_keyframes() > keyframes_before)
    assert call.passthrough.a_to_b.stats.keyframe_requests == forwarded_before + 1


async def test_bandwidth_estimate_from_b_reaches_a(call: Call) -> None:
    """B's browser's REMB (about leg B's sender) becomes a REMB from leg A to A's browser."""
    encoder = call.peer_a.senders["video"]
    await _until(lambda: call.passthrough.a_to_b.stats.bitrate_estimates > 0, timeout=15)
    vp8 = internals.encoder_of(encoder)
    assert vp8 is not None and type(vp8).__name__ == "Vp8Encoder"
    estimates: list[int] = []
    call.leg_b.on_bitrate_estimate(lambda kind, bps: estimates.append(bps))
    from aiortc.codecs.vpx import MAX_BITRATE, MIN_BITRATE

    def a_follows_b() -> bool:
        wanted = max(MIN_BITRATE, min(estimates[-1], MAX_BITRATE)) if estimates else None
        return wanted is not None and getattr(vp8, "target_bitrate") == wanted  # noqa: B009

    await _until(a_follows_b)


async def test_trickled_candidates_both_ways() -> None:
    peer = BrowserPeer(audio=False)
    leg = WebRtcLeg(SETTINGS)
    local: list[tuple[str | None, str | None, int | None]] = []
    leg.on_candidate = lambda c, mid, index: local.append((c, mid, index))
    offer = await peer.offer(strip_candidates=True)
    assert "a=candidate" not in offer
    answer = await leg.accept_offer(offer)
    assert local[-1] == (None, None, None)  # end of candidates
    assert local[0][0] is not None and " 127.0.0.1 " in local[0][0]
    assert all(" typ host" in c for c, _mid, _i in local[:-1] if c)
    await peer.accept_answer(_strip_candidates(answer))
    for candidate, mid, index in peer.local_candidates():
        await leg.add_ice_candidate(candidate, mid, index)
    await leg.add_ice_candidate(None)
    from aiortc.sdp import candidate_from_sdp

    for line, line_mid, line_index in local[:-1]:
        assert line is not None
        parsed = candidate_from_sdp(line.removeprefix("candidate:"))
        parsed.sdpMid, parsed.sdpMLineIndex = line_mid, line_index
        await peer.pc.addIceCandidate(parsed)
    await peer.pc.addIceCandidate(None)
    await asyncio.wait_for(leg.connected.wait(), 15)
    with pytest.raises(BadRequest):
        await leg.add_ice_candidate("candidate:garbage", "0")
    await leg.close()
    await peer.close()


async def test_ice_restart_rebuilds_the_transport_and_keeps_media_flowing() -> None:
    leg = WebRtcLeg(SETTINGS)
    states: list[LegState] = []
    leg.on_state.append(lambda _leg, state: states.append(state))
    got: list[EncodedPayload] = []
    leg.subscribe("video", got.append)
    first = BrowserPeer(audio=False)
    offer = await first.offer()
    await first.accept_answer(await leg.accept_offer(offer))
    await asyncio.wait_for(leg.connected.wait(), 15)
    with pytest.raises(BadRequest, match="without ICE restart"):
        await leg.accept_offer(offer)  # same ice-ufrag
    await _until(lambda: len(got) > 10)
    ssrc_before = got[-1].ssrc
    # The browser comes back with a new ice-ufrag (here: a new peer connection).
    again = BrowserPeer(audio=False)
    await again.accept_answer(await leg.accept_offer(await again.offer()))
    await _until(lambda: states[-1] is LegState.CONNECTED)
    assert states == [
        LegState.CONNECTING,
        LegState.CONNECTED,
        LegState.RESTARTING,
        LegState.CONNECTING,
        LegState.CONNECTED,
    ]
    await _until(lambda: got[-1].ssrc != ssrc_before)  # the same subscription, new media
    for closable in (leg, first, again):
        await closable.close()


async def test_bad_offers_are_refused_with_488() -> None:
    leg = WebRtcLeg(SETTINGS)
    peer = BrowserPeer(audio=False)
    good = await peer.offer()
    for bad in ("garbage", good.replace("a=fingerprint:", "a=fingerprynt:")):
        with pytest.raises(BadRequest) as refused:
            await leg.accept_offer(bad)
        assert refused.value.sip_status == 488
        assert leg.state is LegState.NEW
    await peer.accept_answer(await leg.accept_offer(good))
    await asyncio.wait_for(leg.connected.wait(), 15)
    no_vp8 = good.replace("VP8/90000", "XYZ/90000").replace("H264/90000", "XYZ/90000")
    no_vp8 = no_vp8.replace(_ufrag_of(good), "restart1")
    with pytest.raises(BadRequest):
        await leg.accept_offer(no_vp8)  # an ICE restart with nothing we can receive
    assert leg.state is LegState.FAILED
    await leg.close()
    await peer.close()


def _ufrag_of(sdp: str) -> str:
    return next(
        line.split(":", 1)[1] for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")
    )


async def test_ice_failure_is_counted() -> None:
    leg = WebRtcLeg(SETTINGS.model_copy(update={"connect_timeout": 1.0}))
    peer = BrowserPeer(audio=False)
    failures = metrics.ICE_FAILURES._value.get()
    offer = await peer.offer(strip_candidates=True)
    await leg.accept_offer(offer)
    await leg.add_ice_candidate("candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "0", 0)
    await leg.add_ice_candidate(None)  # the only candidate is a dead port
    await _until(lambda: leg.state is LegState.FAILED)
    assert metrics.ICE_FAILURES._value.get() == failures + 1
    await leg.close()
    await peer.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def test_closing_legs_leaks_nothing() -> None:
    gauge, fds, threads = _gauge(), _open_fds(), _threads()
    tasks = len(asyncio.all_tasks())
    peer_a, peer_b = BrowserPeer(), BrowserPeer(send=False)
    leg_a, leg_b = WebRtcLeg(SETTINGS), WebRtcLeg(SETTINGS)
    assert _gauge() == gauge + 2
    await peer_to_answering_leg(peer_a, leg_a)
    await offering_leg_to_peer(leg_b, peer_b)
    await asyncio.wait_for(asyncio.gather(leg_a.connected.wait(), leg_b.connected.wait()), 15)
    passthrough = Passthrough(leg_a, leg_b)
    await _until(lambda: peer_b.video_frames >= 10)
    passthrough.close()
    await leg_a.close()
    await leg_b.close()
    assert _gauge() == gauge
    await peer_a.close()
    await peer_b.close()
    await asyncio.sleep(0.2)  # let cancelled aiortc tasks finish
    assert _open_fds() == fds
    assert len(asyncio.all_tasks()) == tasks, asyncio.all_tasks()
    assert _threads() == threads  # decoder threads (the loop's executor may keep its own)


async def test_audio_only_stops_the_video_to_a_browser_and_back(call: Call) -> None:
    """A link too poor for video (quality mode "audio"): the leg sends no video, audio
    goes on; when video is allowed again it returns (after a keyframe request)."""
    peer_b = call.peer_b
    await _until(lambda: peer_b.video_frames >= 10)
    call.leg_b.video_paused = True
    await asyncio.sleep(0.3)  # what was queued drains
    frames, loud = peer_b.video_frames, peer_b.loud_audio_frames
    await asyncio.sleep(1.0)
    assert peer_b.video_frames <= frames + 1, "no video while audio only"
    assert peer_b.loud_audio_frames > loud + 20, "audio goes on"
    call.leg_b.video_paused = False
    call.leg_a.request_keyframe("video")
    await _until(lambda: peer_b.video_frames > frames + 10)


async def test_the_direct_packet_path_keeps_what_aiortc_reports(call: Call) -> None:
    """Packets skip aiortc's queues and tasks (aiortc_fastpath), yet aiortc's counters,
    sender reports and NACK history are what its own path would have made of them."""
    peer_b = call.peer_b
    await _until(lambda: peer_b.video_frames >= 30 and peer_b.loud_audio_frames >= 25)
    for leg in (call.leg_a, call.leg_b):
        assert leg._pc is not None
        transceiver = leg._pc.getTransceivers()[0]
        connection = transceiver.receiver.transport.transport._connection
        assert connection._protocols
        for protocol in connection._protocols:  # every ICE socket takes the direct path
            assert getattr(protocol, fastpath.DIRECT) is transceiver.receiver.transport
    for slot in ("audio", "video"):
        direct = call.leg_b._tracks[slot].direct
        assert isinstance(direct, fastpath.DirectSender)
        assert direct.sent > 20 and direct.dropped == 0
        assert (direct.history is None) is (slot == "audio")  # aiortc NACKs video only
    # What the direct sender wrote is what aiortc's serializer makes of the same packet.
    sender = call.leg_b._transceivers["video"].sender
    extensions_map = getattr(sender, "_RTCRtpSender__rtp_header_extensions_map")  # noqa: B009
    history = call.leg_b._tracks["video"].direct.history  # type: ignore[union-attr]
    assert history
    for sent in list(history.values())[:10]:
        parsed = RtpPacket.parse(sent.serialize(), extensions_map)
        assert (parsed.sequence_number, parsed.timestamp, parsed.marker, parsed.payload) == (
            sent.sequence_number, sent.timestamp, sent.marker, sent.payload
        )  # fmt: skip
        mid = call.leg_b._transceivers["video"].mid
        assert parsed.ssrc == sender._ssrc and parsed.extensions.mid == mid
        assert parsed.extensions.abs_send_time is not None
        assert parsed.serialize(extensions_map) == sent.serialize()
        rtx = wrap_rtx(sent, payload_type=97, sequence_number=5, ssrc=6)
        assert RtpPacket.parse(rtx.serialize(extensions_map), extensions_map).payload[2:] == (
            sent.payload
        )
    for slot in ("audio", "video"):
        direct = call.leg_b._tracks[slot].direct
        assert isinstance(direct, fastpath.DirectSender)
        sender = call.leg_b._transceivers[slot].sender
        stats = [s for s in (await sender.getStats()).values() if s.type == "outbound-rtp"]
        # aiortc's own statistics count every packet sent on the direct path ...
        assert stats and stats[0].packetsSent == direct.sent

    # ... and B's browser got those sender reports (remote-outbound-rtp comes from an SR).
    async def reports() -> list[object]:
        found: list[object] = []
        for receiver in peer_b.pc.getReceivers():
            found += [
                s
                for s in (await receiver.getStats()).values()
                if s.type == "remote-outbound-rtp" and s.packetsSent > 0
            ]
        return found

    deadline = asyncio.get_running_loop().time() + 10
    while not await reports():
        assert asyncio.get_running_loop().time() < deadline, "no sender report reached B"
        await asyncio.sleep(0.2)
    assert call.leg_a._pc is not None
    report = await call.leg_a._pc.getStats()
    transport = [s for s in report.values() if s.type == "transport"]
    assert transport and transport[0].packetsReceived > 50  # counted on the direct path too


async def test_garbage_at_the_ice_socket_is_counted_and_media_goes_on(call: Call) -> None:
    """Datagrams that look like RTP but are no SRTP of this session (random bytes, a
    replay) are dropped and counted on the direct path; STUN-looking junk goes to
    aioice as before; the call's media carries on."""
    import random
    import socket

    await _until(lambda: call.peer_b.video_frames >= 10)
    assert call.leg_a._pc is not None
    transceiver = call.leg_a._pc.getTransceivers()[0]
    protocol = transceiver.receiver.transport.transport._connection._protocols[0]
    address = protocol.transport.get_extra_info("sockname")[:2]
    dropped = metrics.RTP_DROPPED.labels(reason="srtp")
    before = dropped._value.get()
    rng = random.Random(7)
    as_rtp = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(40):
            junk = bytes([0x80 | rng.randrange(0x40)]) + rng.randbytes(rng.randrange(11, 200))
            as_rtp += not 192 <= junk[1] <= 208  # else RTCP: aiortc's own path drops it
            sock.sendto(junk, address)
        for _ in range(10):
            sock.sendto(rng.randbytes(rng.randrange(1, 60)), address)  # anything at all
    assert as_rtp > 30
    await _until(lambda: dropped._value.get() >= before + as_rtp)
    frames = call.peer_b.video_frames
    await _until(lambda: call.peer_b.video_frames > frames + 10)
    assert call.leg_a.state is LegState.CONNECTED
