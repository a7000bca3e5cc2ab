"""G.722: a sine survives, 16 kHz samples on an 8 kHz RTP clock."""

from __future__ import annotations

import pytest

from mediacodecs.base import RtpPayload
from mediacodecs.g722 import G722Decoder, G722Encoder
from tests.unit.codecs.signals import frames_of, pcm_of, peak_frequency, sine


def test_a_1khz_sine_comes_back_at_1khz() -> None:
    encoder, decoder = G722Encoder(), G722Decoder()
    decoded = []
    for frame in frames_of(sine(1000, 16000, 0.5), 16000, 320):
        for payload in encoder.encode(frame):
            decoded += decoder.decode(payload)
    pcm = pcm_of(decoded)
    assert pcm.size == 8000
    assert peak_frequency(pcm, 16000) == pytest.approx(1000, abs=20)


def test_rtp_clock_is_8khz_while_sampling_is_16khz() -> None:
    encoder = G722Encoder()
    payloads = []
    for frame in frames_of(sine(1000, 16000, 0.06), 16000, 320):
        payloads += encoder.encode(frame)
    assert [len(p.data) for p in payloads] == [160, 160, 160]  # 64 kbit/s
    assert [p.timestamp for p in payloads] == [0, 160, 320]
    decoder = G722Decoder()
    frame = decoder.decode(RtpPayload(payloads[0].data, 4000))[0]
    assert (frame.sample_rate, frame.samples, frame.pts) == (16000, 320, 8000)
    assert decoder.conceal()[0].pts == 8320


def test_an_empty_payload_does_not_stop_the_decoder() -> None:
    decoder = G722Decoder()
    assert decoder.decode(RtpPayload(b"", 0)) == []
    assert decoder.decode(RtpPayload(bytes(160), 160))[0].samples == 320


def test_8khz_input_is_upsampled() -> None:
    encoder, decoder = G722Encoder(), G722Decoder()
    decoded = []
    for frame in frames_of(sine(1000, 8000, 0.5), 8000, 160):
        for payload in encoder.encode(frame):
            decoded += decoder.decode(payload)
    assert peak_frequency(pcm_of(decoded), 16000) == pytest.approx(1000, abs=20)
