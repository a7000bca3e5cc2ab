"""The grid compositor with real codecs: solid-colour sources are encoded,
packetized and fed in at 15 frames/s; what a sink is sent is decoded again
and its regions' colours say where each source ended up."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.compositor import (
    FRAME_QUEUE,
    VideoCompositor,
    fit,
    grid_layout,
    output_size,
)
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp import RtpWriter, header_sizes
from gateway.media.sdp_attributes import Direction
from mediacodecs.executor import MediaExecutor
from mediacodecs.h264 import h264_depacketize
from mediacodecs.registry import create_video_encoder
from mediacodecs.video import video_frame
from mediacodecs.vp8 import vp8_depacketize
from tests.support.pictures import colour_at, decode_rgb, near
from tests.unit.media.test_router import FakePort

VP8 = NegotiatedCodec(96, "VP8", 90000)
H264 = NegotiatedCodec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")
FPS = 15
RED, BLUE, GREEN, BLACK = (255, 0, 0), (0, 0, 255), (0, 255, 0), (0, 0, 0)
Rgb = tuple[int, int, int]


def FakeStream(
    codec: NegotiatedCodec = VP8,
    *,
    size: tuple[int, int] | None = (320, 240),
    bandwidth: int | None = None,
) -> FakePort:
    """A video stream of a leg (the router tests' ``FakePort``): keeps what it is sent,
    counts keyframe requests and source switches."""
    return FakePort(
        "video",
        NegotiatedStream(
            index=1,
            kind="video",
            proto="RTP/AVP",
            accepted=True,
            codecs=(codec,),
            direction=Direction.SENDRECV,
            remote_max_resolution=size,
            remote_bandwidth=bandwidth,
        ),
    )


@pytest.fixture
async def executor() -> AsyncIterator[MediaExecutor]:
    with MediaExecutor(2) as pool:
        yield pool


@functools.cache
def _encoded(codec: NegotiatedCodec, colour: Rgb, count: int) -> list[list[bytes]]:
    """``count`` frames of a solid 320x240 colour (4:3), the first a keyframe."""
    encoder = create_video_encoder(codec, width=320, height=240, fps=FPS, bitrate=300_000)
    rgb = np.empty((240, 320, 3), np.uint8)
    rgb[:] = colour
    frames = [encoder.encode(video_frame(rgb.copy(), i * 6000)) for i in range(count)]
    return [[payload.data for payload in frame] for frame in frames]


class Camera:
    """A source sending pre-encoded frames as RTP at 15 fps."""

    def __init__(self, stream: FakePort, colour: Rgb, codec: NegotiatedCodec = VP8) -> None:
        self.stream = stream
        self.frames = _encoded(codec, colour, 45)
        self.writer = RtpWriter(codec.payload_type, hash(colour) & 0xFFFF)
        self.index = 0  # in the recording
        self.tick = 0  # frames sent: the RTP timestamp

    def packets(self) -> list[bytes]:
        payloads = self.frames[self.index % len(self.frames)]
        timestamp = 6000 * self.tick
        self.index += 1
        self.tick += 1
        last = len(payloads) - 1
        return [bytes(self.writer.packet(p, timestamp, i == last)) for i, p in enumerate(payloads)]


async def send(compositor: VideoCompositor, cameras: Sequence[Camera], seconds: float) -> None:
    """Each camera's frames, paced as a camera sends them (via ``feed``, or
    the stream's ``on_rtp`` when the compositor took it)."""
    for _ in range(round(seconds * FPS)):
        for camera in cameras:
            for packet in camera.packets():
                if camera.stream.on_rtp is not None:
                    camera.stream.on_rtp(camera.stream, packet, 0.0)
                else:
                    compositor.feed(camera.stream, packet, 0.0)
        await asyncio.sleep(1 / FPS)


def keyframes(sink: FakePort, codec: NegotiatedCodec) -> list[bool]:
    """Per frame sent, in order: whether it is a keyframe."""
    depacketize = vp8_depacketize if codec.name == "VP8" else h264_depacketize
    result: list[bool] = []
    current: int | None = None
    for packet in sink.sent:
        header, size = header_sizes(packet)
        timestamp = int.from_bytes(packet[4:8], "big")
        keyframe = depacketize(packet[header : header + size]).keyframe
        if timestamp != current:
            current = timestamp
            result.append(keyframe)
        else:
            result[-1] |= keyframe
    return result


def last_picture(sink: FakePort, codec: NegotiatedCodec) -> npt.NDArray[np.uint8]:
    """The last frame the sink was sent, decoded, as RGB."""
    pictures = decode_rgb(sink.sent, codec)
    assert pictures, "the sink got no decodable frame"
    return pictures[-1]


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# --- layout arithmetic -----------------------------------------------------------------------


def test_layout_by_count() -> None:
    assert grid_layout(0, 640, 480) == []
    assert grid_layout(1, 640, 480) == [(0, 0, 640, 480)]
    assert grid_layout(2, 640, 480) == [(0, 0, 320, 480), (320, 0, 320, 480)]
    four = [(0, 0, 320, 240), (320, 0, 320, 240), (0, 240, 320, 240), (320, 240, 320, 240)]
    assert grid_layout(3, 640, 480) == four
    assert grid_layout(6, 640, 480) == four
    # odd halves: even corners, the right and bottom tiles take the rest
    assert grid_layout(4, 350, 290) == [
        (0, 0, 174, 144), (174, 0, 176, 144), (0, 144, 174, 146), (174, 144, 176, 146),
    ]  # fmt: skip


def test_pictures_keep_their_aspect_inside_a_tile() -> None:
    assert fit((640, 480), (320, 480)) == (320, 240)  # letterboxed
    assert fit((640, 360), (320, 240)) == (320, 180)
    assert fit((480, 640), (320, 240)) == (180, 240)  # pillarboxed portrait
    assert fit((1000, 3), (320, 240)) == (320, 2)


def test_output_size_follows_the_sink_within_bounds() -> None:
    assert output_size(None) == (640, 480)
    assert output_size((352, 288)) == (352, 288)
    assert output_size((321, 241)) == (320, 240)
    assert output_size((1920, 1080)) == (1280, 720)
    assert output_size((4, 4)) == (32, 32)


# --- composing with real codecs --------------------------------------------------------------


async def test_two_sources_side_by_side_letterboxed(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, blue, sink = FakeStream(), FakeStream(), FakeStream()
    compositor.add_source(red, own=False)
    compositor.add_source(blue, own=False)
    compositor.add_sink(sink, [red, blue])
    await send(compositor, [Camera(red, RED), Camera(blue, BLUE)], 0.5)
    compositor.close()
    rgb = last_picture(sink, VP8)
    assert rgb.shape == (240, 320, 3)
    # 4:3 pictures in 160x240 tiles: 160x120, centred, black above and below
    assert near(colour_at(rgb, 0.05, 0.3, 0.45, 0.7), RED), colour_at(rgb, 0.05, 0.3, 0.45, 0.7)
    assert near(colour_at(rgb, 0.55, 0.3, 0.95, 0.7), BLUE), colour_at(rgb, 0.55, 0.3, 0.95, 0.7)
    for band in ((0.0, 0.0, 1.0, 0.2), (0.0, 0.8, 1.0, 1.0)):
        assert near(colour_at(rgb, *band), BLACK), band
    assert red.keyframes_asked >= 1 and blue.keyframes_asked >= 1  # at start
    assert red.keyframes_asked <= 4  # throttled: at most one per 0.3 s
    stats = compositor.sink_stats(sink)
    assert stats is None  # closed: no sink left


async def test_three_vp8_sources_in_a_grid_for_an_h264_sink(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, blue, green = FakeStream(), FakeStream(), FakeStream()
    sink = FakeStream(H264)
    for source in (red, blue, green):
        compositor.add_source(source)  # takes on_rtp
    compositor.add_sink(sink, [red, blue, green])
    await send(compositor, [Camera(red, RED), Camera(blue, BLUE), Camera(green, GREEN)], 0.5)
    stats = compositor.sink_stats(sink)
    assert stats is not None and stats.frames >= 4
    compositor.close()
    rgb = last_picture(sink, H264)
    assert rgb.shape == (240, 320, 3)
    for (x0, y0), colour in zip(
        ((0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5)), (RED, BLUE, GREEN, BLACK), strict=True
    ):
        found = colour_at(rgb, x0 + 0.1, y0 + 0.1, x0 + 0.4, y0 + 0.4)
        assert near(found, colour), (x0, y0, found, colour)
    assert red.on_rtp is None, "close() gives the callbacks back"


async def test_one_h264_source_fills_a_vp8_sink_at_the_default_size(
    executor: MediaExecutor,
) -> None:
    compositor = VideoCompositor(executor)
    green = FakeStream(H264)
    sink = FakeStream(VP8, size=None)  # no imageattr: 640x480
    compositor.add_source(green)
    compositor.add_sink(sink, [green])
    camera = Camera(green, GREEN, H264)
    await send(compositor, [camera], 0.4)
    rgb = last_picture(sink, VP8)
    assert rgb.shape == (480, 640, 3)
    assert near(colour_at(rgb, 0.02, 0.02, 0.98, 0.98), GREEN)
    assert sink.switched == 1  # one source for the sink's RTP session
    # a re-INVITE: the room system now takes 320x180 (16:9) and at most 200 kbit/s
    assert sink.negotiated is not None
    sink.negotiated = dataclasses.replace(
        sink.negotiated, remote_max_resolution=(320, 180), remote_bandwidth=200_000
    )
    sent = len(sink.sent)
    await send(compositor, [camera], 0.3)
    compositor.close()
    del sink.sent[:sent]  # a new encoder, a new stream: it starts with a keyframe
    rgb = last_picture(sink, VP8)
    assert rgb.shape == (180, 320, 3)
    assert sink.switched == 2
    assert near(colour_at(rgb, 0.2, 0.05, 0.8, 0.95), GREEN)  # 4:3 in 16:9: pillarboxed
    assert near(colour_at(rgb, 0.0, 0.0, 0.1, 1.0), BLACK)


async def test_a_small_decoder_gets_a_smaller_picture_less_often(
    executor: MediaExecutor,
) -> None:
    """A VP8 room system declaring max-fs=300 and max-fr=5 (RFC 7741): no picture over
    300 macroblocks (4:3 kept), about five frames a second instead of fifteen."""
    small = NegotiatedCodec(96, "VP8", 90000, fmtp="max-fs=300;max-fr=5")
    green = FakeStream()
    sink = FakeStream(small, size=None)
    compositor = VideoCompositor(executor)
    compositor.add_source(green)
    compositor.add_sink(sink, [green])
    await send(compositor, [Camera(green, GREEN)], 1.2)
    stats = compositor.sink_stats(sink)
    compositor.close()
    assert stats is not None and 4 <= stats.frames <= 8, stats
    rgb = last_picture(sink, small)
    height, width, _ = rgb.shape
    assert ((width + 15) // 16) * ((height + 15) // 16) <= 300 and width >= 256
    assert abs(width / height - 4 / 3) < 0.05
    assert near(colour_at(rgb, 0.1, 0.1, 0.9, 0.9), GREEN)


async def test_a_keyframe_request_makes_the_next_frame_a_keyframe(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, sink = FakeStream(), FakeStream()
    compositor.add_source(red)
    compositor.add_sink(sink, [red])
    camera = Camera(red, RED)
    await send(compositor, [camera], 0.4)
    before = keyframes(sink, VP8)
    assert before[0] and not any(before[1:]), before  # a keyframe to start, then deltas only
    compositor.request_keyframe(sink)
    await send(compositor, [camera], 0.25)
    after = keyframes(sink, VP8)[len(before) :]
    # a frame already being made when the request came may go out first
    assert any(after[:2]) and not any(after[2:]), after
    compositor.close()


async def test_a_removed_source_leaves_a_black_tile(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, blue, sink = FakeStream(), FakeStream(), FakeStream()
    compositor.add_source(red)
    compositor.add_source(blue)
    compositor.add_sink(sink, [red, blue])
    cameras = [Camera(red, RED), Camera(blue, BLUE)]
    await send(compositor, cameras, 0.4)
    assert near(colour_at(last_picture(sink, VP8), 0.55, 0.3, 0.95, 0.7), BLUE)
    compositor.remove_source(blue)
    assert blue.on_rtp is None
    await send(compositor, cameras, 0.3)
    compositor.close()
    rgb = last_picture(sink, VP8)
    assert near(colour_at(rgb, 0.55, 0.3, 0.95, 0.7), BLACK), "the tile stays, black"
    assert near(colour_at(rgb, 0.05, 0.3, 0.45, 0.7), RED)


async def test_a_silent_source_goes_black_after_a_while(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor, stale_after=0.3)
    red, blue, sink = FakeStream(), FakeStream(), FakeStream()
    compositor.add_source(red)
    compositor.add_source(blue)
    compositor.add_sink(sink, [red, blue])
    red_camera, blue_camera = Camera(red, RED), Camera(blue, BLUE)
    await send(compositor, [red_camera, blue_camera], 0.4)
    await send(compositor, [red_camera], 0.15)  # blue stopped: still shown
    assert near(colour_at(last_picture(sink, VP8), 0.55, 0.3, 0.95, 0.7), BLUE)
    await send(compositor, [red_camera], 0.4)
    compositor.close()
    rgb = last_picture(sink, VP8)
    assert near(colour_at(rgb, 0.55, 0.3, 0.95, 0.7), BLACK)
    assert near(colour_at(rgb, 0.05, 0.3, 0.45, 0.7), RED)


async def test_close_stops_everything(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, sink = FakeStream(), FakeStream()
    compositor.add_source(red)
    compositor.add_sink(sink, [red])
    camera = Camera(red, RED)
    await send(compositor, [camera], 0.3)
    assert sink.sent
    compositor.close()
    compositor.close()  # idempotent
    assert red.on_rtp is None
    sent = len(sink.sent)
    for packet in camera.packets():
        compositor.feed(red, packet)  # ignored
    await asyncio.sleep(0.15)
    assert len(sink.sent) == sent, "nothing is sent after close()"
    compositor.add_sink(sink, [red])  # a closed compositor takes nothing new
    ticks = compositor.ticks
    await asyncio.sleep(0.15)
    assert len(sink.sent) == sent
    assert compositor.ticks == ticks


async def test_garbage_is_counted_and_the_picture_goes_on(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, blue, sink = FakeStream(), FakeStream(), FakeStream()
    compositor.add_source(red, own=False)
    compositor.add_source(blue, own=False)
    compositor.add_sink(sink, [red, blue])
    red_camera = Camera(red, RED)
    garbage = RtpWriter(96, 77)
    for index in range(8):
        compositor.feed(blue, b"\x00\x01\x02", 0.0)  # not RTP
        compositor.feed(blue, bytes(garbage.packet(b"\xff" * 40, index * 6000, True)), 0.0)
        compositor.feed(blue, bytes(garbage.packet(b"\x90\xe0", index * 6000 + 1, True)), 0.0)
        compositor.feed(blue, bytes(RtpWriter(13, 1).packet(b"\x00", 0)), 0.0)  # CN
        await send(compositor, [red_camera], 1 / FPS)
    await send(compositor, [red_camera], 0.2)
    stats = compositor.source_stats(blue)
    assert stats is not None
    assert stats.malformed == 8 and stats.unknown_payload == 8
    assert stats.decode_errors >= 8, stats
    assert stats.pictures == 0
    rgb = last_picture(sink, VP8)
    compositor.close()
    assert near(colour_at(rgb, 0.05, 0.3, 0.45, 0.7), RED)
    assert near(colour_at(rgb, 0.55, 0.3, 0.95, 0.7), BLACK)


async def test_a_source_the_executor_cannot_keep_up_with_loses_its_oldest_frames() -> None:
    with MediaExecutor(1) as executor:
        compositor = VideoCompositor(executor)
        red, sink = FakeStream(), FakeStream()
        compositor.add_source(red)
        camera = Camera(red, RED)
        release = threading.Event()
        executor.submit(release.wait)  # the only worker is busy
        try:
            await send(compositor, [camera], 0.6)  # 9 frames come due meanwhile
        finally:
            release.set()
        stats = compositor.source_stats(red)
        assert stats is not None
        assert stats.frames >= FRAME_QUEUE + 3
        assert stats.dropped == stats.frames - FRAME_QUEUE, stats
        asked = red.keyframes_asked
        compositor.add_sink(sink, [red])
        await send(compositor, [camera], 0.35)
        # the decoder lost its reference: it waits for a keyframe and asks for one
        assert red.keyframes_asked > asked
        assert stats.pictures == 0  # the camera never sent one
        camera.index = 0  # it answers with the recording's keyframe
        await send(compositor, [camera], 0.3)
        assert stats.pictures > 0
        compositor.close()
        assert near(colour_at(last_picture(sink, VP8), 0.1, 0.1, 0.9, 0.9), RED)


async def test_a_removed_sink_is_sent_nothing_more(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, first, second = FakeStream(), FakeStream(), FakeStream(H264)
    compositor.add_source(red)
    compositor.add_sink(first, [red])
    compositor.add_sink(second, [red])
    camera = Camera(red, RED)
    await send(compositor, [camera], 0.3)
    release = threading.Event()
    for _ in range(executor.workers):  # hold the workers: the next frames wait
        executor.submit(release.wait)
    try:
        await asyncio.sleep(0.1)  # a tick queued a frame for each sink
    finally:
        release.set()
    compositor.remove_sink(first)
    compositor.remove_sink(first)  # idempotent
    sent = len(first.sent)
    await send(compositor, [camera], 0.3)
    assert len(first.sent) == sent, "nothing after remove_sink, not even a frame in flight"
    assert near(colour_at(last_picture(second, H264), 0.1, 0.1, 0.9, 0.9), RED)
    compositor.remove_sink(second)
    ticks = compositor.ticks
    await asyncio.sleep(0.15)
    assert compositor.ticks == ticks, "no sink: the clock stops"
    compositor.close()


async def test_a_sink_on_hold_is_sent_nothing(executor: MediaExecutor) -> None:
    compositor = VideoCompositor(executor)
    red, sink = FakeStream(), FakeStream()
    assert sink.negotiated is not None
    sink.negotiated = dataclasses.replace(sink.negotiated, direction=Direction.RECVONLY)
    compositor.add_source(red)
    compositor.add_sink(sink, [red])
    await send(compositor, [Camera(red, RED)], 0.3)
    assert sink.sent == []
    compositor.close()
