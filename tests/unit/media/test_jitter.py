"""The jitter buffer, driven by a FakeClock: no sleeps, every time chosen by the test."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.media.jitter import Conceal, Frame, JitterBuffer
from gateway.metrics import REGISTRY

RATE = 8000
TICKS = 160  # 20 ms at 8 kHz
START = 1000.0  # FakeClock's default start


@dataclass(frozen=True)
class Sent:
    arrival: float
    seq: int
    ts: int
    payload: bytes
    marker: bool = False


def audio(count: int, *, seq0: int = 0, ts0: int = 0, t0: float = START) -> list[Sent]:
    """``count`` 20 ms packets arriving exactly on time."""
    return [
        Sent(t0 + i * 0.02, (seq0 + i) & 0xFFFF, (ts0 + i * TICKS) & 0xFFFFFFFF, b"p%d" % i)
        for i in range(count)
    ]


Item = Frame | Conceal


def play(buffer: JitterBuffer, clock: FakeClock, packets: list[Sent]) -> list[tuple[float, Item]]:
    """Push each packet at its arrival time and pop at every deadline, like a transport."""
    out: list[tuple[float, Item]] = []

    def drain(until: float) -> None:
        while True:
            while (item := buffer.pop(clock.monotonic())) is not None:
                out.append((clock.monotonic(), item))
            deadline = buffer.next_deadline()
            if deadline is None or deadline > until:
                return
            clock.set(max(deadline, clock.monotonic()))

    for packet in sorted(packets, key=lambda p: p.arrival):
        drain(packet.arrival)
        clock.set(max(packet.arrival, clock.monotonic()))
        buffer.push(packet.seq, packet.ts, packet.payload, packet.arrival, packet.marker)
    drain(clock.monotonic() + 5.0)
    return out


def frames(out: list[tuple[float, Item]]) -> list[int]:
    return [item.sequence for _, item in out if isinstance(item, Frame)]


def conceals(out: list[tuple[float, Item]]) -> list[Conceal]:
    return [item for _, item in out if isinstance(item, Conceal)]


def queue_drops() -> float:
    return REGISTRY.get_sample_value("gatewayd_media_queue_drops_total") or 0.0


# --- audio ----------------------------------------------------------------------------------


def test_frames_come_out_in_order_after_the_target_delay() -> None:
    clock = FakeClock()
    buffer = JitterBuffer(RATE, min_delay=0.04)
    out = play(buffer, clock, audio(10))
    assert frames(out) == list(range(10))
    assert [t - START for t, _ in out] == pytest.approx([0.04 + i * 0.02 for i in range(10)])
    first = out[0][1]
    assert isinstance(first, Frame)
    assert (first.timestamp, first.payloads) == (0, (b"p0",))
    assert buffer.stats.frames == 10
    assert buffer.target_delay == 0.04
    assert buffer.next_deadline() is None
    assert buffer.pop(clock.monotonic() + 10) is None


def test_nothing_comes_out_before_its_time() -> None:
    buffer = JitterBuffer(RATE, min_delay=0.05)
    buffer.push(0, 0, b"a", START)
    assert buffer.next_deadline() == pytest.approx(START + 0.05)
    assert buffer.pop(START + 0.049) is None
    assert isinstance(buffer.pop(START + 0.05), Frame)


def test_reordered_packets_are_put_back_in_order() -> None:
    packets = audio(6)
    packets[2] = Sent(packets[3].arrival + 0.01, 2, 2 * TICKS, b"p2")  # behind 3, within delay
    buffer = JitterBuffer(RATE, min_delay=0.04)
    out = play(buffer, FakeClock(), packets)
    assert frames(out) == list(range(6))
    assert conceals(out) == []
    assert buffer.stats.late == 0


def test_duplicates_are_counted_once_held_and_late_once_played() -> None:
    buffer = JitterBuffer(RATE)
    buffer.push(0, 0, b"a", START)
    buffer.push(0, 0, b"a", START + 0.001)
    assert buffer.stats.duplicates == 1
    assert isinstance(buffer.pop(START + 1), Frame)
    buffer.push(0, 0, b"a", START + 1)
    assert buffer.stats.late == 1
    assert buffer.pop(START + 2) is None


def test_a_lost_packet_is_concealed_at_its_time_with_the_next_packet_for_fec() -> None:
    packets = [p for p in audio(5) if p.seq != 2]
    out = play(JitterBuffer(RATE, min_delay=0.02), FakeClock(), packets)
    assert frames(out) == [0, 1, 3, 4]
    [(when, conceal)] = [(t, item) for t, item in out if isinstance(item, Conceal)]
    assert isinstance(conceal, Conceal)
    assert when - START == pytest.approx(0.02 + 2 * 0.02)  # when frame 2 was due
    assert conceal == Conceal(sequence=2, timestamp=320, duration=160, count=1, fec=b"p3")


def test_a_packet_after_its_concealment_is_late_and_dropped() -> None:
    packets = [p for p in audio(5) if p.seq != 2]
    packets.append(Sent(START + 0.5, 2, 320, b"p2"))
    buffer = JitterBuffer(RATE)
    out = play(buffer, FakeClock(), packets)
    assert frames(out) == [0, 1, 3, 4]
    assert buffer.stats.late == 1
    assert buffer.stats.concealed == 1


def test_a_burst_loss_popped_late_is_one_concealment() -> None:
    buffer = JitterBuffer(RATE, min_delay=0.02)
    buffer.push(0, 0, b"p0", START)
    assert isinstance(buffer.pop(START + 0.02), Frame)
    buffer.push(6, 6 * TICKS, b"p6", START + 0.12)
    conceal = buffer.pop(START + 0.2)  # the caller woke up late: frames 1-5 all overdue
    assert conceal == Conceal(sequence=1, timestamp=160, duration=800, count=5, fec=b"p6")
    frame = buffer.pop(START + 0.2)
    assert isinstance(frame, Frame)
    assert frame.sequence == 6
    assert buffer.stats.concealed == 5


def test_a_burst_loss_popped_on_time_is_concealed_frame_by_frame() -> None:
    # With 100 ms of delay, packet 5 proves the gap before frame 2 is due.
    packets = [p for p in audio(8) if not 2 <= p.seq <= 4]
    out = play(JitterBuffer(RATE, min_delay=0.1), FakeClock(), packets)
    assert [(c.sequence, c.count, c.fec) for c in conceals(out)] == [
        (2, 1, None),
        (3, 1, None),
        (4, 1, b"p5"),
    ]


def test_silence_is_not_concealed_without_a_later_packet() -> None:
    # DTX or the end of the stream: nothing proves a loss, so nothing is invented.
    buffer = JitterBuffer(RATE)
    out = play(buffer, FakeClock(), audio(3))
    assert frames(out) == [0, 1, 2]
    assert buffer.pop(START + 60) is None
    # Speech resumes after 2 s of DTX (sequence numbers continue, timestamps jump).
    later = Sent(START + 2.06, 3, 3 * TICKS + 2 * RATE, b"p3")
    out = play(buffer, FakeClock(START + 1), [later])
    assert frames(out) == [3]
    assert conceals(out) == []


def test_a_loss_right_after_silence_conceals_one_frame_not_the_silence() -> None:
    speech = audio(3)
    # 2 s of DTX, then packet 3 is lost and packet 4 arrives.
    resumed = Sent(START + 2.08, 4, 4 * TICKS + 2 * RATE, b"p4")
    out = play(JitterBuffer(RATE), FakeClock(), [*speech, resumed])
    assert frames(out) == [0, 1, 2, 4]
    assert conceals(out) == [
        Conceal(sequence=3, timestamp=3 * TICKS + 2 * RATE, duration=TICKS, count=1, fec=b"p4")
    ]


def test_sequence_numbers_wrap() -> None:
    buffer = JitterBuffer(RATE)
    out = play(buffer, FakeClock(), audio(12, seq0=65530))
    assert frames(out) == [*range(65530, 65536), *range(6)]
    assert buffer.stats.late == 0
    # Reordered across the wrap as well: 65535 comes after 0.
    packets = audio(6, seq0=65534)
    packets[1] = Sent(packets[1].arrival + 0.03, 65535, packets[1].ts, b"x")
    out = play(JitterBuffer(RATE, min_delay=0.04), FakeClock(), packets)
    assert frames(out) == [65534, 65535, 0, 1, 2, 3]


def test_timestamps_wrap_without_a_pause() -> None:
    out = play(JitterBuffer(RATE), FakeClock(), audio(8, ts0=2**32 - 3 * TICKS))
    assert frames(out) == list(range(8))
    times = [t for t, _ in out]
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.02] * 7)
    assert [item.timestamp for _, item in out][2:5] == [2**32 - TICKS, 0, TICKS]


def test_a_new_numbering_resets_the_buffer() -> None:
    first = audio(5)
    second = audio(5, seq0=40000, ts0=123456789, t0=START + 0.2)
    buffer = JitterBuffer(RATE)
    out = play(buffer, FakeClock(), first + second)
    assert frames(out) == [0, 1, 2, 3, 4, 40001, 40002, 40003, 40004]
    assert buffer.stats.resets == 1
    assert buffer.stats.late == 1  # the first packet of the new numbering, still on probation


def test_a_lone_stray_does_not_reset() -> None:
    packets = audio(6)
    packets.insert(3, Sent(packets[2].arrival + 0.001, 30000, 999, b"stray"))
    buffer = JitterBuffer(RATE)
    out = play(buffer, FakeClock(), packets)
    assert frames(out) == list(range(6))
    assert (buffer.stats.resets, buffer.stats.late) == (0, 1)


def test_a_timeline_jump_resets_instead_of_waiting() -> None:
    # Same sequence numbers, timestamps 100 s ahead: another source behind an SBC.
    first = audio(4)
    second = audio(4, seq0=4, ts0=4 * TICKS + 100 * RATE, t0=START + 0.08)
    buffer = JitterBuffer(RATE, min_delay=0.02)
    out = play(buffer, FakeClock(), first + second)
    assert frames(out) == list(range(8))
    assert buffer.stats.resets == 1
    assert out[-1][0] - START == pytest.approx(0.14 + 0.02)


def test_the_caller_can_reset_on_an_ssrc_change() -> None:
    buffer = JitterBuffer(RATE)
    buffer.push(5, 500, b"a", START)
    buffer.reset()
    assert len(buffer) == 0
    assert buffer.next_deadline() is None
    buffer.push(1, 7, b"b", START)  # an older number is fine after a reset
    assert isinstance(buffer.pop(START + 1), Frame)


def jittery(count: int, spread: float, seed: int, t0: float = START) -> list[Sent]:
    rng = random.Random(seed)
    return [
        Sent(t0 + i * 0.02 + rng.uniform(0, spread), i, i * TICKS, b"%d" % i) for i in range(count)
    ]


def test_the_target_delay_follows_the_jitter_within_bounds() -> None:
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    play(buffer, FakeClock(), audio(100))
    assert buffer.target_delay == 0.02
    clock = FakeClock()
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    play(buffer, clock, jittery(500, 0.08, seed=1))
    assert 0.08 <= buffer.target_delay <= 0.15
    # Once adapted, nearly every packet makes it in time.
    late_before = buffer.stats.late
    play(buffer, clock, jittery(500, 0.08, seed=2, t0=START + 10))
    assert buffer.stats.late - late_before <= 5
    # A calm network gives the latency back, slowly.
    play(
        buffer,
        clock,
        [Sent(p.arrival + 20, p.seq + 1000, p.ts + 1000 * TICKS, b"") for p in audio(500)],
    )
    assert buffer.target_delay < 0.03
    # Jitter beyond the bound is capped.
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    play(buffer, FakeClock(), jittery(300, 0.6, seed=3))
    assert buffer.target_delay == 0.2


def test_one_straggler_raises_the_delay_only_for_a_while() -> None:
    packets = audio(400)
    packets[10] = Sent(packets[10].arrival + 0.15, 10, 10 * TICKS, b"slow")
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    clock = FakeClock()
    out = play(buffer, clock, packets[:12])
    assert buffer.target_delay > 0.1
    out += play(buffer, clock, packets[12:])
    assert buffer.target_delay < 0.04
    assert buffer.stats.resets == 0
    assert len(frames(out)) + buffer.stats.concealed == 400


def test_a_very_late_straggler_weighs_no_more_than_max_delay() -> None:
    packets = audio(500)
    packets[10] = Sent(packets[10].arrival + 0.8, 10, 10 * TICKS, b"very slow")
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    clock = FakeClock()
    straggler_seen = packets[10].arrival + 0.001
    play(buffer, clock, [p for p in packets if p.arrival < straggler_seen])
    assert buffer.stats.late == 1
    assert buffer.jitter < 2 * 0.2 / 16 + 0.001
    # Six seconds later the delay is back near the floor, as after a 200 ms straggler.
    play(buffer, clock, [p for p in packets if p.arrival >= straggler_seen and p.seq < 300])
    assert buffer.target_delay < 0.04
    assert buffer.stats.resets == 0


def test_a_full_buffer_drops_the_oldest_and_counts() -> None:
    before = queue_drops()
    buffer = JitterBuffer(RATE, capacity=8)
    for packet in audio(20):
        buffer.push(packet.seq, packet.ts, packet.payload, packet.arrival)
    assert len(buffer) == 8
    assert buffer.stats.dropped == 12
    assert queue_drops() == before + 12
    out = []
    while (item := buffer.pop(START + 10)) is not None:
        out.append(item)
    assert [item.sequence for item in out] == list(range(12, 20))
    assert all(isinstance(item, Frame) for item in out)
    buffer.push(3, 3 * TICKS, b"old", START + 10)  # its turn passed with the drop
    assert buffer.stats.late == 1


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="settings"):
        JitterBuffer(RATE, min_delay=0.3, max_delay=0.2)
    with pytest.raises(ValueError, match="capacity"):
        JitterBuffer(RATE, capacity=0)


# --- video ----------------------------------------------------------------------------------

VIDEO = 90000


def video_frames(count: int, per_frame: int = 3, *, seq0: int = 0) -> list[Sent]:
    """``count`` frames at 30 fps, ``per_frame`` packets each, marker on the last."""
    packets = []
    for f in range(count):
        for k in range(per_frame):
            seq = seq0 + f * per_frame + k
            arrival = START + f / 30 + k * 0.001
            packets.append(Sent(arrival, seq, f * 3000, b"f%dk%d" % (f, k), k == per_frame - 1))
    return packets


def test_video_frames_come_out_whole() -> None:
    packets = video_frames(4)
    packets[0], packets[2] = packets[2], packets[0]  # marker first: still one frame
    buffer = JitterBuffer(VIDEO, video=True, min_delay=0.03)
    out = play(buffer, FakeClock(), packets)
    assert [type(item) for _, item in out] == [Frame] * 4
    first = out[0][1]
    assert isinstance(first, Frame)
    assert (first.sequence, first.timestamp) == (0, 0)
    assert first.payloads == (b"f0k0", b"f0k1", b"f0k2")
    assert buffer.stats.frames == 4


def test_video_frame_without_marker_ends_where_the_next_begins() -> None:
    packets = [
        Sent(p.arrival, p.seq, p.ts, p.payload, p.marker and p.seq > 5) for p in video_frames(3)
    ]
    out = play(JitterBuffer(VIDEO, video=True), FakeClock(), packets)
    assert [len(item.payloads) for _, item in out if isinstance(item, Frame)] == [3, 3, 3]


def test_video_frame_missing_a_packet_is_concealed_and_its_straggler_is_late() -> None:
    packets = [p for p in video_frames(3) if p.seq != 4]
    packets.append(Sent(START + 1.0, 4, 3000, b"f1k1"))
    buffer = JitterBuffer(VIDEO, video=True)
    out = play(buffer, FakeClock(), packets)
    assert [type(item) for _, item in out] == [Frame, Conceal, Frame]
    assert conceals(out) == [Conceal(sequence=3, timestamp=3000, duration=0, count=3)]
    assert buffer.stats.late == 1


def test_video_frame_still_open_at_its_time_is_concealed() -> None:
    packets = [p for p in video_frames(1) if not p.marker]  # the marker packet never comes
    buffer = JitterBuffer(VIDEO, video=True)
    out = play(buffer, FakeClock(), packets)
    assert [type(item) for _, item in out] == [Conceal]
    buffer.push(2, 0, b"f0k2", START + 1, marker=True)
    assert buffer.stats.late == 1


def test_video_frame_after_lost_packets_is_concealed_with_them() -> None:
    # Packets 3-4 lost: frame 1 (3-5) or part of it, nobody can tell here.
    packets = [p for p in video_frames(4) if p.seq not in (3, 4)]
    buffer = JitterBuffer(VIDEO, video=True)
    out = play(buffer, FakeClock(), packets)
    assert [type(item) for _, item in out] == [Frame, Conceal, Frame, Frame]
    assert conceals(out) == [Conceal(sequence=3, timestamp=3000, duration=0, count=3)]
    assert frames(out) == [0, 6, 9]
    assert buffer.stats.concealed == 3


def test_video_capacity_drops_whole_frames() -> None:
    buffer = JitterBuffer(VIDEO, video=True, capacity=7)
    for packet in video_frames(3):
        buffer.push(packet.seq, packet.ts, packet.payload, packet.arrival, packet.marker)
    assert buffer.stats.dropped == 3  # frame 0, all three packets of it
    out = [buffer.pop(START + 5), buffer.pop(START + 5), buffer.pop(START + 5)]
    assert [type(item) for item in out] == [Frame, Frame, type(None)]


# --- property: whatever the network does, every frame is accounted for once, in order ----------


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.booleans(), st.floats(0, 0.25), st.booleans()), min_size=5, max_size=120),
)
def test_every_frame_out_once_in_order(
    seq0: int, ts0: int, fate: list[tuple[bool, float, bool]]
) -> None:
    packets = []
    for i, (lost, delay, duplicated) in enumerate(fate):
        if lost and i not in (0, len(fate) - 1):
            continue
        sent = Sent(
            START + i * 0.02 + delay, (seq0 + i) & 0xFFFF, (ts0 + i * TICKS) & 0xFFFFFFFF, b"%d" % i
        )
        packets += (
            [sent, Sent(sent.arrival + 0.01, sent.seq, sent.ts, sent.payload)]
            if duplicated
            else [sent]
        )
    buffer = JitterBuffer(RATE, min_delay=0.02, max_delay=0.2)
    out = play(buffer, FakeClock(), packets)
    covered = []
    for _, item in out:
        if isinstance(item, Frame):
            covered.append(item.sequence)
        else:
            covered += [(item.sequence + k) & 0xFFFF for k in range(item.count)]
    # One contiguous run up to the last packet: a packet that came after a
    # later one was played is late, every other gap is concealed.
    last = (seq0 + len(fate) - 1) & 0xFFFF
    assert covered == [(covered[0] + k) & 0xFFFF for k in range(len(covered))]
    assert covered[-1] == last
    stats = buffer.stats
    assert stats.frames + stats.late + stats.duplicates == len(packets)
    for _, item in out:
        if isinstance(item, Frame):
            index = (item.sequence - seq0) & 0xFFFF
            assert item.payloads == (b"%d" % index,)
            assert item.timestamp == (ts0 + index * TICKS) & 0xFFFFFFFF
    assert 0.02 <= buffer.target_delay <= 0.2
    assert buffer.stats.resets == 0


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**16 - 1),
    st.lists(st.tuples(st.booleans(), st.floats(0, 0.1)), min_size=4, max_size=60),
)
def test_video_frames_out_whole_once_in_order(seq0: int, fate: list[tuple[bool, float]]) -> None:
    packets = []
    for i, (lost, delay) in enumerate(fate):
        frame, part = divmod(i, 3)
        if not lost:
            packets.append(
                Sent(START + frame / 30 + part * 0.001 + delay, (seq0 + i) & 0xFFFF, frame * 3000,
                     b"%d" % i, part == 2)
            )  # fmt: skip
    out = play(JitterBuffer(VIDEO, video=True), FakeClock(), packets)
    stamps = [item.timestamp for _, item in out]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    for _, item in out[1:]:  # the first frame is trusted to start at the first packet seen
        if isinstance(item, Frame):
            first = (item.sequence - seq0) & 0xFFFF
            assert first % 3 == 0
            assert item.payloads == tuple(b"%d" % (first + k) for k in range(3))
            assert item.timestamp == first // 3 * 3000
            assert not any(fate[first + k][0] for k in range(3))
