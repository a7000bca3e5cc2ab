"""Hypothesis fuzzing of RTP/RTCP parsing and the RTP session.

Hostile bytes must only ever raise ``RtpError`` — never IndexError,
struct.error or ValueError from inside aiortc — and every packet we can
build must come back unchanged from its own bytes.
"""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.media.rtcp import (
    FirEntry,
    FirPacket,
    Goodbye,
    NackPacket,
    PayloadFeedback,
    ReceiverReport,
    RembPacket,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SdesPacket,
    SenderInfo,
    SenderReport,
    parse_rtcp,
    serialize_rtcp,
)
from gateway.media.rtp import (
    HeaderExtension,
    RtpError,
    RtpPacket,
    header_sizes,
    parse_header_extensions,
    rewrite_header,
)
from gateway.media.rtp_session import RtpSession, RtpSessionConfig

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def rtp_like() -> st.SearchStrategy[bytes]:
    """Bytes that pass the first checks often enough to reach the deep ones."""
    return st.builds(
        lambda first, rest: bytes([0x80 | (first & 0x3F)]) + rest,
        u8,
        st.binary(min_size=11, max_size=80),
    )


def rtcp_like() -> st.SearchStrategy[bytes]:
    """Sequences of RTCP headers with plausible types and lengths."""
    one = st.builds(
        lambda first, ptype, body: (
            bytes([0x80 | (first & 0x3F), ptype])
            + (len(body) // 4).to_bytes(2, "big")
            + body[: len(body) // 4 * 4]
        ),
        u8,
        st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]),
        st.binary(max_size=64),
    )
    return st.lists(one, min_size=1, max_size=4).map(b"".join)


@FUZZ
@given(st.one_of(st.binary(max_size=80), rtp_like()))
def test_arbitrary_bytes_as_rtp_raise_only_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert header_sizes(data)[1] == len(packet.payload)
    assert RtpPacket.parse(bytes(packet)) == packet
    if packet.extension_profile is not None:
        with contextlib.suppress(RtpError):
            packet.header_extensions  # noqa: B018 - parsing is the point
    out = rewrite_header(
        data,
        payload_type=1,
        sequence_number=2,
        timestamp=3,
        ssrc=4,
        marker=True,
        strip_extension=True,
    )
    assert RtpPacket.parse(out).payload == packet.payload


@FUZZ
@given(st.integers(0, 0xFFFF), st.binary(max_size=40))
def test_arbitrary_extension_blocks_raise_only_rtp_error(profile: int, block: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_header_extensions(profile, block)


@FUZZ
@given(st.one_of(st.binary(max_size=120), rtcp_like()))
def test_arbitrary_bytes_as_rtcp_raise_only_rtp_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtpError:
        return
    if not packets:  # only types we skip
        return
    # What we parsed we can write again, and read back as the same packets
    # (NACK items may regroup, so compare their loss sets).
    again = parse_rtcp(serialize_rtcp(packets))
    assert len(again) == len(packets)
    for first, second in zip(packets, again, strict=True):
        if isinstance(first, NackPacket) and isinstance(second, NackPacket):
            assert set(first.lost) == set(second.lost)
        else:
            assert first == second


def session() -> tuple[RtpSession, FakeClock]:
    clock = FakeClock()
    config = RtpSessionConfig(clock_rate=8000, cname="fuzz")
    return RtpSession(config, clock=clock, rng=random.Random(0)), clock


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=60), rtp_like(), rtcp_like()), max_size=8))
def test_session_takes_hostile_datagrams_raising_only_rtp_error(datagrams: list[bytes]) -> None:
    rtp_session, clock = session()
    for data in datagrams:
        for handler in (rtp_session.receive_rtp, rtp_session.handle_rtcp, rtp_session.send_rtp):
            with contextlib.suppress(RtpError):
                handler(data, clock.monotonic())
        clock.advance(0.5)
        rtp_session.handle_timer(clock.monotonic())
    for datagram in rtp_session.rtcp_to_send():
        parse_rtcp(datagram)


# --- generated packets round-trip -----------------------------------------------------
extension_blocks = st.one_of(
    st.none(),
    st.tuples(u16, st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
)


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    extension = draw(extension_blocks)
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=64)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=None if extension is None else extension[0],
        extension_data=b"" if extension is None else extension[1],
        padding=draw(st.integers(0, 255)),
    )


@FUZZ
@given(rtp_packets())
def test_generated_rtp_packets_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert header_sizes(data)[1] == len(packet.payload)


one_byte_elements = st.lists(
    st.builds(HeaderExtension, st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=6
)
two_byte_elements = st.lists(
    st.builds(HeaderExtension, st.integers(1, 255), st.binary(max_size=255)), max_size=4
)


@FUZZ
@given(st.one_of(one_byte_elements, two_byte_elements), st.booleans())
def test_generated_extensions_round_trip(elements: list[HeaderExtension], two_byte: bool) -> None:
    packet = RtpPacket(96, 1, 2, 3, b"payload")
    packet.set_header_extensions(elements, two_byte=two_byte)
    assert RtpPacket.parse(bytes(packet)).header_extensions == elements


blocks = st.lists(
    st.builds(
        ReportBlock,
        ssrc=u32,
        fraction_lost=u8,
        packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
        highest_sequence=u32,
        jitter=u32,
        lsr=u32,
        dlsr=u32,
    ),
    max_size=31,
)
sdes_chunks = st.lists(
    st.builds(
        SdesChunk,
        u32,
        st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=255)), max_size=3),
    ),
    max_size=31,
)


@st.composite
def nack_losses(draw: st.DrawFn) -> list[int]:
    """Losses as a receiver reports them: ascending from a base, maybe across the wrap."""
    base = draw(u16)
    offsets = sorted(set(draw(st.lists(st.integers(0, 300), min_size=1, max_size=40))))
    return [(base + offset) & 0xFFFF for offset in offsets]


rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        sender_info=st.builds(SenderInfo, st.integers(0, 2**64 - 1), u32, u32, u32),
        reports=blocks,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=blocks),
    st.builds(SdesPacket, sdes_chunks),
    st.builds(Goodbye, sources=st.lists(u32, max_size=31)),
    st.builds(NackPacket, u32, u32, nack_losses()),
    st.builds(PayloadFeedback, fmt=st.sampled_from([1, 2, 3]), ssrc=u32, media_ssrc=u32),
    st.builds(FirPacket, u32, st.lists(st.builds(FirEntry, u32, u8), max_size=8)),
    st.builds(
        RembPacket,
        u32,
        st.builds(lambda m, e: m << e, st.integers(0, 0x3FFFF), st.integers(0, 40)),
        st.lists(u32, max_size=8),
    ),
)


@FUZZ
@given(st.lists(rtcp_packets, min_size=1, max_size=5))
def test_generated_rtcp_compounds_round_trip(packets: list[RtcpPacket]) -> None:
    assert parse_rtcp(serialize_rtcp(packets)) == packets
