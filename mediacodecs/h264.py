"""H.264 Constrained Baseline with libx264 through PyAV, RTP per RFC 6184.

av 18.1.0's FFmpeg offers ``libx264`` (encoder) and the native ``h264``
decoder; no OpenH264. x264's ``baseline`` profile writes constraint_set0
and constraint_set1, i.e. Constrained Baseline (``42c0..``/``42e0..``).

Packetization reuses aiortc: ``H264PayloadDescriptor.parse`` turns a single
NAL unit, STAP-A or FU-A payload into Annex B bytes, and the stateless
``H264Encoder._split_bitstream`` / ``_packetize`` of the pinned aiortc
1.16.0 make packetization-mode 1 payloads (STAP-A for small NAL units,
FU-A above 1300 bytes). Mode 0 (single NAL unit only) is not in aiortc: we
have x264 cut slices to fit (``slice-max-size``) and send each NAL unit as
it is.

Bitrate at run time: FFmpeg's libx264 wrapper passes a new ``bit_rate`` to
``x264_encoder_reconfig``, but x264 only retargets a stream that started
as CBR (VBV max rate == bitrate), and then only downwards from that start
(its ABR target itself never changes). So the encoder opens in CBR at a
ceiling (``max_bitrate``) and is retargeted below it at once; any rate up
to the ceiling then changes without a keyframe, above it the encoder is
reopened with a higher ceiling (one keyframe).

Parameter sets out of band: some room systems send SPS and PPS only in the
SDP (``sprop-parameter-sets``, RFC 6184 section 8.1), never in the RTP
stream. ``H264Decoder`` takes them as Annex B extradata, which FFmpeg's
``h264`` decoder reads when it opens, before the first access unit.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

import av
from aiortc.codecs.h264 import H264Encoder as _AiortcH264Encoder
from aiortc.codecs.h264 import H264PayloadDescriptor
from av.video.codeccontext import VideoCodecContext

from gateway.log import get_logger
from mediacodecs.video import (
    MTU_PAYLOAD,
    VIDEO_CLOCK,
    VIDEO_TIME_BASE,
    Depacketized,
    RtpVideoDecoder,
    RtpVideoEncoder,
)

PacketizationMode = Literal[0, 1]

MIN_BITRATE = 50_000
MAX_BITRATE = 8_000_000
PROFILE_LEVEL_ID = "42e01f"  # Constrained Baseline, level 3.1, as we announce it

_NAL_IDR = 5
_NAL_SPS = 7
_NAL_PPS = 8
_NAL_STAP_A = 24
_NAL_FU_A = 28
_NAL_SLICES = frozenset({1, _NAL_IDR})
_NAL_AU_STARTERS = frozenset({6, _NAL_SPS, _NAL_PPS, 9})  # SEI, SPS, PPS, access unit delimiter
_ANNEX_B_START = b"\x00\x00\x00\x01"

_log = get_logger("mediacodecs.h264")


def _starts_access_unit(nal_type: int, first_payload_byte: int) -> bool:
    if nal_type in _NAL_SLICES:
        # first_mb_in_slice is the first ue(v) of the slice header; it is 0
        # (a lone '1' bit) only in the first slice of a picture.
        return bool(first_payload_byte & 0x80)
    return nal_type in _NAL_AU_STARTERS


def _stap_a_units(payload: bytes) -> list[bytes]:
    units, pos = [], 1
    while pos + 2 <= len(payload):
        (size,) = struct.unpack_from("!H", payload, pos)
        units.append(payload[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return units


def h264_depacketize(payload: bytes) -> Depacketized:
    """RFC 6184 payload (single NAL, STAP-A, FU-A) to Annex B bytes.

    Raises ValueError for malformed payloads and for the interleaved-mode
    types (STAP-B, MTAP, FU-B) that modes 0 and 1 never carry.
    """
    _descriptor, data = H264PayloadDescriptor.parse(payload)
    nal_type = payload[0] & 0x1F
    if nal_type == _NAL_FU_A:
        inner = payload[1] & 0x1F
        first = bool(payload[1] & 0x80)
        starts = first and _starts_access_unit(inner, payload[2] if len(payload) > 2 else 0)
        return Depacketized(data, starts, inner == _NAL_IDR)
    units = _stap_a_units(payload) if nal_type == _NAL_STAP_A else [payload]
    units = [unit for unit in units if unit]
    starts = bool(units) and _starts_access_unit(
        units[0][0] & 0x1F, units[0][1] if len(units[0]) > 1 else 0
    )
    keyframe = any(unit[0] & 0x1F == _NAL_IDR for unit in units)
    return Depacketized(data, starts, keyframe)


def h264_packetize(access_unit: bytes, mode: PacketizationMode) -> list[bytes]:
    """Annex B access unit to RFC 6184 payloads for packetization-mode 0 or 1."""
    nal_units = _AiortcH264Encoder._split_bitstream(access_unit)
    if mode == 0:
        return [unit for unit in nal_units if unit]
    payloads: list[bytes] = _AiortcH264Encoder._packetize(nal_units)
    return payloads


def parse_sprop_parameter_sets(value: str | None) -> list[bytes]:
    """The NAL units of an fmtp ``sprop-parameter-sets`` value (comma-separated
    base64, RFC 6184 section 8.1). An item that is not base64 or not an SPS
    or PPS is left out with a log line: the stream may still carry its
    parameter sets in band, so a bad SDP parameter must not stop decoding."""
    units = []
    for item in (value or "").split(","):
        text = item.strip()
        if not text:
            continue
        try:
            # Some senders leave out the padding; restoring it costs nothing.
            unit = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError as error:  # binascii.Error, or not ASCII
            _log.warning("h264 sprop-parameter-sets item ignored", reason=str(error))
            continue
        if not unit or unit[0] & 0x1F not in (_NAL_SPS, _NAL_PPS):
            _log.warning("h264 sprop-parameter-sets item ignored", reason="not an SPS or PPS")
            continue
        units.append(unit)
    return units


def stap_a(units: list[bytes]) -> bytes:
    """One STAP-A payload aggregating ``units`` (RFC 6184 section 5.7.1)."""
    nri = max((unit[0] & 0x60 for unit in units), default=0x60)
    return bytes([nri | _NAL_STAP_A]) + b"".join(
        len(unit).to_bytes(2, "big") + unit for unit in units
    )


class ParameterSetInjector:
    """A sender's SDP-only parameter sets (``sprop-parameter-sets``) put in band, for a
    receiver that never saw the sender's SDP (a browser that gets a room system's H.264
    passed through): before an IDR that no SPS preceded in its access unit, one STAP-A
    with the SPS and PPS (packetization-mode 1 receivers take STAP-A)."""

    def __init__(self, units: list[bytes]) -> None:
        self.payload = stap_a(units)
        self.injected = 0
        self._sps_at: int | None = None  # RTP timestamp of the last access unit with an SPS

    def before(self, payload: bytes, timestamp: int) -> bytes | None:
        """The payload to send before ``payload`` (of the access unit at ``timestamp``),
        or None."""
        if not payload:
            return None
        nal = payload[0] & 0x1F
        if nal == _NAL_STAP_A:
            types = {unit[0] & 0x1F for unit in _stap_a_units(payload) if unit}
        elif nal == _NAL_FU_A:
            first = len(payload) > 1 and payload[1] & 0x80
            types = {payload[1] & 0x1F} if first else set()
        else:
            types = {nal}
        if _NAL_SPS in types:
            self._sps_at = timestamp
        if _NAL_IDR not in types or self._sps_at == timestamp:
            return None
        self._sps_at = timestamp
        self.injected += 1
        return self.payload


class H264Encoder(RtpVideoEncoder):
    """Video frames to H.264 Constrained Baseline RTP payloads (libx264, one thread).

    ``preset`` defaults to ``ultrafast`` with the deblocking filter back on:
    at 640x480, 15 fps, 500 kbit/s it encodes a frame in ~1.8 ms against
    ~3.0 (superfast) and ~5.4 (veryfast, the earlier default) on the
    reference host, for 0.2 dB less PSNR on the bench's test pattern
    (``bench media_codecs``); a transcoding gateway runs dozens of these.
    Baseline profile already rules out what the slower presets add most
    (CABAC, B-frames).
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 15,
        bitrate: int = 1_000_000,
        *,
        packetization_mode: PacketizationMode = 1,
        max_bitrate: int | None = None,
        preset: str = "ultrafast",
        deblock: bool = True,
        level: str = "3.1",
    ) -> None:
        bitrate = self._clamp(bitrate)
        self._level = level
        super().__init__(width, height, fps, bitrate)
        self.packetization_mode: PacketizationMode = packetization_mode
        self._ceiling = self._clamp(max(max_bitrate or 2 * bitrate, bitrate))
        self._preset = preset
        self._deblock = deblock
        self._declared_fps = fps
        self._interval = VIDEO_CLOCK / fps
        self._last_timestamp: int | None = None
        self._frames = 0

    @staticmethod
    def _clamp(bps: int) -> int:
        return max(MIN_BITRATE, min(MAX_BITRATE, int(bps)))

    @property
    def max_bitrate(self) -> int:
        """The rate this encoder reaches without reopening (and a keyframe)."""
        return self._ceiling

    def set_bitrate(self, bps: int) -> None:
        """No keyframe up to ``max_bitrate``; above it the encoder reopens."""
        self._bitrate = self._clamp(bps)
        if self._bitrate > self._ceiling:
            self._ceiling = self._clamp(2 * self._bitrate)
            self._codec = None

    def _open(self) -> VideoCodecContext:
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height = self._width, self._height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        self._declared_fps = self._fps
        codec.framerate = Fraction(self._fps).limit_denominator(1001)
        codec.bit_rate = self._ceiling
        codec.gop_size = 3000  # keyframes on request (PLI), not by the clock
        codec.thread_count = 1
        codec.profile = "baseline"
        options = {
            "preset": self._preset,
            "tune": "zerolatency",  # no B-frames, no look-ahead: a frame out per frame in
            "level": self._level,  # written into the SPS: the receiver checks it
            "forced-idr": "1",  # a requested keyframe is an IDR, which any joiner can start at
            # CBR from the start, the only mode in which x264 accepts a new rate later.
            "maxrate": str(self._ceiling),
            "bufsize": str(self._ceiling // 4),
        }
        if self._deblock:
            # ultrafast turns the in-loop deblocking filter off; at conference
            # bitrates its blocks show, and it costs ~10 % of the encode here.
            options["deblock"] = "0:0"
        if self.packetization_mode == 0:
            options["slice-max-size"] = str(MTU_PAYLOAD)
        codec.options = options
        self._last_timestamp = None
        self._frames = 0
        return codec

    def _before_encode(self, timestamp: int) -> None:
        previous_frames = self._frames
        self._frames += 1
        if self._last_timestamp is not None:
            gap = min(max(timestamp - self._last_timestamp, VIDEO_CLOCK // 60), VIDEO_CLOCK)
            self._interval += 0.2 * (gap - self._interval)
        self._last_timestamp = timestamp
        assert self._codec is not None
        if previous_frames == 0:
            # x264 ignores every later retarget if the first comes before the
            # first frame (measured), so the opening IDR is coded at the ceiling.
            return
        # x264 budgets bitrate / declared fps per frame whatever the timestamps
        # say; at another real frame rate the budget per frame is rescaled.
        actual_fps = VIDEO_CLOCK / self._interval
        wanted = min(self._ceiling, round(self._bitrate * self._declared_fps / actual_fps))
        current = self._codec.bit_rate or 0
        if abs(wanted - current) > 0.05 * wanted:
            self._codec.bit_rate = wanted

    def _packetize(self, data: bytes) -> list[bytes]:
        return h264_packetize(data, self.packetization_mode)


class H264Decoder(RtpVideoDecoder):
    """RFC 6184 payloads (modes 0 and 1) to frames with FFmpeg's ``h264`` decoder.

    ``parameter_sets`` are SPS/PPS NAL units from the SDP (see
    ``parse_sprop_parameter_sets``); in-band ones that arrive later replace them.
    """

    def __init__(self, parameter_sets: Sequence[bytes] = ()) -> None:
        super().__init__("h264", h264_depacketize)
        self.parameter_sets = tuple(parameter_sets)
        if self.parameter_sets:
            # Read by avcodec_open2, which PyAV calls at the first decode; the
            # context is never reopened, so they hold for the whole stream.
            self._codec.extradata = b"".join(_ANNEX_B_START + unit for unit in self.parameter_sets)
