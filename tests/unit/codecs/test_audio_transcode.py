"""Audio transcoding: every pairing keeps a 1 kHz tone at 1 kHz, also through
Opus -> PCMU -> Opus, and losses noted from the executor get concealed."""

from __future__ import annotations

import itertools

import pytest
from av import AudioFrame

from mediacodecs.base import AudioDecoder, RtpPayload
from mediacodecs.registry import CodecSpec, codec_info, create_audio_decoder, create_audio_encoder
from mediacodecs.transcode import AudioTranscoder
from tests.unit.codecs.signals import frames_of, pcm_of, peak_frequency, sine

OPUS = CodecSpec("opus", 48000, 2, "useinbandfec=1")
PCMU = CodecSpec("PCMU", 8000)
PCMA = CodecSpec("PCMA", 8000)
G722 = CodecSpec("G722", 8000)
AUDIO = [OPUS, PCMU, PCMA, G722]


def _source_payloads(codec: CodecSpec, seconds: float) -> list[RtpPayload]:
    info = codec_info(codec)
    assert info is not None
    rate = info.sample_rate
    encoder = create_audio_encoder(codec)
    payloads = []
    for frame in frames_of(sine(1000, rate, seconds), rate, rate // 50):
        payloads += encoder.encode(frame)
    return payloads


def _decode(decoder: AudioDecoder, payloads: list[RtpPayload]) -> list[AudioFrame]:
    frames: list[AudioFrame] = []
    for payload in payloads:
        frames += decoder.decode(payload)
    return frames


@pytest.mark.parametrize(
    ("source", "sink"),
    [pair for pair in itertools.product(AUDIO, AUDIO) if pair[0] != pair[1]],
    ids=lambda c: c.name,
)
def test_every_pairing_keeps_the_tone(source: CodecSpec, sink: CodecSpec) -> None:
    transcoder = AudioTranscoder(source, sink)
    out = []
    for payload in _source_payloads(source, 0.4):
        out += transcoder.process(payload)
    transcoder.close()
    assert len(out) >= 17  # 20 less what resampler and framing hold back
    decoder = create_audio_decoder(sink)
    info = codec_info(sink)
    assert info is not None
    pcm = pcm_of(_decode(decoder, out))
    assert peak_frequency(pcm, info.sample_rate) == pytest.approx(1000, abs=20)


def test_opus_to_pcmu_to_opus() -> None:
    there, back = AudioTranscoder(OPUS, PCMU), AudioTranscoder(PCMU, OPUS)
    out = []
    for payload in _source_payloads(OPUS, 0.6):
        for pcmu in there.process(payload):
            assert len(pcmu.data) == 160
            out += back.process(pcmu)
    assert len(out) >= 27
    assert all(b.timestamp - a.timestamp == 960 for a, b in itertools.pairwise(out))
    pcm = pcm_of(_decode(create_audio_decoder(OPUS), out))
    assert peak_frequency(pcm, 48000) == pytest.approx(1000, abs=20)


def test_a_noted_loss_is_concealed_before_the_next_payload() -> None:
    transcoder = AudioTranscoder(OPUS, PCMU)
    payloads = _source_payloads(OPUS, 0.2)
    assert len(transcoder.process(payloads[0])) == 1
    transcoder.note_lost()  # payloads[1]'s job was dropped
    out = transcoder.process(payloads[2])
    # One 20 ms payload for the concealed packet, one for payloads[2].
    assert [len(p.data) for p in out] == [160, 160]
    assert [p.timestamp for p in out] == [160, 320]


def test_bitrate_control_is_applied_by_the_worker() -> None:
    transcoder = AudioTranscoder(PCMU, OPUS, bitrate=64000)
    payloads = _source_payloads(PCMU, 0.4)
    before = [p for payload in payloads[:10] for p in transcoder.process(payload)]
    transcoder.set_bitrate(8000)
    after = [p for payload in payloads[10:] for p in transcoder.process(payload)]
    assert sum(len(p.data) for p in after[-5:]) < 0.5 * sum(len(p.data) for p in before[-5:])


@pytest.mark.parametrize(("source", "sink"), [(OPUS, PCMU), (PCMU, OPUS), (OPUS, PCMA)])
def test_opus_and_g711_go_without_pyav_and_may_run_inline(
    source: CodecSpec, sink: CodecSpec
) -> None:
    assert AudioTranscoder(source, sink).inline_safe


@pytest.mark.parametrize(("source", "sink"), [(G722, OPUS), (OPUS, G722), (PCMU, G722)])
def test_pyav_pairings_stay_on_the_executor(source: CodecSpec, sink: CodecSpec) -> None:
    assert not AudioTranscoder(source, sink).inline_safe


def test_pcmu_to_opus_encodes_narrowband_at_the_chosen_complexity() -> None:
    transcoder = AudioTranscoder(PCMU, OPUS, opus_complexity=7)
    out = [p for payload in _source_payloads(PCMU, 0.2) for p in transcoder.process(payload)]
    assert len(out) == 10  # no resampler holding samples back
    assert all(p.data[0] >> 3 < 4 for p in out)  # TOC config 0-3: SILK narrowband
    assert transcoder._encoder.complexity == 7  # type: ignore[attr-defined]


def test_a_frame_is_transcoded_like_its_payload() -> None:
    payloads = _source_payloads(PCMU, 0.1)
    one, other = AudioTranscoder(PCMU, OPUS), AudioTranscoder(PCMU, OPUS)
    for payload in payloads:
        assert one.process(payload) == other.process_frame((payload.data,), payload.timestamp)
