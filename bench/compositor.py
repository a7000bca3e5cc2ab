"""``python -m bench compositor``: grid compositions for room systems, per core.

Each room is one ``VideoCompositor`` with three sources and one sink, as a
room of four where one SIP room system sees the other three: the sources
send a VP8 640x480 test pattern at 15 frames/s (a moving gradient with
scrolling texture, encoded once before the run at 500 kbit/s; a source asked
for a keyframe restarts the recording, which begins with one), the sink
negotiated H.264 at 640x480 (2x2 grid, fourth tile black) and counts what
it is sent. All rooms share one ``MediaExecutor`` sized to the usable cores,
as the daemon does. The sources are spread over the frame interval, as real
cameras are.

Everything runs in this process (no sockets: packets go straight to
``feed``, sinks' ``send_rtp`` only count), so the CPU measured, utime +
stime of every thread over a steady window, is the compositor's plus a
feeder that only numbers pre-encoded payloads. "Composed sinks per core" is
rooms / (that CPU as a fraction of one core). The peer, measured in the same
run on the same frames, is the bare codec work one composition needs per
frame on one thread, without the compositor (three VP8 decodes, three
scalings to a quarter, one H.264 encode of the canvas): the ratio shows what
the compositor's jitter buffers, queues, hand-overs and numpy canvas cost on
top.

Per stage, from the compositor's ``on_timing`` hook during the window: decode
(one frame of one source), compose (canvas of one sink, scaling included),
encode (one H.264 frame), in ms, p50 and p95 (wall time on a worker thread,
so a busy host shows up in them). "Frames on time": frames sent within one
frame interval (66.7 ms) of their tick, over the ticks of the window times
the sinks.

``--quick`` is a < 60 s smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from bench import emit, log, percentile
from bench._load import cpu_seconds
from bench.media_codecs import camera_like
from gateway.media.compositor import VideoCompositor
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp import RtpWriter
from gateway.media.sdp_attributes import Direction
from mediacodecs.base import RtpPayload
from mediacodecs.executor import MediaExecutor
from mediacodecs.picture import yuv_planes
from mediacodecs.registry import create_video_decoder, create_video_encoder
from mediacodecs.video import VIDEO_TIME_BASE, video_frame

BENCH = "compositor"
WIDTH, HEIGHT, FPS = 640, 480, 15
SOURCES = 3
RECORDING = 6 * FPS  # frames in the loop each source plays
VP8 = NegotiatedCodec(96, "VP8", 90000)
H264 = NegotiatedCodec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")


def recording() -> list[list[bytes]]:
    """The VP8 payloads of each frame of the test pattern (the first a keyframe)."""
    encoder = create_video_encoder(VP8, width=WIDTH, height=HEIGHT, fps=FPS, bitrate=500_000)
    frames = [encoder.encode(video_frame(camera_like(i), i * 6000)) for i in range(RECORDING)]
    return [[payload.data for payload in frame] for frame in frames]


def _negotiated(codec: NegotiatedCodec) -> NegotiatedStream:
    return NegotiatedStream(
        index=1,
        kind="video",
        proto="RTP/AVP",
        accepted=True,
        codecs=(codec,),
        direction=Direction.SENDRECV,
        remote_max_resolution=(WIDTH, HEIGHT),
    )


class Camera:
    """A source stream: plays the recording as RTP, restarts it on a keyframe request."""

    kind = "video"

    def __init__(self, frames: list[list[bytes]], ssrc: int, start: int) -> None:
        self.negotiated: NegotiatedStream | None = _negotiated(VP8)
        self.on_rtp: Any = None
        self.on_keyframe_request: Any = None
        self.frames = frames
        self.writer = RtpWriter(VP8.payload_type, ssrc)
        self.index = start % len(frames)
        self.tick = 0
        self.keyframe_wanted = False
        self.keyframes_asked = 0

    def packets(self) -> list[bytearray]:
        if self.keyframe_wanted:
            self.index, self.keyframe_wanted = 0, False
        payloads = self.frames[self.index]
        self.index = (self.index + 1) % len(self.frames)
        timestamp = 6000 * self.tick
        self.tick += 1
        last = len(payloads) - 1
        return [self.writer.packet(p, timestamp, i == last) for i, p in enumerate(payloads)]

    def send_rtp(self, data: bytes | bytearray) -> bool:
        return True

    def switch_source(self) -> None:
        return None

    def request_keyframe(self) -> None:
        self.keyframe_wanted = True
        self.keyframes_asked += 1


class RoomSystem:
    """A sink stream: counts the packets and frames it is sent."""

    kind = "video"

    def __init__(self) -> None:
        self.negotiated: NegotiatedStream | None = _negotiated(H264)
        self.on_rtp: Any = None
        self.on_keyframe_request: Any = None
        self.packets = 0
        self.frames = 0
        self.bytes = 0

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.packets += 1
        self.bytes += len(data)
        self.frames += bool(data[1] & 0x80)
        return True

    def switch_source(self) -> None:
        return None

    def request_keyframe(self) -> None:
        return None


@dataclass
class Timings:
    """What the compositors' ``on_timing`` hooks report while ``recording``."""

    recording: bool = False
    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def __call__(self, stage: str, seconds: float) -> None:
        if self.recording:
            self.stages[stage].append(seconds)  # list.append: safe from the workers


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        result[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return result


@dataclass
class Point:
    rooms: int
    window: float
    cpu_pct: float
    loop_cpu_pct: float
    frames_expected: int
    frames_sent: int
    on_time: int
    timings: dict[str, dict[str, float]]
    counters: dict[str, int]
    workers: int

    @property
    def sinks_per_core(self) -> float:
        return self.rooms / (self.cpu_pct / 100) if self.cpu_pct else 0.0


async def run_point(frames: list[list[bytes]], rooms: int, warmup: float, window: float) -> Point:
    """``rooms`` compositors fed for ``warmup`` + ``window`` seconds; figures over the window."""
    timings = Timings()
    with MediaExecutor() as executor:
        compositors: list[VideoCompositor] = []
        cameras: list[tuple[VideoCompositor, Camera]] = []
        sinks: list[RoomSystem] = []
        for room in range(rooms):
            compositor = VideoCompositor(executor, fps=FPS, on_timing=timings)
            room_cameras = [Camera(frames, 1000 * room + n, start=17 * n) for n in range(SOURCES)]
            for camera in room_cameras:
                compositor.add_source(camera, own=False)
                cameras.append((compositor, camera))
            sink = RoomSystem()
            compositor.add_sink(sink, room_cameras)
            compositors.append(compositor)
            sinks.append(sink)
        loop = asyncio.get_running_loop()
        interval = 1 / FPS
        # Each camera at its own phase of the frame interval.
        phases = [(i / len(cameras)) * interval for i in range(len(cameras))]
        start = loop.time() + 0.05
        due = [start + phase for phase in phases]

        async def feed(until: float) -> None:
            while loop.time() < until:
                now = loop.time()
                for index, (compositor, camera) in enumerate(cameras):
                    while due[index] <= now:
                        for packet in camera.packets():
                            compositor.feed(camera, packet, now)
                        due[index] += interval
                await asyncio.sleep(max(0.0, min(due) - loop.time()))

        await feed(start + warmup)
        sent_before = [sink.frames for sink in sinks]
        ticks_before = [c.ticks for c in compositors]
        cpu_before, threads_before = cpu_seconds(os.getpid()), _thread_cpu()
        wall_before = time.monotonic()
        timings.recording = True
        await feed(loop.time() + window)
        timings.recording = False
        elapsed = time.monotonic() - wall_before
        cpu = cpu_seconds(os.getpid()) - cpu_before
        main_thread = threading.get_native_id()
        loop_cpu = _thread_cpu().get(main_thread, 0.0) - threads_before.get(main_thread, 0.0)
        expected = sum(c.ticks - t for c, t in zip(compositors, ticks_before, strict=True))
        sent = sum(s.frames - b for s, b in zip(sinks, sent_before, strict=True))
        delays = timings.stages.get("delay", [])
        counters: dict[str, int] = defaultdict(int)
        for compositor, camera in cameras:
            stats = compositor.source_stats(camera)
            assert stats is not None
            counters["source_frames"] += stats.frames
            counters["source_queue_drops"] += stats.dropped
            counters["source_concealed"] += stats.concealed
            counters["decode_errors"] += stats.decode_errors
            counters["keyframe_requests"] += stats.keyframe_requests
        for compositor, sink in zip(compositors, sinks, strict=True):
            sink_stats = compositor.sink_stats(sink)
            assert sink_stats is not None
            counters["skipped_ticks"] += sink_stats.skipped_ticks
            counters["compose_errors"] += sink_stats.errors
            counters["sink_kbit_s"] += round(8 * sink.bytes / 1000 / (warmup + window))
        counters["executor_evictions"] = executor.dropped
        for compositor in compositors:
            compositor.close()
        workers = executor.workers
    summary = {
        stage: {
            "p50": round(1000 * percentile(values, 50), 2),
            "p95": round(1000 * percentile(values, 95), 2),
            "count": len(values),
        }
        for stage, values in timings.stages.items()
        if values
    }
    return Point(
        rooms=rooms,
        window=elapsed,
        cpu_pct=100 * cpu / elapsed,
        loop_cpu_pct=100 * loop_cpu / elapsed,
        frames_expected=expected,
        frames_sent=sent,
        on_time=sum(1 for delay in delays if delay <= 1 / FPS),
        timings=summary,
        counters=dict(counters),
        workers=workers,
    )


def bare_codecs(frames: list[list[bytes]], count: int) -> float:
    """CPU seconds per composed frame of the bare codec work, one thread: three
    VP8 decodes, three scalings to 320x240 copied into a yuv420p canvas (2x2,
    fourth tile black), one H.264 encode of it."""
    decoders = [create_video_decoder(VP8) for _ in range(SOURCES)]
    scalers = [VideoReformatter() for _ in range(SOURCES)]
    encoder = create_video_encoder(H264, width=WIDTH, height=HEIGHT, fps=FPS, bitrate=500_000)
    canvas = np.full(WIDTH * HEIGHT * 3 // 2, 128, np.uint8)
    canvas[: WIDTH * HEIGHT] = 16
    luma = canvas[: WIDTH * HEIGHT].reshape(HEIGHT, WIDTH)
    half_w, half_h = WIDTH // 2, HEIGHT // 2
    started = time.thread_time()
    for index in range(count):
        payloads = frames[index % len(frames)]
        last = len(payloads) - 1
        for tile, (decoder, scaler) in enumerate(zip(decoders, scalers, strict=True)):
            for i, data in enumerate(payloads):
                for picture in decoder.decode(RtpPayload(data, index * 6000, i == last)):
                    scaled = scaler.reformat(picture, width=half_w, height=half_h, format="yuv420p")
                    x, y = half_w * (tile % 2), half_h * (tile // 2)
                    luma[y : y + half_h, x : x + half_w] = yuv_planes(scaled)[0]
        frame = VideoFrame.from_ndarray(canvas.reshape(-1, WIDTH), format="yuv420p")
        frame.pts, frame.time_base = index * 6000, VIDEO_TIME_BASE
        encoder.encode(frame)
    return (time.thread_time() - started) / count


def _emit(point: Point, peer_per_core: float, run: str) -> None:
    on_time = point.on_time / point.frames_expected if point.frames_expected else 0.0
    emit(
        BENCH,
        "composed_sinks_per_core",
        round(point.sinks_per_core, 2),
        "sinks/core",
        peer="bare codec work, one thread, same frames (3 VP8 decodes, 3 scalings into a "
        "canvas, 1 H.264 encode per frame)",
        peer_value=round(peer_per_core, 2),
        rooms=point.rooms,
        sources_per_room=SOURCES,
        cpu_pct=round(point.cpu_pct, 1),
        loop_thread_cpu_pct=round(point.loop_cpu_pct, 1),
        workers=point.workers,
        window_s=round(point.window, 1),
        counters=point.counters,
        run=run,
    )
    for stage in ("decode", "compose", "encode", "delay"):
        figures = point.timings.get(stage)
        if figures is None:
            continue
        for quantile in ("p50", "p95"):
            emit(
                BENCH,
                f"{stage}_ms_{quantile}",
                figures[quantile],
                "ms",
                rooms=point.rooms,
                samples=figures["count"],
                run=run,
            )
    emit(
        BENCH,
        "frames_on_time_ratio",
        round(on_time, 4),
        "ratio",
        rooms=point.rooms,
        frames_expected=point.frames_expected,
        frames_sent=point.frames_sent,
        on_time=point.on_time,
        run=run,
    )


def main(argv: list[str]) -> None:
    """Compose for each ``--rooms`` count in turn."""
    parser = argparse.ArgumentParser(prog="python -m bench compositor")
    parser.add_argument("--quick", action="store_true", help="< 60 s smoke run")
    parser.add_argument("--rooms", help="room counts, one point each (2,4,8; quick: 2)")
    parser.add_argument("--warmup", type=float, help="s before each window (3; quick: 1.5)")
    parser.add_argument("--window", type=float, help="s measured per point (10; quick: 4)")
    parser.add_argument("--peer-frames", type=int, help="frames of the peer run (150; quick: 45)")
    parser.add_argument("--run", default="1", help="label put in every line")
    args = parser.parse_args(argv)
    defaults = ("2", 1.5, 4.0, 45) if args.quick else ("2,4,8", 3.0, 10.0, 150)
    for name, default in zip(("rooms", "warmup", "window", "peer_frames"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    log(f"{BENCH}: encoding the test pattern")
    frames = recording()
    per_frame = bare_codecs(frames, args.peer_frames)
    peer_per_core = 1 / (per_frame * FPS)
    log(f"{BENCH}: bare codecs {1000 * per_frame:.1f} ms a frame: {peer_per_core:.1f} sinks/core")
    for rooms in (int(part) for part in args.rooms.split(",") if part.strip()):
        point = asyncio.run(run_point(frames, rooms, args.warmup, args.window))
        log(
            f"{BENCH}: {rooms} rooms: {point.cpu_pct:.1f} % of a core "
            f"(loop thread {point.loop_cpu_pct:.1f} %), {point.sinks_per_core:.1f} sinks/core, "
            f"{point.on_time}/{point.frames_expected} frames on time, {point.counters}"
        )
        _emit(point, peer_per_core, args.run)
