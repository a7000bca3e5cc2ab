"""A SIP peer's declared receive limits turned into the size and frame rate we send it."""

from __future__ import annotations

import pytest

from gateway.media.sdp_attributes import parse_fmtp_parameters
from gateway.media.video_limits import VideoLimits, fit, limits_of, macroblocks, receive_limits


def _limits(name: str, fmtp: str | None) -> VideoLimits:
    return receive_limits(name, parse_fmtp_parameters(fmtp))


def test_h264_levels_give_frame_size_and_macroblock_rate() -> None:
    assert _limits("H264", "profile-level-id=42e01f") == VideoLimits(3600, 108000)  # 3.1
    assert _limits("H264", "profile-level-id=42e00c") == VideoLimits(396, 6000)  # 1.2
    assert _limits("H264", None) == VideoLimits(99, 1485)  # absent: Baseline 1.0
    assert _limits("H264", "profile-level-id=42f00b") == VideoLimits(99, 1485)  # 1b by flag
    # max-fs and max-mbps raise what the level allows, never lower it
    raised = _limits("H264", "profile-level-id=42e00c;max-fs=1200;max-mbps=36000")
    assert raised == VideoLimits(1200, 36000)
    assert _limits("H264", "profile-level-id=42e01f;max-fs=99") == VideoLimits(3600, 108000)
    assert _limits("H264", "profile-level-id=zz;max-fs=x") == VideoLimits()  # unreadable


def test_vp8_declares_frame_size_and_rate() -> None:
    assert _limits("VP8", "max-fs=396;max-fr=10") == VideoLimits(396, None, 10)
    assert _limits("VP8", None) == VideoLimits()
    assert _limits("VP8", "max-fr=0;max-fs=-3") == VideoLimits()
    assert _limits("opus", "max-fs=1") == VideoLimits()


def test_what_fits_needs_no_change() -> None:
    assert fit((640, 480), 15, limits_of("H264", "profile-level-id=42e01f")) == ((640, 480), 15)
    assert fit((640, 480), 15, VideoLimits()) == ((640, 480), 15)


@pytest.mark.parametrize(
    ("fmtp", "most"),
    [("profile-level-id=42e00c", 396), ("profile-level-id=42e00a", 99), ("max-fs=792", 792)],
)
def test_a_smaller_decoder_gets_a_smaller_picture_of_the_same_shape(fmtp: str, most: int) -> None:
    (width, height), _fps = fit((640, 480), 15, limits_of("H264", fmtp))
    assert macroblocks(width, height) <= most
    assert macroblocks(width, height) > most * 0.75  # not smaller than needed
    assert abs(width / height - 4 / 3) < 0.05 and width % 2 == 0 and height % 2 == 0


def test_the_macroblock_rate_lowers_the_frame_rate() -> None:
    # level 1.1 at CIF: 3000 / 396 = 7.6 frames a second
    (size, fps) = fit((352, 288), 15, limits_of("H264", "profile-level-id=42e00b"))
    assert size == (352, 288) and fps == pytest.approx(3000 / 396)
    assert fit((640, 480), 15, limits_of("VP8", "max-fr=10"))[1] == 10
    # never below one frame a second, never a picture smaller than 64 pixels a side
    (width, height), fps = fit((640, 480), 15, VideoLimits(max_frame_size=1, max_macroblock_rate=1))
    assert min(width, height) == 64 and fps == 1.0
