"""``python -m bench media_router``: calls through the real ``Router`` and ``MediaStream``s.

Each figure runs a gateway child process: ``N`` calls, each two
``MediaStream``s on loopback joined by ``Router.connect`` (so RTP sockets,
latching, the RTP session's rewrite, RTCP timers, and for transcoding the
``MediaExecutor``), nothing else. This process is the load generator: per
call a socket for side A and one for side B, each sending 20 ms packets
(video: 15 frames/s) of payloads encoded once before the run, paced, with
the calls spread over the packet interval as real calls are. Both sockets
receive what the gateway sends to them, so both directions are checked.

* CPU: the gateway child's utime + stime (every thread) over a steady
  window; "legs per core" is calls / (CPU fraction). A leg here is one call
  through the gateway, both directions (two ``MediaStream``s), which is
  what the rtpengine anchor counts "per call".
* On time and loss: every packet's send time is kept by (sequence number;
  video: frame timestamp); the gateway keeps the source's numbering up to a
  constant offset (the sink's session rewrites it; transcoding emits one
  payload per payload in, the video encoder keeps frame times), so what
  comes out is matched to what went in. A packet sent in the window counts
  as delivered if it arrives within ``LATE`` (60 ms passthrough, 100 ms
  transcoded audio, 300 ms video); loss = 1 - delivered / sent. The
  sender's first packet is one RTP probation discards (RFC 3550 A.1), so
  numbering lines up from the first packet that counts; video senders
  answer PLI with the recording's keyframe.
* Capacity: the load is ramped; the highest number of calls with < 1 %
  loss is reported (the generator's own lag is checked, so a saturated
  generator is not mistaken for a saturated gateway).
* Added latency: arrival after the gateway minus sending, p50/p99, at a
  moderate load (the figure's calls).
* Memory: the gateway's RSS with the calls flowing minus its RSS before any
  stream was opened (codec libraries already loaded), divided by calls.

Workloads: Opus <-> PCMU transcoded audio, PCMU passthrough audio, VP8 <->
H.264 640x480 at 15 fps. The host has 2 shared cores and the generator
runs on them too: its CPU is printed next to the gateway's.

``--quick`` is a ~1 minute smoke run; ``--profile DIR`` samples the
gateway with py-spy during the window instead and prints its hot spots.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import emit, log, percentile
from bench._load import anchor, cpu_seconds, rss_bytes

if TYPE_CHECKING:  # the gateway's modules load in the gateway's child process only
    from gateway.media.negotiation import NegotiatedCodec
    from gateway.media.router import Router
    from gateway.media.stream import MediaStream

BENCH = "media_router"
PTIME = 0.02
VIDEO_FPS = 15
WIDTH, HEIGHT = 640, 480
RING = 1024  # send times kept per leg: 20 s of audio, 68 s of video
SLOT = 0.001  # the generator's send granularity
DRAIN = 0.3  # s at the end of the window: only receiving is counted
MAX_LOSS = 0.01
#: Seconds after sending past which a packet counts as lost: passthrough three
#: packets of jitter; transcoded audio adds the router's jitter buffer (20 ms at
#: least) and the 8 -> 48 kHz framing (one packet); video, frames of 66 ms.
LATE = {"passthrough": 0.06, "transcode": 0.1, "video": 0.3}
PORTS = (21000, 29999)  # the gateway's RTP range (below the ephemeral ports the generator takes)
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class Codec:
    """One codec as both ends of a stream agree on it."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None


OPUS = Codec(111, "opus", 48000, 2, "useinbandfec=1")
PCMU = Codec(0, "PCMU", 8000)
VP8 = Codec(96, "VP8", 90000)
H264 = Codec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")


@dataclass(frozen=True)
class GatewaySpec:
    """What the gateway child sets up."""

    kind: str
    codec_a: Codec
    codec_b: Codec
    calls: int
    workers: int | None = None
    opus_complexity: int | None = None  # None: the codec's default


# --- the gateway side (child process) -------------------------------------------------------


def start_plain(stream: MediaStream, kind: str, codec: NegotiatedCodec, port: int) -> None:
    """Start ``stream`` as a SIP peer's plain RTP would run: ``codec`` to ``port`` on
    loopback, rtcp-mux, no SRTP, no RTP timeout."""
    from gateway.media.capabilities import SrtpPolicy
    from gateway.media.negotiation import NegotiatedStream
    from gateway.media.sdp_attributes import Direction

    stream.start(
        NegotiatedStream(
            index=0,
            kind=kind,
            proto="RTP/AVP",
            accepted=True,
            codecs=(codec,),
            remote_address="127.0.0.1",
            remote_port=port,
            direction=Direction.SENDRECV,
            rtcp_mux=True,
            local_port=stream.port,
        ),
        SrtpPolicy.OFF,
        rtp_timeout=None,
    )


def route_totals(router: Router, streams: Iterable[MediaStream]) -> Counter[str]:
    """What the router's routes did with the packets, and what the streams' sockets
    dropped, summed over all of them."""
    totals: Counter[str] = Counter()
    for route in router.routes():
        stats = route.stats
        totals.update(
            forwarded=stats.forwarded,
            transcoded_in=stats.transcoded_in,
            transcoded_out=stats.transcoded_out,
            dropped=stats.dropped,
            late=route.late,
            concealed=stats.concealed,
            keyframe_requests=stats.keyframe_requests,
        )
    for stream in streams:
        totals.update(
            send_drops=stream.endpoint.stats.send_drops,
            queue_drops=stream.endpoint.stats.queue_drops,
        )
    return totals


def _gateway_main(spec: GatewaySpec, conn: Connection) -> None:
    """Entry of the gateway child: set up, report, relay until told to stop."""
    import asyncio

    from gateway.log import configure_logging

    os.dup2(2, 1)  # stdout is the parent's JSON
    sys.stdout = sys.stderr
    configure_logging("warning", stream=sys.stderr)
    asyncio.run(_gateway(spec, conn))
    conn.close()


async def _gateway(spec: GatewaySpec, conn: Connection) -> None:
    import asyncio
    import gc

    from gateway.media.negotiation import NegotiatedCodec
    from gateway.media.router import Router
    from gateway.media.rtp_transport import RtpPortAllocator
    from gateway.media.stream import MediaStream
    from mediacodecs.executor import MediaExecutor
    from mediacodecs.transcode import AudioTranscoder, VideoTranscoder

    def negotiated(codec: Codec) -> NegotiatedCodec:
        return NegotiatedCodec(
            codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.fmtp
        )

    codec_a, codec_b = negotiated(spec.codec_a), negotiated(spec.codec_b)
    executor = MediaExecutor(spec.workers)  # the daemon's bounds: per stream
    # Load the codec libraries before measuring idle memory: a daemon has them after its first call.
    if spec.codec_a.name != spec.codec_b.name:
        for source, sink in ((codec_a, codec_b), (codec_b, codec_a)):
            warm = (
                VideoTranscoder(source, sink, WIDTH, HEIGHT)
                if spec.kind == "video"
                else AudioTranscoder(source, sink)
            )
            warm.close()
    gc.collect()
    conn.send("idle")
    allocator = RtpPortAllocator(*PORTS)
    router = Router(executor, opus_complexity=spec.opus_complexity)
    pairs: list[tuple[MediaStream, MediaStream]] = []
    for _ in range(spec.calls):
        a = await MediaStream.open(allocator, "127.0.0.1", spec.kind)
        b = await MediaStream.open(allocator, "127.0.0.1", spec.kind)
        pairs.append((a, b))
    conn.send([(a.port, b.port) for a, b in pairs])
    peers: list[tuple[int, int]] = conn.recv()
    for (a, b), (port_a, port_b) in zip(pairs, peers, strict=True):
        for stream, codec, port in ((a, codec_a, port_a), (b, codec_b, port_b)):
            start_plain(stream, spec.kind, codec, port)
        router.connect(a, b)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, conn.recv) == "stats":
        totals = route_totals(router, [stream for pair in pairs for stream in pair])
        totals.update(queue_evictions=executor.dropped, jobs=executor.completed)
        totals.update(loop_wakeups=router.loop_wakeups)
        conn.send({**totals, "per_key": executor.per_key, "workers": executor.workers})
    router.close()
    for a, b in pairs:
        a.close()
        b.close()
    await asyncio.sleep(0.05)  # let the transports close and free their ports
    executor.shutdown(wait=True)


# --- the load generator (this process) ------------------------------------------------------


def asks_keyframe(data: bytes) -> bool:
    """Whether muxed RTCP ``data`` holds a PLI (PSFB, FMT 1) or FIR (PSFB, FMT 4) anywhere in
    its compound packet (a PLI often follows a receiver report in the same datagram)."""
    offset = 0
    while offset + 4 <= len(data):
        if data[offset + 1] == 206 and data[offset] & 0x1F in (1, 4):
            return True
        offset += 4 * (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1)
    return False


@dataclass(slots=True, eq=False)
class _Leg:
    """One side of one call: sends to the gateway, receives the other side's packets."""

    sock: socket.socket
    target: tuple[str, int]
    ssrc: int
    payload_type: int
    ticks: list[list[tuple[bytes, bool]]]  # per interval: (payload, marker) packets
    ts_step: int
    video: bool
    direction: str
    priming: int = 0
    seq: int = 0
    tick: int = 0  # intervals sent: the RTP timestamp
    frame: int = 0  # where in the recording
    keyframe_wanted: bool = False
    first_key: int | None = None
    ring_key: list[int] = field(default_factory=lambda: [-1] * RING)
    ring_time: list[float] = field(default_factory=lambda: [0.0] * RING)
    window_sent: int = 0
    # receiving: what the gateway sends here comes from ``peer``
    peer: _Leg | None = None
    offset: int | None = None
    received: int = 0
    unmatched: int = 0
    on_time: int = 0
    latencies: list[float] = field(default_factory=list)

    def send(self, in_window: bool) -> None:
        timestamp = (self.tick * self.ts_step) & 0xFFFFFFFF
        if self.priming:
            # RTP probation (RFC 3550 A.1) drops a new source's first packets: send
            # those before the media, so the first frame (a keyframe) arrives whole.
            self.priming -= 1
            self.seq = (self.seq + 1) & 0xFFFF
            packet = _HEADER.pack(0x80, self.payload_type, self.seq, timestamp, self.ssrc)
            with contextlib.suppress(BlockingIOError):
                self.sock.sendto(packet + self.ticks[0][0][0][:8], self.target)
            return
        if self.keyframe_wanted:
            self.frame, self.keyframe_wanted = 0, False  # the recording starts with one
        frame = self.ticks[self.frame]
        self.frame = (self.frame + 1) % len(self.ticks)
        for index, (payload, marker) in enumerate(frame):
            self.seq = (self.seq + 1) & 0xFFFF
            second = (0x80 if marker else 0) | self.payload_type
            packet = _HEADER.pack(0x80, second, self.seq, timestamp, self.ssrc) + payload
            key = timestamp if self.video else self.seq
            if not self.video or index == len(frame) - 1:
                slot = (self.tick if self.video else self.seq) % RING
                self.ring_key[slot] = key
                self.ring_time[slot] = time.monotonic()
                if self.first_key is None:
                    self.first_key = key
                self.window_sent += in_window
            with contextlib.suppress(BlockingIOError):  # a full buffer drops it, as RTP may
                self.sock.sendto(packet, self.target)
        self.tick += 1

    def receive(self, data: bytes, now: float, window: tuple[float, float], late: float) -> None:
        if len(data) < 12 or 192 <= data[1] <= 223:
            # RTCP (muxed): reports; a PLI (PSFB, FMT 1) asks this side for a keyframe.
            self.keyframe_wanted |= asks_keyframe(data)
            return
        peer = self.peer
        assert peer is not None
        self.received += 1
        if self.video:
            if not data[1] & 0x80:
                return  # only a frame's last packet is timed
            key, modulo = int.from_bytes(data[4:8], "big"), 1 << 32
        else:
            key, modulo = (data[2] << 8) | data[3], 1 << 16
        if self.offset is None:
            if peer.first_key is None:
                self.unmatched += 1
                return
            self.offset = (key - peer.first_key) % modulo
        sent_key = (key - self.offset) % modulo
        slot = (sent_key // peer.ts_step if self.video else sent_key) % RING
        if peer.ring_key[slot] != sent_key:
            self.unmatched += 1
            return
        sent = peer.ring_time[slot]
        if window[0] <= sent < window[1]:
            latency = now - sent
            self.latencies.append(latency)
            self.on_time += latency <= late


@dataclass
class Point:
    """One run at one load."""

    calls: int
    cpu_pct: float
    gen_cpu_pct: float
    loss: float
    delivered: float
    latency_ms: dict[str, float]
    rss_idle: int
    rss_loaded: int
    gen_lag_ms: float
    stats: dict[str, Any]
    unmatched: int

    @property
    def legs_per_core(self) -> float:
        return self.calls / max(self.cpu_pct / 100, 1e-9)

    @property
    def rss_per_call_kib(self) -> float:
        return (self.rss_loaded - self.rss_idle) / self.calls / 1024

    @property
    def generator_ok(self) -> bool:
        """The generator kept its schedule (else the figure says nothing about the gateway):
        99 % of its send slots went out within one audio packet time."""
        return self.gen_lag_ms < 1000 * PTIME

    @property
    def evicted(self) -> float:
        """Share of codec jobs the executor dropped (concealed: not counted as lost packets)."""
        jobs = self.stats.get("jobs", 0) + self.stats.get("queue_evictions", 0)
        return self.stats.get("queue_evictions", 0) / jobs if jobs else 0.0

    @property
    def passed(self) -> bool:
        return self.loss < MAX_LOSS and self.evicted < MAX_LOSS and self.generator_ok

    def summary(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cpu_pct": round(self.cpu_pct, 1),
            "loss_pct": round(100 * self.loss, 2),
            "p99_ms": self.latency_ms.get("p99"),
            "gen_cpu_pct": round(self.gen_cpu_pct, 1),
            "gen_lag_ms": round(self.gen_lag_ms, 1),
            "evicted_pct": round(100 * self.evicted, 2),
        }


@dataclass(frozen=True)
class Media:
    """The pre-encoded payloads each side sends, and how it paces them."""

    kind: str
    codec_a: Codec
    codec_b: Codec
    ticks_a: list[list[tuple[bytes, bool]]]
    ticks_b: list[list[tuple[bytes, bool]]]
    interval: float
    late: float


def _audio_ticks(codec: Codec, seconds: float) -> list[list[tuple[bytes, bool]]]:
    from bench.media_codecs import _audio_payloads
    from mediacodecs.registry import CodecSpec

    spec = CodecSpec(codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    rate = 48000 if codec.name == "opus" else codec.clock_rate
    return [[(payload.data, False)] for payload in _audio_payloads(spec, rate, seconds)]


def _video_ticks(codec: Codec, frames: int) -> list[list[tuple[bytes, bool]]]:
    from bench.media_codecs import _video_payloads
    from mediacodecs.registry import CodecSpec

    spec = CodecSpec(codec.name, codec.clock_rate, codec.channels, codec.fmtp)
    ticks = [[(p.data, p.marker) for p in payloads] for payloads in _video_payloads(spec, frames)]
    if any(not tick for tick in ticks):
        raise RuntimeError(f"the {codec.name} encoder skipped a frame of the test pattern")
    return ticks


def _read_child(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError("the gateway child did not answer")
    return conn.recv()


def run_point(
    media: Media,
    calls: int,
    *,
    warmup: float,
    window: float,
    workers: int | None = None,
    opus_complexity: int | None = None,
    profile: Path | None = None,
) -> Point:
    """Run ``calls`` calls of ``media`` through a fresh gateway child."""
    from gateway.media.rtp_source import MIN_SEQUENTIAL

    spec = GatewaySpec(media.kind, media.codec_a, media.codec_b, calls, workers, opus_complexity)
    context = multiprocessing.get_context("spawn")  # this process has codec threads: no fork
    conn, child_conn = context.Pipe()
    child = context.Process(target=_gateway_main, args=(spec, child_conn), daemon=True)
    child.start()
    child_conn.close()
    assert child.pid is not None
    legs: list[_Leg] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        if _read_child(conn, 60) != "idle":
            raise RuntimeError("unexpected message from the gateway child")
        rss_idle = rss_bytes(child.pid)
        ports: list[tuple[int, int]] = _read_child(conn, 60)
        sides = ((media.codec_a, media.ticks_a, "ab"), (media.codec_b, media.ticks_b, "ba"))
        for index, call_ports in enumerate(ports):
            a, b = (
                _leg(
                    port,
                    ssrc=0x10000 + 2 * index + side,
                    codec=codec,
                    ticks=ticks,
                    ts_step=_ts_step(codec, media.interval),
                    direction=direction,
                )
                for side, (port, (codec, ticks, direction)) in enumerate(
                    zip(call_ports, sides, strict=True)
                )
            )
            a.peer, b.peer = b, a  # A hears what B sent, through the gateway
            if media.kind == "audio":  # start somewhere else in the recording, as calls do
                a.frame, b.frame = (7 * index) % len(a.ticks), (11 * index) % len(b.ticks)
            a.priming = b.priming = MIN_SEQUENTIAL - 1
            legs += [a, b]
        conn.send(
            [
                (legs[2 * i].sock.getsockname()[1], legs[2 * i + 1].sock.getsockname()[1])
                for i in range(calls)
            ]
        )
        if _read_child(conn, 60) != "ready":
            raise RuntimeError("unexpected message from the gateway child")
        result = _generate(legs, media, child.pid, warmup=warmup, window=window, profile=profile)
        rss_loaded = rss_bytes(child.pid)
        conn.send("stats")
        stats: dict[str, Any] = _read_child(conn, 30)
        spy = result.pop("spy", None)
        if spy is not None:
            _stop(spy)  # before the child goes, so the profile is written
            spy = None
        latencies = [latency for leg in legs for latency in leg.latencies]
        per_direction = {
            direction: [
                x
                for leg in legs
                if leg.peer and leg.peer.direction == direction
                for x in leg.latencies
            ]
            for direction in ("ab", "ba")
        }
        sent = sum(leg.window_sent for leg in legs)
        on_time = sum(leg.on_time for leg in legs)
        latency_ms: dict[str, float] = {}
        if latencies:
            latency_ms = {
                "p50": round(1000 * percentile(latencies, 50), 2),
                "p99": round(1000 * percentile(latencies, 99), 2),
                "max": round(1000 * max(latencies), 2),
            }
            for direction, values in per_direction.items():
                if values:
                    latency_ms[f"{direction}_p50"] = round(1000 * percentile(values, 50), 2)
                    latency_ms[f"{direction}_p99"] = round(1000 * percentile(values, 99), 2)
        return Point(
            calls=calls,
            cpu_pct=result["cpu_pct"],
            gen_cpu_pct=result["gen_cpu_pct"],
            loss=max(0.0, 1 - on_time / sent) if sent else 1.0,
            delivered=len(latencies) / sent if sent else 0.0,
            latency_ms=latency_ms,
            rss_idle=rss_idle,
            rss_loaded=rss_loaded,
            gen_lag_ms=result["gen_lag_ms"],
            stats=stats,
            unmatched=sum(leg.unmatched for leg in legs),
        )
    finally:
        with contextlib.suppress(OSError, ValueError):
            conn.send("stop")
        child.join(15)
        if child.is_alive():
            child.terminate()
            child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
        conn.close()
        for leg in legs:
            leg.sock.close()
        if spy is not None:
            _stop(spy)


def _ts_step(codec: Codec, interval: float) -> int:
    return round(codec.clock_rate * interval)


def _leg(
    port: int,
    *,
    ssrc: int,
    codec: Codec,
    ticks: list[list[tuple[bytes, bool]]],
    ts_step: int,
    direction: str,
) -> _Leg:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    video = codec.clock_rate == 90000
    return _Leg(
        sock, ("127.0.0.1", port), ssrc, codec.payload_type, ticks, ts_step, video, direction
    )


def _generate(
    legs: list[_Leg],
    media: Media,
    pid: int,
    *,
    warmup: float,
    window: float,
    profile: Path | None,
) -> dict[str, Any]:
    """Send and receive until the window is over; CPU of ``pid`` over the window."""
    slots_per_interval = max(1, round(media.interval / SLOT))
    slots: list[list[_Leg]] = [[] for _ in range(slots_per_interval)]
    for index, leg in enumerate(legs):
        slots[index % slots_per_interval].append(leg)
    slot_time = media.interval / slots_per_interval
    by_fd = {leg.sock.fileno(): leg for leg in legs}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    started = time.monotonic()
    w0, w1 = started + warmup, started + warmup + window
    counted = (w0, w1 - DRAIN)
    me = os.getpid()
    cpu_start = gen_start = 0.0
    measuring = False
    spy: subprocess.Popen[bytes] | None = None
    next_at, slot = started, 0
    lags: list[float] = []
    try:
        while True:
            now = time.monotonic()
            if now >= w1:
                break
            if not measuring and now >= w0:
                measuring = True
                cpu_start, gen_start, w0 = cpu_seconds(pid), cpu_seconds(me), now
                if profile is not None:
                    spy = _spy(pid, profile, window)
            while next_at <= now:
                if measuring:
                    lags.append(now - next_at)
                in_window = counted[0] <= now < counted[1]
                for leg in slots[slot]:
                    leg.send(in_window)
                slot = (slot + 1) % slots_per_interval
                next_at += slot_time
            for fd, _event in poller.poll(max(0.0, next_at - time.monotonic())):
                leg = by_fd[fd]
                while True:
                    try:
                        data = leg.sock.recv(4096)
                    except BlockingIOError:
                        break
                    leg.receive(data, time.monotonic(), counted, media.late)
        elapsed = time.monotonic() - w0
        result: dict[str, Any] = {
            "cpu_pct": 100 * (cpu_seconds(pid) - cpu_start) / elapsed,
            "gen_cpu_pct": 100 * (cpu_seconds(me) - gen_start) / elapsed,
            "gen_lag_ms": 1000 * percentile(lags, 99) if lags else 0.0,
        }
        if spy is not None:
            result["spy"], spy = spy, None
        return result
    finally:
        poller.close()
        if spy is not None:
            _stop(spy)


# --- profiling ------------------------------------------------------------------------------


def _spy(pid: int, directory: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` (every thread) into DIRECTORY/<pid>.txt as collapsed stacks."""
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        log("media_router: py-spy not found, no profile")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    duration = str(max(1, int(seconds) - 1))
    output = str(directory / f"{pid}.txt")
    command = [found, "record", "--pid", str(pid), "--duration", duration, "--rate", "200"]
    command += ["--format", "raw", "--output", output]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def hot_spots(path: Path, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self, inclusive) share of samples per function in a py-spy raw profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = 100 / max(total, 1)
    return (
        [(frame, round(count * share, 1)) for frame, count in own.most_common(top)],
        [(frame, round(count * share, 1)) for frame, count in inclusive.most_common(top)],
    )


# --- the workloads --------------------------------------------------------------------------


@dataclass
class Budget:
    """Wall-clock left for the whole benchmark."""

    deadline: float

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds < self.deadline


@dataclass(frozen=True)
class Settings:
    warmup: float
    window: float
    ramp_window: float
    calls: dict[str, int]  # per workload: the calls of the main figures
    ramp: dict[str, list[int]]
    profile: Path | None
    run: str
    opus_complexity: int | None = None


@dataclass(frozen=True)
class Workload:
    """One row of the table: what is sent, what it is compared with, what is emitted."""

    name: str  # as ``--only`` names it
    metric: str  # prefix of the metric names
    media: Callable[[], Media]
    goal: float  # calls per core
    anchor: tuple[str, str] | None = None  # rtpengine anchor run, and how to describe it
    latency: bool = True  # emit the added latency (video frames are timed differently)
    ramp_from_main: bool = False  # the main point is the ramp's first step
    profiled: bool = True  # ``--profile`` samples it


def _audio_media(codec_a: Codec, codec_b: Codec) -> Media:
    seconds = 5.0
    mode = "passthrough" if codec_a == codec_b else "transcode"
    ticks_a = _audio_ticks(codec_a, seconds)
    ticks_b = ticks_a if codec_a == codec_b else _audio_ticks(codec_b, seconds)
    return Media("audio", codec_a, codec_b, ticks_a, ticks_b, PTIME, LATE[mode])


def _video_media() -> Media:
    frames = 3 * VIDEO_FPS
    ticks_a, ticks_b = _video_ticks(VP8, frames), _video_ticks(H264, frames)
    return Media("video", VP8, H264, ticks_a, ticks_b, 1 / VIDEO_FPS, LATE["video"])


WORKLOADS = (
    Workload(
        "transcode",
        "opus_g711",
        lambda: _audio_media(OPUS, PCMU),
        goal=100,
        anchor=(
            "rtpengine_transcode",
            "rtpengine-10.5 PCMU<->opus transcode (anchor run, 50 calls)",
        ),
    ),
    Workload(
        "passthrough",
        "passthrough",
        lambda: _audio_media(PCMU, PCMU),
        goal=300,
        anchor=("rtpengine_relay", "rtpengine-10.5 userspace relay (anchor run, 50 calls)"),
    ),
    Workload(
        "video",
        "vp8_h264",
        _video_media,
        goal=8,
        latency=False,
        ramp_from_main=True,
        profiled=False,
    ),
)


def _point_extra(point: Point) -> dict[str, Any]:
    return {
        "calls": point.calls,
        "valid": point.passed,  # False: loss, evictions or a late generator; rerun
        "cpu_pct": round(point.cpu_pct, 2),
        "loss_pct": round(100 * point.loss, 3),
        "evicted_pct": round(100 * point.evicted, 3),
        "gen_cpu_pct": round(point.gen_cpu_pct, 1),
        "gen_lag_ms": round(point.gen_lag_ms, 1),
        "latency_ms": point.latency_ms,
        "unmatched": point.unmatched,
        "gateway": point.stats,
    }


def _run(media: Media, calls: int, settings: Settings, window: float, **extra: Any) -> Point:
    return run_point(
        media,
        calls,
        warmup=settings.warmup,
        window=window,
        opus_complexity=settings.opus_complexity,
        **extra,
    )


def _ramp(
    name: str,
    media: Media,
    steps: list[int],
    *,
    settings: Settings,
    budget: Budget,
    first: Point | None,
) -> None:
    """Raise the calls until loss reaches 1 % (or the budget ends); emit the highest passing."""
    points: list[Point] = [first] if first is not None else []
    best = first if first is not None and first.passed else None
    failed: Point | None = None if first is None or first.passed else first
    for calls in steps:
        if failed is not None:
            break
        if not budget.allows(settings.ramp_window + 6 + calls * 0.01):
            log(f"media_router: {name}: out of time before {calls} calls")
            break
        point = _run(media, calls, settings, settings.ramp_window)
        log(f"media_router: {name} ramp {point.summary()}")
        if not point.passed and budget.allows(settings.ramp_window + 6 + calls * 0.01):
            points.append(point)  # the host is shared: a failed step gets a second try
            point = _run(media, calls, settings, settings.ramp_window)
            log(f"media_router: {name} ramp, again {point.summary()}")
        points.append(point)
        if point.passed:
            best = point
        else:
            failed = point
    emit(
        BENCH,
        f"{name}_max_calls_on_time",
        best.calls if best else 0,
        "calls",
        legs_per_core_there=round(best.legs_per_core, 1) if best else None,
        first_failing=failed.summary() if failed else None,
        limited_by=_limit(failed),
        steps=[point.summary() for point in points],
        run=settings.run,
    )


def _limit(failed: Point | None) -> str:
    if failed is None:
        return "ramp end or time budget"
    if not failed.generator_ok:
        return "host: the load generator fell behind (2 shared cores)"
    return "gateway: loss" if failed.loss >= MAX_LOSS else "gateway: codec jobs evicted"


def bench_workload(workload: Workload, settings: Settings, budget: Budget) -> None:
    """One workload's main figures (CPU per call, latency, memory), then its ramp."""
    media = workload.media()
    calls = settings.calls[workload.name]
    profile = settings.profile if workload.profiled else None
    point = _run(media, calls, settings, settings.window, profile=profile)
    log(f"media_router: {workload.name} {point.summary()}")
    if profile is not None:
        _report_profile(workload.name, profile)
        return
    prefix, run = workload.metric, settings.run
    peer: dict[str, Any] = {}
    if workload.anchor is not None:
        per_call = anchor(workload.anchor[0], "rtpengine_cpu_per_call", 50)
        if per_call:
            peer = {"peer": workload.anchor[1], "peer_value": round(100 / per_call, 1)}
    emit(
        BENCH,
        f"{prefix}_legs_per_core",
        point.legs_per_core,
        "calls/core",
        **peer,
        goal=workload.goal,
        streams_per_core=round(2 * point.legs_per_core, 1),
        opus_complexity=settings.opus_complexity,
        **_point_extra(point),
        run=run,
    )
    if workload.latency:
        for quantile in ("p50", "p99"):
            emit(
                BENCH,
                f"{prefix}_added_latency_{quantile}",
                point.latency_ms.get(quantile, -1),
                "ms",
                calls=calls,
                direction_ms=point.latency_ms,
                run=run,
            )
    emit(
        BENCH,
        f"{prefix}_rss_per_call",
        point.rss_per_call_kib,
        "KiB/call",
        calls=calls,
        rss_idle_mib=round(point.rss_idle / 2**20, 1),
        rss_loaded_mib=round(point.rss_loaded / 2**20, 1),
        run=run,
    )
    first = point if workload.ramp_from_main else None
    _ramp(
        prefix, media, settings.ramp[workload.name], settings=settings, budget=budget, first=first
    )


def _report_profile(name: str, directory: Path) -> None:
    files = sorted(directory.glob("*.txt"), key=lambda p: p.stat().st_mtime)
    if not files:
        log(f"media_router: no profile for {name}")
        return
    latest = files[-1].rename(directory / f"{name}.collapsed")
    own, inclusive = hot_spots(latest)
    lines = [f"== {name}: self time (% of samples)"]
    lines += [f"{share:6.1f}  {frame}" for frame, share in own]
    lines += [f"== {name}: inclusive"]
    lines += [f"{share:6.1f}  {frame}" for frame, share in inclusive]
    (directory / f"{name}.top.txt").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


def _steps(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str]) -> None:
    """Run the workloads (``--only`` some of them)."""
    parser = argparse.ArgumentParser(prog="python -m bench media_router")
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument("--only", default=",".join(w.name for w in WORKLOADS))
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0, help="s, the main figures")
    parser.add_argument("--ramp-window", type=float, default=4.0, help="s, each ramp step")
    parser.add_argument("--transcode-calls", type=int, default=25)
    parser.add_argument("--passthrough-calls", type=int, default=50)
    parser.add_argument("--video-calls", type=int, default=2)
    parser.add_argument("--ramp-transcode", default="30,40,50,60,70,85,100")
    parser.add_argument("--ramp-passthrough", default="100,150,200,250,300")
    parser.add_argument("--ramp-video", default="4,6,8,10")
    parser.add_argument("--opus-complexity", type=int, help="the router's (default: the codec's)")
    parser.add_argument("--budget", type=float, default=285.0, help="s for the whole run")
    parser.add_argument("--run", default="1", help="label put in every line")
    parser.add_argument("--profile", type=Path, help="py-spy the gateway into DIR instead")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.window, args.ramp_window, args.budget = 1.0, 4.0, 3.0, 75.0
        args.ramp_transcode, args.ramp_passthrough, args.ramp_video = "50", "150", "4"
    settings = Settings(
        warmup=args.warmup,
        window=args.window,
        ramp_window=args.ramp_window,
        calls={w.name: getattr(args, f"{w.name}_calls") for w in WORKLOADS},
        ramp={w.name: _steps(getattr(args, f"ramp_{w.name}")) for w in WORKLOADS},
        profile=args.profile,
        run=args.run,
        opus_complexity=args.opus_complexity,
    )
    budget = Budget(time.monotonic() + args.budget)
    by_name = {workload.name: workload for workload in WORKLOADS}
    for name in args.only.split(","):
        workload = by_name[name]
        if settings.profile is not None and not workload.profiled:
            continue
        log(f"media_router: {name}")
        bench_workload(workload, settings, budget)
