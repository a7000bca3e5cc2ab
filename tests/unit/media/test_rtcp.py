"""RTCP packets: golden compound datagrams written from the RFCs, the
fixes over aiortc (SDES alignment, NACK wrap, FIR, REMB, lenient reports),
malformed input, NTP helpers and the A.7 interval."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    picture_loss,
    rtcp_interval,
    serialize_rtcp,
)
from gateway.media.rtp import RtpError

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "rtp"

ROUND_TRIP: dict[str, list[RtcpPacket]] = {
    "rtcp_sr_sdes.bin": [
        SenderReport(
            ssrc=0x11223344,
            sender_info=SenderInfo(
                ntp_timestamp=0xE8D1A5B0_80000000,
                rtp_timestamp=0x12345,
                packet_count=100,
                octet_count=16000,
            ),
            reports=[
                ReportBlock(
                    ssrc=0xDEADBEEF,
                    fraction_lost=0x19,
                    packets_lost=5,
                    highest_sequence=0x11234,
                    jitter=42,
                    lsr=0xA5B08000,
                    dlsr=0x18000,
                )
            ],
        ),
        SdesPacket([SdesChunk(0x11223344, [(1, b"gw-1@example")])]),
    ],
    "rtcp_rr_sdes_bye.bin": [
        ReceiverReport(ssrc=0x11223344),
        SdesPacket([SdesChunk(1, [(1, b"abcde")]), SdesChunk(2, [(1, b"x")])]),
        Goodbye(sources=[0x11223344]),
    ],
    "rtcp_pli.bin": [picture_loss(0x11223344, 0xDEADBEEF)],
    "rtcp_fir.bin": [FirPacket(0x11223344, [FirEntry(0xDEADBEEF, 7)])],
    "rtcp_nack.bin": [NackPacket(0x11223344, 0xDEADBEEF, [0xFFFE, 0xFFFF, 0x0001])],
    "rtcp_remb.bin": [RembPacket(0x11223344, 1_000_000, [0xDEADBEEF])],
}

PARSE_ONLY: dict[str, list[RtcpPacket]] = {
    "rtcp_rr_padded_ext.bin": [
        ReceiverReport(
            ssrc=0x11223344,
            reports=[ReportBlock(0xDEADBEEF, 0, 0, 0x1000, 16, 0, 0)],
        )
    ],
    "rtcp_skipped_types.bin": [ReceiverReport(ssrc=0x11223344)],
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_golden_compound_parses_and_serializes_byte_for_byte(name: str) -> None:
    data = (GOLDEN / name).read_bytes()
    assert parse_rtcp(data) == ROUND_TRIP[name]
    assert serialize_rtcp(ROUND_TRIP[name]) == data


@pytest.mark.parametrize("name", sorted(PARSE_ONLY))
def test_golden_parse_only(name: str) -> None:
    assert parse_rtcp((GOLDEN / name).read_bytes()) == PARSE_ONLY[name]


def test_every_golden_rtcp_file_has_expectations() -> None:
    assert {p.name for p in GOLDEN.glob("rtcp_*.bin")} == set(ROUND_TRIP) | set(PARSE_ONLY)


def test_sdes_chunks_start_on_32_bit_boundaries() -> None:
    # aiortc writes chunk 2 straight after two nulls, at octet 13 of the body.
    body = serialize_rtcp([SdesPacket([SdesChunk(1, [(1, b"abcde")]), SdesChunk(2, [])])])[4:]
    assert body == bytes.fromhex("00000001 0105 6162636465 00 00000002 00000000".replace(" ", ""))


def test_sdes_chunk_exactly_filling_a_word_gets_a_whole_null_word() -> None:
    body = bytes(SdesPacket([SdesChunk(1, [(1, b"ab")])]))[4:]
    assert body == bytes.fromhex("00000001 01026162 00000000".replace(" ", ""))


def test_sdes_without_final_null_keeps_its_items() -> None:
    data = bytes.fromhex("81ca0002 00000001 01026162".replace(" ", ""))
    assert parse_rtcp(data) == [SdesPacket([SdesChunk(1, [(1, b"ab")])])]


def test_cname_of_a_chunk() -> None:
    assert SdesChunk(1, [(2, b"name"), (1, b"cn")]).cname == b"cn"
    assert SdesChunk(1, []).cname is None


def test_nack_groups_losses_across_the_wrap_into_one_item() -> None:
    data = bytes(NackPacket(1, 2, [65534, 65535, 0, 1, 40]))
    assert data[12:] == bytes.fromhex("fffe 0007 0028 0000".replace(" ", ""))
    assert parse_rtcp(data) == [NackPacket(1, 2, [65534, 65535, 0, 1, 40])]


def test_nack_sequence_numbers_stay_16_bit() -> None:
    data = bytes.fromhex("81cd0003 00000001 00000002 ffff8000".replace(" ", ""))
    assert parse_rtcp(data) == [NackPacket(1, 2, [0xFFFF, 15])]


def test_bye_reason_is_accepted_and_ignored() -> None:
    data = bytes.fromhex("81cb0003 00000009 03627965 00000000".replace(" ", ""))
    assert parse_rtcp(data) == [Goodbye(sources=[9])]


def test_sr_with_profile_extension_is_accepted() -> None:
    report = SenderReport(ssrc=1, sender_info=SenderInfo(1, 2, 3, 4))
    data = bytearray(bytes(report) + b"EXT!")
    data[3] += 1
    assert parse_rtcp(bytes(data)) == [report]


def test_other_payload_feedback_is_kept_generic() -> None:
    data = bytes.fromhex("82ce0003 00000001 00000002 aabbccdd".replace(" ", ""))  # SLI
    [packet] = parse_rtcp(data)
    assert packet == PayloadFeedback(fmt=2, ssrc=1, media_ssrc=2, fci=b"\xaa\xbb\xcc\xdd")
    assert bytes(packet) == data


def test_application_feedback_that_is_not_remb_is_generic() -> None:
    data = bytes.fromhex("8fce0003 00000001 00000000 41424344".replace(" ", ""))
    [packet] = parse_rtcp(data)
    assert not isinstance(packet, RembPacket)


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [
        ("", "shorter than a header"),
        ("80c9", "shorter than a header"),
        ("40c90000", "version 1"),
        ("81c90001 00000001", "truncated"),
        ("80c90002 00000001", "longer than the datagram"),
        ("80c90001 00000001 80", "header is truncated"),
        ("a0c90001 00000000", "padding"),
        ("a0c90001 00000005", "padding"),
        ("a0c90000", "padding"),
        ("80c80001 00000001", "truncated"),
        ("81ca0000", "SDES chunk is truncated"),
        ("82ca0001 00000001", "SDES chunk is truncated"),
        ("81ca0002 00000001 0105aaaa", "SDES item 1 is truncated"),
        ("82cb0001 00000001", "BYE"),
        ("81cd0001 00000001", "NACK"),
        ("84ce0001 00000001", "FIR"),
        ("8fce0003 00000001 00000000 52454d42", "REMB"),
        ("8fce0004 00000001 00000000 52454d42 01000000", "REMB"),
        ("81ce0001 00000001", "payload-specific"),
    ],
)
def test_malformed_rtcp_raises_rtp_error(hex_data: str, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtcp(bytes.fromhex(hex_data.replace(" ", "")))


def test_unknown_rtpfb_format_is_skipped_not_read_as_nack() -> None:
    data = bytes.fromhex("8fcd0004 00000001 00000002 00010002 12345678".replace(" ", ""))
    assert parse_rtcp(data) == []


@pytest.mark.parametrize(
    "packet",
    [
        ReceiverReport(ssrc=1, reports=[ReportBlock(1, 0, 0, 0, 0, 0, 0)] * 32),
        SdesPacket([SdesChunk(1, [(1, bytes(256))])]),
        SdesPacket([SdesChunk(1, [(0, b"x")])]),
        SdesPacket([SdesChunk(i) for i in range(32)]),
        RembPacket(1, -1),
        Goodbye(sources=[2**32]),
    ],
)
def test_values_that_do_not_fit_refuse_to_serialize(packet: RtcpPacket) -> None:
    with pytest.raises(RtpError):
        serialize_rtcp([packet])


def test_remb_keeps_an_18_bit_mantissa() -> None:
    [packet] = parse_rtcp(bytes(RembPacket(1, 1_000_001, [])))
    assert isinstance(packet, RembPacket)
    assert packet.bitrate == 1_000_000  # the lowest bits do not fit


def test_ntp_timestamp_of_the_unix_epoch_and_its_middle() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(0.5) == (2_208_988_800 << 32) | 0x80000000
    assert ntp_middle(0xE8D1A5B0_80000000) == 0xA5B08000


BASE = {
    "members": 2,
    "senders": 2,
    "rtcp_bandwidth": 400.0,  # 5% of 64 kbit/s in octets/s
    "we_sent": True,
    "avg_rtcp_size": 100.0,
    "initial": False,
    "reduced_minimum": None,
}


def test_interval_has_a_five_second_minimum_randomized_and_compensated() -> None:
    compensation = 2.718281828459045 - 1.5
    assert rtcp_interval(**BASE, random=0.5) == pytest.approx(5.0 / compensation)  # type: ignore[arg-type]
    assert rtcp_interval(**BASE, random=0.0) == pytest.approx(2.5 / compensation)  # type: ignore[arg-type]
    assert rtcp_interval(**BASE, random=0.999) == pytest.approx(7.495 / compensation)  # type: ignore[arg-type]


def test_initial_interval_halves_the_minimum() -> None:
    value = rtcp_interval(**{**BASE, "initial": True}, random=0.5)  # type: ignore[arg-type]
    assert value == pytest.approx(2.5 / (2.718281828459045 - 1.5))


def test_reduced_minimum_replaces_five_seconds() -> None:
    value = rtcp_interval(**{**BASE, "reduced_minimum": 0.36}, random=0.5)  # type: ignore[arg-type]
    # Above the reduced minimum the bandwidth term rules: 100 octets x 2 / 400 octets/s.
    assert value == pytest.approx(0.5 / (2.718281828459045 - 1.5))


def test_interval_grows_with_members_and_packet_size() -> None:
    big = {**BASE, "members": 100, "senders": 50, "avg_rtcp_size": 200.0}
    value = rtcp_interval(**big, random=0.5)  # type: ignore[arg-type]
    assert value == pytest.approx(200.0 * 100 / 400.0 / (2.718281828459045 - 1.5))


def test_few_senders_share_a_quarter_of_the_bandwidth() -> None:
    few = {**BASE, "members": 100, "senders": 1, "avg_rtcp_size": 1000.0}
    sender = rtcp_interval(**few, random=0.5)  # type: ignore[arg-type]
    receiver = rtcp_interval(**{**few, "we_sent": False}, random=0.5)  # type: ignore[arg-type]
    compensation = 2.718281828459045 - 1.5
    assert sender == pytest.approx(max(5.0, 1000.0 * 1 / 100.0) / compensation)
    assert receiver == pytest.approx(1000.0 * 99 / 300.0 / compensation)
