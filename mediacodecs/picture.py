"""Decoded pictures as numpy planes, for composing them (``gateway.media.compositor``).

The compositor works on yuv420p planes with numpy; PyAV (scaling with
libswscale, making a frame of the canvas) stays here, the one package that
talks to it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from av import VideoFrame
from av.video.reformatter import VideoReformatter

from mediacodecs.video import VIDEO_TIME_BASE

#: A decoded picture (what video decoders return).
Picture = VideoFrame
#: The Y, U and V planes of a yuv420p picture with even sides.
Planes = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def yuv_planes(frame: VideoFrame) -> Planes:
    """Copies of the Y, U and V planes of a yuv420p frame with even sides."""
    width, height = frame.width, frame.height
    # Y, then U, then V, without line padding
    flat: npt.NDArray[np.uint8] = np.asarray(frame.to_ndarray(), np.uint8).reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


class Scaler:
    """Scales pictures to yuv420p planes; keeps its libswscale context between calls
    (one per source; not thread-safe: the caller serializes)."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def planes(self, picture: VideoFrame, width: int, height: int) -> Planes:
        scaled = self._reformatter.reformat(picture, width=width, height=height, format="yuv420p")
        return yuv_planes(scaled)


def yuv420p_frame(canvas: npt.NDArray[np.uint8], width: int, pts: int) -> VideoFrame:
    """A frame of a flat yuv420p ``canvas`` ``width`` pixels wide, at ``pts`` (90 kHz)."""
    frame = VideoFrame.from_ndarray(canvas.reshape(-1, width), format="yuv420p")
    frame.pts = pts
    frame.time_base = VIDEO_TIME_BASE
    return frame
