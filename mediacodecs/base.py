"""The one small protocol every codec speaks, and the data that crosses it.

Frames are PyAV frames (``av.AudioFrame`` / ``av.VideoFrame``): they carry
their own format, rate, layout, ``pts`` and ``time_base``, so resampling and
scaling need no side channel, and ARCHITECTURE lets them (and packets) leave
``mediacodecs``; no other PyAV object does.

Encoded media is ``RtpPayload``: one RTP payload, already packetized for its
codec (VP8 descriptor, H.264 FU-A/STAP-A), with the RTP timestamp in the
codec's RTP clock. Encoders start their timestamps at 0; the RTP sender adds
its random offset (RFC 3550 section 5.1). Decoders take payloads in sequence
order from the jitter buffer and are told about each missing one with
``conceal()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from av import AudioFrame, VideoFrame

from gateway.errors import GatewayError

MediaKind = Literal["audio", "video"]

FrameT_contra = TypeVar("FrameT_contra", AudioFrame, VideoFrame, contravariant=True)
FrameT = TypeVar("FrameT", AudioFrame, VideoFrame)


class CodecError(GatewayError):
    """A codec cannot be created or configured (unknown codec, missing library)."""

    http_status = 500
    sip_status = 488
    reason = "Not Acceptable Here"


@dataclass(frozen=True, slots=True)
class RtpPayload:
    """One RTP payload of one codec.

    ``timestamp`` is in the codec's RTP clock (90 kHz video, 48 kHz Opus,
    8 kHz G.711 and G.722). ``marker`` is set on the last payload of a video
    frame. ``keyframe`` is set by encoders on every payload of a keyframe;
    decoders find keyframes themselves and ignore it.
    """

    data: bytes
    timestamp: int
    marker: bool = False
    keyframe: bool = False


class Encoder(Protocol[FrameT_contra]):
    """Turns frames into RTP payloads.

    ``encode`` may return nothing (audio collects 20 ms first; video may
    skip a frame to hold the frame rate) or several payloads (one audio
    packet per 20 ms, one video frame split to the MTU).
    """

    @property
    def kind(self) -> MediaKind:
        """``audio`` or ``video``."""
        ...

    @property
    def bitrate(self) -> int:
        """The current target in bits per second (the nominal rate for G.711/G.722)."""
        ...

    def encode(self, frame: FrameT_contra) -> list[RtpPayload]:
        """Encode one frame (any format, rate or size: the encoder converts)."""
        ...

    def set_bitrate(self, bps: int) -> None:
        """Change the target bitrate from the next frame on, without a keyframe
        where the codec allows it; fixed-rate codecs ignore it."""
        ...

    def request_keyframe(self) -> None:
        """Make the next encoded video frame a keyframe (PLI/FIR); audio ignores it."""
        ...


class VideoEncoder(Encoder[VideoFrame], Protocol):
    """A video encoder whose picture size and frame rate change at run time."""

    @property
    def resolution(self) -> tuple[int, int]:
        """The encoded (width, height)."""
        ...

    @property
    def framerate(self) -> float:
        """The most frames per second the encoder emits (extra input is skipped)."""
        ...

    def set_resolution(self, width: int, height: int) -> None:
        """Encode at a new size from the next frame on. VP8 and H.264 signal the
        size only in keyframes (VP8 key frame header, H.264 SPS), so this one
        change always costs a keyframe."""
        ...

    def set_framerate(self, fps: float) -> None:
        """Emit at most ``fps`` frames per second from the next frame on,
        keeping the bitrate target (no keyframe)."""
        ...


class Decoder(Protocol[FrameT]):
    """Turns RTP payloads (in sequence order) back into frames."""

    @property
    def kind(self) -> MediaKind:
        """``audio`` or ``video``."""
        ...

    @property
    def keyframe_needed(self) -> bool:
        """True while a video decoder drops frames for want of a keyframe: the
        owner should send PLI (rate-limited). Always False for audio."""
        ...

    @property
    def decode_errors(self) -> int:
        """Payloads the codec rejected so far (counted, logged, and skipped)."""
        ...

    def decode(self, payload: RtpPayload) -> list[FrameT]:
        """Decode one payload; video returns a frame once its last payload is in."""
        ...

    def conceal(self, next_payload: RtpPayload | None = None) -> list[FrameT]:
        """Account for one missing payload, just before the one that follows it.

        Audio returns a frame for the gap (Opus: in-band FEC from
        ``next_payload`` when it carries it, otherwise packet loss
        concealment; G.711/G.722: silence, as libavcodec has no PLC for
        them). Video drops the incomplete frame and waits for a keyframe.
        """
        ...


__all__ = [
    "AudioDecoder",
    "AudioEncoder",
    "AudioFrame",
    "CodecError",
    "Decoder",
    "Encoder",
    "MediaKind",
    "RtpPayload",
    "VideoDecoder",
    "VideoEncoder",
    "VideoFrame",
]

AudioEncoder = Encoder[AudioFrame]
AudioDecoder = Decoder[AudioFrame]
VideoDecoder = Decoder[VideoFrame]
