"""One direction of one stream across a codec boundary: decode, convert, encode.

A transcoder is fed RTP payloads in sequence order and returns RTP payloads
of the other codec. The conversion step lives in the encoders (audio:
``PcmFramer`` resamples with libswresample; video: ``VideoFrame.reformat``
scales with libswscale), so a transcoder is little more than its decoder,
its encoder and the rules for loss and control.

Threading: ``process`` and ``conceal`` run on the media executor (use
``submit``: jobs of one transcoder run one at a time, in order); the
control calls (``set_bitrate``, ``request_keyframe``, ...) come from the
event loop at any time and are applied by the worker before its next
payload, so a codec context is only ever touched by one thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from av import AudioFrame, VideoFrame

from gateway.metrics import MEDIA_TRANSCODES_ACTIVE
from mediacodecs.base import (
    AudioDecoder,
    AudioEncoder,
    Decoder,
    Encoder,
    MediaKind,
    RtpPayload,
    VideoDecoder,
    VideoEncoder,
)
from mediacodecs.executor import MediaExecutor
from mediacodecs.registry import (
    CodecDescription,
    codec_info,
    create_audio_decoder,
    create_audio_encoder,
    create_video_decoder,
    create_video_encoder,
)

FrameT = TypeVar("FrameT", AudioFrame, VideoFrame)


class _Transcoder(Generic[FrameT]):
    kind: MediaKind

    def __init__(self, decoder: Decoder[FrameT], encoder: Encoder[FrameT]) -> None:
        self._decoder: Decoder[FrameT] = decoder
        self._encoder: Encoder[FrameT] = encoder
        self._lock = threading.Lock()
        self._lost = 0
        self._controls: list[Callable[[], None]] = []
        self._open = True
        #: Frames the decoder produced from payloads (concealment not counted).
        self.frames_decoded = 0
        #: Frames the encoder turned into at least one payload.
        self.frames_encoded = 0
        MEDIA_TRANSCODES_ACTIVE.labels(kind=self.kind).inc()

    @property
    def keyframe_needed(self) -> bool:
        """The decoder waits for a keyframe: send PLI to the source."""
        return self._decoder.keyframe_needed

    @property
    def decode_errors(self) -> int:
        """Payloads the decoder rejected."""
        return self._decoder.decode_errors

    def set_bitrate(self, bps: int) -> None:
        """Retarget the encoder (applied before the next payload)."""
        self._control(functools.partial(self._encoder.set_bitrate, bps))

    def note_lost(self) -> None:
        """A payload for this stream will never come (its job was dropped);
        the next ``process`` conceals it first. Safe from any thread."""
        with self._lock:
            self._lost += 1

    def process(self, payload: RtpPayload) -> list[RtpPayload]:
        """Transcode one payload (after concealing any noted losses)."""
        with self._lock:
            lost, self._lost = self._lost, 0
            controls, self._controls = self._controls, []
        for control in controls:
            control()
        out: list[RtpPayload] = []
        for index in range(lost):
            # The last lost packet may be recoverable from this one (Opus FEC).
            out += self._encode(self._decoder.conceal(payload if index == lost - 1 else None))
        frames = self._decoder.decode(payload)
        self.frames_decoded += len(frames)
        out += self._encode(frames)
        return out

    def conceal(self, next_payload: RtpPayload | None = None) -> list[RtpPayload]:
        """The jitter buffer reports one lost payload, before ``next_payload``."""
        return self._encode(self._decoder.conceal(next_payload))

    def submit(self, executor: MediaExecutor, payload: RtpPayload) -> Future[list[RtpPayload]]:
        """Queue ``process(payload)`` on the executor, in order with this
        stream's other jobs; if the job is dropped, the loss is noted."""
        return executor.submit(
            functools.partial(self.process, payload), key=self, on_drop=self.note_lost
        )

    def close(self) -> None:
        """The stream ended (idempotent; keeps the gauge of active transcodes true)."""
        with self._lock:
            was_open, self._open = self._open, False
        if was_open:
            MEDIA_TRANSCODES_ACTIVE.labels(kind=self.kind).dec()

    def _control(self, action: Callable[[], None]) -> None:
        with self._lock:
            self._controls.append(action)

    def _encode(self, frames: list[FrameT]) -> list[RtpPayload]:
        out: list[RtpPayload] = []
        for frame in frames:
            payloads = self._encoder.encode(frame)
            self.frames_encoded += bool(payloads)
            out += payloads
        return out


class AudioTranscoder(_Transcoder[AudioFrame]):
    """Audio from ``source`` to ``sink`` (Opus, PCMU, PCMA, G.722 in any pairing)."""

    kind: MediaKind = "audio"

    def __init__(
        self,
        source: CodecDescription,
        sink: CodecDescription,
        *,
        bitrate: int | None = None,
        fec: bool = True,
    ) -> None:
        info = codec_info(sink)
        # Opus decodes straight to the sink's rate: no resampler on Opus -> G.711.
        decoder: AudioDecoder = create_audio_decoder(
            source, sample_rate=info.sample_rate if info else None
        )
        encoder: AudioEncoder = create_audio_encoder(sink, bitrate=bitrate, fec=fec)
        super().__init__(decoder, encoder)


class VideoTranscoder(_Transcoder[VideoFrame]):
    """Video from ``source`` to ``sink`` at ``width`` x ``height``, ``fps``, ``bitrate``."""

    kind: MediaKind = "video"

    def __init__(  # noqa: PLR0917 - the issue's call shape: (src, dst, w, h, fps, bitrate)
        self,
        source: CodecDescription,
        sink: CodecDescription,
        width: int = 640,
        height: int = 480,
        fps: float = 15,
        bitrate: int = 500_000,
    ) -> None:
        decoder: VideoDecoder = create_video_decoder(source)
        self._video_encoder: VideoEncoder = create_video_encoder(
            sink, width=width, height=height, fps=fps, bitrate=bitrate
        )
        super().__init__(decoder, self._video_encoder)

    def request_keyframe(self) -> None:
        """The sink asked for a keyframe (PLI/FIR): the next frame out is one."""
        self._control(self._video_encoder.request_keyframe)

    def set_resolution(self, width: int, height: int) -> None:
        """Scale to a new size (costs one keyframe, see VideoEncoder)."""
        self._control(functools.partial(self._video_encoder.set_resolution, width, height))

    def set_framerate(self, fps: float) -> None:
        """Emit at most ``fps`` frames per second."""
        self._control(functools.partial(self._video_encoder.set_framerate, fps))
