"""Pictures out of RTP video packets, and their colours, for tests that check what a
composed or forwarded picture shows."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from gateway.media.rtp import header_sizes
from mediacodecs.base import RtpPayload
from mediacodecs.registry import CodecDescription, create_video_decoder

Rgb = tuple[int, int, int]


def decode_rgb(packets: Iterable[bytes], codec: CodecDescription) -> list[npt.NDArray[np.uint8]]:
    """Every picture a fresh decoder makes of ``packets`` (RTP, in order), as RGB arrays."""
    decoder = create_video_decoder(codec)
    pictures = []
    for packet in packets:
        header, size = header_sizes(packet)
        timestamp, marker = int.from_bytes(packet[4:8], "big"), bool(packet[1] & 0x80)
        for frame in decoder.decode(RtpPayload(packet[header : header + size], timestamp, marker)):
            pictures.append(np.asarray(frame.to_ndarray(format="rgb24"), np.uint8))
    return pictures


def colour_at(rgb: npt.NDArray[np.uint8], x0: float, y0: float, x1: float, y1: float) -> Rgb:
    """Mean colour of a region given as fractions of the picture."""
    height, width, _ = rgb.shape
    region = rgb[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)]
    r, g, b = region.reshape(-1, 3).mean(axis=0)
    return round(r), round(g), round(b)


def near(actual: Rgb, expected: Rgb, tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))
