"""A composed "grid" video for room systems: one picture of up to four others.

A SIP room system takes one video stream, so in a room of three or more each
SIP participant gets a composition of the others, as Pexip does for legacy
endpoints. ``VideoCompositor`` has **sources** (streams whose video is shown)
and **sinks** (streams that receive a composition of some of the sources).

Sources (``DecodedSource``, beside this module): each stream's packets go
through a jitter buffer and are decoded on the process's ``MediaExecutor``,
one job at a time per source with a bounded, drop-oldest frame queue; only
the newest picture is kept, scaled to a tile's size when a composition
needs it; a decoder without a reference has its stream asked for a
keyframe (at most once per 0.3 s). A source that stops sending keeps its
last picture for ``stale_after`` seconds (2), then its tile is black: the
layout stays put, so a participant whose video pauses does not reshuffle
everyone else's tiles.

Sinks: every ``1 / fps`` seconds (absolute deadlines on the loop; after a
stall the clock jumps ahead instead of catching up in a burst) each sink's
canvas is composed and encoded as one job on the executor: black yuv420p
planes, the sink's sources in order (at most four: one fills the picture,
two sit side by side, three or four make a 2x2 grid; each picture keeps its
aspect ratio inside its tile, the rest is black; a tile with no picture yet,
a stale one, or one of a removed source, is black; no sources: all black).
A sink whose previous job is still running skips the tick (counted), one on
hold is sent nothing. The encoder is made for the
sink's first negotiated codec we can encode, at ``remote_max_resolution``
(else 640x480; at most 1280x720 worth of pixels, H.264 level 3.1) and at most
``VIDEO_BITRATE`` or the sink's ``remote_bandwidth``; a re-INVITE that
changes these makes a new encoder (and a new RTP source). The payloads come
back to the loop in batches (``Completions``) and are sent with the sink's
own SSRC and numbering (``RtpWriter``). An unchanged canvas is encoded again
all the same: room systems expect a steady frame rate, and a static picture
costs little to encode.

``request_keyframe(sink)`` makes the sink's next frame a keyframe (its peer
sent PLI/FIR); periodic keyframes are the caller's business.

Sources are fed either by the compositor taking the stream's ``on_rtp``
(``add_source(stream)``) or, when the stream's callbacks belong to the
router, by the caller: ``router.tap(stream, compositor.feed)`` with
``add_source(stream, own=False)``. Nothing else of a stream is taken: its
``on_keyframe_request`` (its peer asking us) stays the caller's, who passes
a sink's on with ``request_keyframe(sink)``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway import metrics
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.decoded_source import (
    FRAME_QUEUE,
    DecodedSource,
    SourceStats,
    TimingHook,
    even,
    fit,
)
from gateway.media.negotiation import NegotiatedCodec
from gateway.media.router import PLAYOUT_GRID, VIDEO_BITRATE, Completions, RoutedStream
from gateway.media.rtp import RtpWriter
from gateway.media.video_limits import fit as fit_to_limits
from gateway.media.video_limits import limits_of
from mediacodecs.base import RtpPayload, VideoEncoder
from mediacodecs.executor import JobDropped, MediaExecutor
from mediacodecs.picture import Picture, yuv420p_frame
from mediacodecs.registry import codec_info, create_video_encoder, h264_packetization_mode
from mediacodecs.video import VIDEO_CLOCK

__all__ = [
    "FRAME_QUEUE",
    "SinkStats",
    "SourceStats",
    "VideoCompositor",
    "fit",
    "grid_layout",
    "output_size",
]

log = get_logger(__name__)

FPS = 15
MAX_TILES = 4
#: Seconds a source's last picture is shown after it stopped coming.
STALE_AFTER = 2.0
DEFAULT_SIZE = (640, 480)
#: Pixels at most (H.264 level 3.1, which our encoder signals, stops at 720p).
MAX_PIXELS = 1280 * 720
MIN_SIDE = 32
#: yuv420p black in limited range (what the codecs' decoders assume).
BLACK_Y, BLACK_UV = 16, 128
_LOG_EVERY = 500

Tile = tuple[int, int, int, int]  # x, y, width, height


def grid_layout(count: int, width: int, height: int) -> list[Tile]:
    """The tiles for ``count`` pictures on a ``width`` x ``height`` canvas.

    One fills it, two sit side by side, three or four make a 2x2 grid (more
    than four: the first four). Tile corners and sizes are even, as yuv420p
    chroma needs.
    """
    count = min(count, MAX_TILES)
    if count <= 0:
        return []
    if count == 1:
        return [(0, 0, width, height)]
    half_w = even(width / 2)
    if count == 2:
        return [(0, 0, half_w, height), (half_w, 0, width - half_w, height)]
    half_h = even(height / 2)
    right, bottom = width - half_w, height - half_h
    return [
        (0, 0, half_w, half_h),
        (half_w, 0, right, half_h),
        (0, half_h, half_w, bottom),
        (half_w, half_h, right, bottom),
    ]


def output_size(declared: tuple[int, int] | None) -> tuple[int, int]:
    """What a sink gets: its declared largest size (else 640x480), at most
    ``MAX_PIXELS`` (aspect kept), even sides of at least ``MIN_SIDE``."""
    width, height = declared or DEFAULT_SIZE
    scale = min(1.0, math.sqrt(MAX_PIXELS / max(1, width * height)))
    return max(MIN_SIDE, even(width * scale)), max(MIN_SIDE, even(height * scale))


def _encodable(codec: NegotiatedCodec) -> bool:
    if codec.name.lower() not in ("vp8", "h264") or codec_info(codec) is None:
        return False
    if codec.name.lower() == "h264":
        try:
            h264_packetization_mode(codec)
        except GatewayError:
            return False
    return True


@dataclass(slots=True)
class SinkStats:
    """What one sink was sent."""

    frames: int = 0  # encoded frames sent
    packets: int = 0
    skipped_ticks: int = 0  # the previous job was still running
    errors: int = 0


@dataclass(slots=True)
class _ComposeJob:
    tiles: list[DecodedSource | None]
    size: tuple[int, int]
    fps: float
    codec: NegotiatedCodec
    bitrate: int
    keyframe: bool
    pts: int
    now: float
    deadline: float


@dataclass(eq=False)
class _Sink:
    stream: RoutedStream
    sources: list[RoutedStream]
    stats: SinkStats = field(default_factory=SinkStats)
    keyframe: bool = True
    busy: bool = False
    removed: bool = False
    writer: RtpWriter | None = None
    writer_generation: int = -1
    # --- the compose job's own (one at a time per sink) ---
    encoder: VideoEncoder | None = None
    encoder_key: tuple[object, ...] | None = None
    failed_key: tuple[object, ...] | None = None
    generation: int = 0
    canvas: npt.NDArray[np.uint8] | None = None
    last_frame: float = -math.inf  # when the last frame was made (the loop's clock)


class VideoCompositor:
    """Grid compositions of ``sources`` for ``sinks``; ``close`` at the end.

    ``fps``: frames a second each sink is sent; ``stale_after``: seconds a
    source's last picture is shown once it stops; ``playout_grid``: see
    ``gateway.media.router.PLAYOUT_GRID``; ``on_timing(stage, seconds)``, for
    benchmarks: "decode", "compose", "encode" (called on worker threads, keep
    it cheap and thread-safe) and "delay" (a tick's deadline to its packets
    sent, on the loop).
    """

    def __init__(
        self,
        executor: MediaExecutor,
        *,
        fps: float = FPS,
        stale_after: float = STALE_AFTER,
        playout_grid: float = PLAYOUT_GRID,
        on_timing: TimingHook | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.executor = executor
        self.fps = fps
        self.stale_after = stale_after
        self.on_timing = on_timing
        self.ticks = 0
        self._period = 1 / fps
        self._pts_step = math.ceil(VIDEO_CLOCK / fps)  # never below the encoders' pacing
        self._grid = playout_grid
        self._sources: dict[RoutedStream, DecodedSource] = {}
        self._callbacks: dict[RoutedStream, Callable[..., None]] = {}
        self._sinks: dict[RoutedStream, _Sink] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._completions: Completions | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._index = 0
        self._closed = False
        self._errors = 0

    # --- sources ----------------------------------------------------------------------------
    def add_source(self, stream: RoutedStream, *, own: bool = True) -> None:
        """Show ``stream``'s video where sinks list it. ``own``: take the
        stream's ``on_rtp``; otherwise the caller hands packets to ``feed``
        (``router.tap(stream, compositor.feed)``). Asks it for a keyframe."""
        if stream.kind != "video":
            raise ValueError(f"cannot compose {stream.kind}")
        if self._closed or stream in self._sources:
            return
        loop = self._start_loop()
        source = self._sources[stream] = DecodedSource(
            stream,
            self.executor,
            loop,
            playout_grid=self._grid,
            on_timing=self.on_timing,
            on_error=self._failed,
        )
        if own:
            callback = self._callbacks[stream] = lambda _stream, data, _arrival: source.feed(data)
            stream.on_rtp = callback
        source.ask_for_keyframe()

    def remove_source(self, stream: RoutedStream) -> None:
        """Stop showing ``stream``: where sinks list it, its tile is black (idempotent)."""
        source = self._sources.pop(stream, None)
        if source is not None:
            source.close()
        callback = self._callbacks.pop(stream, None)
        if callback is not None and stream.on_rtp is callback:
            stream.on_rtp = None

    def feed(self, stream: object, data: bytes | bytearray, arrival: float = 0.0) -> None:
        """One RTP packet of source ``stream`` (the signature of ``on_rtp`` and
        of a router tap). ``arrival`` is accepted for that signature; packets
        are timed by the loop's clock, the one the playout timers run on."""
        source = self._sources.get(stream)  # type: ignore[call-overload]
        if source is not None:
            source.feed(data)

    def source_stats(self, stream: RoutedStream) -> SourceStats | None:
        """The counters of source ``stream`` (None if it is none)."""
        source = self._sources.get(stream)
        return source.stats if source is not None else None

    # --- sinks ------------------------------------------------------------------------------
    def add_sink(self, stream: RoutedStream, sources: Sequence[RoutedStream] = ()) -> None:
        """Send ``stream`` a composition of ``sources`` (in order, the first
        four) from the next tick on; an existing sink gets the new sources."""
        if stream.kind != "video":
            raise ValueError(f"cannot send a composition to {stream.kind}")
        if self._closed:
            return
        if stream in self._sinks:
            self.set_sources(stream, sources)
            return
        self._start_loop()
        self._sinks[stream] = _Sink(stream, list(sources)[:MAX_TILES])
        if self._timer is None:
            assert self._loop is not None
            self._next = self._loop.time() + self._period
            self._timer = self._loop.call_at(self._next, self._tick)

    def set_sources(self, sink: RoutedStream, sources: Sequence[RoutedStream]) -> None:
        """What ``sink`` shows from the next tick on (KeyError for an unknown sink)."""
        self._sinks[sink].sources = list(sources)[:MAX_TILES]

    def remove_sink(self, stream: RoutedStream) -> None:
        """Stop sending to ``stream`` (idempotent); a job in flight is discarded."""
        sink = self._sinks.pop(stream, None)
        if sink is not None:
            sink.removed = True
            if not sink.busy:  # else the job's delivery lets go of the encoder
                sink.encoder = None
        if not self._sinks and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_keyframe(self, sink: RoutedStream) -> None:
        """``sink``'s peer asked for a keyframe (PLI/FIR): its next frame is one."""
        found = self._sinks.get(sink)
        if found is not None:
            found.keyframe = True

    def sink_stats(self, stream: RoutedStream) -> SinkStats | None:
        """The counters of sink ``stream`` (None if it is none)."""
        sink = self._sinks.get(stream)
        return sink.stats if sink is not None else None

    def close(self) -> None:
        """Stop: timers cancelled, callbacks given back, codecs let go (idempotent).
        Jobs in flight finish and their results are discarded."""
        self._closed = True
        for stream in list(self._sinks):
            self.remove_sink(stream)
        for stream in list(self._sources):
            self.remove_source(stream)

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._completions = Completions(self._loop)
        return self._loop

    # --- the clock --------------------------------------------------------------------------
    def _tick(self) -> None:
        assert self._loop is not None
        deadline = self._next
        self._next += self._period
        self._index += 1
        now = self._loop.time()
        if self._next < now - 5 * self._period:  # the loop stalled: no burst to catch up
            skipped = math.ceil((now - self._next) / self._period)
            self._next += skipped * self._period
            self._index += skipped
        self._timer = self._loop.call_at(self._next, self._tick)
        self.ticks += 1
        for sink in self._sinks.values():
            self._submit(sink, now, deadline)

    def _submit(self, sink: _Sink, now: float, deadline: float) -> None:
        if sink.busy:  # the last frame is still being made: skip this one
            sink.stats.skipped_ticks += 1
            return
        negotiated = sink.stream.negotiated
        if negotiated is None or not negotiated.direction.sends:
            return  # not negotiated yet, or on hold
        codec = next((c for c in negotiated.codecs if _encodable(c)), None)
        if codec is None:
            return
        # within what the sink's fmtp allows (H.264 level, max-fs/max-mbps; VP8 max-fs/max-fr)
        size, fps = fit_to_limits(
            output_size(negotiated.remote_max_resolution),
            self.fps,
            limits_of(codec.name, codec.fmtp),
        )
        if fps < self.fps and now - sink.last_frame < 1 / fps - 0.5 / self.fps:
            return  # a slower sink: not every tick
        sink.last_frame = now
        job = _ComposeJob(
            tiles=[self._sources.get(stream) for stream in sink.sources],
            size=size,
            fps=fps,
            codec=codec,
            bitrate=min(VIDEO_BITRATE, negotiated.remote_bandwidth or VIDEO_BITRATE),
            keyframe=sink.keyframe,
            pts=self._index * self._pts_step,
            now=now,
            deadline=deadline,
        )
        sink.keyframe = False
        sink.busy = True
        try:
            future = self.executor.submit(functools.partial(self._compose, sink, job), key=sink)
        except RuntimeError:  # executor shut down: the node stops
            sink.busy = False
            return
        completions = self._completions
        assert completions is not None
        future.add_done_callback(
            lambda done: completions.put(lambda: self._deliver(sink, job, done))
        )

    def _deliver(
        self,
        sink: _Sink,
        job: _ComposeJob,
        done: Future[tuple[int, list[RtpPayload]]],
    ) -> None:
        sink.busy = False
        if self._closed or sink.removed:
            sink.encoder = None
            return
        try:
            generation, payloads = done.result()
        except (JobDropped, CancelledError):
            sink.keyframe |= job.keyframe  # the request still stands
            return
        if not payloads:
            return
        if sink.writer is None or generation != sink.writer_generation:
            # A new encoder starts its own timeline: a new source for the peer.
            sink.writer = RtpWriter(job.codec.sending_payload_type, random.getrandbits(32))
            sink.writer_generation = generation
            sink.stream.switch_source()
        writer = sink.writer
        for payload in payloads:
            if sink.stream.send_rtp(writer.packet(payload.data, payload.timestamp, payload.marker)):
                sink.stats.packets += 1
        sink.stats.frames += 1
        if self.on_timing is not None and self._loop is not None:
            self.on_timing("delay", self._loop.time() - job.deadline)

    # --- composing and encoding (executor; one job at a time per sink) ----------------------
    def _compose(self, sink: _Sink, job: _ComposeJob) -> tuple[int, list[RtpPayload]]:
        try:
            started = time.perf_counter()
            frame = self._canvas(sink, job)
            composed = time.perf_counter()
            encoder = self._encoder(sink, job)
            if encoder is None:
                return sink.generation, []
            if job.keyframe:
                encoder.request_keyframe()
            payloads = encoder.encode(frame)
            if self.on_timing is not None:
                self.on_timing("compose", composed - started)
                self.on_timing("encode", time.perf_counter() - composed)
            return sink.generation, payloads
        except Exception as exc:  # a codec failed: counted, the next tick tries again
            sink.stats.errors += 1
            self._failed("compose", exc)
            return sink.generation, []

    def _canvas(self, sink: _Sink, job: _ComposeJob) -> Picture:
        width, height = job.size
        luma, chroma = width * height, (width // 2) * (height // 2)
        if sink.canvas is None or sink.canvas.size != luma + 2 * chroma:
            sink.canvas = np.empty(luma + 2 * chroma, np.uint8)
        canvas = sink.canvas
        canvas[:luma] = BLACK_Y
        canvas[luma:] = BLACK_UV
        y_plane = canvas[:luma].reshape(height, width)
        u_plane = canvas[luma : luma + chroma].reshape(height // 2, width // 2)
        v_plane = canvas[luma + chroma :].reshape(height // 2, width // 2)
        for (x, y, tile_w, tile_h), source in zip(
            grid_layout(len(job.tiles), width, height),
            job.tiles,
            strict=False,  # three pictures: the fourth tile stays black
        ):
            planes = source.tile((tile_w, tile_h), job.now, self.stale_after) if source else None
            if planes is None:
                continue
            pic_y, pic_u, pic_v = planes
            pic_h, pic_w = pic_y.shape
            left = x + even((tile_w - pic_w) / 2)
            top = y + even((tile_h - pic_h) / 2)
            y_plane[top : top + pic_h, left : left + pic_w] = pic_y
            rows = slice(top // 2, (top + pic_h) // 2)
            cols = slice(left // 2, (left + pic_w) // 2)
            u_plane[rows, cols] = pic_u
            v_plane[rows, cols] = pic_v
        return yuv420p_frame(canvas, width, job.pts)

    def _encoder(self, sink: _Sink, job: _ComposeJob) -> VideoEncoder | None:
        key = (job.codec, job.size, job.fps, job.bitrate)
        if sink.encoder is not None and key == sink.encoder_key:
            return sink.encoder
        if key == sink.failed_key:
            return None
        width, height = job.size
        try:
            encoder = create_video_encoder(
                job.codec, width=width, height=height, fps=job.fps, bitrate=job.bitrate
            )
        except GatewayError as exc:
            log.warning("compositor: cannot encode", codec=job.codec.name, reason=exc.message)
            sink.failed_key = key
            return None
        sink.encoder, sink.encoder_key = encoder, key
        sink.generation += 1
        return encoder

    def _failed(self, stage: str, exc: Exception) -> None:
        self._errors += 1
        metrics.ERRORS.labels(component="compositor").inc()
        if self._errors == 1 or self._errors % _LOG_EVERY == 0:
            log.warning("compositor: job failed", stage=stage, error=repr(exc), errors=self._errors)
