"""Frame pacing, the 90 kHz timeline and frame-rate changes of both encoders."""

from __future__ import annotations

import pytest

from mediacodecs.h264 import H264Encoder
from mediacodecs.video import FramePacer, RtpVideoEncoder, Timeline, video_frame
from mediacodecs.vp8 import Vp8Encoder
from tests.unit.codecs.signals import gradient, gradient_frame


@pytest.mark.parametrize(
    ("source", "target", "kept"), [(30, 15, 15), (30, 20, 20), (30, 30, 30), (15, 30, 15)]
)
def test_pacer_keeps_the_target_rate(source: int, target: int, kept: int) -> None:
    pacer = FramePacer(target)
    admitted = sum(pacer.admit(round(i * 90000 / source)) for i in range(source))
    assert admitted == kept


def test_pacer_does_not_burst_after_a_pause() -> None:
    pacer = FramePacer(10)
    assert pacer.admit(0)
    assert pacer.admit(900_000)  # ten seconds later
    assert not pacer.admit(901_000)


def test_timeline_starts_at_zero_and_unwraps_rtp_time() -> None:
    timeline = Timeline(30)
    near_wrap = 2**32 - 3000
    times = [
        timeline.timestamp(video_frame(gradient(16, 16, 0), pts)) for pts in (near_wrap, 0, 3000)
    ]
    assert times == [0, 3000, 6000]


def test_timeline_never_goes_backwards() -> None:
    timeline = Timeline(30)
    times = [
        timeline.timestamp(video_frame(gradient(16, 16, 0), pts)) for pts in (6000, 3000, 9000)
    ]
    assert times[0] < times[1] < times[2]


def test_frames_without_pts_are_spaced_by_the_frame_rate() -> None:
    timeline = Timeline(25)
    assert [timeline.timestamp(video_frame(gradient(16, 16, 0))) for _ in range(3)] == [
        3600,
        7200,
        10800,
    ]


@pytest.mark.parametrize("make", [Vp8Encoder, H264Encoder])
def test_lower_frame_rate_keeps_the_bitrate(make: type[RtpVideoEncoder]) -> None:
    encoder = make(320, 240, 30, 150_000)
    encoder.set_framerate(10)
    sizes = []
    for index in range(60):  # two seconds at 30 fps in
        payloads = encoder.encode(gradient_frame(320, 240, index, fps=30))
        if payloads:
            sizes.append(sum(len(p.data) for p in payloads))
    assert len(sizes) == 20
    bits_per_second = sum(sizes[4:]) * 8 / (16 / 10)
    assert bits_per_second == pytest.approx(150_000, rel=0.3)
