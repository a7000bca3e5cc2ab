"""Opus on libopus: a sine survives, bitrate changes on the fly, FEC and PLC."""

from __future__ import annotations

import numpy as np
import pytest

from mediacodecs.audio import Pcm
from mediacodecs.base import CodecError, RtpPayload
from mediacodecs.opus import OpusDecoder, OpusEncoder, libopus_version
from tests.unit.codecs.signals import frames_of, pcm_of, peak_frequency, sine


def _encode(encoder: OpusEncoder, pcm: Pcm) -> list[RtpPayload]:
    payloads = []
    for frame in frames_of(pcm, 48000, 960):
        payloads += encoder.encode(frame)
    return payloads


def test_the_library_is_libopus() -> None:
    assert libopus_version().startswith("libopus 1.")


@pytest.mark.parametrize("rate", [48000, 16000, 8000])
def test_a_1khz_sine_comes_back_at_1khz(rate: int) -> None:
    payloads = _encode(OpusEncoder(32000), sine(1000, 48000, 0.5))
    assert len(payloads) == 25
    assert [p.timestamp for p in payloads[:3]] == [0, 960, 1920]  # 48 kHz RTP clock
    decoder = OpusDecoder(sample_rate=rate)
    decoded = []
    for payload in payloads:
        decoded += decoder.decode(payload)
    assert decoded[1].pts == 960 * rate // 48000
    pcm = pcm_of(decoded)
    assert pcm.size == rate // 2
    assert peak_frequency(pcm, rate) == pytest.approx(1000, abs=20)


def test_bitrate_changes_take_effect_on_the_next_packet() -> None:
    encoder = OpusEncoder(64000, fec=False)
    noisy = sine(1000, 48000, 1.0) + np.random.default_rng(7).integers(-3000, 3000, 48000)
    high = _encode(encoder, noisy[:24000].astype(np.int16))
    encoder.set_bitrate(12000)
    low = _encode(encoder, noisy[24000:].astype(np.int16))
    assert encoder.bitrate == 12000
    high_size = np.mean([len(p.data) for p in high[5:]])
    low_size = np.mean([len(p.data) for p in low[5:]])
    assert low_size < 0.4 * high_size
    assert low[0].timestamp == high[-1].timestamp + 960  # same stream, no restart


def _tone_change() -> Pcm:
    # 500 Hz, then 1 kHz from packet 20 on: concealing packet 20 from the past
    # (PLC) says 500 Hz, recovering it from packet 21 (FEC) says 1 kHz.
    return np.concatenate([sine(500, 48000, 0.4), sine(1000, 48000, 0.6)])


def test_fec_recovers_a_lost_packet_from_the_next_one() -> None:
    payloads = _encode(OpusEncoder(32000, fec=True, expected_loss=20), _tone_change())
    decoder = OpusDecoder()
    for payload in payloads[:20]:
        decoder.decode(payload)
    recovered = decoder.conceal(payloads[21])[0]
    assert (decoder.recovered, decoder.concealed) == (1, 0)
    assert recovered.pts == 20 * 960
    assert recovered.samples == 960
    assert peak_frequency(pcm_of([recovered]), 48000) == pytest.approx(1000, abs=100)


def test_plc_without_the_next_packet() -> None:
    payloads = _encode(OpusEncoder(32000, fec=True, expected_loss=20), _tone_change())
    decoder = OpusDecoder()
    for payload in payloads[:20]:
        decoder.decode(payload)
    concealed = decoder.conceal()[0]
    assert (decoder.recovered, decoder.concealed) == (0, 1)
    assert concealed.samples == 960
    assert peak_frequency(pcm_of([concealed]), 48000) == pytest.approx(500, abs=100)
    # Decoding goes on normally after the gap.
    assert decoder.decode(payloads[21])[0].pts == 21 * 960


def test_without_fec_the_next_packet_cannot_help() -> None:
    payloads = _encode(OpusEncoder(32000, fec=False), _tone_change())
    decoder = OpusDecoder()
    for payload in payloads[:20]:
        decoder.decode(payload)
    decoder.conceal(payloads[21])
    assert (decoder.recovered, decoder.concealed) == (0, 1)


def test_a_malformed_payload_is_counted_and_concealed() -> None:
    decoder = OpusDecoder()
    decoder.decode(_encode(OpusEncoder(), sine(1000, 48000, 0.02))[0])
    # TOC code 3 (arbitrary frame count) with a frame count of 0 is invalid.
    frames = decoder.decode(RtpPayload(b"\x03\x00", 960))
    assert decoder.decode_errors == 1
    assert len(frames) == 1
    assert frames[0].samples == 960


def test_an_empty_payload_is_concealed_as_one_packet() -> None:
    decoder = OpusDecoder()
    decoder.decode(_encode(OpusEncoder(), sine(1000, 48000, 0.02))[0])
    (frame,) = decoder.decode(RtpPayload(b"", 960))
    assert (frame.samples, frame.pts, decoder.concealed) == (960, 960, 1)


def test_stereo_input_to_a_mono_encoder() -> None:
    stereo = np.repeat(sine(1000, 48000, 0.3), 2)
    encoder = OpusEncoder(32000)
    payloads = []
    for frame in frames_of(stereo, 48000, 960, channels=2):
        payloads += encoder.encode(frame)
    decoder = OpusDecoder(channels=2)
    decoded = []
    for payload in payloads:
        decoded += decoder.decode(payload)
    assert decoded[0].layout.nb_channels == 2
    assert peak_frequency(pcm_of(decoded), 48000) == pytest.approx(1000, abs=20)


def _toc_bandwidths(payloads: list[RtpPayload]) -> set[str]:
    # RFC 6716 section 3.1: the TOC byte's config (top 5 bits) says mode and band.
    bands = ["NB"] * 4 + ["MB"] * 4 + ["WB"] * 4 + ["SWB"] * 2 + ["FB"] * 2
    bands += ["NB"] * 4 + ["WB"] * 4 + ["SWB"] * 4 + ["FB"] * 4  # CELT-only
    return {bands[p.data[0] >> 3] for p in payloads}


def test_an_8khz_encoder_codes_narrowband_and_a_440hz_tone_survives() -> None:
    encoder = OpusEncoder(32000, sample_rate=8000)
    payloads: list[RtpPayload] = []
    tone = sine(440, 8000, 0.6)
    for start in range(0, tone.size, 160):
        payloads += encoder.encode_pcm(tone[start : start + 160])
    assert len(payloads) == 30
    assert [p.timestamp for p in payloads[:3]] == [0, 960, 1920]  # the RTP clock stays 48 kHz
    assert _toc_bandwidths(payloads) == {"NB"}
    assert encoder.complexity == 1  # the narrowband default
    decoder = OpusDecoder(sample_rate=8000)
    pcm = np.concatenate([decoder.decode_pcm(p).copy() for p in payloads])
    assert pcm.size == 30 * 160
    assert peak_frequency(pcm[800:], 8000) == pytest.approx(440, abs=10)
    # A 48 kHz decoder (the browser) hears the same tone.
    wide = OpusDecoder()
    assert peak_frequency(
        np.concatenate([wide.decode_pcm(p).copy() for p in payloads])[4800:], 48000
    ) == pytest.approx(440, abs=10)


def test_a_16khz_encoder_stays_within_wideband() -> None:
    encoder = OpusEncoder(32000, sample_rate=16000)
    payloads: list[RtpPayload] = []
    for frame in frames_of(sine(1000, 16000, 0.4), 16000, 320):
        payloads += encoder.encode(frame)
    assert len(payloads) == 20
    assert _toc_bandwidths(payloads) <= {"NB", "MB", "WB"}
    assert encoder.complexity == 5


def test_an_unsupported_encoder_rate_is_refused() -> None:
    with pytest.raises(CodecError):
        OpusEncoder(sample_rate=44100)


def test_pcm_concealment_continues_the_stream() -> None:
    encoder = OpusEncoder(32000, sample_rate=8000, fec=True, expected_loss=20)
    tone = sine(440, 8000, 0.4)
    payloads = [p for i in range(0, tone.size, 160) for p in encoder.encode_pcm(tone[i : i + 160])]
    decoder = OpusDecoder(sample_rate=8000)
    for payload in payloads[:10]:
        decoder.decode_pcm(payload)
    assert decoder.conceal_pcm(payloads[11]).size == 160
    assert decoder.conceal_pcm().size == 160
    assert (decoder.recovered + decoder.concealed) == 2
