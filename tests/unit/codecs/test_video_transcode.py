"""Video transcoding VP8 <-> H.264 at 640x480, scaling, and what a lost job does."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.metrics import MEDIA_TRANSCODES_ACTIVE
from mediacodecs.base import RtpPayload
from mediacodecs.executor import MediaExecutor
from mediacodecs.registry import CodecSpec, create_video_decoder, create_video_encoder
from mediacodecs.transcode import VideoTranscoder
from mediacodecs.video import video_frame
from tests.unit.codecs.signals import gradient, gradient_frame, mean_error

VP8 = CodecSpec("VP8", 90000)
H264 = CodecSpec("H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")
H264_MODE_0 = CodecSpec("H264", 90000, fmtp="packetization-mode=0;profile-level-id=42e01f")


def _source(
    codec: CodecSpec, frames: int, width: int = 640, height: int = 480
) -> list[list[RtpPayload]]:
    encoder = create_video_encoder(codec, width=width, height=height, bitrate=1_500_000)
    return [encoder.encode(gradient_frame(width, height, i)) for i in range(frames)]


@pytest.mark.parametrize(
    ("source", "sink"), [(VP8, H264), (H264, VP8), (VP8, H264_MODE_0)], ids=str
)
def test_640x480_round_trip_through_a_transcoder(source: CodecSpec, sink: CodecSpec) -> None:
    transcoder = VideoTranscoder(source, sink, 640, 480, 15, 1_000_000)
    decoder = create_video_decoder(sink)
    errors = []
    for index, payloads in enumerate(_source(source, 12)):
        out = [p for payload in payloads for p in transcoder.process(payload)]
        decoded = [f for p in out for f in decoder.decode(p)]
        assert len(decoded) == 1
        errors.append(mean_error(decoded[0], gradient(640, 480, index)))
    transcoder.close()
    assert np.mean(errors) < 8  # two generations of loss
    assert not transcoder.keyframe_needed


def test_scaling_to_the_sink_size() -> None:
    transcoder = VideoTranscoder(VP8, H264, 320, 240, 15, 300_000)
    decoder = create_video_decoder(H264)
    decoded = []
    for payloads in _source(VP8, 3):
        for payload in payloads:
            decoded += [f for p in transcoder.process(payload) for f in decoder.decode(p)]
    assert [(f.width, f.height) for f in decoded] == [(320, 240)] * 3
    small = gradient(640, 480, 2)[::2, ::2]
    assert mean_error(decoded[2], small) < 10


def test_controls_are_applied_before_the_next_payload() -> None:
    transcoder = VideoTranscoder(VP8, VP8, 320, 240, 15, 300_000)
    frames = _source(VP8, 6, 320, 240)
    out = [[p for payload in f for p in transcoder.process(payload)] for f in frames[:3]]
    transcoder.request_keyframe()
    transcoder.set_resolution(160, 120)
    out += [[p for payload in f for p in transcoder.process(payload)] for f in frames[3:]]
    assert [f[0].keyframe for f in out] == [True, False, False, True, False, False]
    decoder = create_video_decoder(VP8)
    last = [d for f in out for p in f for d in decoder.decode(p)][-1]
    assert (last.width, last.height) == (160, 120)


def test_a_dropped_job_makes_the_transcoder_wait_for_a_keyframe() -> None:
    transcoder = VideoTranscoder(VP8, H264, 320, 240, 15, 300_000)
    frames = _source(VP8, 4, 320, 240)
    assert [p for payload in frames[0] for p in transcoder.process(payload)]
    transcoder.note_lost()  # frame 1's job was evicted from the executor
    assert [p for f in frames[2:] for payload in f for p in transcoder.process(payload)] == []
    assert transcoder.keyframe_needed  # the owner sends PLI to the VP8 sender


def test_submit_runs_on_the_executor_and_the_gauge_counts_open_transcoders() -> None:
    gauge = MEDIA_TRANSCODES_ACTIVE.labels(kind="video")
    before = gauge._value.get()
    transcoder = VideoTranscoder(VP8, H264, 160, 120, 15, 200_000)
    assert gauge._value.get() == before + 1
    with MediaExecutor(2) as executor:
        payloads = _source(VP8, 2, 160, 120)
        futures = [transcoder.submit(executor, p) for f in payloads for p in f]
        out = [p for future in futures for p in future.result(5.0)]
    assert len(out) >= 2 and out[0].keyframe
    transcoder.close()
    transcoder.close()
    assert gauge._value.get() == before


def test_a_whole_frame_is_one_executor_job() -> None:
    transcoder = VideoTranscoder(VP8, H264, 640, 480, 15, 500_000)
    encoder = create_video_encoder(VP8, bitrate=4_000_000)
    noise = np.random.default_rng(5).integers(0, 256, (3, 480, 640, 3), dtype=np.uint8)
    frames = [encoder.encode(video_frame(noise[i], i * 6000)) for i in range(3)]
    assert len(frames[0]) > 4  # the keyframe alone is more payloads than a stream may queue
    with MediaExecutor(1, per_key=4) as executor:
        futures = [
            transcoder.submit_frame(executor, [p.data for p in frame], frame[0].timestamp)
            for frame in frames
        ]
        out = [future.result(5.0) for future in futures]
    assert executor.completed == 3 and executor.dropped == 0
    assert all(out) and out[0][0].keyframe
    assert [payload.marker for payload in out[0]][-1]
    transcoder.close()
