"""Media plane: audio passthrough legs per core (RTP in, rewrite, RTP out).

The workload of the rtpengine relay anchor (shared/anchors): each call has
two legs, A and B; every 20 ms A sends a 160-byte PCMU packet and so does B;
the gateway relays A -> B and B -> A through two ``MediaStream``s (socket
pair, latching, RTP session with SSRC/sequence/timestamp rewrite, RTCP).
The relay runs in a child process whose CPU (utime + stime) is measured over
a steady window; the sender/receiver runs in this process and checks that
every leg receives ~50 packets/s.

The peer figure comes from shared/anchors/results (rtpengine 10.5 userspace
relay, measured on this machine by the same workload) when no rtpengine is
installed to run side by side.
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
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench import emit, log

ANCHOR_RESULTS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "results"
PACKET_INTERVAL = 0.02


def _relay_child(calls: int, conn: Connection) -> None:
    """Open ``calls`` relay pairs, report their ports, relay until told to stop."""
    from gateway.media.capabilities import SrtpPolicy
    from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
    from gateway.media.rtp_transport import RtpPortAllocator
    from gateway.media.sdp_attributes import Direction
    from gateway.media.stream import MediaStream

    async def main() -> None:
        allocator = RtpPortAllocator(40000, 40000 + calls * 4 + 100)
        pairs: list[tuple[MediaStream, MediaStream]] = []
        for _ in range(calls):
            a = await MediaStream.open(allocator, "127.0.0.1", "audio")
            b = await MediaStream.open(allocator, "127.0.0.1", "audio")
            a.on_rtp = lambda _s, data, _t, other=b: other.send_rtp(data)
            b.on_rtp = lambda _s, data, _t, other=a: other.send_rtp(data)
            pairs.append((a, b))
        conn.send([(a.port, b.port) for a, b in pairs])
        peers: list[tuple[int, int]] = conn.recv()  # the sender's ports per leg
        codec = NegotiatedCodec(0, "PCMU", 8000)
        for (a, b), (port_a, port_b) in zip(pairs, peers, strict=True):
            for stream, port in ((a, port_a), (b, port_b)):
                negotiated = NegotiatedStream(
                    index=0, kind="audio", proto="RTP/AVP", accepted=True, codecs=(codec,),
                    remote_address="127.0.0.1", remote_port=port, direction=Direction.SENDRECV,
                    rtcp_mux=True, local_port=stream.port,
                )  # fmt: skip
                stream.start(negotiated, SrtpPolicy.OFF, rtp_timeout=None)
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        for a, b in pairs:
            a.close()
            b.close()

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(calls: int, warmup: float, window: float) -> dict[str, float]:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_relay_child, args=(calls, child), daemon=True)
    proc.start()
    assert proc.pid is not None
    pid = proc.pid
    ports: list[tuple[int, int]] = parent.recv()
    legs: list[tuple[socket.socket, int]] = []
    for port_a, port_b in ports:
        for port in (port_a, port_b):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            legs.append((sock, port))
    parent.send([(legs[2 * i][0].getsockname()[1], legs[2 * i + 1][0].getsockname()[1])
                 for i in range(calls)])  # fmt: skip
    assert parent.recv() == "ready"
    payload = bytes([0xFF]) * 160
    received = [0] * len(legs)
    seq = 0
    started = time.monotonic()
    cpu_start = wall_start = None
    deadline = started + warmup + window
    next_tick = started
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if cpu_start is None and now >= started + warmup:
            cpu_start, wall_start = _cpu_seconds(pid), now
            received = [0] * len(legs)
        if now >= next_tick:
            seq = (seq + 1) & 0xFFFF
            for i, (sock, port) in enumerate(legs):
                header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1000 + i)
                with contextlib.suppress(BlockingIOError):  # a full buffer drops it, as RTP may
                    sock.sendto(header + payload, ("127.0.0.1", port))
            next_tick += PACKET_INTERVAL
        for i, (sock, _port) in enumerate(legs):
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                received[i] += 1
        time.sleep(max(0.0, min(0.002, next_tick - time.monotonic())))
    assert cpu_start is not None and wall_start is not None
    elapsed = time.monotonic() - wall_start
    cpu = 100 * (_cpu_seconds(pid) - cpu_start) / elapsed
    parent.send("stop")
    proc.join(10)
    for sock, _port in legs:
        sock.close()
    return {
        "cpu_pct": cpu,
        "rx_pps_per_leg_min": min(received) / elapsed,
        "rx_pps_per_leg_avg": sum(received) / len(received) / elapsed,
    }


def _anchor(metric: str, n: int) -> float | None:
    values = []
    for path in sorted(ANCHOR_RESULTS.glob("rtpengine_run*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            wanted = row.get("anchor") == "rtpengine_relay" and row.get("metric") == metric
            if wanted and int(row.get("n", 0)) == n:
                values.append(float(row["value"]))
    return sum(values) / len(values) if values else None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench media")
    parser.add_argument("--calls", default="10,50")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args(argv)
    for calls in (int(c) for c in args.calls.split(",")):
        result = _run(calls, args.warmup, args.window)
        log(f"{calls} relayed calls: {result}")
        per_call = result["cpu_pct"] / calls
        peer = _anchor("rtpengine_cpu_per_call", calls)
        emit("media", "passthrough_cpu_per_call", per_call, "%core/call",
             peer="rtpengine-10.5-relay (anchor run)" if peer else None, peer_value=peer,
             calls=calls, rx_pps_per_leg_min=round(result["rx_pps_per_leg_min"], 1))  # fmt: skip
        emit("media", "passthrough_calls_per_core", 100 / per_call, "calls/core",
             peer="rtpengine-10.5-relay (anchor run)" if peer else None,
             peer_value=round(100 / peer, 1) if peer else None, calls=calls)  # fmt: skip
