"""The registry: passthrough, transcode (with a cost) or nothing."""

from __future__ import annotations

import pytest

from mediacodecs.base import CodecError
from mediacodecs.g711 import G711Encoder
from mediacodecs.h264 import H264Encoder
from mediacodecs.opus import OpusDecoder, OpusEncoder
from mediacodecs.registry import (
    CodecSpec,
    can_bridge,
    create_audio_decoder,
    create_audio_encoder,
    create_video_encoder,
    fmtp_parameters,
)

OPUS = CodecSpec("opus", 48000, 2, "minptime=10;useinbandfec=1")
PCMU = CodecSpec("PCMU", 8000)
PCMA = CodecSpec("PCMA", 8000)
G722 = CodecSpec("G722", 8000)
VP8 = CodecSpec("VP8", 90000)


def h264(profile_level_id: str = "42e01f", mode: int | None = 1) -> CodecSpec:
    fmtp = f"level-asymmetry-allowed=1;profile-level-id={profile_level_id}"
    if mode is not None:
        fmtp += f";packetization-mode={mode}"
    return CodecSpec("H264", 90000, fmtp=fmtp)


@pytest.mark.parametrize("codec", [OPUS, PCMU, PCMA, G722, VP8, h264()])
def test_the_same_codec_passes_through_for_free(codec: CodecSpec) -> None:
    bridge = can_bridge(codec, codec)
    assert bridge is not None
    assert (bridge.kind, bridge.cost) == ("passthrough", 0.0)


def test_names_are_case_insensitive_and_opus_fmtp_does_not_matter() -> None:
    assert can_bridge(CodecSpec("pcmu", 8000), PCMU).kind == "passthrough"  # type: ignore[union-attr]
    mono_opus = CodecSpec("OPUS", 48000, 1, "stereo=0")
    assert can_bridge(OPUS, mono_opus).kind == "passthrough"  # type: ignore[union-attr]


def test_different_audio_codecs_transcode_and_resampling_costs_more() -> None:
    same_rate = can_bridge(PCMU, PCMA)
    other_rate = can_bridge(PCMU, G722)
    assert same_rate is not None and other_rate is not None
    assert same_rate.kind == other_rate.kind == "transcode"
    assert 0 < same_rate.cost < other_rate.cost
    opus = can_bridge(OPUS, PCMU)
    assert opus is not None and opus.cost > same_rate.cost


def test_video_cost_scales_with_pixels_per_second() -> None:
    vga = can_bridge(VP8, h264())
    hd = can_bridge(VP8, h264(), width=1280, height=720, fps=30)
    assert vga is not None and hd is not None
    assert vga.kind == "transcode"
    assert hd.cost == pytest.approx(vga.cost * 6)
    assert vga.cost > can_bridge(OPUS, PCMU).cost  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("source", "sink"),
    [
        (OPUS, VP8),  # audio and video
        (CodecSpec("telephone-event", 8000), CodecSpec("telephone-event", 8000)),
        (CodecSpec("G729", 8000), PCMU),
        (CodecSpec("opus", 16000), OPUS),  # not opus's RTP clock
        (h264(mode=2), h264()),  # interleaved mode
    ],
)
def test_what_we_cannot_bridge(source: CodecSpec, sink: CodecSpec) -> None:
    assert can_bridge(source, sink) is None


@pytest.mark.parametrize(
    ("source", "sink", "kind"),
    [
        (h264("42e01f"), h264("42e01f"), "passthrough"),
        (h264("42e01f"), h264("42c01f"), "passthrough"),  # both Constrained Baseline
        (h264("42e01f"), h264("64001f"), "passthrough"),  # CB decodes as High
        (h264("42e01f"), h264("42001f"), "passthrough"),  # ... and as Baseline
        (h264("42001f"), h264("42e01f"), "transcode"),  # Baseline may use FMO/ASO
        (h264("64001f"), h264("42e01f"), "transcode"),  # High is not CB
        (h264("42e01f"), h264("42e00d"), "transcode"),  # level 3.1 to a level 1.3 receiver
        (h264("42e00d"), h264("42e01f"), "passthrough"),
        (h264(mode=0), h264(mode=1), "passthrough"),  # single NAL units suit mode 1
        (h264(mode=1), h264(mode=0), "transcode"),  # FU-A does not suit mode 0
        (h264(mode=None), h264(mode=0), "passthrough"),  # absent means 0
    ],
)
def test_h264_profiles_levels_and_packetization_modes(
    source: CodecSpec, sink: CodecSpec, kind: str
) -> None:
    bridge = can_bridge(source, sink)
    assert bridge is not None
    assert bridge.kind == kind, bridge.reason


def test_an_absent_profile_level_id_is_baseline_level_1() -> None:
    plain = CodecSpec("H264", 90000)
    assert can_bridge(plain, h264("42e01f", mode=0)).kind == "transcode"  # type: ignore[union-attr]
    assert can_bridge(h264("42e00a", mode=0), plain).kind == "passthrough"  # type: ignore[union-attr]


def test_fmtp_parameters() -> None:
    assert fmtp_parameters(" Profile-Level-Id=42e01f; packetization-mode=1;x") == {
        "profile-level-id": "42e01f",
        "packetization-mode": "1",
        "x": "",
    }
    assert fmtp_parameters(None) == {}


def test_factories() -> None:
    assert isinstance(create_audio_encoder(PCMA), G711Encoder)
    decoder = create_audio_decoder(OPUS, sample_rate=16000)
    assert isinstance(decoder, OpusDecoder) and decoder.sample_rate == 16000
    assert create_audio_decoder(OPUS, sample_rate=44100).sample_rate == 48000  # type: ignore[attr-defined]
    encoder = create_audio_encoder(CodecSpec("opus", 48000, 2))
    assert isinstance(encoder, OpusEncoder)
    video = create_video_encoder(h264(mode=0), width=320, height=240)
    assert isinstance(video, H264Encoder) and video.packetization_mode == 0
    with pytest.raises(CodecError):
        create_audio_encoder(VP8)
    with pytest.raises(CodecError):
        create_video_encoder(h264(mode=2))
