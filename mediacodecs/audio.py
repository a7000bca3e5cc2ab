"""Audio frames in, fixed-size 16-bit PCM blocks out, and back.

Every audio encoder needs the same thing: interleaved signed 16-bit PCM at
its own rate and channel count, cut into exact 20 ms blocks. ``PcmFramer``
does that with ``av.AudioResampler`` (libswresample) and skips it entirely
when a frame already has the right format, which is the common case when a
G.711 leg feeds a G.711 encoder, and the resampler costs more than the
codec there.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt
from av import AudioFrame, AudioResampler

Pcm = npt.NDArray[np.int16]
"""Interleaved signed 16-bit samples, shape ``(samples * channels,)``."""

_LAYOUTS = {1: "mono", 2: "stereo"}


def layout_name(channels: int) -> str:
    """The PyAV layout for 1 or 2 channels."""
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"only mono and stereo are supported, not {channels} channels") from None


def pcm_frame(pcm: Pcm, rate: int, channels: int, pts: int | None = None) -> AudioFrame:
    """An ``s16`` AudioFrame holding ``pcm`` (time base 1/rate)."""
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
        format="s16",
        layout=layout_name(channels),
    )
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame


def silence(samples: int, channels: int) -> Pcm:
    """``samples`` per channel of digital silence."""
    return np.zeros(samples * channels, dtype=np.int16)


class PcmFramer:
    """Converts audio frames of any format to ``s16`` blocks of ``samples`` per channel.

    Not thread-safe: one framer belongs to one encoder.
    """

    def __init__(self, rate: int, channels: int, samples: int) -> None:
        self.rate = rate
        self.channels = channels
        self.samples = samples
        self._layout = layout_name(channels)
        self._block = samples * channels
        self._pending: list[Pcm] = []
        self._pending_len = 0
        self._resampler: AudioResampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None

    def push(self, frame: AudioFrame) -> list[Pcm]:
        """Feed one frame; return the complete blocks it finished."""
        pieces = self._convert(frame)
        if len(pieces) == 1 and not self._pending and pieces[0].size == self._block:
            # The steady state of a same-rate leg: no copy, no concatenation.
            return pieces
        for pcm in pieces:
            self._pending.append(pcm)
            self._pending_len += pcm.size
        if self._pending_len < self._block:
            return []
        joined = np.concatenate(self._pending)
        whole = (joined.size // self._block) * self._block
        blocks = [joined[i : i + self._block] for i in range(0, whole, self._block)]
        rest = joined[whole:]
        self._pending = [rest] if rest.size else []
        self._pending_len = int(rest.size)
        return blocks

    def _convert(self, frame: AudioFrame) -> list[Pcm]:
        if (
            frame.format.name == "s16"
            and frame.layout.nb_channels == self.channels
            and frame.sample_rate == self.rate
        ):
            return [frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)]
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or key != self._resampler_input:
            # PyAV's resampler is fixed to the first frame's format; a peer that
            # changes rate mid-call (re-INVITE) gets a fresh one.
            self._resampler = AudioResampler(format="s16", layout=self._layout, rate=self.rate)
            self._resampler_input = key
        return [
            out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            for out in self._resampler.resample(frame)
        ]
