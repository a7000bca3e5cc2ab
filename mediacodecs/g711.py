"""G.711 µ-law (PCMU) and A-law (PCMA).

Frames go through libavcodec's ``pcm_mulaw``/``pcm_alaw``. We measured
the alternative, numpy table lookup, and it loses once frames are what
goes in and out (``bench media_codecs``, same framing and
payloads): libavcodec does 1.3-1.4 times as many 20 ms encode+decode
pairs per second (~160k against ~120k on the reference host). The lookup
itself takes ~1 µs, but getting samples out of an AVFrame and filling a new
one costs more than libavcodec's whole call, which fills the frame in C.
Either way it is under 0.02 % of a core per leg.

Without frames the tables win by far (~1.3 µs for 20 ms either way), so
the codecs' ``encode_pcm``/``decode_pcm`` methods, which the router's inline
audio path uses (Opus <-> G.711 as plain samples, no PyAV), go through
them. They are bit-exact with libavcodec for all 65536 inputs (a test
checks it); ``Numpy*`` codecs are the bench's frame-based peer. The
decode tables are G.711's reconstruction levels; the encode tables map
each sample to the nearest level, built as libavcodec builds
them (``pcm_tablegen.h``); the classic Sun ``g711.c`` truncates instead
and errs ~0.4 % more.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np
import numpy.typing as npt
from av import AudioFrame, CodecContext
from av.audio.codeccontext import AudioCodecContext

from mediacodecs.audio import (
    Pcm,
    PcmFramer,
    SilenceConcealingDecoder,
    empty_frame,
    pcm_frame,
    samples_of,
    silence,
)
from mediacodecs.base import MediaKind, RtpPayload

G711Law = Literal["pcmu", "pcma"]

RATE = 8000
SAMPLES_PER_FRAME = 160  # 20 ms, the RTP/AVP default ptime (RFC 3551 section 4.5)
BITRATE = 64000

_CODES = np.arange(256, dtype=np.int32)
_TIME_BASE = Fraction(1, RATE)


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


def _libav_context(law: G711Law, mode: Literal["r", "w"]) -> AudioCodecContext:
    context = CodecContext.create("pcm_mulaw" if law == "pcmu" else "pcm_alaw", mode)
    assert isinstance(context, AudioCodecContext)
    context.sample_rate = RATE
    context.layout = "mono"
    if mode == "w":
        context.format = "s16"
    return context


def libav_encode(pcm: Pcm, law: G711Law) -> bytes:
    """``pcm`` encoded by libavcodec in one call (the tables' reference in tests)."""
    context = _libav_context(law, "w")
    return b"".join(bytes(p) for p in context.encode(pcm_frame(pcm, RATE, 1, 0)))


class G711Encoder:
    """PCMU or PCMA at 8 kHz mono, one payload per 20 ms (libavcodec)."""

    kind: MediaKind = "audio"

    def __init__(self, law: G711Law, samples_per_frame: int = SAMPLES_PER_FRAME) -> None:
        self.law: G711Law = law
        self.sample_rate = RATE
        self._codec = _libav_context(law, "w")
        self._table = _ENCODE[law]
        self._framer = PcmFramer(RATE, 1, samples_per_frame)
        self._samples = samples_per_frame
        self._timestamp = 0

    @property
    def bitrate(self) -> int:
        """Always 64 kbit/s."""
        return BITRATE

    def encode(self, frame: AudioFrame) -> list[RtpPayload]:
        """Encode; one payload per complete 20 ms."""
        if (
            frame.samples == self._samples
            and frame.sample_rate == RATE
            and frame.format.name == "s16"
            and frame.layout.nb_channels == 1
            and not self._framer.pending
        ):
            blocks = [frame]  # already one payload's worth: straight in
        else:
            blocks = [pcm_frame(block, RATE, 1) for block in self._framer.push(frame)]
        out = []
        for block in blocks:
            data = b"".join(bytes(p) for p in self._codec.encode(block))
            out.append(RtpPayload(data, self._timestamp))
            self._timestamp += len(data)  # one byte per sample
        return out

    def encode_pcm(self, pcm: Pcm) -> list[RtpPayload]:
        """8 kHz mono samples to payloads by table lookup; one per 20 ms."""
        return self._look_up(self._framer.push_pcm(pcm))

    def _look_up(self, blocks: list[Pcm]) -> list[RtpPayload]:
        out = []
        for block in blocks:
            out.append(RtpPayload(self._table[block.view(np.uint16)].tobytes(), self._timestamp))
            self._timestamp += block.size
        return out

    def set_bitrate(self, bps: int) -> None:
        """G.711 has one rate."""

    def request_keyframe(self) -> None:
        """Audio has no keyframes."""


class G711Decoder(SilenceConcealingDecoder):
    """PCMU or PCMA payloads to 8 kHz mono ``s16`` frames, pts = RTP timestamp (libavcodec)."""

    kind: MediaKind = "audio"

    def __init__(self, law: G711Law) -> None:
        super().__init__(_libav_context(law, "r"), RATE, SAMPLES_PER_FRAME, "g711")
        self.law: G711Law = law
        self.sample_rate = RATE
        self.channels = 1
        self._table = _DECODE[law]

    def decode(self, payload: RtpPayload) -> list[AudioFrame]:
        """One frame per payload."""
        return self._decode_at(payload.data, payload.timestamp)

    def conceal(self, next_payload: RtpPayload | None = None) -> list[AudioFrame]:
        """Silence for one packet's duration (G.711 itself has no PLC)."""
        return self._silence()

    def decode_pcm(self, payload: RtpPayload) -> Pcm:
        """The payload's 8 kHz samples, by table lookup."""
        pcm: Pcm = self._table[np.frombuffer(payload.data, dtype=np.uint8)]
        if pcm.size:
            self._last_samples = pcm.size
            self._next_pts = payload.timestamp + pcm.size
        return pcm

    def conceal_pcm(self, next_payload: RtpPayload | None = None) -> Pcm:
        """Silence for one packet's duration, as samples."""
        if self._next_pts is not None:
            self._next_pts += self._last_samples
        return silence(self._last_samples, 1)


class NumpyG711Encoder(G711Encoder):
    """G711Encoder with frames by table lookup too: the peer ``bench media_codecs`` measures."""

    def encode(self, frame: AudioFrame) -> list[RtpPayload]:
        """Encode; one payload per complete 20 ms."""
        return self._look_up(self._framer.push(frame))


class NumpyG711Decoder:
    """G711Decoder by table lookup: the peer ``bench media_codecs`` measures."""

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
        codes = np.frombuffer(payload.data, dtype=np.uint8)
        frame = empty_frame(codes.size, RATE, 1, payload.timestamp)
        np.take(self._table, codes, out=samples_of(frame))  # straight into the frame
        self._last_samples = codes.size or self._last_samples
        self._next_timestamp = payload.timestamp + codes.size
        return [frame]

    def conceal(self, next_payload: RtpPayload | None = None) -> list[AudioFrame]:
        """Silence for one packet's duration (G.711 itself has no PLC)."""
        pts = self._next_timestamp
        if pts is not None:
            self._next_timestamp = pts + self._last_samples
        return [pcm_frame(silence(self._last_samples, 1), RATE, 1, pts)]
