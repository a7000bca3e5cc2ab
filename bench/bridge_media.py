"""``python -m bench bridge_media``: concurrent WebRTC <-> SIP bridged calls per core.

Each call is what a room makes of a browser and a SIP call: a ``WebRtcLeg``
(ICE, DTLS-SRTP, rtcp-mux on loopback) for the browser, a ``MediaStream`` for
the SIP side's RTP, joined by the room's ``connect`` (``MediaLinker``: a
``WebRtcPort`` and the stream through the media ``Router``, passthrough when
the codecs match, transcoding otherwise). The gateway side runs in a child
process whose CPU (utime + stime, every thread) is measured over a steady
window; "calls per core" is calls / (that CPU as a fraction of one core).
SIP signalling is left out (``python -m bench bridge`` measures INVITE -> 200
through a ``SipBridge``).

This process is the load: per call an aiortc peer standing in for the browser
(``bench._browser``: pre-encoded payloads, nothing decoded) and a UDP socket
standing in for the SIP phone, sending pre-encoded RTP at 20 ms pacing (video:
15 frames/s) as SIPp's pcap play would (SIPp itself is not used: its pcap
play sends one file per call and cannot count what comes back). The calls
are spread over the packet interval. Both ends count what arrives.

Workloads (issue #7's goals, per core):

* ``passthrough``: the browser offers PCMU only (``setCodecPreferences``), the
  SIP side PCMU: the router forwards (goal 200);
* ``transcode``: the browser Opus, the SIP side PCMU: Opus <-> G.711 (goal 50);
* ``video``: the browser VP8, the SIP side H.264, 640x480 at 15 fps, video
  only: VP8 <-> H.264 (goal 6).

Timing: each end keeps the send time of every packet (video: frame) by its
tick; what arrives is matched by RTP timestamp (the gateway and aiortc shift
timestamps by a constant, transcoding rescales them to the other clock), the
first arrival anchoring the offset. A packet sent in the window is on time if
it arrives within ``LATE`` (as ``bench.media_router``). The latency is from
the push into the sending peer to the receiving peer's hand-off, so it includes
the aiortc peer's own send and receive path (on the same 2 shared cores).

"Offer -> first remote media": after the window, with the load still on,
``--probes`` more calls are set up one at a time; the clock starts when the
browser makes its offer, the SIP side starts sending when the gateway has
answered (standing in for the 200 OK), and it stops at the first packet
(video: frame) from the SIP side in the browser. That is the media part of
"click -> first remote audio"; the INVITE -> 200 of ``bench bridge`` adds to it.

``--quick`` (< 60 s) is a smoke run; ``--profile DIR`` samples the gateway
with py-spy during the window (py-spy: a dev tool, not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiortc.rtp import RtpPacket

from bench import emit, log, percentile
from bench._browser import Browser
from bench._load import ANCHOR_RESULTS, cpu_seconds, rss_bytes
from bench.media_router import (
    H264,
    LATE,
    OPUS,
    PCMU,
    PORTS,
    VP8,
    Codec,
    _audio_ticks,
    _spy,
    _stop,
    _video_ticks,
    asks_keyframe,
    hot_spots,
    route_totals,
    start_plain,
)

BENCH = "bridge_media"
PTIME = 0.02
VIDEO_FPS = 15
RING = 4096  # send times kept per direction: 82 s of audio
SLOT = 0.005  # the feeder's granularity: calls are spread over the interval in such slots
DRAIN = 0.3  # s at the end of the window: only receiving is counted
BATCH = 20  # calls set up at a time
MIN_ON_TIME = 0.99
_HEADER = struct.Struct("!BBHII")

Ticks = list[list[tuple[bytes, bool]]]  # per interval: (payload, marker) packets


@dataclass(frozen=True)
class Workload:
    name: str  # as ``--only`` names it
    metric: str  # prefix of the metric names
    kind: str
    browser: Codec  # what the browser sends and receives
    sip: Codec  # what the SIP side sends and receives
    goal: float  # calls per core (issue #7)
    late: float

    @property
    def interval(self) -> float:
        return 1 / VIDEO_FPS if self.kind == "video" else PTIME

    def step(self, codec: Codec) -> int:
        """RTP timestamp units per tick (packet or frame) in ``codec``."""
        return round(codec.clock_rate * self.interval)


WORKLOADS = (
    Workload("passthrough", "pcmu_passthrough", "audio", PCMU, PCMU, 200, LATE["passthrough"]),
    Workload("transcode", "opus_pcmu", "audio", OPUS, PCMU, 50, LATE["transcode"]),
    Workload("video", "vp8_h264", "video", VP8, H264, 6, LATE["video"]),
)


def _peer_calls_per_core(prefix: str, anchor: str, metric: str, n: int) -> float | None:
    """100 / the mean ``metric`` (%core per call) at load ``n`` in the anchor runs."""
    values = [
        float(row["value"])
        for path in sorted(ANCHOR_RESULTS.glob(f"{prefix}_run*.jsonl"))
        for row in map(json.loads, path.read_text().splitlines())
        if row.get("anchor") == anchor and row.get("metric") == metric and row.get("n") == n
    ]
    return round(100 / (sum(values) / len(values)), 1) if values else None


#: (name, description, anchor file prefix, anchor, metric, load) per workload.
PEERS: dict[str, list[tuple[str, str, str, str, int]]] = {
    "passthrough": [
        ("rtpengine", "rtpengine-10.5 userspace relay, plain RTP both sides (anchor, 50 calls)",
         "rtpengine", "rtpengine_relay", 50),
        ("janus", "Janus echotest, one WebRTC leg, A/V passthrough (anchor, 20 calls)",
         "janus", "janus_echotest", 20),
    ],
    "transcode": [
        ("rtpengine", "rtpengine-10.5 PCMU<->opus transcode, plain RTP (anchor, 50 calls)",
         "rtpengine", "rtpengine_transcode", 50),
    ],
}  # fmt: skip


# --- timing ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Sent:
    """When each tick (audio packet, video frame) of one direction of one call was sent."""

    ring_tick: list[int] = field(default_factory=lambda: [-1] * RING)
    ring_time: list[float] = field(default_factory=lambda: [0.0] * RING)
    first_tick: int | None = None
    window_sent: int = 0

    def record(self, tick: int, now: float, in_window: bool) -> None:
        self.ring_tick[tick % RING] = tick
        self.ring_time[tick % RING] = now
        if self.first_tick is None:
            self.first_tick = tick
        self.window_sent += in_window


@dataclass(slots=True, eq=False)
class Heard:
    """What arrives of one direction of one call, matched to when it was sent."""

    source: Sent
    step: int  # timestamp units per tick in the codec received
    video: bool
    late: float
    offset: int | None = None
    received: int = 0
    unmatched: int = 0
    on_time: int = 0
    latencies: list[float] = field(default_factory=list)
    first_at: float | None = None

    def arrive(self, timestamp: int, marker: bool, now: float, window: tuple[float, float]) -> None:
        self.received += 1
        if self.video and not marker:
            return  # a frame is timed by its last packet
        if self.first_at is None:
            self.first_at = now
        source = self.source
        if self.offset is None:
            if source.first_tick is None:
                self.unmatched += 1
                return
            self.offset = (timestamp - source.first_tick * self.step) & 0xFFFFFFFF
        tick = round(((timestamp - self.offset) & 0xFFFFFFFF) / self.step)
        if source.ring_tick[tick % RING] != tick:
            self.unmatched += 1
            return
        sent = source.ring_time[tick % RING]
        if window[0] <= sent < window[1]:
            latency = now - sent
            self.latencies.append(latency)
            self.on_time += latency <= self.late


@dataclass(frozen=True)
class Media:
    browser: Ticks
    sip: Ticks


@dataclass(eq=False)
class Call:
    """One bridged call as the load sees it: the browser and the SIP phone."""

    browser: Browser
    sock: socket.socket
    workload: Workload
    media: Media
    ssrc: int
    up: Sent = field(default_factory=Sent)  # browser -> SIP
    down: Sent = field(default_factory=Sent)  # SIP -> browser
    at_sip: Heard = field(init=False)
    at_browser: Heard = field(init=False)
    target: tuple[str, int] | None = None
    tick: int = 0
    seq: int = 0
    priming: int = 0
    browser_frame: int = 0
    sip_frame: int = 0
    sip_keyframe_wanted: bool = False
    offered_at: float = 0.0
    counted: bool = True  # False: a probe, timed to its first media only
    heard_first: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        w, video = self.workload, self.workload.kind == "video"
        self.at_sip = Heard(self.up, w.step(w.sip), video, w.late)
        self.at_browser = Heard(self.down, w.step(w.browser), video, w.late)

    def send(self, now: float, in_window: bool) -> None:
        """One interval of media each way."""
        w, kind = self.workload, self.workload.kind
        tick, self.tick = self.tick, self.tick + 1
        # the browser
        if self.browser.keyframe_wanted[kind]:
            self.browser.keyframe_wanted[kind], self.browser_frame = False, 0
        frame = self.media.browser[self.browser_frame]
        self.browser_frame = (self.browser_frame + 1) % len(self.media.browser)
        track, timestamp = self.browser.tracks[kind], (tick * w.step(w.browser)) & 0xFFFFFFFF
        for payload, marker in frame:
            track.push(payload, timestamp, marker or kind == "audio")
        self.up.record(tick, now, in_window)
        # the SIP phone
        if self.target is None:
            return
        timestamp = (tick * w.step(w.sip)) & 0xFFFFFFFF
        if self.priming:
            # RTP probation (RFC 3550 A.1) drops a new source's first packets: send
            # those before the media, so the first frame (a keyframe) arrives whole.
            self.priming -= 1
            self.seq = (self.seq + 1) & 0xFFFF
            packet = _HEADER.pack(0x80, w.sip.payload_type, self.seq, timestamp, self.ssrc)
            with contextlib.suppress(BlockingIOError):
                self.sock.sendto(packet + self.media.sip[0][0][0][:8], self.target)
            return
        if self.sip_keyframe_wanted:
            self.sip_keyframe_wanted, self.sip_frame = False, 0  # the recording starts with one
        frame = self.media.sip[self.sip_frame]
        self.sip_frame = (self.sip_frame + 1) % len(self.media.sip)
        for payload, marker in frame:
            self.seq = (self.seq + 1) & 0xFFFF
            second = (0x80 if marker else 0) | w.sip.payload_type
            packet = _HEADER.pack(0x80, second, self.seq, timestamp, self.ssrc) + payload
            with contextlib.suppress(BlockingIOError):  # a full buffer drops it, as RTP may
                self.sock.sendto(packet, self.target)
        self.down.record(tick, now, in_window)

    def sip_readable(self, load: Load) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, OSError):
                return
            if len(data) < 12 or 192 <= data[1] <= 223:
                self.sip_keyframe_wanted |= asks_keyframe(data)
                continue
            timestamp = int.from_bytes(data[4:8], "big")
            self.at_sip.arrive(timestamp, bool(data[1] & 0x80), time.monotonic(), load.window)


# --- the gateway side (child process) -------------------------------------------------------


def _gateway_main(workload: Workload, conn: Connection) -> None:
    os.dup2(2, 1)  # stdout is the parent's JSON
    sys.stdout = sys.stderr
    from gateway.log import configure_logging

    configure_logging("warning", stream=sys.stderr)
    asyncio.run(_gateway(workload, conn))
    conn.close()


class _SipSide:
    """A SIP call's media as ``MediaLinker`` takes it (``bridges.base`` participants)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def media(self, kind: str) -> Any:
        return self.stream if kind == self.stream.kind else None


async def _gateway(workload: Workload, conn: Connection) -> None:
    import gc

    from gateway.media.negotiation import NegotiatedCodec
    from gateway.media.router import Router
    from gateway.media.rtp_transport import RtpPortAllocator
    from gateway.media.stream import MediaStream
    from gateway.settings import WebRtcSettings
    from gateway.webrtc import WebRtcLeg
    from gateway.webrtc.links import MediaLinker
    from mediacodecs.executor import MediaExecutor
    from mediacodecs.transcode import AudioTranscoder, VideoTranscoder

    def negotiated(codec: Codec) -> NegotiatedCodec:
        return NegotiatedCodec(
            codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.fmtp
        )

    sip_codec, browser_codec = negotiated(workload.sip), negotiated(workload.browser)
    if workload.sip.name != workload.browser.name:  # a daemon has the codecs loaded already
        for source, sink in ((sip_codec, browser_codec), (browser_codec, sip_codec)):
            warm = (
                VideoTranscoder(source, sink, 640, 480)
                if workload.kind == "video"
                else AudioTranscoder(source, sink)
            )
            warm.close()
    gc.collect()
    loop = asyncio.get_running_loop()
    settings = WebRtcSettings(max_legs=100000, connect_timeout=120)
    executor = MediaExecutor()
    router = Router(executor)
    linker = MediaLinker(router)
    allocator = RtpPortAllocator(*PORTS)
    calls: list[tuple[WebRtcLeg, MediaStream, Any]] = []
    conn.send("idle")
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message[0] == "calls":  # [(browser offer, SIP phone port)] -> [(answer, stream port)]
            made: list[tuple[WebRtcLeg, MediaStream]] = []
            replies: list[tuple[str, int]] = []
            for offer, phone_port in message[1]:
                leg = WebRtcLeg(settings, slots=(workload.kind,))
                answer = await leg.accept_offer(offer)
                stream = await MediaStream.open(allocator, "127.0.0.1", workload.kind)
                start_plain(stream, workload.kind, sip_codec, phone_port)
                made.append((leg, stream))
                replies.append((answer, stream.port))
            conn.send(replies)
            await asyncio.wait_for(asyncio.gather(*(leg.connected.wait() for leg, _ in made)), 60)
            for leg, stream in made:
                calls.append((leg, stream, linker(leg, _SipSide(stream))))
            conn.send("connected")
        elif message[0] == "stats":
            totals = route_totals(router, [stream for _leg, stream, _undo in calls])
            totals.update(executor_evictions=executor.dropped, executor_jobs=executor.completed)
            conn.send(dict(totals))
        elif message[0] == "stop":
            for leg, stream, undo in calls:
                undo()
                stream.close()
                await leg.close()
            router.close()
            executor.shutdown(wait=True)
            conn.send("stopped")
            return


# --- the load (this process) ----------------------------------------------------------------


def _media(workload: Workload) -> Media:
    if workload.kind == "video":
        frames = 3 * VIDEO_FPS
        return Media(_video_ticks(workload.browser, frames), _video_ticks(workload.sip, frames))
    browser = _audio_ticks(workload.browser, 5.0)
    sip = browser if workload.sip == workload.browser else _audio_ticks(workload.sip, 5.0)
    return Media(browser, sip)


class Load:
    """The browsers and phones of one run, the feeder, and the gateway child."""

    def __init__(self, workload: Workload, media: Media, conn: Connection) -> None:
        self.workload = workload
        self.media = media
        self.conn = conn
        self.calls: list[Call] = []
        self.probes: list[Call] = []
        self.window = (float("inf"), float("inf"))  # send times that count
        slots = max(1, round(workload.interval / SLOT))
        self.slots: list[list[Call]] = [[] for _ in range(slots)]
        self._next_slot = 0
        self.lags: list[float] = []
        self.measuring = False

    async def _ask(self, message: Any, timeout: float = 120) -> Any:
        self.conn.send(message)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.conn.poll, timeout):
            raise TimeoutError(f"the gateway child did not answer {message[0]!r}")
        return self.conn.recv()

    async def add(self, count: int, *, probe: bool = False) -> list[Call]:
        """Set up ``count`` calls; they start sending once connected (a probe's phone at once)."""
        from gateway.media.rtp_source import MIN_SEQUENTIAL

        w = self.workload
        loop = asyncio.get_running_loop()
        made: list[Call] = []
        for _ in range(count):
            index = len(self.calls) + len(self.probes) + len(made)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            call = Call(Browser((w.kind,), codecs={w.kind: w.browser.name}), sock, w, self.media,
                        ssrc=0x20000 + index)  # fmt: skip
            call.browser.on_packet = self._heard(call)
            if w.kind == "audio":  # somewhere else in the recording, as calls are
                call.browser_frame = (7 * index) % len(self.media.browser)
                call.sip_frame = (11 * index) % len(self.media.sip)
            call.priming = MIN_SEQUENTIAL - 1
            call.counted = not probe
            loop.add_reader(sock.fileno(), call.sip_readable, self)
            made.append(call)
        offers = []
        for call in made:
            call.offered_at = time.monotonic()
            offers.append((await call.browser.offer(), call.sock.getsockname()[1]))
        replies: list[tuple[str, int]] = await self._ask(("calls", offers))
        for call, (answer, port) in zip(made, replies, strict=True):
            call.target = ("127.0.0.1", port)
            if probe:  # the phone sends from the 200 OK on; the browser once connected
                self._schedule(call)
            await call.browser.accept_answer(answer)
        if (await self._wait_connected()) != "connected":
            raise RuntimeError("the gateway child did not connect the calls")
        for call in made:
            if not probe:
                self._schedule(call)
        (self.probes if probe else self.calls).extend(made)
        return made

    async def _wait_connected(self) -> Any:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.conn.poll, 120):
            raise TimeoutError("the gateway child did not connect the calls")
        return self.conn.recv()

    def _schedule(self, call: Call) -> None:
        self.slots[self._next_slot].append(call)
        self._next_slot = (self._next_slot + 1) % len(self.slots)

    def _heard(self, call: Call) -> Any:
        def heard(_kind: str, packet: RtpPacket) -> None:
            heard = call.at_browser
            heard.arrive(packet.timestamp, bool(packet.marker), time.monotonic(), self.window)
            if heard.first_at is not None:
                call.heard_first.set()

        return heard

    async def feed(self, stop: asyncio.Event) -> None:
        """Each call's next interval in its slot, on time (one timer for all)."""
        slot_time = self.workload.interval / len(self.slots)
        next_at, slot = time.monotonic(), 0
        while not stop.is_set():
            now = time.monotonic()
            while next_at <= now:
                if self.measuring:
                    self.lags.append(now - next_at)
                in_window = self.window[0] <= now < self.window[1]
                for call in self.slots[slot]:
                    call.send(now, in_window and call.counted)
                slot = (slot + 1) % len(self.slots)
                next_at += slot_time
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for call in self.calls + self.probes:
            loop.remove_reader(call.sock.fileno())
            call.sock.close()
            await call.browser.pc.close()


@dataclass
class Point:
    """One run of one workload."""

    calls: int
    cpu_pct: float
    peers_cpu_pct: float
    feeder_lag_p99_ms: float
    rss_idle: int
    rss_loaded: int
    directions: dict[str, dict[str, Any]]
    latency_ms: dict[str, float]
    first_media_ms: list[float]
    probes_failed: int
    gateway: dict[str, Any]
    interval: float

    @property
    def valid(self) -> bool:
        """The load kept its schedule (99 % of its slots within one interval), 99 % of the
        packets arrived on time and < 1 % of codec jobs were evicted (else the host, or a
        saturated gateway, is what was measured)."""
        on_schedule = self.feeder_lag_p99_ms < 1000 * self.interval
        return on_schedule and self.on_time >= MIN_ON_TIME and self.evicted < 1 - MIN_ON_TIME

    @property
    def evicted(self) -> float:
        """Share of codec jobs the executor dropped (the frame is concealed or skipped)."""
        evictions = self.gateway.get("executor_evictions", 0)
        jobs = self.gateway.get("executor_jobs", 0) + evictions
        return evictions / jobs if jobs else 0.0

    @property
    def calls_per_core(self) -> float:
        return self.calls / max(self.cpu_pct / 100, 1e-9)

    @property
    def on_time(self) -> float:
        return float(min(d["on_time_ratio"] for d in self.directions.values()))


def _direction(calls: list[Call], up: bool) -> tuple[dict[str, Any], list[float]]:
    sent = sum((c.up if up else c.down).window_sent for c in calls)
    heard = [c.at_sip if up else c.at_browser for c in calls]
    on_time = sum(h.on_time for h in heard)
    latencies = [x for h in heard for x in h.latencies]
    summary = {
        "sent": sent,
        "delivered": len(latencies),
        "on_time": on_time,
        "on_time_ratio": round(on_time / sent, 4) if sent else 0.0,
        "unmatched": sum(h.unmatched for h in heard),
        "calls_silent": sum(1 for h in heard if not h.latencies),
    }
    return summary, latencies


async def run_point(
    workload: Workload,
    media: Media,
    calls: int,
    *,
    warmup: float,
    window: float,
    probes: int,
    profile: Path | None = None,
) -> Point:
    context = multiprocessing.get_context("spawn")  # aiortc and codec threads here: no fork
    conn, child_conn = context.Pipe()
    child = context.Process(target=_gateway_main, args=(workload, child_conn), daemon=True)
    child.start()
    child_conn.close()
    assert child.pid is not None
    pid = child.pid
    load = Load(workload, media, conn)
    stop = asyncio.Event()
    feeder: asyncio.Future[None] | None = None
    spy = None
    try:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, conn.poll, 90):
            raise TimeoutError("the gateway child did not start")
        if conn.recv() != "idle":
            raise RuntimeError("unexpected message from the gateway child")
        rss_idle = rss_bytes(pid)
        feeder = asyncio.ensure_future(load.feed(stop))
        for start in range(0, calls, BATCH):
            await load.add(min(BATCH, calls - start))
        log(f"{BENCH}: {workload.name}: {calls} calls connected")
        await asyncio.sleep(warmup)
        w0 = time.monotonic()
        load.window = (w0, w0 + window - DRAIN)
        load.measuring = True
        cpu_start, own_start = cpu_seconds(pid), cpu_seconds(os.getpid())
        if profile is not None:
            spy = _spy(pid, profile, window)
        await asyncio.sleep(window)
        elapsed = time.monotonic() - w0
        cpu = 100 * (cpu_seconds(pid) - cpu_start) / elapsed
        peers_cpu = 100 * (cpu_seconds(os.getpid()) - own_start) / elapsed
        load.measuring = False
        rss_loaded = rss_bytes(pid)
        if spy is not None:
            _stop(spy)
            spy = None
        first_media: list[float] = []
        failed = 0
        for _ in range(probes):
            (probe,) = await load.add(1, probe=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.heard_first.wait(), 5)
            if probe.at_browser.first_at is None:
                failed += 1
            else:
                first_media.append(1000 * (probe.at_browser.first_at - probe.offered_at))
        gateway = await load._ask(("stats",), 30)
        up, up_latencies = _direction(load.calls, True)
        down, down_latencies = _direction(load.calls, False)
        latency_ms: dict[str, float] = {}
        for name, values in (("all", up_latencies + down_latencies),
                             ("to_sip", up_latencies), ("to_browser", down_latencies)):  # fmt: skip
            if values:  # a negative minimum would mean the first arrival was not the first sent
                latency_ms[f"{name}_min"] = round(1000 * min(values), 2)
                for q in (50, 95, 99):
                    latency_ms[f"{name}_p{q}"] = round(1000 * percentile(values, q), 2)
        return Point(
            calls=calls,
            cpu_pct=cpu,
            peers_cpu_pct=peers_cpu,
            feeder_lag_p99_ms=1000 * percentile(load.lags, 99) if load.lags else 0.0,
            rss_idle=rss_idle,
            rss_loaded=rss_loaded,
            directions={"to_sip": up, "to_browser": down},
            latency_ms=latency_ms,
            first_media_ms=first_media,
            probes_failed=failed,
            gateway=gateway,
            interval=workload.interval,
        )
    finally:
        stop.set()
        if feeder is not None:
            await feeder
        if spy is not None:
            _stop(spy)
        with contextlib.suppress(OSError, ValueError, EOFError, TimeoutError):
            await load._ask(("stop",), 30)
        await load.close()
        child.join(15)
        if child.is_alive():
            child.terminate()
            child.join(5)
        conn.close()


def _emit_point(workload: Workload, point: Point, run: str) -> None:
    prefix = workload.metric
    common: dict[str, Any] = {"calls": point.calls, "run": run}
    main_extra: dict[str, Any] = {
        "goal": workload.goal,
        "valid": point.valid,  # False: the load fell behind, packets late or jobs evicted
        "evicted_pct": round(100 * point.evicted, 2),
        "cpu_pct": round(point.cpu_pct, 2),
        "peers_cpu_pct": round(point.peers_cpu_pct, 1),
        "feeder_lag_p99_ms": round(point.feeder_lag_p99_ms, 1),
        "on_time_ratio": point.on_time,
        "directions": point.directions,
        "gateway": point.gateway,
    }
    metric = f"{prefix}_calls_per_core"
    value = point.calls_per_core
    peers = PEERS.get(workload.name, [])
    if not peers:
        emit(BENCH, metric, value, "calls/core", **common, **main_extra)
    for index, (name, description, file_prefix, anchor_name, n) in enumerate(peers):
        peer_value = _peer_calls_per_core(file_prefix, anchor_name, f"{name}_cpu_per_call", n)
        emit(BENCH, metric if index == 0 else f"{metric}_vs_{name}", value, "calls/core",
             peer=description, peer_value=peer_value, **common, **main_extra)  # fmt: skip
    emit(BENCH, f"{prefix}_on_time_ratio", point.on_time, "ratio", **common,
         late_ms=round(1000 * workload.late), directions=point.directions)  # fmt: skip
    for q in ("p50", "p95"):
        emit(BENCH, f"{prefix}_added_latency_{q}", point.latency_ms.get(f"all_{q}", -1.0), "ms",
             **common, latency_ms=point.latency_ms)  # fmt: skip
    emit(BENCH, f"{prefix}_rss_per_call", (point.rss_loaded - point.rss_idle) / point.calls / 1024,
         "KiB/call", **common, rss_idle_mib=round(point.rss_idle / 2**20, 1),
         rss_loaded_mib=round(point.rss_loaded / 2**20, 1))  # fmt: skip
    what = "audio" if workload.kind == "audio" else "video_frame"
    for quantile in (50, 95):
        first = percentile(point.first_media_ms, quantile) if point.first_media_ms else -1.0
        emit(BENCH, f"{prefix}_offer_to_first_remote_{what}_p{quantile}", first, "ms", **common,
             probes=len(point.first_media_ms), probes_failed=point.probes_failed,
             values_ms=[round(x, 1) for x in point.first_media_ms])  # fmt: skip


def _report_profile(name: str, directory: Path) -> None:
    files = sorted(directory.glob("*.txt"), key=lambda p: p.stat().st_mtime)
    if not files:
        log(f"{BENCH}: no profile for {name}")
        return
    latest = files[-1].rename(directory / f"{BENCH}_{name}.collapsed")
    own, inclusive = hot_spots(latest, top=25)
    lines = [f"== {name}: self time (% of samples)"]
    lines += [f"{share:6.1f}  {frame}" for frame, share in own]
    lines += [f"== {name}: inclusive"]
    lines += [f"{share:6.1f}  {frame}" for frame, share in inclusive]
    (directory / f"{BENCH}_{name}.top.txt").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bridge_media")
    parser.add_argument("--quick", action="store_true", help="< 60 s smoke run")
    parser.add_argument("--only", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--passthrough-calls", type=int, default=100)
    parser.add_argument("--transcode-calls", type=int, default=50)
    parser.add_argument("--video-calls", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=10, help="calls timed to first media")
    parser.add_argument("--run", default="1", help="label put in every line")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway into DIR")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.window, args.probes = 1.0, 3.0, 2
        args.passthrough_calls = args.transcode_calls = args.video_calls = 2
    by_name = {w.name: w for w in WORKLOADS}
    for name in args.only.split(","):
        workload = by_name[name]
        calls = getattr(args, f"{name}_calls")
        log(f"{BENCH}: {name}: encoding the media")
        media = _media(workload)
        point = asyncio.run(
            run_point(workload, media, calls, warmup=args.warmup, window=args.window,
                      probes=args.probes, profile=args.profile)
        )  # fmt: skip
        log(f"{BENCH}: {name}: {calls} calls, gateway {point.cpu_pct:.1f} % of a core, "
            f"peers {point.peers_cpu_pct:.1f} %, on time {point.on_time}, "
            f"load lag p99 {point.feeder_lag_p99_ms:.1f} ms, valid {point.valid}")  # fmt: skip
        if args.profile is not None:
            _report_profile(name, args.profile)
        _emit_point(workload, point, args.run)
