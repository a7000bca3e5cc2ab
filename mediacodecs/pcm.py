"""Plain PCM in and out of an RTP codec, for media the gateway itself
hears or plays (tones, prompts, in-band DTMF detection, level meters).

``PcmDecoder`` turns RTP payloads into mono ``int16`` samples at the
codec's rate (Opus: 48 kHz unless asked otherwise); ``PcmEncoder`` turns
mono samples at any supported rate into RTP payloads (20 ms each). Both
wrap the same decoders and encoders the transcoder uses; no PyAV object
leaves this module.
"""

from __future__ import annotations

import numpy as np
from av import AudioFrame

from mediacodecs.audio import Pcm, pcm_frame, samples_of
from mediacodecs.base import AudioDecoder, AudioEncoder, RtpPayload
from mediacodecs.registry import (
    CodecDescription,
    codec_info,
    create_audio_decoder,
    create_audio_encoder,
)
from mediacodecs.transcode import PcmDecoding, PcmEncoding


def _mono(frames: list[AudioFrame]) -> Pcm:
    parts: list[Pcm] = []
    for frame in frames:
        samples = samples_of(frame)
        channels = frame.layout.nb_channels
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
        parts.append(samples)
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class PcmDecoder:
    """RTP payloads of one audio codec in, mono 16-bit PCM out."""

    def __init__(self, codec: CodecDescription, *, sample_rate: int | None = None) -> None:
        info = codec_info(codec)
        if info is None or info.kind != "audio":
            raise ValueError(f"{codec.name} is not an audio codec we decode")
        self._decoder: AudioDecoder = create_audio_decoder(codec, sample_rate=sample_rate)
        self.sample_rate = sample_rate or info.sample_rate
        # Opus and G.711 give samples without a PyAV frame (see transcode.py).
        decoder = self._decoder
        self._samples: PcmDecoding | None = (
            decoder
            if isinstance(decoder, PcmDecoding)
            and decoder.channels == 1
            and decoder.sample_rate == self.sample_rate
            else None
        )

    @property
    def decode_errors(self) -> int:
        """Payloads the decoder rejected."""
        return self._decoder.decode_errors

    def decode(self, payload: RtpPayload) -> Pcm:
        """The samples of one payload (empty when the decoder holds them back)."""
        if self._samples is not None:
            return self._samples.decode_pcm(payload).copy()  # the decoder reuses its buffer
        return _mono(self._decoder.decode(payload))

    def conceal(self) -> Pcm:
        """Samples standing in for one lost payload."""
        if self._samples is not None:
            return self._samples.conceal_pcm(None).copy()
        return _mono(self._decoder.conceal(None))


class PcmEncoder:
    """Mono 16-bit PCM in, RTP payloads of one audio codec out (20 ms each)."""

    def __init__(self, codec: CodecDescription, *, bitrate: int | None = None) -> None:
        self._encoder: AudioEncoder = create_audio_encoder(codec, bitrate=bitrate)
        encoder = self._encoder
        self._samples: PcmEncoding | None = (
            encoder
            if isinstance(encoder, PcmEncoding) and getattr(encoder, "channels", 1) == 1
            else None
        )

    def encode(self, pcm: Pcm, sample_rate: int) -> list[RtpPayload]:
        """Payloads for ``pcm``; samples short of a whole packet wait for the next call."""
        if self._samples is not None and sample_rate == self._samples.sample_rate:
            return self._samples.encode_pcm(pcm)  # no frame, no resampler
        return self._encoder.encode(pcm_frame(pcm, sample_rate, 1))
