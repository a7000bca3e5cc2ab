"""Mix-minus audio for rooms of three or more: everyone hears everyone but themselves.

Each member is one audio stream of a leg (a SIP call's ``MediaStream``, a
browser slot's ``WebRtcPort``): what it sends is decoded, what it gets is
the sum of the others, encoded in its own codec. Every 20 ms (absolute
deadlines on the loop) the mixer takes one packet per member from a short
inbox (at most ``INBOX`` packets wait: older ones are dropped, latency stays
bounded) and hands the tick to the process's ``MediaExecutor`` (decoding
and encoding stay off the event loop); the payloads that come back are sent
on the loop with the member's own RTP numbering. A member that sent nothing
this tick adds silence (its decoder conceals one lost packet first).

Mixing happens at 16 kHz (wideband speech: Opus and G.722 decode to it
directly, G.711 is doubled), in float, clipped to 16 bits per output. Each
member's level (RMS, smoothed) is kept for active-speaker choices.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from gateway.log import get_logger
from gateway.media.negotiation import NegotiatedCodec
from gateway.media.router import RoutedStream
from gateway.media.rtp import RtpError, RtpWriter, header_sizes
from mediacodecs.base import RtpPayload
from mediacodecs.executor import JobDropped, MediaExecutor
from mediacodecs.pcm import PcmDecoder, PcmEncoder

log = get_logger(__name__)

MIX_RATE = 16000
FRAME = MIX_RATE // 50  # samples per 20 ms
TICK = 0.02
INBOX = 4
#: Smoothing of the members' levels (per tick): about 200 ms.
LEVEL_ALPHA = 0.1


@dataclass(eq=False)
class Member:
    """One stream in the mix."""

    stream: RoutedStream
    inbox: deque[bytes] = field(default_factory=lambda: deque(maxlen=INBOX))
    decoders: dict[int, PcmDecoder | None] = field(default_factory=dict)
    encoder: PcmEncoder | None = None
    encoder_codec: NegotiatedCodec | None = None
    writer: RtpWriter | None = None
    timestamp: int = 0
    level: float = 0.0
    heard: bool = False  # sent anything yet
    sent: int = 0


def _resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == MIX_RATE or pcm.size == 0:
        return pcm.astype(np.float32)
    count = round(pcm.size * MIX_RATE / rate)
    positions = np.linspace(0, pcm.size - 1, count)
    resampled: np.ndarray = np.interp(positions, np.arange(pcm.size), pcm).astype(np.float32)
    return resampled


class AudioMixer:
    """A room's audio mix; ``add``/``remove`` streams, ``close`` at the end."""

    def __init__(self, executor: MediaExecutor) -> None:
        self.executor = executor
        self.members: dict[RoutedStream, Member] = {}
        self.ticks = 0
        self.late_ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._busy = False
        self._closed = False

    # --- membership -------------------------------------------------------------------------
    def add(self, stream: RoutedStream) -> None:
        """Mix ``stream`` in (it takes the stream's ``on_rtp``)."""
        if stream in self.members or self._closed:
            return
        member = self.members[stream] = Member(stream)
        stream.on_rtp = lambda _source, data, _arrival: member.inbox.append(bytes(data))
        stream.on_keyframe_request = None
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._next = self._loop.time() + TICK
            self._timer = self._loop.call_at(self._next, self._tick)

    def remove(self, stream: RoutedStream) -> None:
        """Take ``stream`` out of the mix."""
        if self.members.pop(stream, None) is not None:
            stream.on_rtp = None
        if not self.members and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def levels(self) -> dict[RoutedStream, float]:
        """Each member's smoothed level (RMS of 16-bit samples)."""
        return {stream: member.level for stream, member in self.members.items()}

    def close(self) -> None:
        """Stop mixing (idempotent)."""
        self._closed = True
        for stream in list(self.members):
            self.remove(stream)

    # --- the clock -------------------------------------------------------------------------
    def _tick(self) -> None:
        assert self._loop is not None
        self._next += TICK
        now = self._loop.time()
        if self._next < now - 5 * TICK:  # the loop stalled: do not catch up in a burst
            self._next = now + TICK
        self._timer = self._loop.call_at(self._next, self._tick)
        if self._busy:  # the last tick's job is still running: skip this one
            self.late_ticks += 1
            return
        taken = [(m, m.inbox.popleft() if m.inbox else None) for m in self.members.values()]
        if not any(packet is not None for _m, packet in taken):
            return  # nobody speaks: nothing to send (receivers conceal or play silence)
        self.ticks += 1
        self._busy = True
        try:
            future = self.executor.submit(lambda: self._mix(taken), key=self)
        except RuntimeError:  # executor shut down: the node stops
            self._busy = False
            return
        loop = self._loop
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._deliver, done))

    def _deliver(self, done: Future[list[tuple[Member, list[bytes]]]]) -> None:
        self._busy = False
        if self._closed or done.cancelled():
            return
        try:
            results = done.result()
        except JobDropped:
            return
        except Exception as exc:  # a codec failed: log once per tick, keep mixing
            log.warning("mixer: tick failed", error=repr(exc))
            return
        for member, payloads in results:
            if member.stream not in self.members or member.writer is None:
                continue
            assert member.encoder_codec is not None
            step = member.encoder_codec.clock_rate // 50
            for payload in payloads:
                packet = member.writer.packet(payload, member.timestamp)
                member.timestamp = (member.timestamp + step) & 0xFFFFFFFF
                if member.stream.send_rtp(packet):
                    member.sent += 1

    # --- the work (executor thread; one tick at a time per mixer) ----------------------------
    def _mix(self, taken: list[tuple[Member, bytes | None]]) -> list[tuple[Member, list[bytes]]]:
        own: list[np.ndarray] = []
        for member, packet in taken:
            pcm = self._decode(member, packet)
            own.append(pcm)
            rms = float(np.sqrt(np.mean(pcm * pcm))) if pcm.size else 0.0
            member.level += LEVEL_ALPHA * (rms - member.level)
        total = np.sum(own, axis=0) if own else np.zeros(FRAME, np.float32)
        out: list[tuple[Member, list[bytes]]] = []
        for (member, _packet), mine in zip(taken, own, strict=True):
            encoder = self._encoder(member)
            if encoder is None:
                continue
            mixed = np.clip(total - mine, -32768, 32767).astype(np.int16)
            out.append((member, [bytes(p.data) for p in encoder.encode(mixed, MIX_RATE)]))
        return out

    def _decode(self, member: Member, packet: bytes | None) -> np.ndarray:
        silence = np.zeros(FRAME, np.float32)
        if packet is None:
            return silence
        try:
            header, size = header_sizes(packet)
        except RtpError:
            return silence
        payload_type = packet[1] & 0x7F
        if payload_type not in member.decoders:
            member.decoders[payload_type] = self._decoder_for(member, payload_type)
        decoder = member.decoders[payload_type]
        if decoder is None:
            return silence  # telephone-event, comfort noise, ...
        timestamp = int.from_bytes(packet[4:8], "big")
        pcm = decoder.decode(RtpPayload(packet[header : header + size], timestamp))
        mixed = _resample(pcm, decoder.sample_rate)
        if mixed.size >= FRAME:
            return mixed[:FRAME]
        return np.concatenate([mixed, np.zeros(FRAME - mixed.size, np.float32)])

    @staticmethod
    def _decoder_for(member: Member, payload_type: int) -> PcmDecoder | None:
        negotiated = member.stream.negotiated
        codecs = negotiated.codecs if negotiated is not None else ()
        codec = next((c for c in codecs if c.payload_type == payload_type), None)
        if codec is None:
            return None
        try:
            rate = MIX_RATE if codec.name.lower() == "opus" else None
            return PcmDecoder(codec, sample_rate=rate)
        except Exception as exc:
            log.info("mixer: cannot decode", codec=codec.name, reason=str(exc))
            return None

    @staticmethod
    def _encoder(member: Member) -> PcmEncoder | None:
        negotiated = member.stream.negotiated
        if negotiated is None or not negotiated.codecs or not negotiated.direction.sends:
            return None
        codec = negotiated.codecs[0]
        if member.encoder is None or member.encoder_codec != codec:
            try:
                member.encoder = PcmEncoder(codec)
            except Exception as exc:
                log.info("mixer: cannot encode", codec=codec.name, reason=str(exc))
                return None
            member.encoder_codec = codec
            member.writer = RtpWriter(codec.sending_payload_type, random.getrandbits(32))
            member.stream.switch_source()
        return member.encoder
