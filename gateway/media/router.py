"""The media router: RTP from one leg's stream delivered to another's.

A ``Route`` is one direction, ``source`` -> ``sink``, of one kind of media.
For each payload type the source sends it makes a plan once (again after a
re-INVITE changed either side's negotiation):

* **passthrough** when the sink negotiated a codec that takes the payloads
  as they are (``mediacodecs.registry.can_bridge``): only the payload type
  is mapped; the sink's RTP session rewrites SSRC, sequence and timestamp.
  No decode, no copy beyond the header rewrite.
* **transcode** otherwise, to the sink's most preferred codec we can make:
  packets first wait in an adaptive ``JitterBuffer`` (reordering, late drop,
  bounded), which hands each frame at its playout time to the transcoder.
  A PyAV transcoder (video, G.722, resampling) gets it as one job on the
  process's ``MediaExecutor`` (decode -> resample or scale -> encode off the
  event loop; a video frame is one job however many payloads it has), and
  what comes back is sent on the loop; finished jobs are collected and the
  loop is woken once per batch, not per job. An ``inline_safe`` one (Opus
  <-> G.711: libopus and numpy, ~30-80 µs a packet) runs right there on the
  loop, which costs less than the hand-over to a worker and back. Gaps the
  buffer reports go to the decoder as losses to conceal (Opus PLC/FEC,
  G.711 silence); a video gap, or a decoder that lost its reference, asks
  the source for a keyframe.
* telephone-events pass through when the sink negotiated them; the digits
  themselves are surfaced by the source stream (``MediaStream.on_dtmf``).
* comfort noise, RED, FEC and anything the sink cannot take are dropped and
  counted (``gatewayd_rtp_dropped_total{reason}``).

Keyframe requests from the sink's peer go upstream on passthrough (at most
one per ``KEYFRAME_INTERVAL``) and to the encoder when transcoding.
``Router`` wires streams together with routes and owns their callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway import metrics
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.jitter import Conceal, JitterBuffer
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp import RtpError, RtpWriter, header_sizes
from gateway.media.video_limits import fit as fit_to_limits
from gateway.media.video_limits import limits_of
from mediacodecs.base import RtpPayload
from mediacodecs.executor import JobDropped, MediaExecutor
from mediacodecs.h264 import ParameterSetInjector, parse_sprop_parameter_sets
from mediacodecs.registry import can_bridge
from mediacodecs.transcode import AudioTranscoder, VideoTranscoder

log = get_logger(__name__)

RouteMode = Literal["idle", "passthrough", "transcode"]

#: Seconds between keyframe requests forwarded upstream for one route.
KEYFRAME_INTERVAL = 0.3
#: Seconds: playout times are rounded to this grid, so the frames of all the
#: router's streams come due together, ~100 wake-ups of the loop a second
#: instead of one per frame per stream (25 Opus <-> G.711 calls: 2,500). A
#: frame plays at most half of it early or late; measured 5-10 % less CPU
#: for that transcode in ``bench media_router``. 0 turns it off.
PLAYOUT_GRID = 0.01
#: Video bit rate of a transcoder's encoder unless the sink declared less (bit/s).
VIDEO_BITRATE = 500_000
#: Frames a second of a transcoder's encoder unless the sink's codec allows fewer.
VIDEO_FPS = 15.0
#: Lost packets concealed at most per gap (longer gaps are a new talkspurt).
MAX_CONCEAL = 5


class RtpPort(Protocol):
    """One stream of a leg as the router sees it (``MediaStream`` is one)."""

    kind: str
    negotiated: NegotiatedStream | None

    def send_rtp(self, data: bytes | bytearray) -> bool: ...
    def switch_source(self) -> None: ...
    def request_keyframe(self) -> None: ...


@dataclass(slots=True)
class RouteStats:
    """What one route did with the packets its source sent."""

    forwarded: int = 0
    transcoded_in: int = 0
    transcoded_out: int = 0
    dropped: int = 0  # late and duplicate packets: Route.late
    concealed: int = 0
    keyframe_requests: int = 0


@dataclass(slots=True)
class _Forward:
    payload_type: int
    # H.264 whose parameter sets the source sent only in its SDP, to a sink that numbers
    # its own packets (a browser): they go in band before each IDR
    parameter_sets: ParameterSetInjector | None = None


@dataclass(slots=True)
class _Drop:
    reason: str


@dataclass(slots=True, eq=False)
class _Transcode:
    transcoder: AudioTranscoder | VideoTranscoder
    writer: RtpWriter
    jitter: JitterBuffer
    timer: asyncio.TimerHandle | None = None
    errors: int = 0
    closed: bool = False


_Plan = _Forward | _Drop | _Transcode


class Completions:
    """Finished executor jobs handed back to the event loop in batches.

    Workers ``put`` from any thread; the loop is woken (one
    ``call_soon_threadsafe``, a write to its self-pipe) only when no wake-up
    is pending already, so a burst of completions costs one wake-up. One per
    loop, shared by a router's routes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._armed = False
        #: Wake-ups of the loop so far (completions / wakeups = batch size).
        self.wakeups = 0

    def put(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop soon (safe from any thread)."""
        self._items.append(callback)
        with self._lock:
            if self._armed:
                return
            self._armed = True
        self.wakeups += 1
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._armed = False  # before draining: a later put wakes the loop again
        items = self._items
        while items:
            items.popleft()()


def _codec_for(stream: NegotiatedStream, payload_type: int) -> NegotiatedCodec | None:
    for codec in stream.codecs:
        if codec.payload_type == payload_type:
            return codec
    # A number of the same codec that we listed but the answer left out
    # (``NegotiatedStream.also_received``): understood, not dropped.
    for codec in stream.also_received:
        if codec.payload_type == payload_type:
            return codec
    return None


class Route:
    """Packets of ``source`` delivered to ``sink``, passed through or transcoded."""

    def __init__(
        self,
        source: RtpPort,
        sink: RtpPort,
        executor: MediaExecutor,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        monotonic: Callable[[], float] | None = None,
        completions: Completions | None = None,
        opus_complexity: int | None = None,
        playout_grid: float = PLAYOUT_GRID,
    ) -> None:
        self.source = source
        self.sink = sink
        self.executor = executor
        self.stats = RouteStats()
        self._loop = loop or asyncio.get_running_loop()
        self._completions = completions or Completions(self._loop)
        self._opus_complexity = opus_complexity
        self._grid = playout_grid
        self._monotonic = monotonic or self._loop.time
        self._plans: dict[int, _Plan] = {}
        self._seen: tuple[object, object] = (None, None)
        self._mode: RouteMode = "idle"
        self._last_keyframe_request = -KEYFRAME_INTERVAL
        self._closed = False
        sink.switch_source()  # the sink's peer sees one continuous stream from here on

    @property
    def mode(self) -> RouteMode:
        """What the route did with the last packet it delivered."""
        return self._mode

    @property
    def late(self) -> int:
        """Packets the jitter buffers of the current plans dropped as late or duplicate."""
        return sum(
            plan.jitter.stats.late + plan.jitter.stats.duplicates
            for plan in self._plans.values()
            if isinstance(plan, _Transcode)
        )

    # --- packets in -----------------------------------------------------------------------
    def feed(self, data: bytes, arrival: float = 0.0) -> None:
        """One valid RTP packet from the source (called by the source's ``on_rtp``)."""
        if self._closed:
            return
        source, sink = self.source.negotiated, self.sink.negotiated
        if source is None or sink is None:
            return
        if (source, sink) != self._seen:
            self._replan(source, sink)
        if not sink.direction.sends:
            return  # the sink's peer holds the call: nothing to send
        payload_type = data[1] & 0x7F
        plan = self._plans.get(payload_type)
        if plan is None:
            plan = self._plans[payload_type] = self._plan(source, sink, payload_type)
        if type(plan) is _Forward:
            self._forward(plan, data)
        elif type(plan) is _Transcode:
            self._transcode(plan, data, arrival)
        else:
            self.stats.dropped += 1
            metrics.RTP_DROPPED.labels(reason=plan.reason).inc()  # type: ignore[union-attr]

    def _forward(self, plan: _Forward, data: bytes) -> None:
        if plan.parameter_sets is not None:
            self._parameter_sets(plan, plan.parameter_sets, data)
        out = bytearray(data)
        out[1] = (out[1] & 0x80) | plan.payload_type
        if self.sink.send_rtp(out):
            self.stats.forwarded += 1
        self._set_mode("passthrough")

    def _parameter_sets(self, plan: _Forward, sets: ParameterSetInjector, data: bytes) -> None:
        try:
            header, size = header_sizes(data)
        except RtpError:
            return
        extra = sets.before(data[header : header + size], int.from_bytes(data[4:8], "big"))
        if extra is not None:  # same timestamp, no marker, no padding: the sink renumbers
            out = bytearray(data[:header])
            out[0] &= 0xDF
            out[1] = plan.payload_type
            self.sink.send_rtp(out + extra)

    def _transcode(self, plan: _Transcode, data: bytes, arrival: float) -> None:
        try:
            header, size = header_sizes(data)
        except RtpError:
            self.stats.dropped += 1
            return
        sequence = (data[2] << 8) | data[3]
        timestamp = int.from_bytes(data[4:8], "big")
        marker = bool(data[1] & 0x80)
        payload = bytes(data[header : header + size])
        self.stats.transcoded_in += 1
        self._set_mode("transcode")
        plan.jitter.push(sequence, timestamp, payload, arrival, marker)
        self._schedule(plan)

    def _lost(self, plan: _Transcode, count: int) -> None:
        for _ in range(min(count, MAX_CONCEAL)):
            plan.transcoder.note_lost()
            self.stats.concealed += 1

    def _schedule(self, plan: _Transcode) -> None:
        deadline = plan.jitter.next_deadline()
        if deadline is None:
            return
        if self._grid:
            deadline = round(deadline / self._grid) * self._grid
        if plan.timer is not None:
            if plan.timer.when() <= deadline:
                return
            plan.timer.cancel()
        plan.timer = self._loop.call_at(deadline, self._play, plan)

    def _play(self, plan: _Transcode) -> None:
        """Frames whose playout time came go to the decoder; gaps are concealed."""
        plan.timer = None
        jitter = plan.jitter
        if plan.closed or self._closed:
            return
        video = self.source.kind == "video"
        transcoder = plan.transcoder
        # The timer fired on the grid point nearest the first deadline: take
        # what is due within half a grid step from now.
        now = self._monotonic() + self._grid / 2
        while (item := jitter.pop(now)) is not None:
            if isinstance(item, Conceal):
                self._lost(plan, 1 if video else item.count)
                if video:
                    self._ask_source_for_keyframe()
                continue
            if transcoder.inline_safe:
                try:
                    payloads = transcoder.process_frame(item.payloads, item.timestamp)
                except Exception as exc:  # whatever a codec raises, the playout timer goes on
                    self._failed(plan, exc)
                    continue
                self._send(plan, payloads)
                continue
            future = transcoder.submit_frame(self.executor, item.payloads, item.timestamp)
            future.add_done_callback(
                lambda done: self._completions.put(lambda: self._deliver(plan, done))
            )
        self._schedule(plan)

    def _deliver(self, plan: _Transcode, done: Future[list[RtpPayload]]) -> None:
        try:
            payloads = done.result()
        except (JobDropped, CancelledError):
            return  # counted by the executor; the transcoder conceals it
        except (GatewayError, ValueError, OSError) as exc:
            self._failed(plan, exc)
            return
        self._send(plan, payloads)

    def _send(self, plan: _Transcode, payloads: list[RtpPayload]) -> None:
        if self._closed or plan.closed:
            return  # the route ended or was re-planned while the job ran
        for payload in payloads:
            packet = plan.writer.packet(payload.data, payload.timestamp, payload.marker)
            if self.sink.send_rtp(packet):
                self.stats.transcoded_out += 1
        if plan.transcoder.keyframe_needed:
            self._ask_source_for_keyframe()

    def _failed(self, plan: _Transcode, exc: Exception) -> None:
        plan.errors += 1
        if plan.errors == 1 or plan.errors % 500 == 0:
            log.warning("media transcode failed", reason=str(exc), errors=plan.errors)

    # --- plans ------------------------------------------------------------------------------
    def _replan(self, source: NegotiatedStream, sink: NegotiatedStream) -> None:
        self._close_plans()
        self._seen = (source, sink)

    def _plan(self, source: NegotiatedStream, sink: NegotiatedStream, payload_type: int) -> _Plan:
        event = source.telephone_event
        if event is not None and payload_type == event.payload_type:
            wanted = sink.telephone_event
            if wanted is not None and wanted.clock_rate == event.clock_rate:
                return _Forward(wanted.sending_payload_type)
            return _Drop("dtmf")
        codec = _codec_for(source, payload_type)
        if codec is None:
            return _Drop("payload_type")  # CN, RED, FEC, or never negotiated
        transcode: NegotiatedCodec | None = None
        for candidate in sink.codecs:
            bridge = can_bridge(codec, candidate)
            if bridge is None:
                continue
            if bridge.kind == "passthrough":
                return _Forward(candidate.sending_payload_type, self._in_band(codec))
            transcode = transcode or candidate
        if transcode is None:
            log.info("media: no way to bridge codecs", source=codec.name, kind=source.kind)
            return _Drop("codec")
        transcoder: AudioTranscoder | VideoTranscoder
        try:
            if source.kind == "video":
                # no more than the sink declared it takes: imageattr, its codec's limits
                # (H.264 level, max-fs/max-mbps; VP8 max-fs/max-fr), b=TIAS/AS
                (width, height), fps = fit_to_limits(
                    sink.remote_max_resolution or (640, 480),
                    VIDEO_FPS,
                    limits_of(transcode.name, transcode.fmtp),
                )
                bitrate = min(VIDEO_BITRATE, sink.remote_bandwidth or VIDEO_BITRATE)
                transcoder = VideoTranscoder(codec, transcode, width, height, fps, bitrate)
            else:
                transcoder = AudioTranscoder(
                    codec, transcode, opus_complexity=self._opus_complexity
                )
        except GatewayError as exc:
            log.warning("media: transcoder not available", reason=exc.message)
            return _Drop("codec")
        log.info("media: transcoding", kind=source.kind, source=codec.name, sink=transcode.name)
        writer = RtpWriter(transcode.sending_payload_type, random.getrandbits(32))
        jitter = JitterBuffer(codec.clock_rate, video=source.kind == "video")
        return _Transcode(transcoder, writer, jitter)

    def _in_band(self, codec: NegotiatedCodec) -> ParameterSetInjector | None:
        """Parameter sets to put in band for this sink, if the source's are SDP-only."""
        if codec.name.lower() != "h264" or not getattr(self.sink, "renumbers", False):
            return None
        units = parse_sprop_parameter_sets(codec.parameters.get("sprop-parameter-sets"))
        return ParameterSetInjector(units) if units else None

    def _close_plans(self) -> None:
        for plan in self._plans.values():
            if isinstance(plan, _Transcode):
                plan.closed = True
                if plan.timer is not None:
                    plan.timer.cancel()
                plan.transcoder.close()
        self._plans.clear()
        self._set_mode("idle")

    def _set_mode(self, mode: RouteMode) -> None:
        if mode == self._mode:
            return
        kind = "video" if self.source.kind == "video" else "audio"
        if self._mode == "passthrough":
            metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).dec()
        if mode == "passthrough":
            metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).inc()
        self._mode = mode

    # --- control ----------------------------------------------------------------------------
    def keyframe_requested(self) -> None:
        """The sink's peer asked for a keyframe (PLI/FIR)."""
        transcoding = [p for p in self._plans.values() if isinstance(p, _Transcode)]
        if self._mode == "transcode" and transcoding:
            for plan in transcoding:
                if isinstance(plan.transcoder, VideoTranscoder):
                    plan.transcoder.request_keyframe()
            return
        self._ask_source_for_keyframe()

    def _ask_source_for_keyframe(self) -> None:
        now = self._monotonic()
        if now - self._last_keyframe_request < KEYFRAME_INTERVAL:
            return
        self._last_keyframe_request = now
        self.stats.keyframe_requests += 1
        self.source.request_keyframe()

    def close(self) -> None:
        """Stop delivering; release transcoders (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._close_plans()


Tap = Callable[[object, bytes, float], None]


class RoutedStream(RtpPort, Protocol):
    """A port whose events the router subscribes to (``MediaStream``)."""

    on_rtp: Callable[..., None] | None
    on_keyframe_request: Callable[..., None] | None


class Router:
    """Routes between streams; owns the streams' ``on_rtp`` and keyframe callbacks."""

    def __init__(
        self,
        executor: MediaExecutor,
        *,
        opus_complexity: int | None = None,
        playout_grid: float = PLAYOUT_GRID,
    ) -> None:
        self.executor = executor
        #: Opus encoder complexity 0-10 for transcoded audio (None: the codec's default).
        self.opus_complexity = opus_complexity
        self.playout_grid = playout_grid
        self._completions: Completions | None = None
        self._out: dict[RoutedStream, list[Route]] = {}
        self._in: dict[RoutedStream, list[Route]] = {}
        self._taps: dict[RoutedStream, list[Tap]] = {}
        self._keyframe_listeners: dict[RoutedStream, list[Callable[[], None]]] = {}

    def link(self, source: RoutedStream, sink: RoutedStream) -> Route:
        """Deliver ``source``'s packets to ``sink`` from now on."""
        if source.kind != sink.kind:
            raise ValueError(f"cannot route {source.kind} to {sink.kind}")
        if self._completions is None:
            self._completions = Completions(asyncio.get_running_loop())
        route = Route(
            source,
            sink,
            self.executor,
            completions=self._completions,
            opus_complexity=self.opus_complexity,
            playout_grid=self.playout_grid,
        )
        self._attach(source)
        self._attach(sink)
        self._out[source].append(route)
        self._in[sink].append(route)
        return route

    def connect(self, a: RoutedStream, b: RoutedStream) -> tuple[Route, Route]:
        """Both directions between ``a`` and ``b``."""
        return self.link(a, b), self.link(b, a)

    def tap(self, stream: RoutedStream, tap: Tap) -> Callable[[], None]:
        """Also hand ``stream``'s packets to ``tap`` (a listener, a compositor); returns
        the function that removes the tap."""
        self._attach(stream)
        taps = self._taps[stream]
        taps.append(tap)
        return lambda: taps.remove(tap) if tap in taps else None

    def on_keyframe_request(
        self, stream: RoutedStream, callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Also call ``callback`` when ``stream``'s peer asks for a keyframe (PLI/FIR), for
        what sends to it outside a route (a compositor); returns the remove function."""
        self._attach(stream)
        listeners = self._keyframe_listeners[stream]
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    @property
    def loop_wakeups(self) -> int:
        """Times finished codec jobs woke the event loop (each wake-up takes a batch)."""
        return self._completions.wakeups if self._completions is not None else 0

    def routes(self) -> list[Route]:
        """Every live route."""
        return [route for routes in self._out.values() for route in routes]

    def _attach(self, stream: RoutedStream) -> None:
        if stream in self._out:
            return
        self._out[stream] = []
        self._in[stream] = []
        self._taps[stream] = []
        self._keyframe_listeners[stream] = []
        outgoing, incoming, taps = self._out[stream], self._in[stream], self._taps[stream]
        listeners = self._keyframe_listeners[stream]

        def on_rtp(source: object, data: bytes, arrival: float) -> None:
            for route in outgoing:
                route.feed(data, arrival)
            for tap in taps:
                tap(source, data, arrival)

        def on_keyframe_request(_stream: object) -> None:
            for route in incoming:
                route.keyframe_requested()
            for listener in list(listeners):
                listener()

        stream.on_rtp = on_rtp
        stream.on_keyframe_request = on_keyframe_request

    def unlink(self, route: Route) -> None:
        """End one route; the streams stay attached for their other routes (idempotent)."""
        route.close()
        for table in (self._out, self._in):
            for stream in (route.source, route.sink):
                routes = table.get(stream)  # type: ignore[call-overload]
                if routes is not None and route in routes:
                    routes.remove(route)

    def remove(self, stream: RoutedStream) -> None:
        """Take ``stream`` out: every route from or to it ends."""
        self._taps.pop(stream, None)
        self._keyframe_listeners.pop(stream, None)
        for route in self._out.pop(stream, []) + self._in.pop(stream, []):
            route.close()
            other = route.sink if route.source is stream else route.source
            for table in (self._out, self._in):
                routes = table.get(other)  # type: ignore[call-overload]
                if routes is not None and route in routes:
                    routes.remove(route)
        stream.on_rtp = None
        stream.on_keyframe_request = None

    def close(self) -> None:
        """End every route."""
        for stream in list(self._out):
            self.remove(stream)
