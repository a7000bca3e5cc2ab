"""PyAV encoders and decoders behind one small protocol, and what bridging costs.

The only package that talks to PyAV (and, for Opus, to libopus itself).
Everything else sees ``av.AudioFrame``/``av.VideoFrame`` frames and
``RtpPayload`` values:

* ``Encoder`` / ``VideoEncoder`` / ``Decoder`` (``base``): the protocol;
  codecs in ``opus``, ``g711``, ``g722``, ``vp8``, ``h264``.
* ``can_bridge`` / ``Bridge`` / ``create_*`` (``registry``): passthrough or
  transcode, and at what CPU cost.
* ``AudioTranscoder`` / ``VideoTranscoder`` (``transcode``): decode,
  resample or scale, encode; run them on a ``MediaExecutor`` (``executor``).
"""

from mediacodecs.base import (
    AudioDecoder,
    AudioEncoder,
    CodecError,
    Decoder,
    Encoder,
    MediaKind,
    RtpPayload,
    VideoDecoder,
    VideoEncoder,
)
from mediacodecs.executor import JobDropped, MediaExecutor, usable_cores
from mediacodecs.registry import (
    Bridge,
    CodecDescription,
    CodecSpec,
    can_bridge,
    create_audio_decoder,
    create_audio_encoder,
    create_video_decoder,
    create_video_encoder,
)
from mediacodecs.transcode import AudioTranscoder, VideoTranscoder

__all__ = [
    "AudioDecoder",
    "AudioEncoder",
    "AudioTranscoder",
    "Bridge",
    "CodecDescription",
    "CodecError",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "JobDropped",
    "MediaExecutor",
    "MediaKind",
    "RtpPayload",
    "VideoDecoder",
    "VideoEncoder",
    "VideoTranscoder",
    "can_bridge",
    "create_audio_decoder",
    "create_audio_encoder",
    "create_video_decoder",
    "create_video_encoder",
    "usable_cores",
]
