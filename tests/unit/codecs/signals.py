"""Test signals and their measures: sines with an FFT peak finder, moving
gradients with a mean pixel error."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from av import AudioFrame, VideoFrame

from mediacodecs.audio import Pcm, pcm_frame
from mediacodecs.video import video_frame


def sine(frequency: float, rate: int, seconds: float, amplitude: int = 10000) -> Pcm:
    """A sine as 16-bit samples."""
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def frames_of(pcm: Pcm, rate: int, samples: int, channels: int = 1) -> list[AudioFrame]:
    """``pcm`` cut into frames of ``samples`` per channel."""
    step = samples * channels
    return [
        pcm_frame(pcm[i : i + step], rate, channels, i // channels)
        for i in range(0, pcm.size - step + 1, step)
    ]


def pcm_of(frames: list[AudioFrame]) -> Pcm:
    """The samples of decoded frames, joined (first channel only)."""
    parts = [f.to_ndarray().reshape(-1)[:: f.layout.nb_channels] for f in frames]
    return np.concatenate(parts).astype(np.int16)


def peak_frequency(pcm: Pcm, rate: int) -> float:
    """The strongest frequency, from a Hann-windowed FFT."""
    signal = pcm.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[int(np.argmax(spectrum))])


def gradient(width: int, height: int, index: int) -> npt.NDArray[np.uint8]:
    """A colour gradient that moves a few pixels per frame."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (x + 4 * index) % 256
    rgb[..., 1] = (2 * y + 3 * index) % 256
    rgb[..., 2] = ((x + y) // 2 + 2 * index) % 256
    return rgb


def gradient_frame(width: int, height: int, index: int, fps: float = 15) -> VideoFrame:
    """Frame ``index`` of the moving gradient, pts at ``fps`` in 1/90000."""
    return video_frame(gradient(width, height, index), round(index * 90000 / fps))


def mean_error(frame: VideoFrame, expected: npt.NDArray[np.uint8]) -> float:
    """Mean absolute difference per RGB sample."""
    rgb = frame.to_ndarray(format="rgb24").astype(np.int16)
    return float(np.abs(rgb - expected.astype(np.int16)).mean())
