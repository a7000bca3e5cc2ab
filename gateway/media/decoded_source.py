"""One video stream decoded to its newest picture, for ``VideoCompositor``.

Packets (VP8 or H.264, whatever the stream negotiated; the payload type
names the codec through ``negotiated.codecs``) go through a video
``JitterBuffer`` (reordering, frame grouping by timestamp and marker, gaps)
whose frames, at their playout time, are decoded on the process's
``MediaExecutor``: at most one decode job of the source is queued or running
at a time, and the frames that come due meanwhile wait in a queue of
``FRAME_QUEUE``; beyond it the oldest is dropped (counted in
``gatewayd_media_queue_drops_total``) and the decoder conceals it, which
makes it wait for a keyframe. One job drains the queue, so a burst costs one
hand-over, not one per frame. Only the newest picture is kept; it is scaled
to a tile's size the first time a composition asks for that size, and that
copy is kept until the next picture. A decoder without a reference (start,
loss, a dropped frame) has the stream asked for a keyframe, at most once per
``KEYFRAME_INTERVAL``.

Threads: ``feed``, ``ask_for_keyframe`` and ``close`` run on the loop; the
decode job owns the decoders; the queue, the picture and its scaled copies
are shared under a lock that is never held across codec work (the loop takes
it too), the scaler has its own; ``tile`` is safe from any thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway import metrics
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.jitter import Conceal, JitterBuffer
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.router import KEYFRAME_INTERVAL, RoutedStream
from gateway.media.rtp import RtpError, header_sizes
from mediacodecs.base import RtpPayload, VideoDecoder
from mediacodecs.executor import MediaExecutor
from mediacodecs.picture import Picture, Planes, Scaler
from mediacodecs.registry import codec_info, create_video_decoder
from mediacodecs.video import VIDEO_CLOCK

log = get_logger(__name__)

#: Frames of one source waiting for its decode job; beyond, the oldest goes.
FRAME_QUEUE = 4

#: ``on_timing(stage, seconds)``, see ``VideoCompositor``.
TimingHook = Callable[[str, float], None]
#: ``on_error(stage, exception)``: a job failed (count it, log it).
ErrorHook = Callable[[str, Exception], None]

_Item = tuple[NegotiatedCodec, Sequence[bytes], int] | None  # a frame, or None: one lost


def even(value: float) -> int:
    """``value`` rounded down to an even integer (yuv420p chroma is halved)."""
    return int(value) & ~1


def fit(picture: tuple[int, int], tile: tuple[int, int]) -> tuple[int, int]:
    """The even size of ``picture`` (width, height) scaled to fit ``tile``, aspect kept."""
    (pw, ph), (tw, th) = picture, tile
    scale = min(tw / pw, th / ph)
    return max(2, min(tw, even(round(pw * scale)))), max(2, min(th, even(round(ph * scale))))


def _video_codec(negotiated: NegotiatedStream, payload_type: int) -> NegotiatedCodec | None:
    for codec in (*negotiated.codecs, *negotiated.also_received):
        if codec.payload_type == payload_type:
            info = codec_info(codec)
            return codec if info is not None and info.kind == "video" else None
    return None


@dataclass(slots=True)
class SourceStats:
    """What one source sent and what became of it."""

    packets: int = 0
    malformed: int = 0  # not RTP
    unknown_payload: int = 0  # a payload type that is no video codec we decode
    frames: int = 0  # whole frames handed to the decoder
    concealed: int = 0  # packets the jitter buffer reported missing
    dropped: int = 0  # frames dropped from the queue: the executor was behind
    decode_errors: int = 0
    pictures: int = 0
    keyframe_requests: int = 0


class DecodedSource:
    """``stream``'s packets in, its newest picture out (scaled on request)."""

    def __init__(
        self,
        stream: RoutedStream,
        executor: MediaExecutor,
        loop: asyncio.AbstractEventLoop,
        *,
        playout_grid: float,
        on_timing: TimingHook | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.stream = stream
        self.executor = executor
        self.stats = SourceStats()
        self._loop = loop
        self._grid = playout_grid
        self._on_timing = on_timing
        self._on_error = on_error
        self._jitter = JitterBuffer(VIDEO_CLOCK, video=True)
        self._codec: NegotiatedCodec | None = None
        self._codecs: dict[int, NegotiatedCodec | None] = {}
        self._codecs_of: NegotiatedStream | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_keyframe_request = -math.inf
        self._closed = False
        # Shared with the workers, under _lock.
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        self._running = False  # a decode job is queued or running
        self._lost = False  # frames were dropped before the queue's head
        self._picture: Picture | None = None
        self._picture_at = -math.inf
        self._fitted: dict[tuple[int, int], Planes] = {}
        self._scaling = threading.Lock()
        self._scaler = Scaler()
        # The decode job's own.
        self._decoders: dict[str, VideoDecoder | None] = {}
        self._decoder: VideoDecoder | None = None  # in use; the loop reads keyframe_needed

    # --- the loop ---------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray) -> None:
        """One RTP packet of the stream; timed by the loop's clock, the one
        the playout timers run on."""
        if self._closed:
            return
        self.stats.packets += 1
        try:
            header, size = header_sizes(data)
        except RtpError:
            self.stats.malformed += 1
            metrics.RTP_DROPPED.labels(reason="malformed").inc()
            return
        codec = self._codec_of(data[1] & 0x7F)
        if codec is None:
            self.stats.unknown_payload += 1
            metrics.RTP_DROPPED.labels(reason="payload_type").inc()
            return
        if codec is not self._codec:
            # Another codec's frames start afresh; another number of the same
            # codec (``also_received``) is the same stream.
            if self._codec is not None and codec.name.lower() != self._codec.name.lower():
                self._jitter.reset()
            self._codec = codec
        self._jitter.push(
            (data[2] << 8) | data[3],
            int.from_bytes(data[4:8], "big"),
            bytes(data[header : header + size]),
            self._loop.time(),
            bool(data[1] & 0x80),
        )
        self._schedule()

    def ask_for_keyframe(self) -> None:
        """Ask the stream for a keyframe, unless that was done less than
        ``KEYFRAME_INTERVAL`` ago."""
        now = self._loop.time()
        if now - self._last_keyframe_request < KEYFRAME_INTERVAL:
            return
        self._last_keyframe_request = now
        self.stats.keyframe_requests += 1
        self.stream.request_keyframe()

    def close(self) -> None:
        """Stop decoding and let go of the picture and the decoders (idempotent)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            self._queue.clear()
            self._picture = None
            self._fitted.clear()
            idle = not self._running
        if idle:  # else the decode job lets go of them when it sees ``closed``
            self._decoders.clear()
            self._decoder = None

    def _codec_of(self, payload_type: int) -> NegotiatedCodec | None:
        negotiated = self.stream.negotiated
        if negotiated is None:
            return None
        if negotiated is not self._codecs_of:  # a re-INVITE: look again
            self._codecs_of = negotiated
            self._codecs.clear()
        if payload_type not in self._codecs:
            self._codecs[payload_type] = _video_codec(negotiated, payload_type)
        return self._codecs[payload_type]

    def _schedule(self) -> None:
        deadline = self._jitter.next_deadline()
        if deadline is None:
            return
        if self._grid:
            deadline = round(deadline / self._grid) * self._grid
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._play)

    def _play(self) -> None:
        """Frames due go to the decode queue; a gap goes as a loss."""
        self._timer = None
        if self._closed:
            return
        now = self._loop.time() + self._grid / 2
        while (item := self._jitter.pop(now)) is not None:
            if isinstance(item, Conceal):
                self.stats.concealed += item.count
                self._enqueue(None)
            elif self._codec is not None:
                self.stats.frames += 1
                self._enqueue((self._codec, item.payloads, item.timestamp))
        decoder = self._decoder
        # No decoder yet (none made, or none possible for the codec), or one
        # without a reference: ask for a keyframe.
        if decoder.keyframe_needed if decoder is not None else not self._decoders:
            self.ask_for_keyframe()
        self._schedule()

    def _enqueue(self, item: _Item) -> None:
        with self._lock:
            if len(self._queue) >= FRAME_QUEUE:
                self._queue.popleft()
                self._lost = True
                self.stats.dropped += 1
                metrics.MEDIA_QUEUE_DROPS.inc()
            self._queue.append(item)
            if self._running:
                return
            self._running = True
        try:
            self.executor.submit(self._drain, key=self, on_drop=self._drain_dropped)
        except RuntimeError:  # the executor is shut down: the node stops
            with self._lock:
                self._running = False

    def _drain_dropped(self) -> None:
        """The executor evicted the decode job (a global bound): its frames are lost."""
        with self._lock:
            self.stats.dropped += len(self._queue)
            self._queue.clear()
            self._lost = True
            self._running = False

    # --- the decode job (executor; one at a time) ---------------------------------------------
    def _drain(self) -> None:
        while True:
            with self._lock:
                if self._closed or not self._queue:
                    self._running = False
                    if self._closed:
                        self._decoders.clear()
                        self._decoder = None
                    return
                item = self._queue.popleft()
                lost, self._lost = self._lost, False
            self._decode(item, lost)

    def _decode(self, item: _Item, lost: bool) -> None:
        started = time.perf_counter()
        try:
            if (lost or item is None) and self._decoder is not None:
                self._decoder.conceal()
            if item is None:
                return
            codec, payloads, timestamp = item
            decoder = self._decoder_for(codec)
            if decoder is None:
                return
            errors = decoder.decode_errors
            last = len(payloads) - 1
            frames: list[Picture] = []
            for index, data in enumerate(payloads):  # the marker on the last, as sent
                frames += decoder.decode(RtpPayload(data, timestamp, index == last))
            if decoder.decode_errors != errors:
                self.stats.decode_errors += decoder.decode_errors - errors
                metrics.MEDIA_DECODE_ERRORS.labels(kind="video").inc(decoder.decode_errors - errors)
            if frames:
                with self._lock:
                    self._picture = frames[-1]
                    self._picture_at = self._loop.time()  # a clock read, safe from here
                    self._fitted.clear()
                self.stats.pictures += 1
        except Exception as exc:  # a codec failed: counted, the source goes on
            self.stats.decode_errors += 1
            if self._on_error is not None:
                self._on_error("decode", exc)
        if self._on_timing is not None and item is not None:
            self._on_timing("decode", time.perf_counter() - started)

    def _decoder_for(self, codec: NegotiatedCodec) -> VideoDecoder | None:
        name = codec.name.lower()
        if name not in self._decoders:
            try:
                self._decoders[name] = create_video_decoder(codec)
            except GatewayError as exc:
                log.info("compositor: cannot decode", codec=codec.name, reason=exc.message)
                self._decoders[name] = None
        self._decoder = self._decoders[name]
        return self._decoder

    # --- any thread -------------------------------------------------------------------------
    def tile(self, size: tuple[int, int], now: float, stale_after: float) -> Planes | None:
        """The newest picture scaled to fit ``size`` (aspect kept), None when
        there is none or it is older than ``stale_after`` seconds at ``now``
        (the loop's clock)."""
        with self._lock:
            picture = self._picture
            if picture is None or now - self._picture_at > stale_after:
                return None
            planes = self._fitted.get(size)
        if planes is not None:
            return planes
        # Scaled outside ``lock``, which the loop takes too; the scaler (one
        # per source keeps its SwsContext) has a lock of its own.
        width, height = fit((picture.width, picture.height), size)
        with self._scaling:
            planes = self._scaler.planes(picture, width, height)
        with self._lock:
            if self._picture is picture:
                self._fitted[size] = planes
        return planes
