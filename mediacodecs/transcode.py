"""One direction of one stream across a codec boundary: decode, convert, encode.

A transcoder is fed RTP payloads in sequence order and returns RTP payloads
of the other codec. The conversion step lives in the encoders (audio:
``PcmFramer`` resamples with libswresample; video: ``VideoFrame.reformat``
scales with libswscale), so a transcoder is little more than its decoder,
its encoder and the rules for loss and control.

Audio between Opus and G.711 skips PyAV altogether: libopus runs at the
G.711 leg's 8 kHz (no resampler), G.711 is a numpy table lookup, and the
samples go from decoder to encoder as a plain array (``decode_pcm`` /
``encode_pcm``), no AudioFrame. Such a transcoder is ``inline_safe``: a
payload costs ~30-60 µs of C with the GIL released around libopus, less
than handing it to a worker thread and back, so the router runs it on the
event loop. Everything else (video, G.722, resampling) goes through PyAV
and runs on the executor.

Threading: ``process``/``process_frame`` and ``conceal`` run on the media
executor (use ``submit``/``submit_frame``: jobs of one transcoder run one
at a time, in order), or inline for ``inline_safe`` ones; the control calls
(``set_bitrate``, ``request_keyframe``, ...) come from the event loop at
any time and are applied before the next payload, so a codec context is
only ever touched by one thread at a time.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar, runtime_checkable

from av import AudioFrame, VideoFrame

from gateway.metrics import MEDIA_TRANSCODES_ACTIVE
from mediacodecs.audio import Pcm
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


@runtime_checkable
class PcmDecoding(Protocol):
    """An audio decoder that also gives plain samples (Opus, G.711)."""

    sample_rate: int
    channels: int

    def decode_pcm(self, payload: RtpPayload) -> Pcm: ...
    def conceal_pcm(self, next_payload: RtpPayload | None = None) -> Pcm: ...


@runtime_checkable
class PcmEncoding(Protocol):
    """An audio encoder that also takes plain samples at its ``sample_rate`` (Opus, G.711)."""

    sample_rate: int

    def encode_pcm(self, pcm: Pcm) -> list[RtpPayload]: ...


class _Transcoder(Generic[FrameT]):
    kind: MediaKind
    inline_safe: bool

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
        return self._process((payload,))

    def process_frame(self, payloads: Sequence[bytes], timestamp: int) -> list[RtpPayload]:
        """Transcode one frame as the jitter buffer hands it out: one audio
        payload, or every payload of a video frame (in order, marker on the last)."""
        last = len(payloads) - 1
        return self._process(
            [RtpPayload(data, timestamp, index == last) for index, data in enumerate(payloads)]
        )

    def _process(self, payloads: Sequence[RtpPayload]) -> list[RtpPayload]:
        with self._lock:
            lost, self._lost = self._lost, 0
            controls, self._controls = self._controls, []
        for control in controls:
            control()
        out: list[RtpPayload] = []
        following = payloads[0] if payloads else None
        for index in range(lost):
            # The last lost packet may be recoverable from this one (Opus FEC).
            out += self._conceal_one(following if index == lost - 1 else None)
        for payload in payloads:
            out += self._transcode_one(payload)
        return out

    def conceal(self, next_payload: RtpPayload | None = None) -> list[RtpPayload]:
        """The jitter buffer reports one lost payload, before ``next_payload``."""
        return self._conceal_one(next_payload)

    def submit(self, executor: MediaExecutor, payload: RtpPayload) -> Future[list[RtpPayload]]:
        """Queue ``process(payload)`` on the executor, in order with this
        stream's other jobs; if the job is dropped, the loss is noted."""
        return executor.submit(
            functools.partial(self.process, payload), key=self, on_drop=self.note_lost
        )

    def submit_frame(
        self, executor: MediaExecutor, payloads: Sequence[bytes], timestamp: int
    ) -> Future[list[RtpPayload]]:
        """Queue ``process_frame`` as one job: a video frame of 30 payloads is
        one job, not 30 that a bounded queue could split."""
        return executor.submit(
            functools.partial(self.process_frame, payloads, timestamp),
            key=self,
            on_drop=self.note_lost,
        )

    def _transcode_one(self, payload: RtpPayload) -> list[RtpPayload]:
        frames = self._decoder.decode(payload)
        self.frames_decoded += len(frames)
        return self._encode(frames)

    def _conceal_one(self, next_payload: RtpPayload | None) -> list[RtpPayload]:
        return self._encode(self._decoder.conceal(next_payload))

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
        opus_complexity: int | None = None,
    ) -> None:
        source_info, sink_info = codec_info(source), codec_info(sink)
        # Opus decodes straight to the sink's rate and encodes from the
        # source's: no resampler between Opus and G.711 or G.722.
        decoder: AudioDecoder = create_audio_decoder(
            source, sample_rate=sink_info.sample_rate if sink_info else None
        )
        encoder: AudioEncoder = create_audio_encoder(
            sink,
            bitrate=bitrate,
            fec=fec,
            sample_rate=source_info.sample_rate if source_info else None,
            opus_complexity=opus_complexity,
        )
        super().__init__(decoder, encoder)
        self._pcm_decoder: PcmDecoding | None = None
        self._pcm_encoder: PcmEncoding | None = None
        if (
            isinstance(decoder, PcmDecoding)
            and isinstance(encoder, PcmEncoding)
            and decoder.sample_rate == encoder.sample_rate
            and decoder.channels == getattr(encoder, "channels", 1)
        ):
            self._pcm_decoder, self._pcm_encoder = decoder, encoder
        #: No PyAV on the way (libopus and numpy only): cheap enough, and safe,
        #: to run on the event loop.
        self.inline_safe = self._pcm_decoder is not None

    def _transcode_one(self, payload: RtpPayload) -> list[RtpPayload]:
        if self._pcm_decoder is None or self._pcm_encoder is None:
            return super()._transcode_one(payload)
        pcm = self._pcm_decoder.decode_pcm(payload)
        self.frames_decoded += bool(pcm.size)
        payloads = self._pcm_encoder.encode_pcm(pcm)
        self.frames_encoded += bool(payloads)
        return payloads

    def _conceal_one(self, next_payload: RtpPayload | None) -> list[RtpPayload]:
        if self._pcm_decoder is None or self._pcm_encoder is None:
            return super()._conceal_one(next_payload)
        payloads = self._pcm_encoder.encode_pcm(self._pcm_decoder.conceal_pcm(next_payload))
        self.frames_encoded += bool(payloads)
        return payloads


class VideoTranscoder(_Transcoder[VideoFrame]):
    """Video from ``source`` to ``sink`` at ``width`` x ``height``, ``fps``, ``bitrate``."""

    kind: MediaKind = "video"
    inline_safe = False  # PyAV: always on the executor

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
