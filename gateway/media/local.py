"""Media the gateway itself plays into a stream or hears from one.

``AudioPlayer`` sends PCM from a source (a tone, a prompt) into a stream,
one packet per 20 ms, paced on the event loop against absolute deadlines so
it does not drift; the encoding runs on the media executor. ``AudioListener``
decodes what a stream receives to PCM (on the executor) for in-band DTMF
detection (the last resort for peers that send DTMF only as tones), level
meters and tests. Both pick the codec from the stream's negotiation and
follow re-INVITEs that change it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.dtmf import DtmfDigit, InbandDtmfDetector
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.router import RtpPort
from gateway.media.rtp import RtpError, RtpWriter, header_sizes
from mediacodecs.audio import Pcm
from mediacodecs.base import RtpPayload
from mediacodecs.executor import JobDropped, MediaExecutor
from mediacodecs.pcm import PcmDecoder, PcmEncoder

log = get_logger(__name__)

PTIME = 0.02
#: A PCM source: ``source(samples, rate)`` returns that many mono samples.
PcmSource = Callable[[int, int], Pcm]


def tone(frequency: float, level_dbfs: float = -12.0) -> PcmSource:
    """A continuous sine at ``frequency`` Hz (phase carried across calls)."""
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    position = [0]

    def source(samples: int, rate: int) -> Pcm:
        start = position[0]
        position[0] += samples
        t = np.arange(start, start + samples, dtype=np.float64) / rate
        return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)

    return source


def _send_codec(stream: NegotiatedStream | None) -> NegotiatedCodec | None:
    if stream is None or not stream.accepted or not stream.codecs:
        return None
    return stream.codecs[0]


class AudioPlayer:
    """Plays ``source`` into ``port`` until stopped."""

    def __init__(
        self,
        port: RtpPort,
        executor: MediaExecutor,
        source: PcmSource,
        *,
        sample_rate: int = 48000,
    ) -> None:
        self.port = port
        self.executor = executor
        self.source = source
        self.sample_rate = sample_rate
        self.sent = 0
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._codec: NegotiatedCodec | None = None
        self._encoder: PcmEncoder | None = None
        self._writer: RtpWriter | None = None

    def start(self) -> None:
        """Begin playing (the stream switches to us as its source)."""
        if self._handle is None:
            self.port.switch_source()
            self._next = self._loop.time()
            self._tick()

    def stop(self) -> None:
        """Stop playing (idempotent)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._next += PTIME
        now = self._loop.time()
        if self._next < now - 10 * PTIME:
            self._next = now + PTIME  # the loop was stalled: skip ahead, don't burst
        self._handle = self._loop.call_at(self._next, self._tick)
        negotiated = self.port.negotiated
        codec = _send_codec(negotiated)
        if codec is None or negotiated is None or not negotiated.direction.sends:
            return
        if codec != self._codec:
            try:
                self._encoder = PcmEncoder(codec)
            except GatewayError as exc:
                log.warning("player: no encoder", codec=codec.name, reason=exc.message)
                self.stop()
                return
            self._codec = codec
            self._writer = RtpWriter(codec.sending_payload_type, random.getrandbits(32))
        encoder = self._encoder
        if encoder is None:
            return
        samples = self.source(round(self.sample_rate * PTIME), self.sample_rate)
        job = self.executor.submit(lambda: encoder.encode(samples, self.sample_rate), key=self)
        job.add_done_callback(self._encoded_threadsafe)

    def _encoded_threadsafe(self, job: Future[list[RtpPayload]]) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._send, job)

    def _send(self, job: Future[list[RtpPayload]]) -> None:
        writer = self._writer
        if self._handle is None or writer is None or job.cancelled() or job.exception():
            return
        for payload in job.result():
            if self.port.send_rtp(writer.packet(payload.data, payload.timestamp, payload.marker)):
                self.sent += 1


class AudioListener:
    """Decodes what a stream receives; feed it from the stream's ``on_rtp``."""

    def __init__(
        self,
        port: RtpPort,
        executor: MediaExecutor,
        *,
        on_pcm: Callable[[Pcm, int], None] | None = None,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        sample_rate: int | None = None,
    ) -> None:
        self.port = port
        self.executor = executor
        self.on_pcm = on_pcm
        self.on_dtmf = on_dtmf
        self.sample_rate = sample_rate
        self.decoded = 0
        self._loop = asyncio.get_running_loop()
        self._decoder: PcmDecoder | None = None
        self._payload_type = -1
        self._detector: InbandDtmfDetector | None = None

    def feed(self, _port: object, data: bytes, _arrival: float = 0.0) -> None:
        """One valid RTP packet the stream received."""
        payload_type = data[1] & 0x7F
        decoder = self._decoder_for(payload_type)
        if decoder is None:
            return
        try:
            header, size = header_sizes(data)
        except RtpError:
            return
        payload = RtpPayload(bytes(data[header : header + size]), int.from_bytes(data[4:8], "big"))
        job = self.executor.submit(lambda: decoder.decode(payload), key=self)
        job.add_done_callback(self._decoded_threadsafe)

    def _decoder_for(self, payload_type: int) -> PcmDecoder | None:
        if payload_type == self._payload_type:
            return self._decoder
        negotiated = self.port.negotiated
        codec = next(
            (
                c
                for c in (negotiated.codecs if negotiated else ())
                if c.payload_type == payload_type
            ),
            None,
        )
        if codec is None:
            return None  # telephone-event, comfort noise: not audio to decode
        try:
            decoder = PcmDecoder(codec, sample_rate=self.sample_rate)
        except (GatewayError, ValueError) as exc:
            log.warning("listener: no decoder", codec=codec.name, reason=str(exc))
            return None
        self._decoder, self._payload_type = decoder, payload_type
        if self.on_dtmf is not None:
            self._detector = InbandDtmfDetector(decoder.sample_rate)
        return decoder

    def _decoded_threadsafe(self, job: Future[Pcm]) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._heard, job)

    def _heard(self, job: Future[Pcm]) -> None:
        try:
            pcm = job.result()
        except (JobDropped, GatewayError):
            return
        decoder = self._decoder
        if decoder is None or pcm.size == 0:
            return
        self.decoded += 1
        if self.on_pcm is not None:
            self.on_pcm(pcm, decoder.sample_rate)
        if self._detector is not None and self.on_dtmf is not None:
            for digit in self._detector.feed(pcm):
                self.on_dtmf(digit)
