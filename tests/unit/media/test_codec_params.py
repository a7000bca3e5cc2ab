"""Codec matching: names, rates, channels and the fmtp rules per codec."""

from __future__ import annotations

import pytest

from gateway.media.codec_params import (
    CodecCapability,
    H264ProfileLevelId,
    format_events,
    parse_events,
)
from gateway.media.sdp_attributes import PayloadFormat, parse_fmtp_parameters


def h264(fmtp: str | None, pt: int = 96) -> PayloadFormat:
    return PayloadFormat(pt, "H264", 90000, fmtp=fmtp)


OURS_CB = CodecCapability(
    "H264",
    90000,
    97,
    fmtp="level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
)


@pytest.mark.parametrize(
    ("offered", "matches"),
    [
        ("profile-level-id=42e01f;packetization-mode=1", True),
        ("profile-level-id=42E01F;packetization-mode=1", True),
        ("profile-level-id=42c01f;packetization-mode=1", True),  # also Constrained Baseline
        ("profile-level-id=42e00a;packetization-mode=1", True),  # the level may differ
        ("profile-level-id=42e034;packetization-mode=1", True),
        ("profile-level-id=42001f;packetization-mode=1", False),  # Baseline, not constrained
        ("profile-level-id=4d001f;packetization-mode=1", False),  # Main
        ("profile-level-id=640c1f;packetization-mode=1", False),  # Constrained High
        ("profile-level-id=42e01f", False),  # packetization-mode 0 by default
        ("profile-level-id=42e01f;packetization-mode=0", False),
        ("profile-level-id=zzzzzz;packetization-mode=1", False),
        ("packetization-mode=1", False),  # absent means 42000a, Baseline
    ],
)
def test_h264_profile_and_packetization_mode_must_match(offered: str, matches: bool) -> None:
    assert OURS_CB.matches(h264(offered)) is matches


def test_h264_absent_profile_level_id_is_baseline_level_1() -> None:
    baseline = CodecCapability("H264", 90000, 98, fmtp="profile-level-id=42001f")
    assert baseline.matches(h264(None))
    assert H264ProfileLevelId.parse(None) == H264ProfileLevelId(0x42, 0x00, 0x0A)


def test_h264_absent_profile_level_id_answers_level_1_0() -> None:
    # RFC 6184 8.1: absent means 42000A; without level asymmetry the answer
    # takes the lower level, so it must be level_idc 10 (0x0a), not 0x10.
    ours = CodecCapability("H264", 90000, 98, fmtp="profile-level-id=42001f")
    answer = parse_fmtp_parameters(ours.answer_fmtp(h264(None)))
    assert answer["profile-level-id"] == "42000a"


def test_h264_answer_carries_our_level_with_level_asymmetry() -> None:
    ours = CodecCapability(
        "H264",
        90000,
        97,
        fmtp="level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e028",
    )
    offered = h264("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42c01f")
    answer = parse_fmtp_parameters(ours.answer_fmtp(offered))
    # their profile bytes, our level (4.0 = 0x28), RFC 6184 section 8.2.2
    assert answer["profile-level-id"] == "42c028"
    assert answer["packetization-mode"] == "1"


def test_h264_answer_without_asymmetry_uses_the_lower_level() -> None:
    ours = CodecCapability("H264", 90000, 97, fmtp="packetization-mode=1;profile-level-id=42e028")
    lower = h264("packetization-mode=1;profile-level-id=42e015")
    higher = h264("packetization-mode=1;profile-level-id=42e033")
    assert parse_fmtp_parameters(ours.answer_fmtp(lower))["profile-level-id"] == "42e015"
    assert parse_fmtp_parameters(ours.answer_fmtp(higher))["profile-level-id"] == "42e028"


def test_h264_level_1b_is_ordered_and_respelt() -> None:
    one_b = H264ProfileLevelId.parse("42f00b")
    assert one_b is not None and one_b.is_level_1b
    one = H264ProfileLevelId.parse("42e00a")
    one_one = H264ProfileLevelId.parse("42e00b")
    assert one is not None and one_one is not None
    assert not one_one.is_level_1b
    assert one.level < one_b.level < one_one.level
    high = H264ProfileLevelId.parse("640c1f")
    assert high is not None
    assert str(high.with_level_of(one_b)) == "640c09"
    assert str(one_one.with_level_of(one_b)) == "42f00b"
    assert str(one_b.with_level_of(one_one)) == "42e00b"


def test_unknown_h264_profiles_compare_by_profile_bytes() -> None:
    high10 = H264ProfileLevelId.parse("6e001f")
    assert high10 is not None
    assert high10.profile_name() == "6e00"
    assert H264ProfileLevelId.parse("42e01f") is not None
    assert H264ProfileLevelId.parse("42e01") is None


@pytest.mark.parametrize(
    ("offered", "matches"),
    [
        (PayloadFormat(0, "PCMU", 8000), True),
        (PayloadFormat(0, "pcmu", 8000), True),
        (PayloadFormat(0, "PCMU", 16000), False),
        (PayloadFormat(0, "PCMU", 8000, channels=2), False),
        (PayloadFormat(0, "PCMA", 8000), False),
        (PayloadFormat(0, None, 0), False),
    ],
)
def test_name_rate_and_channels(offered: PayloadFormat, matches: bool) -> None:
    assert CodecCapability("PCMU", 8000, 0).matches(offered) is matches


def test_opus_fmtp_never_prevents_a_match_and_our_fmtp_is_answered() -> None:
    opus = CodecCapability("opus", 48000, 111, channels=2, fmtp="useinbandfec=1")
    offered = PayloadFormat(
        96, "OPUS", 48000, 2, fmtp="stereo=1;sprop-stereo=1;maxaveragebitrate=64000"
    )
    assert opus.matches(offered)
    assert opus.matches(PayloadFormat(96, "opus", 48000, 1))  # opus/48000 without /2
    assert not opus.matches(PayloadFormat(96, "opus", 16000, 2))
    assert opus.answer_fmtp(offered) == "useinbandfec=1"
    assert opus.rtpmap_text() == "opus/48000/2"


def test_g722_is_matched_at_its_rtp_clock_of_8000() -> None:
    g722 = CodecCapability("G722", 8000, 9)
    assert g722.matches(PayloadFormat(9, "G722", 8000))
    assert not g722.matches(PayloadFormat(9, "G722", 16000))


def test_telephone_event_answers_the_common_events() -> None:
    ours = CodecCapability("telephone-event", 8000, 101, fmtp="0-16")
    assert ours.answer_fmtp(PayloadFormat(101, "telephone-event", 8000, fmtp="0-15")) == "0-15"
    assert ours.answer_fmtp(PayloadFormat(101, "telephone-event", 8000)) == "0-15"
    both = PayloadFormat(101, "telephone-event", 8000, fmtp="0-11,16,32-40")
    assert ours.answer_fmtp(both) == "0-11,16"
    assert not ours.matches(PayloadFormat(101, "telephone-event", 8000, fmtp="32-40"))
    assert not ours.matches(PayloadFormat(101, "telephone-event", 48000))


def test_event_lists() -> None:
    assert parse_events("0-3, 10,x,5-4,12-13") == {0, 1, 2, 3, 10, 12, 13}
    assert parse_events(None) == frozenset(range(16))
    assert format_events(frozenset({0, 1, 2, 3, 10, 12, 13})) == "0-3,10,12-13"
    assert format_events(frozenset()) == ""
