"""VP8: RFC 7741 round trips, quality at 320x240 and 640x480, keyframes on
demand, bitrate changes without keyframes, loss handling."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacodecs.base import RtpPayload
from mediacodecs.video import video_frame
from mediacodecs.vp8 import Vp8Decoder, Vp8Encoder, vp8_depacketize, vp8_packetize
from tests.unit.codecs.signals import gradient, gradient_frame, mean_error


def _encode(encoder: Vp8Encoder, frames: range, width: int, height: int) -> list[list[RtpPayload]]:
    return [encoder.encode(gradient_frame(width, height, i)) for i in frames]


def test_packetize_and_depacketize_round_trip() -> None:
    frame = bytes([0x10]) + bytes(range(256)) * 12  # 3073 bytes: three payloads
    payloads = vp8_packetize(frame, picture_id=300)
    assert len(payloads) == 3
    assert all(len(p) <= 1300 for p in payloads)
    parts = [vp8_depacketize(p) for p in payloads]
    assert [p.starts_frame for p in parts] == [True, False, False]
    assert parts[0].keyframe  # P bit 0 in the first payload header byte
    assert b"".join(p.data for p in parts) == frame
    # X=1, I=1, M=1: a 15-bit PictureID in every payload.
    assert all(p[0] & 0x80 and p[1] & 0x80 and p[2] & 0x80 for p in payloads)
    assert all(((p[2] & 0x7F) << 8 | p[3]) == 300 for p in payloads)


def test_a_delta_frame_is_not_a_keyframe() -> None:
    (payload,) = vp8_packetize(bytes([0x11, 0, 0]), picture_id=1)
    assert not vp8_depacketize(payload).keyframe


def test_a_truncated_descriptor_is_rejected() -> None:
    with pytest.raises(ValueError, match="truncated"):
        vp8_depacketize(bytes([0x90]))


@given(st.binary(max_size=32))
def test_any_bytes_either_depacketize_or_raise_value_error(payload: bytes) -> None:
    with contextlib.suppress(ValueError):
        vp8_depacketize(payload)


@pytest.mark.parametrize(("width", "height", "frames"), [(320, 240, 30), (640, 480, 15)])
def test_moving_gradient_round_trip(width: int, height: int, frames: int) -> None:
    encoder, decoder = Vp8Encoder(width, height, 15, 800_000), Vp8Decoder()
    errors = []
    for index, payloads in enumerate(_encode(encoder, range(frames), width, height)):
        assert payloads[-1].marker and not any(p.marker for p in payloads[:-1])
        assert len({p.timestamp for p in payloads}) == 1
        decoded = []
        for payload in payloads:
            decoded += decoder.decode(payload)
        assert len(decoded) == 1
        assert (decoded[0].width, decoded[0].height) == (width, height)
        errors.append(mean_error(decoded[0], gradient(width, height, index)))
    assert np.mean(errors) < 6
    assert max(errors) < 10


def test_timestamps_follow_the_frames_on_a_90khz_clock() -> None:
    encoder = Vp8Encoder(160, 120, 15, 200_000)
    payloads = _encode(encoder, range(4), 160, 120)
    assert [p[0].timestamp for p in payloads] == [0, 6000, 12000, 18000]


def test_keyframe_on_demand() -> None:
    encoder = Vp8Encoder(320, 240, 15, 400_000)
    frames = _encode(encoder, range(10), 320, 240)
    encoder.request_keyframe()
    frames += _encode(encoder, range(10, 14), 320, 240)
    keyframes = [i for i, f in enumerate(frames) if f[0].keyframe]
    assert keyframes == [0, 10]
    assert vp8_depacketize(frames[10][0].data).keyframe  # the bitstream says so too
    assert not vp8_depacketize(frames[11][0].data).keyframe


def test_bitrate_change_shrinks_frames_without_a_keyframe() -> None:
    encoder = Vp8Encoder(320, 240, 15, 240_000)
    before = _encode(encoder, range(30), 320, 240)
    encoder.set_bitrate(60_000)
    after = _encode(encoder, range(30, 60), 320, 240)
    size = [sum(len(p.data) for p in f) for f in before + after]
    assert not any(f[0].keyframe for f in before[1:] + after)
    # 240 and 60 kbit/s at 15 fps: 2000 and 500 bytes a frame.
    assert np.mean(size[10:30]) == pytest.approx(2000, rel=0.3)
    assert np.mean(size[45:]) == pytest.approx(500, rel=0.3)


def test_resolution_change_is_a_keyframe_at_the_new_size() -> None:
    encoder, decoder = Vp8Encoder(320, 240, 15, 400_000), Vp8Decoder()
    for payloads in _encode(encoder, range(3), 320, 240):
        for payload in payloads:
            decoder.decode(payload)
    encoder.set_resolution(160, 120)
    payloads = encoder.encode(gradient_frame(320, 240, 3))  # input size unchanged
    assert payloads[0].keyframe
    decoded = [f for p in payloads for f in decoder.decode(p)]
    assert (decoded[0].width, decoded[0].height) == (160, 120)


def test_after_a_loss_frames_are_dropped_until_a_keyframe() -> None:
    encoder, decoder = Vp8Encoder(320, 240, 15, 400_000), Vp8Decoder()
    assert decoder.keyframe_needed  # nothing decoded yet
    frames = _encode(encoder, range(5), 320, 240)
    decoded = [f for payloads in frames[:3] for p in payloads for f in decoder.decode(p)]
    assert len(decoded) == 3
    assert not decoder.keyframe_needed
    decoder.conceal()  # a payload before frame 3 is lost
    assert decoder.keyframe_needed
    assert [f for payloads in frames[3:] for p in payloads for f in decoder.decode(p)] == []
    encoder.request_keyframe()
    keyframe = encoder.encode(gradient_frame(320, 240, 5))
    assert [f for p in keyframe for f in decoder.decode(p)]
    assert not decoder.keyframe_needed


def test_a_frame_missing_its_first_payload_is_not_decoded() -> None:
    encoder, decoder = Vp8Encoder(320, 240, 15, 2_000_000), Vp8Decoder()
    noise = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    first = encoder.encode(video_frame(noise, 0))
    assert len(first) > 1
    assert [f for p in first[1:] for f in decoder.decode(p)] == []
    assert decoder.keyframe_needed
