"""Where the router runs a transcode: Opus <-> G.711 inline on the loop, PyAV
codecs on the executor with one job per frame, completions in batches."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from gateway.media.negotiation import NegotiatedCodec, process_answer
from gateway.media.router import PLAYOUT_GRID, Completions, Route
from gateway.media.rtp import RtpWriter
from gateway.media.sdp import SessionDescription
from gateway.media.sdp_attributes import Direction
from mediacodecs.base import RtpPayload
from mediacodecs.executor import MediaExecutor
from mediacodecs.registry import create_video_encoder
from mediacodecs.video import video_frame
from tests.unit.media.test_router import (
    OPUS,
    PCMU,
    VP8,
    FakePort,
    executor,
    packets,
    pcmu_tone,
    stream,
    wait_for,
)

__all__ = ["executor"]  # the fixture, shared with test_router

G722 = NegotiatedCodec(9, "G722", 8000)
H264 = NegotiatedCodec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")


async def test_opus_and_g711_are_transcoded_inline_without_the_executor(
    executor: MediaExecutor,
) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(OPUS))
    route = Route(source, sink, executor)
    for packet in packets(0, pcmu_tone(25)):
        route.feed(packet)
    await wait_for(lambda: route.stats.transcoded_out >= 20)
    assert set(sink.payload_types()) == {111}
    assert executor.completed == 0  # nothing went through the pool
    route.close()


async def test_a_pyav_audio_transcode_runs_on_the_executor(executor: MediaExecutor) -> None:
    source = FakePort("audio", stream(PCMU))
    sink = FakePort("audio", stream(G722))
    route = Route(source, sink, executor)
    loop = asyncio.get_running_loop()
    for packet in packets(0, pcmu_tone(25)):
        route.feed(packet, loop.time())
        await asyncio.sleep(0.02)  # as a phone sends them
    await wait_for(lambda: executor.completed == 25)
    assert route.stats.transcoded_out >= 23  # the 8 -> 16 kHz resampler holds some back
    assert set(sink.payload_types()) == {9}
    assert executor.dropped == 0  # one job per packet, none evicted
    route.close()


def _vp8_frames(count: int) -> list[list[bytes]]:
    # Noise: a keyframe of many payloads, more than one stream may queue jobs.
    encoder = create_video_encoder(VP8, bitrate=4_000_000)
    noise = np.random.default_rng(9).integers(0, 256, (count, 240, 320, 3), dtype=np.uint8)
    frames = [encoder.encode(video_frame(noise[i], i * 6000)) for i in range(count)]
    return [[payload.data for payload in frame] for frame in frames]


async def test_a_video_frame_is_one_job_however_many_payloads(executor: MediaExecutor) -> None:
    source = FakePort("video", stream(VP8, kind="video"))
    sink = FakePort("video", stream(H264, kind="video"))
    route = Route(source, sink, executor)
    frames = _vp8_frames(3)
    assert len(frames[0]) > executor.per_key
    writer = RtpWriter(96, 0x5EED)
    loop = asyncio.get_running_loop()
    for index, frame in enumerate(frames):
        for part, data in enumerate(frame):
            packet = writer.packet(data, 1000 + index * 6000, marker=part == len(frame) - 1)
            route.feed(bytes(packet), loop.time())
        await asyncio.sleep(1 / 15)
    await wait_for(lambda: executor.completed >= 3)
    await wait_for(lambda: route.stats.transcoded_out > 0)
    assert executor.completed == 3 and executor.dropped == 0
    assert route.stats.transcoded_in == sum(len(frame) for frame in frames)
    assert set(sink.payload_types()) == {97}
    route.close()


async def test_completions_wake_the_loop_once_per_batch() -> None:
    completions = Completions(asyncio.get_running_loop())
    ran: list[int] = []

    def finish_five() -> None:
        for n in range(5):
            completions.put(functools.partial(ran.append, n))

    worker = threading.Thread(target=finish_five)
    worker.start()
    worker.join()
    assert completions.wakeups == 1  # the loop did not run in between: one wake-up armed
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran == [0, 1, 2, 3, 4]
    completions.put(lambda: ran.append(5))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran[-1] == 5 and completions.wakeups == 2  # a later put wakes it again


_OFFER = """v=0
o=gw 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=video 20000 RTP/AVP 97 98 99 100
a=rtpmap:97 H264/90000
a=fmtp:97 packetization-mode=1;profile-level-id=42e01f
a=rtpmap:98 H264/90000
a=fmtp:98 packetization-mode=0;profile-level-id=42e01f
a=rtpmap:99 H264/90000
a=fmtp:99 packetization-mode=1;profile-level-id=42001f
a=rtpmap:100 H264/90000
a=fmtp:100 packetization-mode=0;profile-level-id=42001f
"""
_ANSWER = """v=0
o=baresip 2 2 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=video 30000 RTP/AVP 100
a=rtpmap:100 H264/90000
a=fmtp:100 packetization-mode=0;profile-level-id=42001f
"""


def test_the_other_numbers_we_offered_for_an_agreed_codec_are_kept() -> None:
    (video,) = process_answer(SessionDescription.parse(_OFFER), SessionDescription.parse(_ANSWER))
    assert [c.payload_type for c in video.codecs] == [100]
    assert [(c.payload_type, c.fmtp) for c in video.also_received] == [
        (97, "packetization-mode=1;profile-level-id=42e01f"),
        (98, "packetization-mode=0;profile-level-id=42e01f"),
        (99, "packetization-mode=1;profile-level-id=42001f"),
    ]


async def test_a_peer_sending_another_offered_number_is_transcoded_not_dropped(
    executor: MediaExecutor,
) -> None:
    # As baresip does: answers PT 100 (H.264 mode 0) and sends PT 99 (mode 1).
    (video,) = process_answer(SessionDescription.parse(_OFFER), SessionDescription.parse(_ANSWER))
    source = FakePort("video", dataclasses.replace(video, direction=Direction.SENDRECV))
    sink = FakePort("video", stream(VP8, kind="video"))
    route = Route(source, sink, executor)
    encoder = create_video_encoder(H264, width=320, height=240)
    writer = RtpWriter(99, 0xBA5E)
    loop = asyncio.get_running_loop()
    for index in range(4):
        frame = encoder.encode(
            video_frame(np.full((240, 320, 3), 40 * index, np.uint8), index * 6000)
        )
        for part, payload in enumerate(frame):
            packet = writer.packet(payload.data, index * 6000, marker=part == len(frame) - 1)
            route.feed(bytes(packet), loop.time())
        await asyncio.sleep(1 / 15)
    await wait_for(lambda: route.stats.transcoded_out > 0)
    assert route.mode == "transcode" and route.stats.dropped == 0
    assert set(sink.payload_types()) == {96}
    route.close()


async def test_playout_timers_of_all_streams_land_on_one_grid(executor: MediaExecutor) -> None:
    loop = asyncio.get_running_loop()
    routes = []
    for offset in (0.0013, 0.0071):  # two calls whose packets arrive out of phase
        route = Route(FakePort("audio", stream(PCMU)), FakePort("audio", stream(OPUS)), executor)
        route.feed(packets(0, pcmu_tone(1))[0], loop.time() + offset)
        routes.append(route)
    whens = [plan.timer.when() for r in routes for plan in r._plans.values()]  # type: ignore[union-attr]
    assert len(whens) == 2
    assert all(abs(when / PLAYOUT_GRID - round(when / PLAYOUT_GRID)) < 1e-6 for when in whens)
    for route in routes:
        route.close()


async def test_an_inline_codec_failure_costs_one_frame_not_the_stream(
    executor: MediaExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = Route(FakePort("audio", stream(PCMU)), FakePort("audio", stream(OPUS)), executor)
    loop = asyncio.get_running_loop()
    sent = packets(0, pcmu_tone(10))
    route.feed(sent[0], loop.time())
    (plan,) = route._plans.values()
    transcoder = plan.transcoder  # type: ignore[union-attr]
    real = transcoder.process_frame
    calls = 0

    def broken_once(payloads: Sequence[bytes], timestamp: int) -> list[RtpPayload]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise IndexError("a codec bug")
        return real(payloads, timestamp)

    monkeypatch.setattr(transcoder, "process_frame", broken_once)
    for packet in sent[1:]:
        await asyncio.sleep(0.02)
        route.feed(packet, loop.time())
    await wait_for(lambda: route.stats.transcoded_out >= 8)
    assert plan.errors == 1  # type: ignore[union-attr]
    route.close()


async def test_video_for_a_small_decoder_is_made_smaller_and_slower(
    executor: MediaExecutor,
) -> None:
    """An H.264 room system at level 1.1 (396 macroblocks, 3000 a second) gets CIF-sized
    pictures at no more than 7.6 frames a second, whatever we would send otherwise."""
    small = NegotiatedCodec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e00b")
    source = FakePort("video", stream(VP8, kind="video"))
    sink = FakePort("video", stream(small, kind="video"))
    route = Route(source, sink, executor)
    writer = RtpWriter(96, 0x5EED)
    loop = asyncio.get_running_loop()
    for index, frame in enumerate(_vp8_frames(2)):
        for part, data in enumerate(frame):
            packet = writer.packet(data, 1000 + index * 6000, marker=part == len(frame) - 1)
            route.feed(bytes(packet), loop.time())
        await asyncio.sleep(1 / 15)
    await wait_for(lambda: route.stats.transcoded_out > 0)
    (plan,) = [p for p in route._plans.values() if hasattr(p, "transcoder")]
    encoder = plan.transcoder._video_encoder  # type: ignore[union-attr]
    width, height = encoder.resolution
    assert (width // 16 + (width % 16 > 0)) * (height // 16 + (height % 16 > 0)) <= 396
    assert width > 250 and abs(width / height - 4 / 3) < 0.05
    assert encoder.framerate == pytest.approx(3000 / ((width + 15) // 16 * ((height + 15) // 16)))
    route.close()
