"""G.711 µ-law (PCMU) and A-law (PCMA) by numpy table lookup.

Why not libavcodec's ``pcm_mulaw``/``pcm_alaw``: for a 160-sample frame the
codec work is a table lookup either way, and the PyAV round trip (frame,
packet, send/receive) costs several times the lookup itself; ``bench
media_codecs`` prints both figures side by side.

The decode tables are G.711's reconstruction levels. The encode tables map
each 16-bit sample to the nearest level, built the way libavcodec builds
them (``pcm_tablegen.h``), so our bytes are identical to libavcodec's for
all 65536 inputs (a test checks this); that rounds to nearest, where the
classic Sun ``g711.c`` truncates and errs ~0.4 % more.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from av import AudioFrame, CodecContext, Packet
from av.audio.codeccontext import AudioCodecContext

from mediacodecs.audio import Pcm, PcmFramer, pcm_frame, silence
from mediacodecs.base import MediaKind, RtpPayload

G711Law = Literal["pcmu", "pcma"]

RATE = 8000
SAMPLES_PER_FRAME = 160  # 20 ms, the RTP/AVP default ptime (RFC 3551 section 4.5)
BITRATE = 64000

_CODES = np.arange(256, dtype=np.int32)


def _ulaw_levels() -> npt.NDArray[np.int16]:
    # G.711 table 2a: bit-inverted code, sign, 3-bit segment, 4-bit step.
    code = ~_CODES & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + 0x84) << segment) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_levels() -> npt.NDArray[np.int16]:
    # G.711 table 1a: even bits inverted (0x55), sign, segment, step.
    code = _CODES ^ 0x55
    segment = (code & 0x70) >> 4
    step = (code & 0x0F) << 4
    magnitude = np.where(segment == 0, step + 8, (step + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _encode_table(levels: npt.NDArray[np.int16], mask: int) -> npt.NDArray[np.uint8]:
    """Sample (as uint16 bit pattern) -> code: the nearest level, on libavcodec's
    14-bit grid with its rounding of the decision thresholds."""
    # Magnitudes of codes i ^ mask rise with i; thresholds halfway between them.
    rising = np.abs(levels[np.arange(128) ^ mask].astype(np.int32))
    thresholds = (rising[:-1] + rising[1:] + 4) >> 3
    steps = np.arange(1, 8192)
    index = np.searchsorted(thresholds, steps, side="right")
    table14 = np.empty(16384, dtype=np.uint8)
    table14[8192] = mask
    table14[8192 + steps] = index ^ mask
    table14[8192 - steps] = index ^ (mask ^ 0x80)
    table14[0] = table14[1]
    samples = np.arange(65536, dtype=np.int32)
    signed = np.where(samples >= 32768, samples - 65536, samples)
    table16: npt.NDArray[np.uint8] = table14[(signed + 32768) >> 2]
    return table16


_DECODE = {"pcmu": _ulaw_levels(), "pcma": _alaw_levels()}
_ENCODE = {
    "pcmu": _encode_table(_DECODE["pcmu"], 0xFF),
    "pcma": _encode_table(_DECODE["pcma"], 0xD5),
}


def encode_pcm(pcm: Pcm, law: G711Law) -> bytes:
    """16-bit samples to G.711 bytes."""
    return _ENCODE[law][pcm.view(np.uint16)].tobytes()


def decode_pcm(data: bytes, law: G711Law) -> Pcm:
    """G.711 bytes to 16-bit samples."""
    return _DECODE[law][np.frombuffer(data, dtype=np.uint8)]


class G711Encoder:
    """PCMU or PCMA at 8 kHz mono, one payload per 20 ms."""

    kind: MediaKind = "audio"

    def __init__(self, law: G711Law, samples_per_frame: int = SAMPLES_PER_FRAME) -> None:
        self.law: G711Law = law
        self._table = _ENCODE[law]
        self._framer = PcmFramer(RATE, 1, samples_per_frame)
        self._timestamp = 0

    @property
    def bitrate(self) -> int:
        """Always 64 kbit/s."""
        return BITRATE

    def encode(self, frame: AudioFrame) -> list[RtpPayload]:
        """Encode; one payload per complete 20 ms."""
        out = []
        for block in self._framer.push(frame):
            out.append(RtpPayload(self._table[block.view(np.uint16)].tobytes(), self._timestamp))
            self._timestamp += block.size
        return out

    def set_bitrate(self, bps: int) -> None:
        """G.711 has one rate."""

    def request_keyframe(self) -> None:
        """Audio has no keyframes."""


class G711Decoder:
    """PCMU or PCMA payloads to 8 kHz mono ``s16`` frames (pts = RTP timestamp)."""

    kind: MediaKind = "audio"
    keyframe_needed = False
    decode_errors = 0  # every byte string is valid G.711

    def __init__(self, law: G711Law) -> None:
        self.law: G711Law = law
        self._table = _DECODE[law]
        self._next_timestamp: int | None = None
        self._last_samples = SAMPLES_PER_FRAME

    def decode(self, payload: RtpPayload) -> list[AudioFrame]:
        """One frame per payload."""
        pcm = self._table[np.frombuffer(payload.data, dtype=np.uint8)]
        self._last_samples = pcm.size or self._last_samples
        self._next_timestamp = payload.timestamp + pcm.size
        return [pcm_frame(pcm, RATE, 1, payload.timestamp)]

    def conceal(self, next_payload: RtpPayload | None = None) -> list[AudioFrame]:
        """Silence for one packet's duration (G.711 itself has no PLC)."""
        pts = self._next_timestamp
        if pts is not None:
            self._next_timestamp = pts + self._last_samples
        return [pcm_frame(silence(self._last_samples, 1), RATE, 1, pts)]


def _libav_context(law: G711Law, mode: Literal["r", "w"]) -> AudioCodecContext:
    context = CodecContext.create("pcm_mulaw" if law == "pcmu" else "pcm_alaw", mode)
    assert isinstance(context, AudioCodecContext)
    context.sample_rate = RATE
    context.layout = "mono"
    if mode == "w":
        context.format = "s16"
    return context


def libav_encode(pcm: Pcm, law: G711Law) -> bytes:
    """The same encoding by libavcodec: the reference for tests and the bench."""
    context = _libav_context(law, "w")
    return b"".join(bytes(p) for p in context.encode(pcm_frame(pcm, RATE, 1, 0)))


class LibavG711Codec:
    """libavcodec's G.711 behind the same calls as ours, kept for ``bench
    media_codecs`` to measure against (not used on the media path)."""

    def __init__(self, law: G711Law) -> None:
        self._encoder = _libav_context(law, "w")
        self._decoder = _libav_context(law, "r")

    def encode(self, frame: AudioFrame) -> bytes:
        """Frame to G.711 bytes."""
        return b"".join(bytes(p) for p in self._encoder.encode(frame))

    def decode(self, data: bytes) -> list[AudioFrame]:
        """G.711 bytes to frames."""
        return self._decoder.decode(Packet(data))
