"""G.722 (wideband ADPCM) through libavcodec's ``g722``.

G.722 samples at 16 kHz but its RTP clock is 8 kHz (RFC 3551 section 4.5.2,
an error kept for compatibility): a 20 ms payload holds 320 samples and
advances the RTP timestamp by 160.
"""

from __future__ import annotations

from fractions import Fraction

from av import AudioFrame, CodecContext

from mediacodecs.audio import PcmFramer, SilenceConcealingDecoder, pcm_frame
from mediacodecs.base import MediaKind, RtpPayload

SAMPLE_RATE = 16000
RTP_CLOCK = 8000
SAMPLES_PER_FRAME = 320  # 20 ms
BITRATE = 64000


class G722Encoder:
    """16 kHz mono frames to G.722 payloads, one per 20 ms."""

    kind: MediaKind = "audio"

    def __init__(self) -> None:
        self._codec = CodecContext.create("g722", "w")
        self._codec.sample_rate = SAMPLE_RATE
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.time_base = Fraction(1, SAMPLE_RATE)
        self._framer = PcmFramer(SAMPLE_RATE, 1, SAMPLES_PER_FRAME)
        self._timestamp = 0

    @property
    def bitrate(self) -> int:
        """Always 64 kbit/s (mode 1)."""
        return BITRATE

    def encode(self, frame: AudioFrame) -> list[RtpPayload]:
        """Encode; one payload per complete 20 ms."""
        out = []
        for block in self._framer.push(frame):
            data = b"".join(bytes(p) for p in self._codec.encode(pcm_frame(block, SAMPLE_RATE, 1)))
            out.append(RtpPayload(data, self._timestamp))
            self._timestamp += block.size * RTP_CLOCK // SAMPLE_RATE
        return out

    def set_bitrate(self, bps: int) -> None:
        """G.722 modes 2 and 3 only steal bits for data channels; one rate here."""

    def request_keyframe(self) -> None:
        """Audio has no keyframes."""


class G722Decoder(SilenceConcealingDecoder):
    """G.722 payloads to 16 kHz mono ``s16`` frames (pts in 1/16000)."""

    kind: MediaKind = "audio"

    def __init__(self) -> None:
        codec = CodecContext.create("g722", "r")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = "mono"
        super().__init__(codec, SAMPLE_RATE, SAMPLES_PER_FRAME, "g722")

    def decode(self, payload: RtpPayload) -> list[AudioFrame]:
        """Usually one frame per payload."""
        # The RTP clock of G.722 is 8000 although it samples at 16 kHz (RFC 3551).
        return self._decode_at(payload.data, payload.timestamp * SAMPLE_RATE // RTP_CLOCK)

    def conceal(self, next_payload: RtpPayload | None = None) -> list[AudioFrame]:
        """Silence for one packet's duration (libavcodec has no G.722 PLC)."""
        return self._silence()
