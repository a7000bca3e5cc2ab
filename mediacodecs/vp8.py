"""VP8 (RFC 6386) with libvpx through PyAV, RTP payload per RFC 7741.

Packetization reuses aiortc: ``VpxPayloadDescriptor`` parses and writes the
payload descriptor, and ``Vp8Encoder._packetize`` (a stateless classmethod
of the pinned aiortc 1.16.0) splits a frame into descriptor + fragment
payloads of at most 1300 bytes with a 15-bit PictureID; a round-trip test
guards it against an aiortc upgrade.

Bitrate at run time: libvpx can retarget without a keyframe
(``vpx_codec_enc_config_set``), but FFmpeg 8's wrapper (av 18.1.0) only
re-applies one field per frame, ``qmax``; ``bit_rate`` is read once at open
(aiortc re-creates the encoder instead, which costs a keyframe each time).
So libvpx's own rate control is given a floor target, which makes it code
every frame at its quantizer ceiling, and ``_QuantizerControl`` moves that
ceiling each frame to hold the wanted bitrate: changes take effect within
a few frames and never force a keyframe.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
from aiortc.codecs.vpx import Vp8Encoder as _AiortcVp8Encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from av.video.codeccontext import VideoCodecContext

from mediacodecs.video import (
    VIDEO_CLOCK,
    VIDEO_TIME_BASE,
    Depacketized,
    RtpVideoDecoder,
    RtpVideoEncoder,
)

MIN_BITRATE = 50_000
MAX_BITRATE = 4_000_000
_RC_FLOOR = 10_000  # libvpx's own target: always below what we want
_Q_LOWEST = 4  # VP8 quantizer indices 0..63; below 4 costs bits nobody sees
_Q_HIGHEST = 63
_PICTURE_ID_MODULO = 1 << 15


def vp8_depacketize(payload: bytes) -> Depacketized:
    """RFC 7741 payload to VP8 bitstream bytes (raises ValueError if malformed)."""
    descriptor, data = VpxPayloadDescriptor.parse(payload)
    starts = bool(descriptor.partition_start) and descriptor.partition_id == 0
    # RFC 7741 section 4.3: bit 0 of the first payload header byte is the
    # inverse key frame flag.
    keyframe = starts and bool(data) and not data[0] & 0x01
    return Depacketized(data, starts, keyframe)


def vp8_packetize(frame: bytes, picture_id: int) -> list[bytes]:
    """One VP8 frame to RFC 7741 payloads (S bit on the first, PictureID on all)."""
    payloads: list[bytes] = _AiortcVp8Encoder._packetize(frame, picture_id)
    return payloads


class _QuantizerControl:
    """Holds a bitrate by moving the encoder's quantizer ceiling.

    Frame size falls by about half for every 8 quantizer steps (measured on
    libvpx realtime), so the step is proportional to log2(size / budget),
    smoothed over a few frames. Coarser steps are taken faster than finer
    ones: overshoot costs latency and loss, undershoot only some sharpness.
    Keyframes are left out; they are big by nature.
    """

    GAIN = 4.0
    MAX_UP = 8
    MAX_DOWN = 4

    def __init__(self, initial_q: int) -> None:
        self.q = initial_q
        self._error = 0.0

    def update(self, size: int, budget: float) -> int:
        """The new ceiling after a delta frame of ``size`` bytes."""
        ratio = max(size, 1) / max(budget, 1.0)
        self._error = 0.5 * self._error + 0.5 * math.log2(ratio)
        step = round(self.GAIN * self._error)
        step = max(-self.MAX_DOWN, min(self.MAX_UP, step))
        self.q = max(_Q_LOWEST, min(_Q_HIGHEST, self.q + step))
        return self.q


class Vp8Encoder(RtpVideoEncoder):
    """Video frames to RFC 7741 VP8 payloads (realtime libvpx, one thread)."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 15,
        bitrate: int = 500_000,
        *,
        cpu_used: int = -12,
    ) -> None:
        super().__init__(width, height, fps, self._clamp(bitrate))
        # libwebrtc uses -6 on desktops (one stream per machine) and -10/-12 on
        # phones with few cores; a gateway encodes many streams per core, so
        # -12: ~2.0 ms a 640x480 frame against ~3.8 at -6, for ~0.5 dB less
        # PSNR on the bench's test pattern. Negative lets libvpx speed up
        # further when a frame risks its deadline.
        self._cpu_used = cpu_used
        self._picture_id = 0
        self._control = _QuantizerControl(initial_q=40)
        self._last_timestamp: int | None = None

    @staticmethod
    def _clamp(bps: int) -> int:
        return max(MIN_BITRATE, min(MAX_BITRATE, int(bps)))

    def set_bitrate(self, bps: int) -> None:
        """New target from the next frame on, no keyframe."""
        self._bitrate = self._clamp(bps)

    def _open(self) -> VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = self._width, self._height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = Fraction(self._fps).limit_denominator(1001)
        codec.bit_rate = _RC_FLOOR
        codec.qmin = _Q_LOWEST
        codec.qmax = self._control.q
        codec.gop_size = 3000  # keyframes on request (PLI), not by the clock
        codec.thread_count = 1
        codec.options = {
            "deadline": "realtime",
            "cpu-used": str(self._cpu_used),
            "lag-in-frames": "0",  # no look-ahead: a frame out per frame in
            "static-thresh": "1",
            "partitions": "0",  # one token partition, as libwebrtc
            "drop-threshold": "0",  # never drop: pacing is ours
        }
        self._last_timestamp = None
        return codec

    def _before_encode(self, timestamp: int) -> None:
        if self._codec is not None and self._codec.qmax != self._control.q:
            self._codec.qmax = self._control.q  # libvpxenc applies it to this frame

    def _after_encode(self, size: int, keyframe: bool, timestamp: int) -> None:
        previous, self._last_timestamp = self._last_timestamp, timestamp
        if keyframe or previous is None:
            return
        interval = min(max(timestamp - previous, VIDEO_CLOCK // 60), VIDEO_CLOCK)
        self._control.update(size, self._bitrate * interval / VIDEO_CLOCK / 8)

    def _packetize(self, data: bytes) -> list[bytes]:
        payloads = vp8_packetize(data, self._picture_id)
        self._picture_id = (self._picture_id + 1) % _PICTURE_ID_MODULO
        return payloads


class Vp8Decoder(RtpVideoDecoder):
    """RFC 7741 payloads to frames with FFmpeg's native ``vp8`` decoder
    (faster than libvpx's, same output)."""

    def __init__(self) -> None:
        super().__init__("vp8", vp8_depacketize)
