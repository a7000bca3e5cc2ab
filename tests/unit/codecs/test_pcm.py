"""PCM in and out of RTP codecs (tones, prompts, the mixer): Opus and G.711
go without PyAV frames, and the samples handed out are the caller's to keep."""

from __future__ import annotations

import numpy as np
import pytest

from mediacodecs.g711 import decode_pcm, encode_pcm
from mediacodecs.pcm import PcmDecoder, PcmEncoder
from mediacodecs.registry import CodecSpec
from tests.unit.codecs.signals import peak_frequency, sine

OPUS = CodecSpec("opus", 48000, 2, "useinbandfec=1")
PCMU = CodecSpec("PCMU", 8000)
G722 = CodecSpec("G722", 8000)


def test_pcmu_samples_match_the_g711_tables_in_odd_chunks() -> None:
    tone = sine(440, 8000, 0.2)
    encoder = PcmEncoder(PCMU)
    payloads = [
        p for start in range(0, 1600, 100) for p in encoder.encode(tone[start : start + 100], 8000)
    ]
    assert b"".join(p.data for p in payloads) == encode_pcm(tone, "pcmu")
    decoder = PcmDecoder(PCMU)
    assert np.array_equal(decoder.decode(payloads[3]), decode_pcm(payloads[3].data, "pcmu"))


def test_opus_samples_are_the_callers_to_keep() -> None:
    tone = sine(440, 48000, 0.4)
    encoder = PcmEncoder(OPUS)
    payloads = [
        p
        for start in range(0, tone.size, 960)
        for p in encoder.encode(tone[start : start + 960], 48000)
    ]
    assert len(payloads) == 20
    decoder = PcmDecoder(OPUS, sample_rate=8000)
    kept = [decoder.decode(payload) for payload in payloads]
    assert all(block.size == 160 for block in kept)
    assert not np.shares_memory(kept[-1], kept[-2])
    assert peak_frequency(np.concatenate(kept[5:]), 8000) == pytest.approx(440, abs=10)
    assert decoder.conceal().size == 160


def test_other_rates_and_codecs_still_go_through_frames() -> None:
    encoder = PcmEncoder(PCMU)
    payloads = encoder.encode(sine(1000, 48000, 0.1), 48000)  # resampled to 8 kHz
    assert len(payloads) >= 4 and all(len(p.data) == 160 for p in payloads)
    g722 = PcmEncoder(G722).encode(sine(1000, 16000, 0.1), 16000)
    pcm = np.concatenate([PcmDecoder(G722).decode(p) for p in g722])
    assert peak_frequency(pcm[320:], 16000) == pytest.approx(1000, abs=30)
