"""RTP forwarding cost per packet on one core.

Figures (packets/s on one core, best of ``--repeat`` timeit runs):
- ``rewrite_header``: the bare fast path (check lengths, copy, rewrite 12 octets);
- ``session_send``: ``RtpSession.send_rtp``, what a passthrough leg runs per packet
  (payload type map, source switch check, counters, rewrite);
- ``session_receive``: ``RtpSession.receive_rtp`` (A.1 validation, A.8 jitter);
- ``packet_parse_serialize``: our ``RtpPacket`` object path, for comparison.
The peer of each is aiortc's ``RtpPacket.parse`` + field changes + ``serialize``
on the same packet, the path this replaces.
"""

from __future__ import annotations

import argparse
import random
import timeit
from collections.abc import Callable

from aiortc.rtp import RtpPacket as AiortcRtpPacket

from bench import emit, log
from gateway.clock import FakeClock
from gateway.media.rtp import HeaderExtension, RtpPacket, rewrite_header
from gateway.media.rtp_session import RtpSession, RtpSessionConfig


def _rate(function: Callable[[], object], number: int, repeat: int) -> float:
    best = min(timeit.repeat(function, number=number, repeat=repeat))
    return number / best


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench rtp")
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--payload", type=int, default=160, help="payload octets (160: G.711 20 ms)"
    )
    args = parser.parse_args(argv)

    packet = RtpPacket(0, 1234, 160_000, 0x1111, bytes(args.payload))
    packet.set_header_extensions([HeaderExtension(1, b"\x8a")])  # as browsers send audio level
    data = bytes(packet)
    clock = FakeClock()
    config = RtpSessionConfig(clock_rate=8000, cname="bench", payload_map={0: 0})
    sender = RtpSession(config, clock=clock, rng=random.Random(1))
    receiver = RtpSession(config, clock=clock, rng=random.Random(2))
    state = {"seq": 0}

    def aiortc_path() -> bytes:
        parsed = AiortcRtpPacket.parse(data)
        parsed.sequence_number = 7
        parsed.timestamp = 9
        parsed.ssrc = 0x2222
        return parsed.serialize()

    def object_path() -> bytes:
        parsed = RtpPacket.parse(data)
        parsed.sequence_number = 7
        parsed.timestamp = 9
        parsed.ssrc = 0x2222
        return bytes(parsed)

    def bare() -> bytearray:
        return rewrite_header(
            data, payload_type=0, sequence_number=7, timestamp=9, ssrc=0x2222, marker=False
        )

    def send() -> bytearray | None:
        return sender.send_rtp(data, 1000.0)

    def receive() -> bool:
        # In-sequence numbers, so the A.1 path taken is the common one.
        state["seq"] = seq = (state["seq"] + 1) & 0xFFFF
        return receiver.receive_rtp(_with_seq(data, seq), 1000.0)

    peer = _rate(aiortc_path, args.number, args.repeat)
    log(f"aiortc parse+serialize: {peer:,.0f} packets/s")
    extra = {"payload_octets": args.payload}
    for metric, function in (
        ("rewrite_header", bare),
        ("session_send", send),
        ("packet_parse_serialize", object_path),
    ):
        rate = _rate(function, args.number, args.repeat)
        emit("rtp", metric, rate, "packets/s/core", peer="aiortc", peer_value=round(peer), **extra)
    # Building the packet with a new seq costs as much as receiving it: measure
    # both and report the difference.
    with_seq = _rate(lambda: _with_seq(data, 5), args.number, args.repeat)
    both = _rate(receive, args.number, args.repeat)
    receive_rate = 1 / (1 / both - 1 / with_seq)
    emit("rtp", "session_receive", receive_rate, "packets/s/core", **extra)


def _with_seq(data: bytes, seq: int) -> bytes:
    return data[:2] + seq.to_bytes(2, "big") + data[4:]
