"""Which codecs we have, how to make them, and what bridging two costs.

``can_bridge(source, sink)`` answers "can media sent as ``source`` be
delivered to a receiver of ``sink``, and at what CPU cost": passthrough when
the receiver can take the payloads as they are, transcode when we have both
codecs, None when we lack one. Codecs are described by anything with
``name``, ``clock_rate``, ``channels`` and ``fmtp`` (``CodecSpec`` here,
``gateway.media.codec_params.CodecCapability`` there), as SDP writes them.

Costs are fractions of one core for one direction of one stream, from
``python -m bench media_codecs`` on the reference host (2 cores, x86-64);
video scales with pixels per second from 640x480 at 15 fps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from aiortc.sdp import H264Level, H264Profile, parse_h264_profile_level_id

from mediacodecs.base import AudioDecoder, AudioEncoder, CodecError, MediaKind, VideoDecoder
from mediacodecs.base import VideoEncoder as VideoEncoderProtocol
from mediacodecs.g711 import G711Decoder, G711Encoder
from mediacodecs.g722 import G722Decoder, G722Encoder
from mediacodecs.h264 import (
    H264Decoder,
    H264Encoder,
    PacketizationMode,
    parse_sprop_parameter_sets,
)
from mediacodecs.opus import (
    DECODER_RATES,
    PCM_RATES,
    OpusDecoder,
    OpusEncoder,
)
from mediacodecs.vp8 import Vp8Decoder, Vp8Encoder


class CodecDescription(Protocol):
    """A codec as SDP names it (rtpmap and fmtp)."""

    @property
    def name(self) -> str: ...
    @property
    def clock_rate(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def fmtp(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """A plain ``CodecDescription``."""

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What we know about one codec we implement."""

    kind: MediaKind
    clock_rate: int  # RTP clock
    sample_rate: int  # audio samples per second (the clock for video)
    decode_cost: float  # fraction of a core, one stream at its nominal rate
    encode_cost: float


# Measured by bench/media_codecs.py (see the module docstring); audio at 50
# payloads/s (Opus encoding 48 kHz; from 8 kHz it costs about a third),
# video 640x480 at 15 fps (VP8 cpu-used -12, x264 ultrafast with deblocking).
CODECS: dict[str, CodecInfo] = {
    "pcmu": CodecInfo("audio", 8000, 8000, 0.0002, 0.0002),
    "pcma": CodecInfo("audio", 8000, 8000, 0.0002, 0.0002),
    "g722": CodecInfo("audio", 8000, 16000, 0.0004, 0.0010),
    "opus": CodecInfo("audio", 48000, 48000, 0.0020, 0.0090),
    "vp8": CodecInfo("video", 90000, 90000, 0.0185, 0.054),
    "h264": CodecInfo("video", 90000, 90000, 0.0115, 0.045),
}
RESAMPLE_COST = 0.0020  # libswresample between two rates, 50 frames/s
_REFERENCE_PIXEL_RATE = 640 * 480 * 15


@dataclass(frozen=True, slots=True)
class Bridge:
    """How one direction of media gets from one codec to another."""

    kind: Literal["passthrough", "transcode"]
    cost: float  # fraction of one core
    reason: str


def codec_info(codec: CodecDescription) -> CodecInfo | None:
    """Our entry for the codec, None if we lack it or its clock rate is not the standard one."""
    info = CODECS.get(codec.name.lower())
    if info is None or info.clock_rate != codec.clock_rate:
        return None
    return info


def fmtp_parameters(fmtp: str | None) -> dict[str, str]:
    """``a=fmtp`` parameters, names lower-cased (``key`` alone maps to "")."""
    parameters = {}
    for item in (fmtp or "").split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            parameters[key.strip().lower()] = value.strip()
    return parameters


def h264_packetization_mode(codec: CodecDescription) -> PacketizationMode:
    """RFC 6184: absent means 0; 2 (interleaved) is not supported and is refused."""
    value = fmtp_parameters(codec.fmtp).get("packetization-mode", "0")
    if value not in ("0", "1"):
        raise CodecError(f"H.264 packetization-mode {value} is not supported")
    return 0 if value == "0" else 1


def _h264_profile(codec: CodecDescription) -> tuple[H264Profile, float] | None:
    # RFC 6184 section 8.1: absent profile-level-id means Baseline level 1.0.
    text = fmtp_parameters(codec.fmtp).get("profile-level-id", "42000a")
    try:
        profile, level = parse_h264_profile_level_id(text)
    except ValueError:
        return None
    # aiortc numbers level 1b as -1; it sits between 1.0 and 1.1.
    return profile, 10.5 if level == H264Level.LEVEL1_B else float(level)


def _h264_passthrough_problem(source: CodecDescription, sink: CodecDescription) -> str | None:
    src, dst = _h264_profile(source), _h264_profile(sink)
    if src is None or dst is None:
        return "unreadable profile-level-id"
    # Constrained Baseline is the common subset every profile decodes.
    if src[0] != dst[0] and src[0] != H264Profile.PROFILE_CONSTRAINED_BASELINE:
        return f"profile {src[0].name} is not decodable as {dst[0].name}"
    if src[1] > dst[1]:
        return "the sender's level exceeds what the receiver decodes"
    src_mode, dst_mode = h264_packetization_mode(source), h264_packetization_mode(sink)
    # Mode 1 receivers also take single NAL units; mode 0 ones take nothing else.
    if src_mode == 1 and dst_mode == 0:
        return "FU-A/STAP-A payloads (mode 1) cannot go to a packetization-mode 0 receiver"
    return None


def _transcode_cost(
    source: CodecInfo, sink: CodecInfo, width: int, height: int, fps: float
) -> float:
    cost = source.decode_cost + sink.encode_cost
    if source.kind == "video":
        # Scaling (libswscale) is cheap next to the codecs and left out.
        return cost * (width * height * fps) / _REFERENCE_PIXEL_RATE
    # Opus decodes straight to 8/16 kHz and encodes from them (see
    # AudioTranscoder): no resampler then.
    decodes_to_sink_rate = source is CODECS["opus"] and sink.sample_rate in DECODER_RATES
    encodes_from_source_rate = sink is CODECS["opus"] and source.sample_rate in PCM_RATES
    if source.sample_rate != sink.sample_rate and not (
        decodes_to_sink_rate or encodes_from_source_rate
    ):
        cost += RESAMPLE_COST
    return cost


def can_bridge(
    source: CodecDescription,
    sink: CodecDescription,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 15,
) -> Bridge | None:
    """How media encoded as ``source`` reaches a receiver of ``sink``, or None.

    None when either codec is not ours (or is auxiliary, like telephone-event,
    which the DTMF code bridges) or when one is audio and the other video.
    ``width``/``height``/``fps`` size the cost of a video transcode.
    """
    src, dst = codec_info(source), codec_info(sink)
    if src is None or dst is None or src.kind != dst.kind:
        return None
    names = {source.name.lower(), sink.name.lower()}
    if "h264" in names:
        try:
            for codec in (source, sink):
                if codec.name.lower() == "h264":
                    h264_packetization_mode(codec)
        except CodecError:
            return None  # interleaved mode (2): we neither forward nor decode it
    if len(names) == 1:
        problem = _h264_passthrough_problem(source, sink) if names == {"h264"} else None
        if problem is None:
            # Opus fmtp holds receiver preferences only (RFC 7587 section 6.1)
            # and its channel count is always 2 in SDP: any Opus passes.
            return Bridge("passthrough", 0.0, "same codec")
        return Bridge("transcode", _transcode_cost(src, dst, width, height, fps), problem)
    return Bridge(
        "transcode",
        _transcode_cost(src, dst, width, height, fps),
        f"{source.name} to {sink.name}",
    )


def create_audio_decoder(
    codec: CodecDescription, *, sample_rate: int | None = None
) -> AudioDecoder:
    """A decoder for ``codec``. Opus decodes straight to ``sample_rate`` when
    it is one libopus supports (sparing a resampler); other codecs ignore it."""
    name = codec.name.lower()
    if name in ("pcmu", "pcma"):
        return G711Decoder("pcmu" if name == "pcmu" else "pcma")
    if name == "g722":
        return G722Decoder()
    if name == "opus":
        rate = sample_rate if sample_rate in DECODER_RATES else None
        return OpusDecoder(sample_rate=rate or 48000)
    raise CodecError(f"no audio decoder for {codec.name}")


def create_audio_encoder(
    codec: CodecDescription,
    *,
    bitrate: int | None = None,
    fec: bool = True,
    sample_rate: int | None = None,
    opus_complexity: int | None = None,
) -> AudioEncoder:
    """An encoder for ``codec``; the keywords matter to Opus only: ``sample_rate``
    is the rate of the audio's source (Opus encodes from it when libopus
    can, which also caps the coded band), ``opus_complexity`` 0-10."""
    name = codec.name.lower()
    if name in ("pcmu", "pcma"):
        return G711Encoder("pcmu" if name == "pcmu" else "pcma")
    if name == "g722":
        return G722Encoder()
    if name == "opus":
        # The peer's useinbandfec=1 says it decodes FEC; without it FEC only wastes bits.
        wants_fec = fmtp_parameters(codec.fmtp).get("useinbandfec") == "1"
        rate = sample_rate if sample_rate in PCM_RATES else None
        return OpusEncoder(
            bitrate or 32000,
            fec=fec and wants_fec,
            sample_rate=rate or 48000,
            complexity=opus_complexity,
        )
    raise CodecError(f"no audio encoder for {codec.name}")


def create_video_decoder(codec: CodecDescription) -> VideoDecoder:
    """A decoder for ``codec`` (VP8, or H.264 in packetization-mode 0 or 1).

    ``codec`` is what the sender described: an H.264 sender's
    ``sprop-parameter-sets`` go to the decoder, for streams without in-band
    SPS/PPS."""
    name = codec.name.lower()
    if name == "vp8":
        return Vp8Decoder()
    if name == "h264":
        h264_packetization_mode(codec)  # refuses mode 2
        sprop = fmtp_parameters(codec.fmtp).get("sprop-parameter-sets")
        return H264Decoder(parse_sprop_parameter_sets(sprop))
    raise CodecError(f"no video decoder for {codec.name}")


def create_video_encoder(
    codec: CodecDescription,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 15,
    bitrate: int = 500_000,
) -> VideoEncoderProtocol:
    """An encoder for ``codec``; H.264 uses the receiver's packetization-mode."""
    name = codec.name.lower()
    if name == "vp8":
        return Vp8Encoder(width, height, fps, bitrate)
    if name == "h264":
        mode = h264_packetization_mode(codec)
        return H264Encoder(
            width, height, fps, bitrate, packetization_mode=mode, level=h264_encoder_level(codec)
        )
    raise CodecError(f"no video encoder for {codec.name}")


def h264_encoder_level(codec: CodecDescription) -> str:
    """The level our H.264 stream declares to a receiver: its own (from
    ``profile-level-id``) up to 3.1, which 720p at 30 frames/s needs; the size
    and rate we send it are fitted to its level beforehand
    (``gateway.media.video_limits``)."""
    profile = _h264_profile(codec)
    level = min(31.0, profile[1]) if profile is not None else 31.0
    if level == 10.5:
        return "1b"
    return f"{int(level) // 10}.{int(level) % 10}"
