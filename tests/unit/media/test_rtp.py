"""RTP packets: golden bytes written from RFC 3550 / RFC 8285, header
extensions, malformed input and the header-rewrite fast path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.media.rtp import (
    ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
    HeaderExtension,
    RtpError,
    RtpPacket,
    header_sizes,
    is_rtcp,
    pack_header_extensions,
    parse_header_extensions,
    rewrite_header,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "rtp"


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


EXPECTED = {
    "rtp_pcmu.bin": RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=8000,
        ssrc=0xDEADBEEF,
        payload=b"\xff" * 8,
    ),
    "rtp_marker_csrc.bin": RtpPacket(
        payload_type=96,
        sequence_number=0xFFFF,
        timestamp=0xFFFFFFFF,
        ssrc=0x01020304,
        payload=b"\x01\x02\x03\x04",
        marker=True,
        csrc=(0x11111111, 0x22222222),
    ),
    "rtp_ext_one_byte.bin": RtpPacket(
        payload_type=111,
        sequence_number=1,
        timestamp=2400,
        ssrc=0xCAFEBABE,
        payload=b"\xfc\xff\xfe",
        extension_profile=ONE_BYTE_PROFILE,
        extension_data=bytes.fromhex("108a003212345600"),
    ),
    "rtp_ext_one_byte_id15.bin": RtpPacket(
        payload_type=111,
        sequence_number=2,
        timestamp=2560,
        ssrc=0xCAFEBABE,
        payload=b"\xfc\xff\xfe",
        extension_profile=ONE_BYTE_PROFILE,
        extension_data=bytes.fromhex("2055f30102030405"),
    ),
    "rtp_ext_two_byte.bin": RtpPacket(
        payload_type=96,
        sequence_number=0x8000,
        timestamp=0x12345678,
        ssrc=1,
        payload=b"\xab\xcd",
        extension_profile=TWO_BYTE_PROFILE,
        extension_data=bytes.fromhex("14000111") + b"a" * 17 + bytes(3),
    ),
    "rtp_ext_generic.bin": RtpPacket(
        payload_type=0,
        sequence_number=3,
        timestamp=320,
        ssrc=42,
        payload=b"\xff",
        extension_profile=0xABAC,
        extension_data=b"\x01\x02\x03\x04",
    ),
    "rtp_padding.bin": RtpPacket(
        payload_type=8,
        sequence_number=0x0102,
        timestamp=0x0A0B0C0D,
        ssrc=0x55555555,
        payload=b"\xd5" * 4,
        padding=4,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_packet_parses_to_its_fields_and_back_to_the_same_bytes(name: str) -> None:
    data = golden(name)
    packet = RtpPacket.parse(data)
    assert packet == EXPECTED[name]
    assert bytes(packet) == data
    assert bytes(EXPECTED[name]) == data


def test_every_golden_rtp_file_has_expectations() -> None:
    assert {p.name for p in GOLDEN.glob("rtp_*.bin")} == set(EXPECTED)


def test_one_byte_elements_skip_padding_between_them() -> None:
    packet = RtpPacket.parse(golden("rtp_ext_one_byte.bin"))
    assert packet.header_extensions == [
        HeaderExtension(1, b"\x8a"),
        HeaderExtension(3, b"\x12\x34\x56"),
    ]


def test_one_byte_id_15_stops_the_block() -> None:
    packet = RtpPacket.parse(golden("rtp_ext_one_byte_id15.bin"))
    assert packet.header_extensions == [HeaderExtension(2, b"\x55")]


def test_two_byte_elements_may_be_empty_or_longer_than_16() -> None:
    packet = RtpPacket.parse(golden("rtp_ext_two_byte.bin"))
    assert packet.header_extensions == [HeaderExtension(20, b""), HeaderExtension(1, b"a" * 17)]


def test_two_byte_appbits_profile_is_still_two_byte() -> None:
    assert parse_header_extensions(0x100F, b"\x05\x01\x09\x00") == [HeaderExtension(5, b"\x09")]


def test_non_8285_profile_has_no_elements_to_give() -> None:
    packet = RtpPacket.parse(golden("rtp_ext_generic.bin"))
    with pytest.raises(RtpError, match="not RFC 8285"):
        _ = packet.header_extensions


def test_packet_without_extension_has_no_elements() -> None:
    assert RtpPacket.parse(golden("rtp_pcmu.bin")).header_extensions == []


def test_set_header_extensions_picks_the_smallest_form() -> None:
    packet = RtpPacket(0, 1, 2, 3)
    packet.set_header_extensions([HeaderExtension(1, b"\x8a"), HeaderExtension(3, b"\x12\x34\x56")])
    assert packet.extension_profile == ONE_BYTE_PROFILE
    assert packet.extension_data == bytes.fromhex("108a321234560000")
    packet.set_header_extensions([HeaderExtension(20, b""), HeaderExtension(1, b"a" * 17)])
    assert packet.extension_profile == TWO_BYTE_PROFILE
    assert RtpPacket.parse(bytes(packet)) == packet
    packet.set_header_extensions([])
    assert packet.extension_profile is None
    assert bytes(packet)[0] & 0x10 == 0


def test_two_byte_form_on_request() -> None:
    profile, block = pack_header_extensions([HeaderExtension(1, b"x")], two_byte=True)
    assert (profile, block) == (TWO_BYTE_PROFILE, b"\x01\x01x\x00")


@pytest.mark.parametrize(
    "element",
    [HeaderExtension(0, b"x"), HeaderExtension(256, b"x"), HeaderExtension(1, bytes(256))],
)
def test_element_that_fits_no_form_is_refused(element: HeaderExtension) -> None:
    with pytest.raises(RtpError, match="fits neither"):
        pack_header_extensions([element])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than its header"),
        (bytes.fromhex("80001234000000000000"), "shorter than its header"),
        (bytes.fromhex("40001234 00000000 00000000".replace(" ", "")), "version 1"),
        (bytes.fromhex("81001234 00000000 00000000".replace(" ", "")), "CSRC list"),
        (bytes.fromhex("90001234 00000000 00000000 bede".replace(" ", "")), "extension header"),
        (bytes.fromhex("90001234 00000000 00000000 bede0001".replace(" ", "")), "extension"),
        (bytes.fromhex("a0001234 00000000 00000000 00".replace(" ", "")), "padding count 0"),
        (bytes.fromhex("a0001234 00000000 00000000 0005".replace(" ", "")), "padding count 5"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)
    with pytest.raises(RtpError):
        header_sizes(data)


@pytest.mark.parametrize(
    "block",
    ["1f", "10", "0001", "0102", "010509"],
    ids=["one-byte", "one-byte-2", "two", "two-2", "two-3"],
)
def test_truncated_elements_raise_rtp_error(block: str) -> None:
    profile = ONE_BYTE_PROFILE if block.startswith("1") else TWO_BYTE_PROFILE
    with pytest.raises(RtpError, match="truncated"):
        parse_header_extensions(profile, bytes.fromhex(block))


def test_padding_may_take_the_whole_payload() -> None:
    packet = RtpPacket.parse(bytes.fromhex("a000123400000000000000000002"))
    assert (packet.payload, packet.padding) == (b"", 2)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 1, 2, 3),
        RtpPacket(0, 1, 2, 3, csrc=tuple(range(16))),
        RtpPacket(0, 65536, 2, 3),
        RtpPacket(0, 1, 2**32, 3),
        RtpPacket(0, 1, 2, 3, padding=256),
        RtpPacket(0, 1, 2, 3, extension_profile=0xBEDE, extension_data=b"\x10\x01"),
        RtpPacket(0, 1, 2, 3, extension_profile=0x10000),
    ],
)
def test_fields_out_of_range_refuse_to_serialize(packet: RtpPacket) -> None:
    with pytest.raises(RtpError):
        bytes(packet)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_sizes_agree_with_the_parser(name: str) -> None:
    data = golden(name)
    header, payload = header_sizes(data)
    packet = RtpPacket.parse(data)
    assert payload == len(packet.payload)
    assert data[header : header + payload] == packet.payload


def test_rewrite_header_changes_only_the_fixed_fields() -> None:
    data = golden("rtp_marker_csrc.bin")
    out = rewrite_header(
        data, payload_type=0, sequence_number=7, timestamp=9, ssrc=0xABCDEF01, marker=False
    )
    assert RtpPacket.parse(out) == RtpPacket(
        payload_type=0,
        sequence_number=7,
        timestamp=9,
        ssrc=0xABCDEF01,
        payload=b"\x01\x02\x03\x04",
        csrc=(0x11111111, 0x22222222),
    )
    assert data == golden("rtp_marker_csrc.bin")  # the input is not touched


def test_rewrite_header_masks_values_to_their_width() -> None:
    out = rewrite_header(
        golden("rtp_pcmu.bin"),
        payload_type=0x80 | 8,
        sequence_number=0x10001,
        timestamp=2**32 + 5,
        ssrc=2**32 + 6,
        marker=True,
    )
    packet = RtpPacket.parse(out)
    assert (packet.payload_type, packet.sequence_number, packet.timestamp, packet.ssrc) == (
        8,
        1,
        5,
        6,
    )
    assert packet.marker


@pytest.mark.parametrize("name", ["rtp_ext_one_byte.bin", "rtp_ext_two_byte.bin"])
def test_rewrite_header_keeps_or_strips_the_extension(name: str) -> None:
    data = golden(name)
    original = RtpPacket.parse(data)
    fields = {"payload_type": 9, "sequence_number": 1, "timestamp": 2, "ssrc": 3, "marker": True}
    kept = RtpPacket.parse(rewrite_header(data, **fields))  # type: ignore[arg-type]
    assert kept.extension_data == original.extension_data
    stripped = RtpPacket.parse(rewrite_header(data, strip_extension=True, **fields))  # type: ignore[arg-type]
    assert stripped.extension_profile is None
    assert stripped.payload == original.payload
    assert (stripped.payload_type, stripped.marker) == (9, True)


def test_rewrite_keeps_padding() -> None:
    out = rewrite_header(
        golden("rtp_padding.bin"),
        payload_type=8,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        marker=False,
    )
    assert RtpPacket.parse(out).padding == 4


@pytest.mark.parametrize(
    ("data", "rtcp"),
    [
        (bytes.fromhex("80c8"), True),
        (bytes.fromhex("81cd"), True),
        (bytes.fromhex("80df"), True),
        (bytes.fromhex("8000"), False),
        (bytes.fromhex("80e0"), False),
        (bytes.fromhex("80bf"), False),
        (b"\x80", False),
    ],
)
def test_rtcp_is_told_from_rtp_by_the_second_octet(data: bytes, rtcp: bool) -> None:
    assert is_rtcp(data) is rtcp
