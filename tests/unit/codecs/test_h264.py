"""H.264: packetization-mode 0 and 1 (single NAL, STAP-A, FU-A) round trips,
quality at 320x240 and 640x480, keyframes on demand, bitrate changes
without keyframes, parameter sets given only in the SDP (sprop-parameter-sets)."""

from __future__ import annotations

import base64
import contextlib
import struct

import numpy as np
import pytest
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st

from mediacodecs.base import RtpPayload
from mediacodecs.h264 import (
    H264Decoder,
    H264Encoder,
    PacketizationMode,
    ParameterSetInjector,
    h264_depacketize,
    h264_packetize,
    parse_sprop_parameter_sets,
)
from mediacodecs.registry import CodecSpec, create_video_decoder, create_video_encoder
from mediacodecs.transcode import VideoTranscoder
from mediacodecs.video import MTU_PAYLOAD, video_frame
from tests.unit.codecs.signals import gradient, gradient_frame, mean_error

START = b"\x00\x00\x00\x01"
SPS = bytes([0x67, 0x42, 0xC0, 0x1F]) + bytes(6)
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88]) + bytes(range(256)) * 12  # 3074 bytes, first_mb_in_slice 0
SLICE = bytes([0x41, 0x9A, 0x10, 0x20])  # a small non-IDR slice


def _annex_b(*units: bytes) -> bytes:
    return b"".join(START + unit for unit in units)


def _reassemble(payloads: list[bytes]) -> bytes:
    return b"".join(h264_depacketize(p).data for p in payloads)


def test_mode_1_aggregates_small_units_in_stap_a_and_fragments_big_ones_in_fu_a() -> None:
    payloads = h264_packetize(_annex_b(SPS, PPS, IDR), 1)
    types = [p[0] & 0x1F for p in payloads]
    assert types == [24, 28, 28, 28]  # STAP-A(SPS, PPS), then the IDR in three FU-As
    assert all(len(p) <= 1300 for p in payloads)
    fu_headers = [p[1] for p in payloads[1:]]
    assert [h & 0xC0 for h in fu_headers] == [0x80, 0x00, 0x40]  # start, middle, end
    assert all(h & 0x1F == 5 for h in fu_headers)
    assert _reassemble(payloads) == _annex_b(SPS, PPS, IDR)


def test_mode_1_depacketized_flags() -> None:
    stap, first, middle, last = (
        h264_depacketize(p) for p in h264_packetize(_annex_b(SPS, PPS, IDR), 1)
    )
    assert stap.starts_frame and not stap.keyframe  # parameter sets open an access unit
    assert first.starts_frame and first.keyframe
    assert not middle.starts_frame and middle.keyframe
    assert not last.starts_frame


def test_mode_0_sends_each_nal_unit_alone() -> None:
    payloads = h264_packetize(_annex_b(SPS, PPS, SLICE), 0)
    assert payloads == [SPS, PPS, SLICE]
    assert _reassemble(payloads) == _annex_b(SPS, PPS, SLICE)
    flags = [h264_depacketize(p) for p in payloads]
    assert [f.starts_frame for f in flags] == [True, True, True]
    assert not any(f.keyframe for f in flags)


def test_a_second_slice_does_not_start_a_frame() -> None:
    second_slice = bytes([0x41, 0x40, 0x10])  # first_mb_in_slice = 1
    assert not h264_depacketize(second_slice).starts_frame


@pytest.mark.parametrize("payload", [b"\x5d\x00\x00", b"\x7c", b""])
def test_unsupported_or_short_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"not supported|too short"):
        h264_depacketize(payload)  # FU-B (29), a lone FU indicator, nothing


@given(st.binary(max_size=64))
def test_any_bytes_either_depacketize_or_raise_value_error(payload: bytes) -> None:
    with contextlib.suppress(ValueError):
        h264_depacketize(payload)


def _encode(encoder: H264Encoder, frames: range, width: int, height: int) -> list[list[RtpPayload]]:
    return [encoder.encode(gradient_frame(width, height, i)) for i in frames]


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize(("width", "height", "frames"), [(320, 240, 30), (640, 480, 15)])
def test_moving_gradient_round_trip(
    mode: PacketizationMode, width: int, height: int, frames: int
) -> None:
    encoder = H264Encoder(width, height, 15, 1_000_000, packetization_mode=mode)
    decoder = H264Decoder()
    errors = []
    kinds = set()
    for index, payloads in enumerate(_encode(encoder, range(frames), width, height)):
        assert payloads[-1].marker
        kinds |= {p.data[0] & 0x1F for p in payloads}
        if mode == 0:
            assert all(len(p.data) <= MTU_PAYLOAD for p in payloads)
        decoded = [f for p in payloads for f in decoder.decode(p)]
        assert len(decoded) == 1
        errors.append(mean_error(decoded[0], gradient(width, height, index)))
    if mode == 0:
        assert kinds <= set(range(1, 24))  # single NAL units only
    else:
        assert {24, 28} <= kinds  # STAP-A for SPS/PPS, FU-A for big slices
    assert np.mean(errors) < 6
    assert max(errors) < 10


def test_keyframe_on_demand_is_an_idr() -> None:
    encoder = H264Encoder(320, 240, 15, 500_000)
    frames = _encode(encoder, range(8), 320, 240)
    encoder.request_keyframe()
    frames += _encode(encoder, range(8, 11), 320, 240)
    assert [i for i, f in enumerate(frames) if f[0].keyframe] == [0, 8]
    assert any(h264_depacketize(p.data).keyframe for p in frames[8])  # NAL type 5 inside
    assert not any(h264_depacketize(p.data).keyframe for p in frames[9])


@pytest.mark.parametrize("mode", [0, 1])
def test_bitrate_change_shrinks_frames_without_a_keyframe(mode: PacketizationMode) -> None:
    encoder = H264Encoder(320, 240, 15, 600_000, packetization_mode=mode)
    before = _encode(encoder, range(30), 320, 240)
    encoder.set_bitrate(150_000)
    after = _encode(encoder, range(30, 60), 320, 240)
    size = [sum(len(p.data) for p in f) for f in before + after]
    assert not any(f[0].keyframe for f in before[1:] + after)
    # 600 and 150 kbit/s at 15 fps: 5000 and 1250 bytes a frame.
    assert np.mean(size[10:30]) == pytest.approx(5000, rel=0.25)
    assert np.mean(size[45:]) == pytest.approx(1250, rel=0.3)


def test_above_the_ceiling_the_encoder_reopens() -> None:
    encoder = H264Encoder(160, 120, 15, 200_000, max_bitrate=300_000)
    _encode(encoder, range(3), 160, 120)
    encoder.set_bitrate(1_000_000)
    assert encoder.max_bitrate >= 1_000_000
    assert encoder.encode(gradient_frame(160, 120, 3))[0].keyframe


def test_packets_of_a_lost_frame_wait_for_the_next_idr() -> None:
    encoder, decoder = H264Encoder(320, 240, 15, 500_000), H264Decoder()
    frames = _encode(encoder, range(4), 320, 240)
    assert [f for p in frames[0] for f in decoder.decode(p)]
    decoder.conceal()
    assert [f for payloads in frames[1:] for p in payloads for f in decoder.decode(p)] == []
    assert decoder.keyframe_needed
    encoder.request_keyframe()
    idr = encoder.encode(gradient_frame(320, 240, 4))
    assert [f for f in decoder.decode_frame([p.data for p in idr], idr[0].timestamp)]
    assert not decoder.keyframe_needed


# --- sprop-parameter-sets: SPS/PPS only in the SDP -----------------------------------------


def _stap_a_or_single(data: bytes) -> list[bytes]:
    """The NAL units of a payload: those inside a STAP-A, or the payload itself."""
    if data[0] & 0x1F != 24:
        return [data]
    units, pos = [], 1
    while pos + 2 <= len(data):
        (size,) = struct.unpack_from("!H", data, pos)
        units.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return units


def _without_parameter_sets(
    frames: list[list[RtpPayload]],
) -> tuple[list[list[RtpPayload]], list[bytes]]:
    """The frames with every SPS (NAL type 7) and PPS (8) taken out, single or
    inside STAP-A, as a room system sends them that has them only in its SDP;
    and the parameter sets taken (the first SPS, the first PPS)."""
    taken: dict[int, bytes] = {}
    stripped = []
    for payloads in frames:
        kept = []
        for payload in payloads:
            rest = []
            for unit in _stap_a_or_single(payload.data):
                if unit[0] & 0x1F in (7, 8):
                    taken.setdefault(unit[0] & 0x1F, unit)
                else:
                    rest.append(unit)
            if len(rest) > 1:  # what is left of a STAP-A
                data = payload.data[:1] + b"".join(struct.pack("!H", len(u)) + u for u in rest)
            elif rest:
                data = rest[0]
            else:
                continue
            kept.append(RtpPayload(data, payload.timestamp, payload.marker, payload.keyframe))
        stripped.append(kept)
    return stripped, [taken[7], taken[8]]


def _types(frames: list[list[RtpPayload]]) -> set[int]:
    """The NAL unit types in the frames (FU-A: the fragmented unit's)."""
    return {
        unit[1] & 0x1F if unit[0] & 0x1F == 28 else unit[0] & 0x1F
        for payloads in frames
        for payload in payloads
        for unit in _stap_a_or_single(payload.data)
    }


def _sprop(*units: bytes) -> str:
    return ",".join(base64.b64encode(unit).decode() for unit in units)


@pytest.mark.parametrize("mode", [0, 1])
def test_parameter_sets_given_only_in_the_sdp_are_decoded_with(mode: PacketizationMode) -> None:
    encoder = H264Encoder(320, 240, 15, 500_000, packetization_mode=mode)
    frames, (sps, pps) = _without_parameter_sets(_encode(encoder, range(6), 320, 240))
    assert not {7, 8} & _types(frames)
    assert 5 in _types(frames)  # the IDR is still there

    blind = H264Decoder()
    assert [f for payloads in frames for p in payloads for f in blind.decode(p)] == []

    fmtp = (
        f"profile-level-id=42e01f;packetization-mode={mode};sprop-parameter-sets={_sprop(sps, pps)}"
    )
    decoder = create_video_decoder(CodecSpec("H264", 90000, fmtp=fmtp))
    assert isinstance(decoder, H264Decoder)
    assert decoder.parameter_sets == (sps, pps)
    decoded = [[f for p in payloads for f in decoder.decode(p)] for payloads in frames]
    assert [len(d) for d in decoded] == [1] * 6
    assert max(mean_error(d[0], gradient(320, 240, i)) for i, d in enumerate(decoded)) < 10
    assert decoder.decode_errors == 0


def test_sdp_parameter_sets_hold_after_a_loss_and_the_next_idr() -> None:
    encoder = H264Encoder(320, 240, 15, 500_000)
    first, (sps, pps) = _without_parameter_sets(_encode(encoder, range(3), 320, 240))
    decoder = H264Decoder([sps, pps])
    assert [f for payloads in first for p in payloads for f in decoder.decode(p)]
    decoder.conceal()
    encoder.request_keyframe()
    again, _ = _without_parameter_sets(_encode(encoder, range(3, 5), 320, 240))
    assert [len([f for p in payloads for f in decoder.decode(p)]) for payloads in again] == [1, 1]
    assert not decoder.keyframe_needed


def test_the_router_s_transcoder_takes_the_sender_s_sprop() -> None:
    encoder = H264Encoder(320, 240, 15, 500_000)
    frames, (sps, pps) = _without_parameter_sets(_encode(encoder, range(3), 320, 240))
    decoded = []
    for fmtp in (
        "packetization-mode=1",
        f"packetization-mode=1;sprop-parameter-sets={_sprop(sps, pps)}",
    ):
        source = CodecSpec("H264", 90000, fmtp=fmtp)
        transcoder = VideoTranscoder(source, CodecSpec("VP8", 90000), 320, 240, 15, 300_000)
        for payloads in frames:
            transcoder.process_frame([p.data for p in payloads], payloads[0].timestamp)
        transcoder.close()
        decoded.append(transcoder.frames_decoded)
    assert decoded == [0, 3]


def test_sprop_items_that_are_not_base64_or_not_parameter_sets_are_ignored() -> None:
    idr = base64.b64encode(IDR[:20]).decode()
    unpadded = base64.b64encode(SPS).decode().rstrip("=")
    with structlog.testing.capture_logs() as logs:
        units = parse_sprop_parameter_sets(
            f"!!not base64!!, {unpadded},,{idr},Zg=x,{_sprop(PPS)},é"
        )
    assert units == [SPS, PPS]
    ignored = [line for line in logs if line["event"] == "h264 sprop-parameter-sets item ignored"]
    assert len(ignored) == 4
    assert parse_sprop_parameter_sets(None) == parse_sprop_parameter_sets("") == []


def test_a_malformed_sprop_leaves_in_band_parameter_sets_working() -> None:
    encoder = H264Encoder(320, 240, 15, 500_000)
    frames = _encode(encoder, range(3), 320, 240)
    fmtp = "packetization-mode=1;sprop-parameter-sets=%%%,Z0LAH9oF?B+Q"
    decoder = create_video_decoder(CodecSpec("H264", 90000, fmtp=fmtp))
    assert isinstance(decoder, H264Decoder)
    assert decoder.parameter_sets == ()
    assert [len([f for p in payloads for f in decoder.decode(p)]) for payloads in frames] == [1] * 3


def test_parameter_sets_that_decode_to_nonsense_do_not_break_in_band_ones() -> None:
    encoder = H264Encoder(320, 240, 15, 500_000)
    frames = _encode(encoder, range(3), 320, 240)
    decoder = H264Decoder([bytes([0x67, 0xFF, 0xFF]), bytes([0x68])])
    assert [len([f for p in payloads for f in decoder.decode(p)]) for payloads in frames] == [1] * 3


@pytest.mark.parametrize(
    ("profile_level_id", "level_idc"),
    [("42e01f", 31), ("42e00c", 12), ("42e00a", 10), ("640028", 31), (None, 10)],
)
def test_the_stream_declares_the_receivers_level_up_to_3_1(
    profile_level_id: str | None, level_idc: int
) -> None:
    """The SPS carries the receiver's level (a strict decoder refuses a higher one),
    never more than 3.1; an absent profile-level-id means level 1.0 (RFC 6184)."""
    fmtp = "packetization-mode=1" + (
        f";profile-level-id={profile_level_id}" if profile_level_id else ""
    )
    encoder = create_video_encoder(CodecSpec("H264", 90000, 1, fmtp), width=160, height=120, fps=15)
    payloads = encoder.encode(video_frame(np.zeros((120, 160, 3), np.uint8), 0))
    sps = [n for p in payloads for n in _stap_a_or_single(p.data) if n[0] & 0x1F == 7]
    assert sps and sps[0][3] == level_idc


def test_parameter_sets_go_in_band_only_where_the_stream_lacks_them() -> None:
    encoder = H264Encoder(160, 120, 15, 300_000)
    frames = _encode(encoder, range(3), 160, 120)
    stripped, sets = _without_parameter_sets(frames)
    injector = ParameterSetInjector(sets)
    assert _stap_a_or_single(injector.payload) == sets  # one STAP-A: SPS, PPS
    # a stream with its own SPS before the IDR gets nothing added
    assert [injector.before(p.data, p.timestamp) for f in frames for p in f] == [None] * sum(
        map(len, frames)
    )
    # the same stream without: the STAP-A before the IDR's first packet, once
    injector = ParameterSetInjector(sets)
    added = [injector.before(p.data, p.timestamp) for f in stripped for p in f]
    payloads = [p.data for f in stripped for p in f]
    first_idr = next(i for i, data in enumerate(payloads) if h264_depacketize(data).keyframe)
    assert [i for i, extra in enumerate(added) if extra is not None] == [first_idr]
    assert added[first_idr] == injector.payload
    assert injector.injected == 1
    assert injector.before(b"", 0) is None
