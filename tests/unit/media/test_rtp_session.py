"""RtpSession, sans-IO with a FakeClock: RFC 3550 A.1/A.3/A.8 receive
statistics, the inactivity timeout, the send-side rewrite across source
switches, RTCP reports and interval, and feedback surfaced as events."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.media.rtcp import (
    FirEntry,
    FirPacket,
    Goodbye,
    NackPacket,
    ReceiverReport,
    RembPacket,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SdesPacket,
    SenderInfo,
    SenderReport,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    picture_loss,
    serialize_rtcp,
)
from gateway.media.rtp import HeaderExtension, RtpError, RtpPacket
from gateway.media.rtp_session import (
    BitrateEstimated,
    KeyframeRequested,
    NackReceived,
    RtpEvent,
    RtpSession,
    RtpSessionConfig,
    RtpTimeout,
    SourceLeft,
)
from gateway.metrics import REGISTRY

PEER = 0x1111
COMPENSATION = 2.718281828459045 - 1.5


def rtp(seq: int, ts: int = 0, ssrc: int = PEER, pt: int = 0, marker: bool = False) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"\xff" * 160, marker))


def make(seed: int = 7, **config: Any) -> tuple[RtpSession, FakeClock]:
    clock = FakeClock()
    fields: dict[str, Any] = {"clock_rate": 8000, "cname": "gw@test"}
    fields.update(config)
    return RtpSession(RtpSessionConfig(**fields), clock=clock, rng=random.Random(seed)), clock


def feed(session: RtpSession, clock: FakeClock, seqs: list[int], step: float = 0.02) -> list[bool]:
    results = []
    for seq in seqs:
        results.append(session.receive_rtp(rtp(seq, seq * 160), clock.monotonic()))
        clock.advance(step)
    return results


def report_now(session: RtpSession, clock: FakeClock) -> list[RtcpPacket]:
    """Run the timer at the RTCP deadline and parse the one report it sends."""
    clock.set(session.next_rtcp_deadline())
    session.handle_timer(clock.monotonic())
    [datagram] = session.rtcp_to_send()
    return parse_rtcp(datagram)


def block_about(packets: list[RtcpPacket], ssrc: int = PEER) -> ReportBlock:
    report = packets[0]
    assert isinstance(report, SenderReport | ReceiverReport)
    return next(b for b in report.reports if b.ssrc == ssrc)


# --- receive: RFC 3550 A.1 / A.3 -----------------------------------------------
def test_new_source_is_on_probation_until_two_in_sequence() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 101, 102]) == [False, True, True]
    source = session.sources[PEER]
    assert (source.valid, source.base_seq, source.received, source.lost) == (True, 101, 2, 0)


def test_probation_restarts_when_the_second_packet_is_not_next() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 105, 106, 107]) == [False, False, True, True]


def test_loss_gives_cumulative_count_and_fraction_per_interval() -> None:
    session, clock = make()
    feed(session, clock, [100, *range(101, 105), *range(107, 111)])
    source = session.sources[PEER]
    assert (source.expected, source.received, source.lost) == (10, 8, 2)
    first = block_about(report_now(session, clock))
    assert (first.packets_lost, first.fraction_lost, first.highest_sequence) == (2, 51, 110)
    feed(session, clock, list(range(111, 121)))
    second = block_about(report_now(session, clock))
    assert (second.packets_lost, second.fraction_lost) == (2, 0)


def test_reordered_packet_is_valid_and_fills_the_gap() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 101, 102, 104, 103]) == [False, True, True, True, True]
    source = session.sources[PEER]
    assert (source.max_seq, source.lost) == (104, 0)


def test_duplicate_is_counted_as_received_so_loss_goes_negative() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 101, 102, 102]) == [False, True, True, True]
    assert session.sources[PEER].lost == -1
    assert block_about(report_now(session, clock)).packets_lost == -1


def test_wrap_around_counts_a_cycle() -> None:
    session, clock = make()
    feed(session, clock, [65533, 65534, 65535, 0, 1])
    source = session.sources[PEER]
    assert (source.cycles, source.extended_max, source.expected, source.lost) == (
        65536,
        65537,
        4,
        0,
    )
    assert block_about(report_now(session, clock)).highest_sequence == 0x1_0001


def test_large_jump_is_invalid_until_the_next_packet_confirms_a_restart() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 101, 102, 5000, 5001, 5002]) == [
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    source = session.sources[PEER]
    assert (source.base_seq, source.received, source.lost) == (5001, 2, 0)


def test_unconfirmed_jump_leaves_the_sequence_alone() -> None:
    session, clock = make()
    assert feed(session, clock, [100, 101, 5000, 102]) == [False, True, False, True]
    assert session.sources[PEER].max_seq == 102


def test_late_within_max_misorder_is_valid_beyond_it_is_not() -> None:
    session, clock = make()
    feed(session, clock, list(range(100, 400)))
    assert feed(session, clock, [350, 250]) == [True, False]


def test_dropout_and_misorder_limits_are_those_of_a1() -> None:
    session, clock = make()
    feed(session, clock, [100, 101])
    assert feed(session, clock, [101 + 2999]) == [True]  # a gap of 2998: loss
    assert feed(session, clock, [3100 + 3000]) == [False]  # a jump: wait for the next
    session, clock = make()
    feed(session, clock, list(range(100, 300)))
    assert feed(session, clock, [299 - 99, 299 - 100]) == [True, False]


# --- receive: jitter (A.8) and sender reports --------------------------------------
def test_jitter_follows_rfc3550_a8_in_timestamp_units() -> None:
    session, clock = make()
    arrivals = [0.0, 0.02, 0.05, 0.06]  # the third packet is 10 ms (80 units) late
    for index, arrival in enumerate(arrivals):
        clock.set(1000.0 + arrival)
        session.receive_rtp(rtp(100 + index, index * 160), clock.monotonic())
    assert session.sources[PEER].jitter == pytest.approx(5 + (80 - 5) / 16)
    assert block_about(report_now(session, clock)).jitter == 9


def test_jitter_ignores_a_timestamp_wrap_around() -> None:
    session, clock = make()
    for index in range(6):
        session.receive_rtp(rtp(index, 2**32 - 320 + index * 160), clock.monotonic())
        clock.advance(0.02)
    assert session.sources[PEER].jitter == pytest.approx(0.0, abs=1e-6)


def test_report_block_carries_lsr_and_dlsr_of_the_last_sr() -> None:
    session, clock = make()
    feed(session, clock, [1, 2, 3])
    sr = SenderReport(ssrc=PEER, sender_info=SenderInfo(0xE8D1A5B0_80000000, 0, 3, 480))
    received_at = clock.monotonic()
    session.handle_rtcp(serialize_rtcp([sr]), received_at)
    packets = report_now(session, clock)
    block = block_about(packets)
    assert block.lsr == 0xA5B08000
    assert block.dlsr == int((clock.monotonic() - received_at) * 65536)


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    session, clock = make()
    session.send_rtp(rtp(1), clock.monotonic())
    [sr, _] = report_now(session, clock)
    assert isinstance(sr, SenderReport)
    clock.advance(0.35)  # the peer held our SR for 0.25 s: 0.1 s on the wire
    block = ReportBlock(session.ssrc, 12, 3, 0, 7, ntp_middle(sr.sender_info.ntp_timestamp), 16384)
    session.handle_rtcp(
        serialize_rtcp([ReceiverReport(ssrc=PEER, reports=[block])]), clock.monotonic()
    )
    remote = session.remote
    assert remote.round_trip_time == pytest.approx(0.1, abs=1 / 65536)
    assert (remote.fraction_lost, remote.packets_lost, remote.jitter) == (12, 3, 7)


def test_inconsistent_lsr_and_dlsr_give_no_round_trip_time() -> None:
    session, clock = make()
    future = ntp_middle(ntp_timestamp(clock.time() + 10))  # an SR we cannot have sent yet
    block = ReportBlock(session.ssrc, 0, 0, 0, 0, future, 0)
    session.handle_rtcp(
        serialize_rtcp([ReceiverReport(ssrc=PEER, reports=[block])]), clock.monotonic()
    )
    assert session.remote.round_trip_time is None
    assert session.remote.received_at == clock.monotonic()


def test_report_blocks_about_other_ssrcs_are_not_ours() -> None:
    session, _ = make()
    block = ReportBlock(session.ssrc ^ 1, 12, 3, 0, 7, 0, 0)
    session.handle_rtcp(serialize_rtcp([ReceiverReport(ssrc=PEER, reports=[block])]), 1000.0)
    assert session.remote.received_at is None


# --- inactivity timeout --------------------------------------------------------
def test_silent_peer_raises_one_timeout_event() -> None:
    session, clock = make(inactivity_timeout=5.0)
    feed(session, clock, [1, 2])
    last = clock.monotonic() - 0.02
    assert session.next_deadline() == pytest.approx(min(session.next_rtcp_deadline(), last + 5))
    clock.set(last + 4.9)
    session.handle_timer(clock.monotonic())
    assert session.next_event() is None
    clock.set(last + 5.0)
    session.handle_timer(clock.monotonic())
    assert session.next_event() == RtpTimeout(last_packet_at=last)
    clock.advance(10)
    session.handle_timer(clock.monotonic())
    assert session.next_event() is None
    assert session.next_deadline() == session.next_rtcp_deadline()


def test_a_packet_rearms_the_timeout() -> None:
    session, clock = make(inactivity_timeout=5.0)
    clock.advance(6)
    session.handle_timer(clock.monotonic())
    assert isinstance(session.next_event(), RtpTimeout)
    feed(session, clock, [1])
    clock.advance(5)
    session.handle_timer(clock.monotonic())
    assert isinstance(session.next_event(), RtpTimeout)


def test_hold_disarms_the_timeout_and_resume_rearms_it() -> None:
    session, clock = make(inactivity_timeout=5.0)
    session.set_receiving(False, clock.monotonic())
    clock.advance(100)
    session.handle_timer(clock.monotonic())
    assert session.next_event() is None
    session.set_receiving(True, clock.monotonic())
    clock.advance(5)
    session.handle_timer(clock.monotonic())
    assert session.next_event() == RtpTimeout(last_packet_at=clock.monotonic() - 5)


def test_no_timeout_when_disabled() -> None:
    session, clock = make(inactivity_timeout=None)
    clock.advance(1000)
    session.handle_timer(clock.monotonic())
    assert session.next_event() is None


# --- send: rewrite, source switch, payload types --------------------------------------
def test_first_packet_takes_our_ssrc_and_a_random_start() -> None:
    session, clock = make(seed=3)
    draw = random.Random(3)
    ssrc, seq0, ts0 = draw.getrandbits(32), draw.getrandbits(16), draw.getrandbits(32)
    assert session.ssrc == ssrc
    outs = [
        session.send_rtp(rtp(500 + i, 9000 + 160 * i, ssrc=9), clock.monotonic()) for i in range(3)
    ]
    packets = [RtpPacket.parse(out) for out in outs if out is not None]
    assert [p.sequence_number for p in packets] == [seq0, (seq0 + 1) & 0xFFFF, (seq0 + 2) & 0xFFFF]
    assert [p.timestamp for p in packets] == [(ts0 + 160 * i) & 0xFFFFFFFF for i in range(3)]
    assert {p.ssrc for p in packets} == {ssrc}
    assert [p.marker for p in packets] == [True, False, False]  # audio: a talkspurt starts


def send_stream(
    session: RtpSession,
    clock: FakeClock,
    *,
    ssrc: int,
    seq: int,
    ts: int,
    count: int,
    step: int = 160,
) -> list[RtpPacket]:
    packets = []
    for i in range(count):
        out = session.send_rtp(rtp(seq + i, ts + step * i, ssrc=ssrc), clock.monotonic())
        assert out is not None
        packets.append(RtpPacket.parse(out))
        clock.advance(0.02)
    return packets


def test_source_switch_keeps_sequence_and_timestamp_continuous_and_sets_the_marker() -> None:
    session, clock = make()
    before = send_stream(session, clock, ssrc=1, seq=1000, ts=0, count=5)
    clock.advance(0.03)  # the new participant's first packet comes 50 ms after the last
    after = send_stream(session, clock, ssrc=2, seq=50000, ts=123456789, count=3)
    last = before[-1]
    assert [p.sequence_number for p in after] == [
        (last.sequence_number + i) & 0xFFFF for i in (1, 2, 3)
    ]
    assert after[0].timestamp == (last.timestamp + 400) & 0xFFFFFFFF  # 50 ms x 8000 Hz
    assert after[1].timestamp == (after[0].timestamp + 160) & 0xFFFFFFFF
    assert [p.marker for p in after] == [True, False, False]
    assert {p.ssrc for p in before + after} == {session.ssrc}


def test_video_switch_does_not_set_the_marker_that_ends_a_frame() -> None:
    session, clock = make(kind="video", clock_rate=90000)
    before = send_stream(session, clock, ssrc=1, seq=10, ts=0, count=2, step=3000)
    after = send_stream(session, clock, ssrc=2, seq=7, ts=5, count=1, step=3000)
    assert after[0].sequence_number == (before[-1].sequence_number + 1) & 0xFFFF
    assert after[0].timestamp == (before[-1].timestamp + 1800) & 0xFFFFFFFF  # 20 ms x 90 kHz
    assert not after[0].marker
    assert not before[0].marker


def test_switch_within_the_same_millisecond_still_advances_the_timestamp() -> None:
    session, clock = make()
    [before] = send_stream(session, clock, ssrc=1, seq=10, ts=0, count=1)
    out = session.send_rtp(rtp(3, 0, ssrc=2), 1000.0)  # the same instant as the last packet
    assert out is not None
    assert RtpPacket.parse(out).timestamp == (before.timestamp + 1) & 0xFFFFFFFF


def test_explicit_switch_reanchors_a_source_that_keeps_its_ssrc() -> None:
    session, clock = make()
    before = send_stream(session, clock, ssrc=1, seq=10, ts=0, count=2)
    session.switch_source()  # e.g. passthrough -> transcoded, same SSRC
    after = send_stream(session, clock, ssrc=1, seq=9000, ts=777, count=1)
    assert after[0].sequence_number == (before[-1].sequence_number + 1) & 0xFFFF
    assert after[0].timestamp == (before[-1].timestamp + 160) & 0xFFFFFFFF
    assert after[0].marker


def test_upstream_sequence_jump_reanchors() -> None:
    session, clock = make()
    before = send_stream(session, clock, ssrc=1, seq=10, ts=0, count=2)
    after = send_stream(session, clock, ssrc=1, seq=20000, ts=320, count=1)
    assert after[0].sequence_number == (before[-1].sequence_number + 1) & 0xFFFF


def test_upstream_loss_and_reordering_pass_through_with_the_same_offset() -> None:
    session, clock = make()
    out = {}
    for seq in (10, 11, 14, 12):
        packet = session.send_rtp(rtp(seq, seq * 160, ssrc=1), clock.monotonic())
        assert packet is not None
        out[seq] = RtpPacket.parse(packet)
    base = out[10].sequence_number
    assert [(out[s].sequence_number - base) & 0xFFFF for s in (11, 14, 12)] == [1, 4, 2]
    assert (out[12].timestamp - out[10].timestamp) & 0xFFFFFFFF == 320
    late = session.send_rtp(rtp(15, 15 * 160, ssrc=1), clock.monotonic())
    assert late is not None and RtpPacket.parse(late).sequence_number == (base + 5) & 0xFFFF
    session.send_rtp(rtp(13, 13 * 160, ssrc=1), clock.monotonic())  # late: not the reference
    switched = session.send_rtp(rtp(1, 0, ssrc=2), clock.monotonic())
    assert switched is not None and RtpPacket.parse(switched).sequence_number == (base + 6) & 0xFFFF


def test_payload_types_are_mapped_and_unnegotiated_ones_dropped() -> None:
    session, clock = make(payload_map={0: 0, 96: 101})
    out = session.send_rtp(rtp(1, pt=96), clock.monotonic())
    assert out is not None and RtpPacket.parse(out).payload_type == 101
    assert session.send_rtp(rtp(2, pt=8), clock.monotonic()) is None
    assert session.send_counters.dropped_payload_type == 1
    session.set_payload_map({8: 8})
    assert session.send_rtp(rtp(3, pt=8), clock.monotonic()) is not None
    session.set_payload_map(None)
    out = session.send_rtp(rtp(4, pt=96), clock.monotonic())
    assert out is not None and RtpPacket.parse(out).payload_type == 96


def extended(seq: int) -> bytes:
    packet = RtpPacket(0, seq, 0, 1, b"abcd", csrc=(5,), padding=4)
    packet.set_header_extensions([HeaderExtension(1, b"\x8a")])
    return bytes(packet)


def test_extensions_are_stripped_unless_the_leg_keeps_them() -> None:
    stripping, clock = make()
    out = stripping.send_rtp(extended(1), clock.monotonic())
    assert out is not None
    packet = RtpPacket.parse(out)
    assert (packet.extension_profile, packet.payload, packet.csrc, packet.padding) == (
        None,
        b"abcd",
        (5,),
        4,
    )
    keeping, clock = make(strip_extensions=False)
    out = keeping.send_rtp(extended(1), clock.monotonic())
    assert out is not None and RtpPacket.parse(out).header_extensions == [
        HeaderExtension(1, b"\x8a")
    ]


def test_counters_count_payload_octets_only() -> None:
    session, clock = make()
    session.send_rtp(extended(1), clock.monotonic())
    session.send_rtp(rtp(2, ssrc=1), clock.monotonic())
    assert (session.send_counters.packets, session.send_counters.octets) == (2, 4 + 160)


def test_malformed_packets_raise_rtp_error_on_both_paths() -> None:
    session, clock = make()
    with pytest.raises(RtpError):
        session.receive_rtp(b"\x80\x00", clock.monotonic())
    with pytest.raises(RtpError):
        session.send_rtp(b"\x40" + bytes(11), clock.monotonic())


# --- RTCP out ---------------------------------------------------------------------
def test_receiver_sends_rr_with_a_block_per_valid_source_and_cname() -> None:
    session, clock = make()
    feed(session, clock, [1, 2, 3])
    session.receive_rtp(rtp(9, ssrc=0x2222), clock.monotonic())  # still on probation
    packets = report_now(session, clock)
    assert isinstance(packets[0], ReceiverReport)
    assert packets[0].ssrc == session.ssrc
    assert [b.ssrc for b in packets[0].reports] == [PEER]
    assert packets[1:] == [SdesPacket([SdesChunk(session.ssrc, [(1, b"gw@test")])])]


def test_sender_sends_sr_with_its_counts_and_extrapolated_timestamp() -> None:
    session, clock = make()
    sent = send_stream(session, clock, ssrc=1, seq=1, ts=0, count=3)
    last_sent_at = clock.monotonic() - 0.02
    [sr, _] = report_now(session, clock)
    assert isinstance(sr, SenderReport)
    now = clock.monotonic()
    assert sr.sender_info.packet_count == 3
    assert sr.sender_info.octet_count == 480
    assert sr.sender_info.ntp_timestamp == ntp_timestamp(clock.time())
    expected_ts = sent[-1].timestamp + int((now - last_sent_at) * 8000)
    assert sr.sender_info.rtp_timestamp == expected_ts & 0xFFFFFFFF


def test_sr_until_two_reports_without_sending_then_rr() -> None:
    session, clock = make()
    send_stream(session, clock, ssrc=1, seq=1, ts=0, count=1)
    kinds = [type(report_now(session, clock)[0]) for _ in range(3)]
    assert kinds == [SenderReport, SenderReport, ReceiverReport]


def test_report_intervals_respect_the_minimum_and_randomization() -> None:
    session, clock = make()
    first = session.next_rtcp_deadline() - clock.monotonic()
    assert 2.5 * 0.5 / COMPENSATION <= first <= 2.5 * 1.5 / COMPENSATION
    gaps = []
    for _ in range(20):
        before = session.next_rtcp_deadline()
        report_now(session, clock)
        gaps.append(session.next_rtcp_deadline() - before)
    assert all(5 * 0.5 / COMPENSATION <= gap <= 5 * 1.5 / COMPENSATION for gap in gaps)
    assert max(gaps) - min(gaps) > 1.0  # randomized, not a fixed beat


def test_reduced_minimum_for_a_video_leg() -> None:
    session, clock = make(
        kind="video", clock_rate=90000, session_bandwidth=1_000_000, reduced_minimum=True
    )
    report_now(session, clock)
    gap = session.next_rtcp_deadline() - clock.monotonic()
    assert 0.36 * 0.5 / COMPENSATION <= gap <= 0.36 * 1.5 / COMPENSATION


def test_nothing_is_sent_before_the_deadline() -> None:
    session, clock = make()
    clock.set(session.next_rtcp_deadline() - 0.001)
    session.handle_timer(clock.monotonic())
    assert session.rtcp_to_send() == []


def test_request_keyframe_sends_pli_or_fir_to_valid_sources() -> None:
    session, clock = make()
    session.request_keyframe(clock.monotonic())
    assert session.rtcp_to_send() == []  # nobody to ask yet
    feed(session, clock, [1, 2])
    session.request_keyframe(clock.monotonic())
    session.request_keyframe(clock.monotonic(), fir=True)
    session.request_keyframe(clock.monotonic(), fir=True)
    pli, fir1, fir2 = (parse_rtcp(d) for d in session.rtcp_to_send())
    assert isinstance(pli[0], ReceiverReport)
    assert pli[2:] == [picture_loss(session.ssrc, PEER)]
    assert fir1[2:] == [FirPacket(session.ssrc, [FirEntry(PEER, 1)])]
    assert fir2[2:] == [FirPacket(session.ssrc, [FirEntry(PEER, 2)])]


def test_request_retransmission_and_close() -> None:
    session, clock = make()
    session.request_retransmission(PEER, [5, 6], clock.monotonic())
    session.close(clock.monotonic())
    nack, bye = (parse_rtcp(d) for d in session.rtcp_to_send())
    assert nack[2:] == [NackPacket(session.ssrc, PEER, [5, 6])]
    assert bye[2:] == [Goodbye(sources=[session.ssrc])]


# --- RTCP in: feedback becomes events -----------------------------------------------
def feedback(session: RtpSession, *packets: RtcpPacket) -> list[RtpEvent]:
    session.handle_rtcp(serialize_rtcp([ReceiverReport(ssrc=PEER), *packets]), 1000.0)
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def test_pli_about_our_stream_asks_for_a_keyframe() -> None:
    session, _ = make()
    assert feedback(session, picture_loss(PEER, session.ssrc)) == [KeyframeRequested("pli", PEER)]
    assert feedback(session, picture_loss(PEER, session.ssrc ^ 1)) == []


def test_fir_retransmission_is_one_request() -> None:
    session, _ = make()
    fir = FirPacket(PEER, [FirEntry(session.ssrc, 4), FirEntry(session.ssrc ^ 1, 9)])
    assert feedback(session, fir) == [KeyframeRequested("fir", PEER)]
    assert feedback(session, fir) == []
    assert feedback(session, FirPacket(PEER, [FirEntry(session.ssrc, 5)])) == [
        KeyframeRequested("fir", PEER)
    ]


def test_nack_is_translated_to_upstream_sequence_numbers() -> None:
    session, clock = make()
    sent = send_stream(session, clock, ssrc=1, seq=500, ts=0, count=5)
    ours = [sent[1].sequence_number, sent[3].sequence_number]
    assert feedback(session, NackPacket(PEER, session.ssrc, ours)) == [
        NackReceived(lost=tuple(ours), upstream_ssrc=1, upstream_lost=(501, 503))
    ]
    send_stream(session, clock, ssrc=2, seq=9, ts=0, count=1)  # switch: old numbers are gone
    [event] = feedback(session, NackPacket(PEER, session.ssrc, ours))
    assert isinstance(event, NackReceived)
    assert (event.upstream_ssrc, event.upstream_lost) == (2, ())
    assert feedback(session, NackPacket(PEER, session.ssrc ^ 1, ours)) == []


def test_remb_and_bye_become_events() -> None:
    session, clock = make()
    feed(session, clock, [1, 2])
    assert feedback(session, RembPacket(PEER, 256_000, [session.ssrc])) == [
        BitrateEstimated(256_000, (session.ssrc,))
    ]
    assert feedback(session, Goodbye(sources=[PEER, 0x9999])) == [SourceLeft(PEER)]
    assert PEER not in session.sources


def test_malformed_rtcp_raises_rtp_error() -> None:
    session, _ = make()
    with pytest.raises(RtpError):
        session.handle_rtcp(b"\x81\xc9\x00\x07", 1000.0)


# --- bounds, collisions, metrics ----------------------------------------------------
def test_sources_are_bounded_and_the_quietest_goes() -> None:
    session, clock = make(max_sources=3)
    for ssrc in (1, 2, 3, 4):
        session.receive_rtp(rtp(1, ssrc=ssrc), clock.monotonic())
        clock.advance(0.01)
    assert sorted(session.sources) == [2, 3, 4]


def test_source_silent_for_five_intervals_is_forgotten() -> None:
    session, clock = make(inactivity_timeout=None)
    feed(session, clock, [1, 2])
    clock.advance(20)
    session.handle_timer(clock.monotonic())
    assert PEER in session.sources
    clock.advance(40)
    session.handle_timer(clock.monotonic())
    assert PEER not in session.sources


def test_ssrc_collision_takes_a_new_ssrc_and_says_bye() -> None:
    session, clock = make()
    old = session.ssrc
    session.receive_rtp(rtp(1, ssrc=old), clock.monotonic())
    assert session.ssrc != old
    [bye] = session.rtcp_to_send()
    assert Goodbye(sources=[old]) in parse_rtcp(bye)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_packets_and_losses_reach_the_metrics() -> None:
    before_in = sample("gatewayd_rtp_packets_total", direction="in")
    before_out = sample("gatewayd_rtp_packets_total", direction="out")
    before_lost = sample("gatewayd_rtp_lost_packets_total")
    session, clock = make()
    feed(session, clock, [1, 2, 3, 6, 7])  # 4 and 5 lost
    send_stream(session, clock, ssrc=1, seq=1, ts=0, count=2)
    report_now(session, clock)
    assert sample("gatewayd_rtp_packets_total", direction="in") - before_in == 5
    assert sample("gatewayd_rtp_packets_total", direction="out") - before_out == 2
    assert sample("gatewayd_rtp_lost_packets_total") - before_lost == 2
    feed(session, clock, [4])  # a late arrival does not un-count a loss in a counter
    report_now(session, clock)
    assert sample("gatewayd_rtp_lost_packets_total") - before_lost == 2


@pytest.mark.parametrize(
    "changes",
    [{"clock_rate": 0}, {"session_bandwidth": 0}, {"max_sources": 0}, {"inactivity_timeout": 0.0}],
)
def test_config_refuses_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RtpSessionConfig(**{"clock_rate": 8000, "cname": "x", **changes})
