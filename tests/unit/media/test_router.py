"""The media router with fake ports (no sockets) and a real media executor.

The ports record what the router sends them and how often it asks them for a
keyframe; negotiations are built directly, the way offer/answer would leave them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from gateway import metrics
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.router import KEYFRAME_INTERVAL, Route, Router
from gateway.media.rtp import RtpWriter, header_sizes
from gateway.media.sdp_attributes import Direction
from mediacodecs.executor import MediaExecutor
from mediacodecs.g711 import encode_pcm

PCMU = NegotiatedCodec(0, "PCMU", 8000)
PCMA = NegotiatedCodec(8, "PCMA", 8000)
OPUS = NegotiatedCodec(111, "opus", 48000, 2, fmtp="useinbandfec=1")
VP8 = NegotiatedCodec(96, "VP8", 90000)
EVENT_8K = NegotiatedCodec(101, "telephone-event", 8000, fmtp="0-15")


def stream(
    *codecs: NegotiatedCodec,
    kind: str = "audio",
    event: NegotiatedCodec | None = None,
    direction: Direction = Direction.SENDRECV,
) -> NegotiatedStream:
    return NegotiatedStream(
        index=0 if kind == "audio" else 1,
        kind=kind,
        proto="RTP/AVP",
        accepted=True,
        codecs=codecs,
        telephone_event=event,
        direction=direction,
    )


@dataclass(eq=False)
class FakePort:
    """An ``RtpPort`` (and ``RoutedStream``) that keeps what it is sent."""

    kind: str
    negotiated: NegotiatedStream | None
    sent: list[bytes] = field(default_factory=list)
    switched: int = 0
    keyframes_asked: int = 0
    on_rtp: Callable[..., None] | None = None
    on_keyframe_request: Callable[..., None] | None = None

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.sent.append(bytes(data))
        return True

    def switch_source(self) -> None:
        self.switched += 1

    def request_keyframe(self) -> None:
        self.keyframes_asked += 1

    def payload_types(self) -> list[int]:
        return [packet[1] & 0x7F for packet in self.sent]


@pytest.fixture
def executor() -> Iterator[MediaExecutor]:
    with MediaExecutor(2, max_queued=256) as pool:
        yield pool


def packets(payload_type: int, payloads: list[bytes], step: int = 160) -> list[bytes]:
    writer = RtpWriter(payload_type, 0x1234ABCD)
    return [
        bytes(writer.packet(data, 1000 + i * step, marker=i == 0))
        for i, data in enumerate(payloads)
    ]


def pcmu_tone(count: int) -> list[bytes]:
    """``count`` 20 ms PCMU payloads of a 1 kHz tone."""
    t = np.arange(160 * count) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    return [encode_pcm(pcm[i * 160 : (i + 1) * 160], "pcmu") for i in range(count)]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def mode_of(route: Route) -> str:
    return route.mode


def passthrough_gauge(kind: str = "audio") -> float:
    value = metrics.REGISTRY.get_sample_value("gatewayd_media_passthrough_active", {"kind": kind})
    return value or 0.0


# --- passthrough ---------------------------------------------------------------------------


async def test_passthrough_maps_the_payload_type_and_keeps_the_payload(
    executor: MediaExecutor,
) -> None:
    source = FakePort("audio", stream(PCMU, PCMA))
    sink = FakePort("audio", stream(NegotiatedCodec(8, "PCMA", 8000, send_payload_type=18)))
    route = Route(source, sink, executor)
    assert sink.switched == 1  # the sink's peer sees one stream from the route on
    sent = packets(8, [bytes(range(160)), bytes(160)])
    for packet in sent:
        route.feed(packet)
    assert route.mode == "passthrough"
    assert route.stats.forwarded == 2
    assert sink.payload_types() == [18, 18]  # the number the sink's peer listed
    for original, forwarded in zip(sent, sink.sent, strict=True):
        assert forwarded[0] == original[0]
        assert forwarded[1] & 0x80 == original[1] & 0x80  # marker kept
        assert forwarded[2:] == original[2:]  # header rewrite is the sink's business


async def test_a_payload_type_the_source_never_negotiated_is_dropped(
    executor: MediaExecutor,
) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(PCMU))
    route = Route(source, sink, executor)
    route.feed(packets(13, [b"\x40"])[0])  # comfort noise
    assert sink.sent == []
    assert route.stats.dropped == 1


# --- transcode -----------------------------------------------------------------------------


async def test_a_sink_without_the_codec_gets_a_transcode(executor: MediaExecutor) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(OPUS))
    route = Route(source, sink, executor)
    for packet in packets(0, pcmu_tone(25)):
        route.feed(packet)
    assert route.mode == "transcode"
    assert route.stats.transcoded_in == 25
    await wait_for(lambda: route.stats.transcoded_out >= 20)
    assert set(sink.payload_types()) == {111}
    assert route.stats.forwarded == 0
    _header, size = header_sizes(sink.sent[-1])
    assert 0 < size < 160  # an Opus frame, not the PCMU bytes
    route.close()


# --- telephone-event -------------------------------------------------------------------------


async def test_telephone_event_is_forwarded_when_the_sink_negotiated_it(
    executor: MediaExecutor,
) -> None:
    source = FakePort("audio", stream(PCMU, event=EVENT_8K))
    sink_event = NegotiatedCodec(100, "telephone-event", 8000, fmtp="0-15")
    sink = FakePort("audio", stream(PCMU, event=sink_event))
    route = Route(source, sink, executor)
    event = bytes((5, 0x0A, 0x00, 0xA0))
    route.feed(packets(101, [event])[0])
    assert sink.payload_types() == [100]
    assert sink.sent[0][12:] == event


@pytest.mark.parametrize(
    "sink_event",
    [None, NegotiatedCodec(110, "telephone-event", 48000, fmtp="0-15")],
    ids=["not negotiated", "other clock rate"],
)
async def test_telephone_event_is_dropped_when_the_sink_cannot_take_it(
    executor: MediaExecutor, sink_event: NegotiatedCodec | None
) -> None:
    source = FakePort("audio", stream(PCMU, event=EVENT_8K))
    sink = FakePort("audio", stream(PCMU, event=sink_event))
    route = Route(source, sink, executor)
    route.feed(packets(101, [bytes((5, 0x0A, 0x00, 0xA0))])[0])
    route.feed(packets(0, [bytes(160)])[0])
    assert sink.payload_types() == [0]  # the voice passes, the event does not
    assert route.stats.dropped == 1


# --- hold and re-negotiation -------------------------------------------------------------


@pytest.mark.parametrize("direction", [Direction.RECVONLY, Direction.INACTIVE])
async def test_a_sink_on_hold_gets_nothing(executor: MediaExecutor, direction: Direction) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(PCMU, direction=direction))
    route = Route(source, sink, executor)
    for packet in packets(0, [bytes(160)] * 3):
        route.feed(packet)
    assert sink.sent == []
    assert route.stats.forwarded == 0
    # Resumed (a re-INVITE back to sendrecv): packets flow again.
    sink.negotiated = stream(PCMU)
    route.feed(packets(0, [bytes(160)])[0])
    assert sink.payload_types() == [0]


async def test_a_new_negotiation_replans(executor: MediaExecutor) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(NegotiatedCodec(0, "PCMU", 8000, send_payload_type=0)))
    route = Route(source, sink, executor)
    route.feed(packets(0, [bytes(160)])[0])
    assert route.mode == "passthrough"
    # A re-INVITE renumbers: an equal-looking but new negotiation object.
    sink.negotiated = stream(NegotiatedCodec(0, "PCMU", 8000, send_payload_type=120))
    route.feed(packets(0, [bytes(160)])[0])
    assert sink.payload_types() == [0, 120]
    # Another one leaves only Opus: the same source packets are now transcoded.
    sink.negotiated = stream(OPUS)
    for packet in packets(0, pcmu_tone(10)):
        route.feed(packet)
    assert mode_of(route) == "transcode"  # (mypy narrowed route.mode above)
    await wait_for(lambda: 111 in sink.payload_types())
    route.close()


# --- keyframes -----------------------------------------------------------------------------


async def test_keyframe_requests_go_upstream_at_most_once_per_interval(
    executor: MediaExecutor,
) -> None:
    now = [100.0]
    source = FakePort("video", stream(VP8, kind="video"))
    sink = FakePort("video", stream(VP8, kind="video"))
    route = Route(source, sink, executor, monotonic=lambda: now[0])
    route.feed(packets(96, [b"\x10\x00\x00"], step=3000)[0])
    assert route.mode == "passthrough"
    route.keyframe_requested()
    assert source.keyframes_asked == 1
    for offset in (0.05, 0.1, KEYFRAME_INTERVAL - 0.01):
        now[0] = 100.0 + offset
        route.keyframe_requested()
    assert source.keyframes_asked == 1
    assert route.stats.keyframe_requests == 1
    now[0] = 100.0 + KEYFRAME_INTERVAL + 0.01
    route.keyframe_requested()
    assert source.keyframes_asked == 2
    assert route.stats.keyframe_requests == 2


async def test_router_delivers_the_sink_peers_keyframe_request_to_the_source(
    executor: MediaExecutor,
) -> None:
    a = FakePort("video", stream(VP8, kind="video"))
    b = FakePort("video", stream(VP8, kind="video"))
    router = Router(executor)
    router.connect(a, b)
    assert a.on_keyframe_request is not None and b.on_keyframe_request is not None
    b.on_keyframe_request(b)  # b's peer sent a PLI
    assert (a.keyframes_asked, b.keyframes_asked) == (1, 0)
    router.close()


# --- the router ------------------------------------------------------------------------------


async def test_router_routes_both_ways_and_taps(executor: MediaExecutor) -> None:
    a = FakePort("audio", stream(PCMU))
    b = FakePort("audio", stream(PCMU))
    router = Router(executor)
    router.connect(a, b)
    tapped: list[bytes] = []
    router.tap(a, lambda _s, data, _t: tapped.append(data))
    assert a.on_rtp is not None and b.on_rtp is not None
    packet = packets(0, [bytes(160)])[0]
    a.on_rtp(a, packet, 0.0)
    b.on_rtp(b, packet, 0.0)
    assert (len(a.sent), len(b.sent)) == (1, 1)
    assert tapped == [packet]
    with pytest.raises(ValueError, match="cannot route"):
        router.link(a, FakePort("video", stream(VP8, kind="video")))
    router.close()


async def test_remove_ends_routes_and_clears_callbacks(executor: MediaExecutor) -> None:
    a = FakePort("audio", stream(PCMU))
    b = FakePort("audio", stream(OPUS))
    c = FakePort("audio", stream(PCMU))
    router = Router(executor)
    ab, ba = router.connect(a, b)
    bc, cb = router.connect(b, c)
    assert len(router.routes()) == 4
    assert b.on_rtp is not None
    on_rtp_b = b.on_rtp
    on_rtp_b(b, packets(111, [b"\xfc\xff\xfe"])[0], 0.0)  # a transcode to a is planned
    router.remove(a)
    assert a.on_rtp is None and a.on_keyframe_request is None
    assert set(router.routes()) == {bc, cb}
    for route in (ab, ba):
        route.feed(packets(0, [bytes(160)])[0])
        assert route.mode == "idle"
    assert a.sent == [] and b.sent == []
    # b keeps its route to c, and is still called back.
    assert b.on_rtp is on_rtp_b
    b.on_rtp(b, packets(111, [b"\xfc\xff\xfe"])[0], 0.0)
    assert bc.stats.transcoded_in == 2
    router.close()
    assert router.routes() == []
    assert b.on_rtp is None and c.on_rtp is None


async def test_passthrough_gauge_returns_to_its_value_after_close(
    executor: MediaExecutor,
) -> None:
    before_audio, before_video = passthrough_gauge("audio"), passthrough_gauge("video")
    a = FakePort("audio", stream(PCMU))
    b = FakePort("audio", stream(PCMU))
    v = FakePort("video", stream(VP8, kind="video"))
    w = FakePort("video", stream(VP8, kind="video"))
    router = Router(executor)
    ab, ba = router.connect(a, b)
    router.connect(v, w)
    ab.feed(packets(0, [bytes(160)])[0])
    ba.feed(packets(0, [bytes(160)])[0])
    ab.feed(packets(0, [bytes(160)])[0])  # a second packet does not count twice
    assert passthrough_gauge("audio") == before_audio + 2
    assert passthrough_gauge("video") == before_video  # no video flowed
    # Re-planned to a transcode: no longer passthrough.
    b.negotiated = stream(OPUS)
    for packet in packets(0, pcmu_tone(3)):
        ab.feed(packet)
    assert passthrough_gauge("audio") == before_audio + 1
    router.close()
    assert passthrough_gauge("audio") == before_audio
    assert passthrough_gauge("video") == before_video


@pytest.mark.parametrize("renumbers", [True, False])
async def test_parameter_sets_sent_only_in_the_sdp_go_in_band_to_a_browser(
    renumbers: bool, executor: MediaExecutor
) -> None:
    """A room system whose H.264 carries its SPS/PPS only in sprop-parameter-sets, passed
    through to a browser (a sink that numbers its own packets): a STAP-A with them goes
    before each IDR, so a decoder that never saw the SDP decodes; a SIP sink (numbered
    by its RTP session) is left alone."""
    import base64

    from mediacodecs.h264 import H264Encoder
    from tests.support.pictures import decode_rgb
    from tests.unit.codecs.test_h264 import _encode, _without_parameter_sets

    encoder = H264Encoder(160, 120, 15, 300_000)
    frames = _encode(encoder, range(4), 160, 120)
    encoder.request_keyframe()
    frames += _encode(encoder, range(4, 6), 160, 120)  # a second IDR
    stripped, sets = _without_parameter_sets(frames)
    sprop = ",".join(base64.b64encode(unit).decode() for unit in sets)
    h264 = "packetization-mode=1;profile-level-id=42e01f"
    source = FakePort("video", stream(NegotiatedCodec(
        97, "H264", 90000, fmtp=f"{h264};sprop-parameter-sets={sprop}"), kind="video"))  # fmt: skip
    sink = FakePort("video", stream(NegotiatedCodec(102, "H264", 90000, fmtp=h264), kind="video"))
    sink.renumbers = renumbers  # type: ignore[attr-defined]
    route = Route(source, sink, executor)
    writer = RtpWriter(97, 0xABC)
    for index, frame in enumerate(stripped):
        for part, payload in enumerate(frame):
            route.feed(bytes(writer.packet(payload.data, index * 6000, part == len(frame) - 1)))
    assert route.mode == "passthrough"
    added = len(sink.sent) - sum(len(frame) for frame in stripped)
    assert added == (2 if renumbers else 0)  # one per IDR
    assert set(sink.payload_types()) == {102}
    # a decoder without the sprop: it has only what came in band
    pictures = decode_rgb(sink.sent, NegotiatedCodec(102, "H264", 90000, fmtp=h264))
    assert len(pictures) == (6 if renumbers else 0)
    route.close()
