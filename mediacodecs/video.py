"""What VP8 and H.264 share: RTP frame assembly, keyframe gating, frame
pacing, scaling and timestamps; each codec module adds its bitstream rules.

Decoding side: payloads arrive in sequence order; a frame is decoded once
its marker payload is in. After any loss (``conceal``) or a gap we notice
ourselves (a new timestamp before the marker), the decoder drops frames
until a keyframe, because decoding deltas against a broken reference
smears garbage over every following frame; ``keyframe_needed`` tells the
owner to send PLI.

Encoding side: frames carry ``pts``/``time_base`` (decoded frames: the RTP
timestamp at 1/90000); the encoder turns them into a 90 kHz timeline that
starts at 0 and survives 32-bit RTP wrap-around.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np
import numpy.typing as npt
from av import Packet, VideoFrame
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from gateway.log import get_logger
from mediacodecs.base import MediaKind, RtpPayload

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
MTU_PAYLOAD = 1200  # RTP payload bytes: fits 1500 with IPv6, UDP, RTP, SRTP and TURN headers

_log = get_logger("mediacodecs.video")


def video_frame(rgb: npt.NDArray[np.uint8], pts: int | None = None) -> VideoFrame:
    """An ``rgb24`` frame of an (height, width, 3) array, pts in 1/90000."""
    frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts = pts
    frame.time_base = VIDEO_TIME_BASE
    return frame


class Depacketized(NamedTuple):
    """One RTP payload unwrapped to codec bitstream bytes."""

    data: bytes
    starts_frame: bool  # a frame may begin here (VP8 S bit; H.264 first slice or parameter sets)
    keyframe: bool


Depacketizer = Callable[[bytes], Depacketized]
"""Raises ValueError on a malformed payload."""


class RtpVideoDecoder:
    """Payloads of one codec to ``yuv420p`` frames (pts = RTP timestamp, 1/90000)."""

    kind: MediaKind = "video"

    def __init__(self, codec_name: str, depacketize: Depacketizer) -> None:
        codec = av.CodecContext.create(codec_name, "r")
        assert isinstance(codec, VideoCodecContext)
        self._codec = codec
        # One thread: frame threading delays every output by a frame per
        # thread, and parallelism comes from decoding many streams at once.
        self._codec.thread_count = 1
        self._depacketize = depacketize
        self._parts: list[bytes] = []
        self._timestamp = 0
        self._keyframe = False
        self._lost_timestamp: int | None = None
        self._waiting = True  # until the first keyframe
        self.decode_errors = 0
        self.frames_dropped = 0

    @property
    def keyframe_needed(self) -> bool:
        """True while frames are dropped for want of a keyframe."""
        return self._waiting

    def decode(self, payload: RtpPayload) -> list[VideoFrame]:
        """Buffer the payload; decode the frame when its marker payload arrives."""
        try:
            part = self._depacketize(payload.data)
        except ValueError as error:
            self._count_error("malformed payload", error, len(payload.data))
            return []
        if self._parts and payload.timestamp != self._timestamp:
            self._drop_partial()  # the previous frame's marker never came
        if not self._parts:
            if not part.starts_frame or payload.timestamp == self._lost_timestamp:
                # The rest of a frame whose beginning we missed.
                self._waiting = True
                return []
            self._timestamp = payload.timestamp
            self._keyframe = False
        self._parts.append(part.data)
        self._keyframe |= part.keyframe
        if not payload.marker:
            return []
        data, keyframe = b"".join(self._parts), self._keyframe
        self._parts = []
        if self._waiting and not keyframe:
            self.frames_dropped += 1
            return []
        packet = Packet(data)
        packet.pts = payload.timestamp
        packet.time_base = VIDEO_TIME_BASE
        try:
            frames = self._codec.decode(packet)
        except av.FFmpegError as error:
            self._count_error("frame rejected", error, len(data))
            return []
        if keyframe:
            self._waiting = False
            self._lost_timestamp = None
        for frame in frames:
            frame.pts = payload.timestamp
            frame.time_base = VIDEO_TIME_BASE
        return frames

    def decode_frame(self, payloads: Sequence[bytes], timestamp: int) -> list[VideoFrame]:
        """Decode a whole frame as a jitter buffer hands it out (its payloads
        in sequence order, with or without the sender's marker bit)."""
        frames: list[VideoFrame] = []
        for index, data in enumerate(payloads):
            frames += self.decode(RtpPayload(data, timestamp, index == len(payloads) - 1))
        return frames

    def conceal(self, next_payload: RtpPayload | None = None) -> list[VideoFrame]:
        """A payload is lost: drop the frame in progress and wait for a keyframe."""
        self._lost_timestamp = self._timestamp
        self._drop_partial()
        return []

    def _drop_partial(self) -> None:
        if self._parts:
            self.frames_dropped += 1
        self._parts = []
        self._waiting = True

    def _count_error(self, what: str, error: Exception, size: int) -> None:
        self.decode_errors += 1
        self._drop_partial()
        _log.warning(f"{self._codec.name} {what}", error=str(error), size=size)


class FramePacer:
    """Lets through at most ``fps`` frames per second of a 90 kHz timeline.

    A credit scheme, not a minimum interval, so 30 -> 20 fps keeps two
    frames in three instead of falling to 15.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._credit = 1.0
        self._last: int | None = None

    def admit(self, timestamp: int) -> bool:
        """Whether the frame at ``timestamp`` (90 kHz) is encoded."""
        if self._last is not None:
            elapsed = max(0, timestamp - self._last)
            # Capped so a pause does not turn into a burst afterwards.
            self._credit = min(1.5, self._credit + elapsed * self.fps / VIDEO_CLOCK)
        self._last = timestamp
        if self._credit >= 1.0 - 1e-6:
            self._credit -= 1.0
            return True
        return False


class Timeline:
    """Input frame times to a 90 kHz timeline from 0, unwrapping 32-bit RTP time."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._first_input: int | None = None
        self._last_input = 0
        self._now = 0

    def timestamp(self, frame: VideoFrame) -> int:
        """The frame's time on our timeline (strictly increasing)."""
        if frame.pts is None or frame.time_base is None:
            ticks = round(VIDEO_CLOCK / self.fps)
        else:
            value = round(frame.pts * frame.time_base * VIDEO_CLOCK)
            if self._first_input is None:
                self._first_input = self._last_input = value
                return self._now
            # Signed 32-bit difference: RTP timestamps wrap (RFC 3550 section 5.1).
            ticks = ((value - self._last_input + 2**31) % 2**32) - 2**31
            self._last_input = value
        # Encoders reject equal or falling timestamps; a reordered or repeated
        # frame still gets a slot of its own.
        self._now += max(1, ticks)
        return self._now


class RtpVideoEncoder(ABC):
    """Pacing, scaling, keyframe requests and RTP framing around a PyAV encoder.

    Subclasses open the codec (``_open``), split a coded frame into payloads
    (``_packetize``) and may steer rate control (``_before_encode`` /
    ``_after_encode``). The encoder takes ownership of the frames it is
    given (it sets their ``pts`` and ``pict_type``).
    """

    kind: MediaKind = "video"

    def __init__(self, width: int, height: int, fps: float, bitrate: int) -> None:
        self._width, self._height = width, height
        self._fps = fps
        self._bitrate = bitrate
        self._pacer = FramePacer(fps)
        self._timeline = Timeline(fps)
        self._codec: VideoCodecContext | None = None
        self._keyframe_requested = True
        # One reformatter per encoder keeps its SwsContext between frames
        # (VideoFrame.reformat makes a new one per call: ~117 against ~86 µs
        # for 640x480 -> 320x240 here).
        self._reformatter = VideoReformatter()

    @property
    def bitrate(self) -> int:
        """The target in bits per second."""
        return self._bitrate

    @property
    def resolution(self) -> tuple[int, int]:
        """The encoded (width, height)."""
        return self._width, self._height

    @property
    def framerate(self) -> float:
        """The most frames per second emitted."""
        return self._fps

    def set_resolution(self, width: int, height: int) -> None:
        """A new size needs a new encoder and so a keyframe (see VideoEncoder)."""
        if (width, height) != (self._width, self._height):
            self._width, self._height = width, height
            self._codec = None

    def set_framerate(self, fps: float) -> None:
        """Pace to ``fps`` from the next frame on."""
        self._fps = self._pacer.fps = self._timeline.fps = fps

    def request_keyframe(self) -> None:
        """The next encoded frame is a keyframe."""
        self._keyframe_requested = True

    def encode(self, frame: VideoFrame) -> list[RtpPayload]:
        """Encode one frame, or skip it to hold the frame rate."""
        timestamp = self._timeline.timestamp(frame)
        if not self._pacer.admit(timestamp):
            return []
        if self._codec is None:
            self._codec = self._open()
            self._keyframe_requested = True
        if (frame.width, frame.height, frame.format.name) != (
            self._width,
            self._height,
            "yuv420p",
        ):
            frame = self._reformatter.reformat(
                frame, width=self._width, height=self._height, format="yuv420p"
            )
        frame.pts = timestamp
        frame.time_base = VIDEO_TIME_BASE
        keyframe = self._keyframe_requested
        # Always set: a decoded keyframe arrives marked I and would otherwise
        # force a keyframe out of the encoder too.
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        self._keyframe_requested = False
        self._before_encode(timestamp)
        payloads: list[RtpPayload] = []
        for packet in self._codec.encode(frame):
            data = bytes(packet)
            self._after_encode(len(data), packet.is_keyframe, timestamp)
            parts = self._packetize(data)
            rtp_time = timestamp % 2**32
            payloads.extend(
                RtpPayload(part, rtp_time, index == len(parts) - 1, packet.is_keyframe)
                for index, part in enumerate(parts)
            )
        return payloads

    @abstractmethod
    def _open(self) -> VideoCodecContext:
        """A configured encoder for the current size, rate and bitrate."""

    @abstractmethod
    def _packetize(self, data: bytes) -> list[bytes]:
        """One coded frame to RTP payloads."""

    def _before_encode(self, timestamp: int) -> None:
        """Rate control hook, before each frame."""
        return

    def _after_encode(self, size: int, keyframe: bool, timestamp: int) -> None:
        """Rate control hook, after each coded frame."""
        return
