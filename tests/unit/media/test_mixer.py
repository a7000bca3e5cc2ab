"""The mix-minus mixer with PCMU members: each gets the others, never itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from gateway.media.mixer import AudioMixer
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp import RtpWriter, header_sizes
from gateway.media.sdp_attributes import Direction
from mediacodecs.base import RtpPayload
from mediacodecs.executor import MediaExecutor
from mediacodecs.pcm import PcmDecoder, PcmEncoder

PCMU = NegotiatedCodec(payload_type=0, name="PCMU", clock_rate=8000)


class FakeStream:
    """A member's stream: what the mixer sends it is kept."""

    kind = "audio"

    def __init__(self) -> None:
        self.negotiated: NegotiatedStream | None = NegotiatedStream(
            index=0, kind="audio", proto="RTP/AVP", accepted=True, codecs=(PCMU,),
            direction=Direction.SENDRECV,
        )  # fmt: skip
        self.on_rtp: Callable[..., None] | None = None
        self.on_keyframe_request: Callable[..., None] | None = None
        self.received: list[bytes] = []

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.received.append(bytes(data))
        return True

    def switch_source(self) -> None:
        return None

    def request_keyframe(self) -> None:
        return None


@pytest.fixture
async def executor() -> AsyncIterator[MediaExecutor]:
    with MediaExecutor(1) as pool:
        yield pool


def _tone(hz: float, seconds: float) -> list[bytes]:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    writer = RtpWriter(0, 1234)
    payloads = PcmEncoder(PCMU).encode(pcm, 8000)
    return [bytes(writer.packet(p.data, i * 160)) for i, p in enumerate(payloads)]


def _spectrum(packets: list[bytes]) -> Callable[[float], float]:
    decoder = PcmDecoder(PCMU)
    parts = []
    for packet in packets:
        header, size = header_sizes(packet)
        parts.append(decoder.decode(RtpPayload(packet[header : header + size], 0)))
    samples = np.concatenate(parts).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / 8000)

    def strength(hz: float) -> float:
        band = spectrum[(freqs > hz - 15) & (freqs < hz + 15)]
        return float(band.max() / spectrum.max())

    return strength


async def test_each_member_hears_the_others_but_not_itself(executor: MediaExecutor) -> None:
    mixer = AudioMixer(executor)
    streams = [FakeStream(), FakeStream(), FakeStream()]
    tones = [_tone(hz, 1.0) for hz in (440, 1000, 1500)]
    for stream in streams:
        mixer.add(stream)
    for index in range(50):  # 20 ms apart, as a phone sends them
        for stream, packets in zip(streams, tones, strict=True):
            assert stream.on_rtp is not None
            stream.on_rtp(stream, packets[index], 0.0)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    mixer.close()
    assert all(len(s.received) > 30 for s in streams), [len(s.received) for s in streams]
    heard = [_spectrum(s.received) for s in streams]
    for me, (hz, strength) in enumerate(zip((440, 1000, 1500), heard, strict=True)):
        others = [h for i, h in enumerate((440, 1000, 1500)) if i != me]
        assert all(strength(o) > 0.3 for o in others), (hz, [strength(o) for o in others])
        assert strength(hz) < 0.05, f"member {me} hears itself"
    assert streams[0].on_rtp is None, "close() gives the streams back"
