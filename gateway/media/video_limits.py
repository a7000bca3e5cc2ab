"""What a SIP peer says it can receive, as a picture size and frame rate to send it.

A room system declares its receive limits in the codec's fmtp (RFC 6184
section 8.1 for H.264: the level of ``profile-level-id``, raised by
``max-fs`` and ``max-mbps``; RFC 7741 section 6.1 for VP8: ``max-fs`` and
``max-fr``), in ``a=imageattr`` (``NegotiatedStream.remote_max_resolution``)
and in b=TIAS/AS. What the gateway encodes for it (a transcoded stream, a
composed grid) starts from its own target (640x480 at 15 frames/s unless
``imageattr`` says otherwise) and is shrunk, aspect kept, until its
macroblocks (16x16 pixels) fit the frame-size limit and the rate limit;
then the frame rate is lowered to what the macroblock rate allows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.media.codec_params import H264ProfileLevelId
from gateway.media.sdp_attributes import parse_fmtp_parameters

#: H.264 Table A-1 by level (1b as 10.5): (MaxFS in macroblocks, MaxMBPS).
H264_LEVELS: dict[float, tuple[int, int]] = {
    10: (99, 1485), 10.5: (99, 1485), 11: (396, 3000), 12: (396, 6000), 13: (396, 11880),
    20: (396, 11880), 21: (792, 19800), 22: (1620, 20250), 30: (1620, 40500),
    31: (3600, 108000), 32: (5120, 216000), 40: (8192, 245760), 41: (8192, 245760),
    42: (8704, 522240), 50: (22080, 589824), 51: (36864, 983040), 52: (36864, 2073600),
}  # fmt: skip
#: The smallest picture we send, whatever a peer declares (pixels a side).
SMALLEST = 64


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """A peer's receive limits; None: no limit declared."""

    max_frame_size: int | None = None  # macroblocks
    max_macroblock_rate: int | None = None  # macroblocks per second
    max_framerate: float | None = None


def _number(parameters: Mapping[str, str | None], name: str) -> int | None:
    value = parameters.get(name)
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


def receive_limits(name: str, parameters: Mapping[str, str | None]) -> VideoLimits:
    """The limits a peer's fmtp ``parameters`` (names lower-cased) declare for ``name``."""
    codec = name.lower()
    if codec == "h264":
        profile = H264ProfileLevelId.parse(parameters.get("profile-level-id"))
        level = H264_LEVELS.get(profile.level) if profile is not None else None
        frame_size, rate = level if level is not None else (None, None)
        # max-fs and max-mbps only ever raise what the level allows (RFC 6184 8.1)
        declared_fs, declared_mbps = _number(parameters, "max-fs"), _number(parameters, "max-mbps")
        if declared_fs is not None:
            frame_size = max(frame_size or 0, declared_fs)
        if declared_mbps is not None:
            rate = max(rate or 0, declared_mbps)
        return VideoLimits(frame_size, rate)
    if codec == "vp8":
        return VideoLimits(_number(parameters, "max-fs"), None, _number(parameters, "max-fr"))
    return VideoLimits()


@functools.lru_cache(maxsize=256)
def limits_of(name: str, fmtp: str | None) -> VideoLimits:
    """``receive_limits`` of a codec as negotiated (its remote fmtp), cached."""
    return receive_limits(name, parse_fmtp_parameters(fmtp))


def macroblocks(width: int, height: int) -> int:
    """16x16 macroblocks of a ``width`` x ``height`` picture."""
    return math.ceil(width / 16) * math.ceil(height / 16)


def fit(size: tuple[int, int], fps: float, limits: VideoLimits) -> tuple[tuple[int, int], float]:
    """``size`` (even sides) and ``fps`` made to fit ``limits``, the aspect ratio kept."""
    width, height = size
    budget = limits.max_frame_size
    if limits.max_macroblock_rate is not None:  # at least one frame a second must fit
        budget = min(budget or limits.max_macroblock_rate, limits.max_macroblock_rate)
    if budget is not None:
        scale = 1.0
        while macroblocks(width, height) > budget and min(width, height) > SMALLEST:
            scale *= 0.95
            width = max(SMALLEST, int(size[0] * scale) & ~1)
            height = max(SMALLEST, int(size[1] * scale) & ~1)
    if limits.max_framerate is not None:
        fps = min(fps, limits.max_framerate)
    if limits.max_macroblock_rate is not None:
        fps = min(fps, limits.max_macroblock_rate / macroblocks(width, height))
    return (width, height), max(1.0, fps)
