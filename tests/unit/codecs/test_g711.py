"""G.711: bit-exact with libavcodec, a sine survives, 20 ms framing, concealment."""

from __future__ import annotations

import numpy as np
import pytest

from mediacodecs.base import RtpPayload
from mediacodecs.g711 import (
    G711Decoder,
    G711Encoder,
    G711Law,
    NumpyG711Decoder,
    NumpyG711Encoder,
    decode_pcm,
    encode_pcm,
    libav_encode,
)
from tests.unit.codecs.signals import frames_of, pcm_of, peak_frequency, sine

LAWS: list[G711Law] = ["pcmu", "pcma"]


@pytest.mark.parametrize("law", LAWS)
def test_encoding_is_identical_to_libavcodec_for_every_sample(law: G711Law) -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert encode_pcm(every, law) == libav_encode(every, law)


@pytest.mark.parametrize("law", LAWS)
def test_decoding_is_identical_to_libavcodec_for_every_code(law: G711Law) -> None:
    codes = bytes(range(256))
    frames = G711Decoder(law).decode(RtpPayload(codes, 0))
    reference = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert np.array_equal(decode_pcm(codes, law), reference)


@pytest.mark.parametrize("law", LAWS)
def test_the_numpy_peer_makes_the_same_payloads_and_samples(law: G711Law) -> None:
    encoders = G711Encoder(law), NumpyG711Encoder(law)
    decoders = G711Decoder(law), NumpyG711Decoder(law)
    for frame in frames_of(sine(1000, 8000, 0.1), 8000, 80):
        payloads = [encoder.encode(frame) for encoder in encoders]
        assert payloads[0] == payloads[1]
        for payload in payloads[0]:
            decoded = [d.decode(payload)[0] for d in decoders]
            assert np.array_equal(decoded[0].to_ndarray(), decoded[1].to_ndarray())
            assert decoded[0].pts == decoded[1].pts == payload.timestamp


@pytest.mark.parametrize(
    ("law", "sample", "code"),
    [("pcmu", 0, 0xFF), ("pcmu", -32768, 0x00), ("pcma", 0, 0xD5), ("pcma", 32767, 0xAA)],
)
def test_known_codes(law: G711Law, sample: int, code: int) -> None:
    assert encode_pcm(np.array([sample], dtype=np.int16), law) == bytes([code])


@pytest.mark.parametrize("law", LAWS)
def test_a_1khz_sine_comes_back_at_1khz(law: G711Law) -> None:
    encoder, decoder = G711Encoder(law), G711Decoder(law)
    decoded = []
    for frame in frames_of(sine(1000, 8000, 0.5), 8000, 160):
        for payload in encoder.encode(frame):
            decoded += decoder.decode(payload)
    pcm = pcm_of(decoded)
    assert pcm.size == 4000
    assert peak_frequency(pcm, 8000) == pytest.approx(1000, abs=20)
    # Companding noise is ~38 dB below a full-scale-ish sine.
    error = pcm.astype(float) - sine(1000, 8000, 0.5).astype(float)
    assert np.sqrt(np.mean(error**2)) < 0.02 * 10000


def test_payloads_are_20ms_whatever_the_input_framing() -> None:
    encoder = G711Encoder("pcmu")
    payloads = []
    for frame in frames_of(sine(1000, 8000, 0.1), 8000, 80):  # 10 ms frames
        payloads += encoder.encode(frame)
    assert [len(p.data) for p in payloads] == [160] * 5
    assert [p.timestamp for p in payloads] == [0, 160, 320, 480, 640]


def test_48khz_stereo_input_is_resampled_to_8khz_mono() -> None:
    stereo = np.repeat(sine(1000, 48000, 0.4), 2)
    encoder, decoder = G711Encoder("pcma"), G711Decoder("pcma")
    decoded = []
    for frame in frames_of(stereo, 48000, 960, channels=2):
        for payload in encoder.encode(frame):
            decoded += decoder.decode(payload)
    pcm = pcm_of(decoded)
    assert 2800 <= pcm.size <= 3200  # 0.4 s less the resampler's delay
    assert peak_frequency(pcm, 8000) == pytest.approx(1000, abs=20)


def test_odd_framing_then_exact_frames_keeps_the_sample_order() -> None:
    encoder = G711Encoder("pcmu")
    ramp = (np.arange(480) * 60 - 14000).astype(np.int16)
    payloads = encoder.encode(frames_of(ramp[:100], 8000, 100)[0])
    for frame in frames_of(ramp[100:420], 8000, 160):  # exact size, but 100 samples wait
        payloads += encoder.encode(frame)
    assert b"".join(p.data for p in payloads) == encode_pcm(ramp[:320], "pcmu")


def test_an_empty_payload_does_not_stop_the_decoder() -> None:
    decoder = G711Decoder("pcma")
    assert decoder.decode(RtpPayload(b"", 0)) == []
    assert decoder.decode(RtpPayload(bytes(160), 160))[0].samples == 160


def test_conceal_gives_silence_on_the_timeline() -> None:
    decoder = G711Decoder("pcmu")
    first = decoder.decode(RtpPayload(bytes(160), 8000))[0]
    hole = decoder.conceal()[0]
    assert first.pts == 8000
    assert hole.pts == 8160
    assert hole.samples == 160
    assert not hole.to_ndarray().any()


@pytest.mark.parametrize("law", LAWS)
def test_the_sample_methods_match_the_frame_methods(law: G711Law) -> None:
    frame_encoder, pcm_encoder = G711Encoder(law), G711Encoder(law)
    frame_decoder, pcm_decoder = G711Decoder(law), G711Decoder(law)
    tone = sine(1000, 8000, 0.2) + (np.arange(1600) % 7).astype(np.int16)
    for frame, start in zip(frames_of(tone, 8000, 160), range(0, tone.size, 160), strict=True):
        expected = frame_encoder.encode(frame)
        assert pcm_encoder.encode_pcm(tone[start : start + 160]) == expected
        samples = pcm_decoder.decode_pcm(expected[0])
        assert np.array_equal(samples, frame_decoder.decode(expected[0])[0].to_ndarray()[0])


def test_sample_framing_keeps_the_order_across_odd_sizes() -> None:
    encoder = G711Encoder("pcma")
    ramp = (np.arange(800) * 35 - 14000).astype(np.int16)
    payloads = []
    for start, stop in ((0, 100), (100, 230), (230, 390), (390, 700)):  # 100, 130, 160, 310
        payloads += encoder.encode_pcm(ramp[start:stop])
    assert [p.timestamp for p in payloads] == [0, 160, 320, 480]
    assert b"".join(p.data for p in payloads) == encode_pcm(ramp[:640], "pcma")
    # 60 samples waited; 100 more complete the next payload.
    assert [p.data for p in encoder.encode_pcm(ramp[700:800])] == [
        encode_pcm(ramp[640:800], "pcma")
    ]


def test_sample_concealment_is_silence_and_moves_the_timeline() -> None:
    decoder = G711Decoder("pcmu")
    assert decoder.decode_pcm(RtpPayload(bytes(160), 8000)).size == 160
    hole = decoder.conceal_pcm()
    assert hole.size == 160 and not hole.any()
    assert decoder.decode(RtpPayload(b"", 0)) == []  # frames and samples share the state
    assert decoder.conceal()[0].pts == 8320
