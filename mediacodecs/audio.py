"""Audio frames in, fixed-size 16-bit PCM blocks out, and back.

Every audio encoder needs the same thing: interleaved signed 16-bit PCM at
its own rate and channel count, cut into exact 20 ms blocks. ``PcmFramer``
does that with ``av.AudioResampler`` (libswresample) and skips it entirely
when a frame already has the right format, which is the common case when a
G.711 leg feeds a G.711 encoder, and the resampler costs more than the
codec there.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av import AudioFrame, AudioResampler, Packet
from av.audio.codeccontext import AudioCodecContext

from gateway.log import get_logger

Pcm = npt.NDArray[np.int16]
"""Interleaved signed 16-bit samples, shape ``(samples * channels,)``."""

_LAYOUTS = {1: "mono", 2: "stereo"}


def layout_name(channels: int) -> str:
    """The PyAV layout for 1 or 2 channels."""
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"only mono and stereo are supported, not {channels} channels") from None


@functools.cache
def _time_base(rate: int) -> Fraction:
    return Fraction(1, rate)


def empty_frame(samples: int, rate: int, channels: int, pts: int | None = None) -> AudioFrame:
    """An ``s16`` AudioFrame of ``samples`` per channel to be filled (see ``samples_of``)."""
    frame = AudioFrame(format="s16", layout=layout_name(channels), samples=samples)
    frame.sample_rate = rate
    frame.time_base = _time_base(rate)
    frame.pts = pts
    return frame


def samples_of(frame: AudioFrame) -> Pcm:
    """The samples of an ``s16`` frame as an array over its own buffer (no copy)."""
    count = frame.samples * frame.layout.nb_channels
    plane = frame.planes[0]
    # The plane exports its buffer (writable); PyAV's stubs do not say so.
    view: Pcm = np.frombuffer(memoryview(plane), dtype=np.int16, count=count)
    return view


def pcm_frame(pcm: Pcm, rate: int, channels: int, pts: int | None = None) -> AudioFrame:
    """An ``s16`` AudioFrame holding a copy of ``pcm`` (time base 1/rate).

    Allocating the frame and copying into its buffer takes half the time of
    ``AudioFrame.from_ndarray``, which matters at 50 frames per second per leg.
    """
    frame = empty_frame(pcm.size // channels, rate, channels, pts)
    samples_of(frame)[:] = pcm
    return frame


def silence(samples: int, channels: int) -> Pcm:
    """``samples`` per channel of digital silence."""
    return np.zeros(samples * channels, dtype=np.int16)


class PcmFramer:
    """Converts audio frames of any format to ``s16`` blocks of ``samples`` per channel.

    Samples short of a block wait in a preallocated buffer (no list of
    pieces, no concatenation per packet); ``push_pcm`` takes samples that
    are already at the framer's rate and channel count, without a frame.
    A returned block is valid until the next push (it may be a view of the
    input or of the framer's buffer): encode it before pushing again.

    Not thread-safe: one framer belongs to one encoder.
    """

    def __init__(self, rate: int, channels: int, samples: int) -> None:
        self.rate = rate
        self.channels = channels
        self.samples = samples
        self._layout = layout_name(channels)
        self._block = samples * channels
        self._buffer: Pcm = np.empty(4 * self._block, dtype=np.int16)
        self._pending_len = 0
        self._resampler: AudioResampler | None = None
        self._resampler_input: tuple[str, str, int] | None = None

    @property
    def pending(self) -> int:
        """Samples (all channels) held back until a block is complete."""
        return self._pending_len

    def push(self, frame: AudioFrame) -> list[Pcm]:
        """Feed one frame; return the complete blocks it finished."""
        pieces = self._convert(frame)
        if len(pieces) == 1:
            return self.push_pcm(pieces[0])
        blocks: list[Pcm] = []
        for pcm in pieces:
            # Blocks of an earlier piece must survive the next push: copy them.
            blocks += [block.copy() for block in self.push_pcm(pcm)]
        return blocks

    def push_pcm(self, pcm: Pcm) -> list[Pcm]:
        """Feed interleaved samples at ``rate`` x ``channels``; return the blocks completed."""
        block = self._block
        if (
            not self._pending_len
            and pcm.size == block
            and pcm.dtype == np.int16
            and pcm.flags.c_contiguous  # encoders hand its address to C
        ):
            return [pcm]  # the steady state of a same-rate leg: no copy at all
        total = self._pending_len + pcm.size
        if total > self._buffer.size:
            grown = np.empty(total + self._block, dtype=np.int16)
            grown[: self._pending_len] = self._buffer[: self._pending_len]
            self._buffer = grown
        self._buffer[self._pending_len : total] = pcm
        whole = (total // block) * block
        if not whole:
            self._pending_len = total
            return []
        # Copies: the rest moves to the front of the same buffer below.
        blocks = [self._buffer[i : i + block].copy() for i in range(0, whole, block)]
        rest = total - whole
        self._buffer[:rest] = self._buffer[whole:total]
        self._pending_len = rest
        return blocks

    def _convert(self, frame: AudioFrame) -> list[Pcm]:
        if (
            frame.format.name == "s16"
            and frame.layout.nb_channels == self.channels
            and frame.sample_rate == self.rate
        ):
            return [samples_of(frame)]
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or key != self._resampler_input:
            # PyAV's resampler is fixed to the first frame's format; a peer that
            # changes rate mid-call (re-INVITE) gets a fresh one.
            self._resampler = AudioResampler(format="s16", layout=self._layout, rate=self.rate)
            self._resampler_input = key
        # samples_of, not to_ndarray (which goes through numpy.vstack): the
        # resampler's frames are packed s16, one plane.
        return [samples_of(out) for out in self._resampler.resample(frame)]


class SilenceConcealingDecoder:
    """A libavcodec audio decoder for codecs without packet-loss concealment
    (G.711, G.722): stamps each frame's pts and fills a lost packet with silence.

    Subclasses decode with ``_decode_at(data, pts)``, pts in 1/``rate``.
    """

    kind = "audio"
    keyframe_needed = False

    def __init__(self, codec: AudioCodecContext, rate: int, samples_per_frame: int, name: str):
        self._codec = codec
        self._rate = rate
        self._name = name
        self._next_pts: int | None = None
        self._last_samples = samples_per_frame
        self.decode_errors = 0

    def _decode_at(self, data: bytes, pts: int) -> list[AudioFrame]:
        if not data:
            return []  # an empty packet would put libavcodec into draining mode
        try:
            frames = self._codec.decode(Packet(data))
        except av.FFmpegError as error:
            self.decode_errors += 1
            get_logger(f"mediacodecs.{self._name}").warning(
                f"{self._name} payload rejected", error=str(error), size=len(data)
            )
            return self._silence()
        for frame in frames:
            frame.pts = pts
            frame.time_base = _time_base(self._rate)
            pts += frame.samples
            self._last_samples = frame.samples
        self._next_pts = pts
        return frames

    def _silence(self) -> list[AudioFrame]:
        """Silence for one packet's duration, continuing the pts."""
        pts = self._next_pts
        if pts is not None:
            self._next_pts = pts + self._last_samples
        return [pcm_frame(silence(self._last_samples, 1), self._rate, 1, pts)]
