"""Every use of aiortc's and aioice's private parts, in one place.

aiortc decodes what an ``RTCRtpReceiver`` receives and encodes what an
``RTCRtpSender`` sends. A gateway that forwards between two browsers must do
neither, and aioice never offers loopback host candidates; the public API
has no switch for either. So this module reaches inside, per instance (never
a process-wide monkeypatch), and ``tests/unit/webrtc/test_aiortc_internals.py``
checks with ``inspect`` that every name and signature relied on below still
exists, so an aiortc upgrade fails that test instead of silently decoding.

What is relied on (aiortc 1.16.0, aioice 0.13.0):

* receiver: ``_handle_rtp_packet(packet, arrival_time_ms)`` (replaced on the
  instance), ``receive(parameters)`` (wrapped: the decoder thread it starts
  is stopped at once through ``_RTCRtpReceiver__stop_decoder``),
  ``_RTCRtpReceiver__codecs`` / ``__remote_streams`` / ``__decoder_thread``,
  ``_send_rtcp_pli(media_ssrc)``, ``_send_rtcp(packet)``,
  ``_RTCRtpReceiver__rtcp_ssrc``, ``StreamStatistics``.
* sender: ``_RTCRtpSender__encoder`` (pre-set to ``PassthroughEncoder`` so
  ``_next_encoded_frame`` calls its ``pack()`` for anything that is not an
  ``av.Frame``, and sets its ``target_bitrate`` on REMB),
  ``_send_keyframe()`` (wrapped to surface PLI/FIR).
* ICE: ``RTCIceGatherer._connection`` and ``aioice.Connection.
  get_component_candidates(component, addresses, timeout)``,
  ``_transport_policy``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aioice.ice import Connection, TransportPolicy
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)

from gateway import metrics

#: Packet handler: the RTP packet as received (after SRTP) and its codec.
PacketHandler = Callable[[RtpPacket, RTCRtpCodecParameters], None]

# Name-mangled private attributes, spelled once (the unit test checks each exists).
RECEIVER_CODECS = "_RTCRtpReceiver__codecs"
RECEIVER_REMOTE_STREAMS = "_RTCRtpReceiver__remote_streams"
RECEIVER_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
RECEIVER_STOP_DECODER = "_RTCRtpReceiver__stop_decoder"
RECEIVER_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"
SENDER_ENCODER = "_RTCRtpSender__encoder"
PINNED = "_gatewayd_pinned"
HOOK = "_gatewayd_hook"  # a receiver's ReceiverHook


# --- ICE host candidates ------------------------------------------------------------------
def _ice_connections(pc: RTCPeerConnection) -> list[Connection]:
    connections: list[Connection] = []
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport.iceGatherer._connection
        if connection not in connections:
            connections.append(connection)
    return connections


def pin_host_addresses(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather host candidates on exactly ``addresses`` (loopback included).

    aioice asks ``get_host_addresses()``, which lists every interface but
    127.0.0.1. Call this after the transceivers exist and before
    ``setLocalDescription`` (which gathers).
    """
    wanted = list(addresses)
    for connection in _ice_connections(pc):
        if getattr(connection, PINNED, False):
            continue
        original = connection.get_component_candidates

        async def candidates(
            component: int,
            addresses: list[str],
            timeout: int = 5,
            _connection: Connection = connection,
            _original: Callable[..., Any] = original,
        ) -> list[Any]:
            if _connection._transport_policy == TransportPolicy.ALL:
                addresses = wanted
            result: list[Any] = await _original(
                component=component, addresses=addresses, timeout=timeout
            )
            return result

        setattr(connection, "get_component_candidates", candidates)  # noqa: B010
        setattr(connection, PINNED, True)


def ice_server_addresses(pc: RTCPeerConnection) -> list[tuple[str, int] | None]:
    """The STUN and TURN servers the ICE agents of ``pc`` will contact."""
    return [s for c in _ice_connections(pc) for s in (c.stun_server, c.turn_server)]


# --- receiving without decoding -----------------------------------------------------------
_spawned: set[asyncio.Future[None]] = set()


def spawn(coroutine: Any) -> None:
    """Run one of aiortc's coroutines (an RTCP send, a packet handler) to its end, keeping
    a reference to it meanwhile."""
    task = asyncio.ensure_future(coroutine)
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)


class ReceiverHook:
    """A receiver whose packets go to ``handler`` instead of the jitter buffer and decoder.

    RTCP receiver reports keep flowing (the loss statistics are fed), RTX is
    dropped (the gateway sends no NACKs upstream: loss recovery is done by
    each leg's sender towards its own browser).
    """

    def __init__(self, receiver: RTCRtpReceiver, handler: PacketHandler) -> None:
        self.receiver = receiver
        self.handler = handler
        self.last_ssrc: int | None = None
        self.packets = 0
        original_receive = receiver.receive

        async def receive(parameters: Any) -> None:
            await original_receive(parameters)
            getattr(receiver, RECEIVER_STOP_DECODER)()  # nothing to decode, ever

        setattr(receiver, "receive", receive)  # noqa: B010
        setattr(receiver, "_handle_rtp_packet", self._handle_rtp_packet)  # noqa: B010
        setattr(receiver, HOOK, self)  # aiortc_fastpath hands packets to handle()

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.handle(packet)

    def handle(self, packet: RtpPacket) -> None:
        """One RTP packet for this receiver (SRTP already removed)."""
        receiver = self.receiver
        if not receiver._enabled:
            return
        codecs: dict[int, RTCRtpCodecParameters] = getattr(receiver, RECEIVER_CODECS)
        codec = codecs.get(packet.payload_type)
        if codec is None or is_rtx(codec):
            return
        streams: dict[int, StreamStatistics] = getattr(receiver, RECEIVER_REMOTE_STREAMS)
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        self.last_ssrc = packet.ssrc
        self.packets += 1
        self.handler(packet, codec)

    def request_keyframe(self) -> bool:
        """Send a PLI for the stream last received; False when none was received yet."""
        if self.last_ssrc is None:
            return False
        spawn(self.receiver._send_rtcp_pli(self.last_ssrc))
        return True

    def send_bitrate_estimate(self, bitrate: int) -> bool:
        """Tell the remote sender how much it may send (RTCP REMB), as aiortc's receiver does."""
        rtcp_ssrc = getattr(self.receiver, RECEIVER_RTCP_SSRC)
        if self.last_ssrc is None or rtcp_ssrc is None:
            return False
        fci = pack_remb_fci(int(bitrate), [self.last_ssrc])
        packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci)
        spawn(self.receiver._send_rtcp(packet))
        return True


def is_decoding(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc runs a decoder thread for this receiver."""
    return getattr(receiver, RECEIVER_DECODER_THREAD) is not None


def tap_rtp(receiver: RTCRtpReceiver, callback: Callable[[RtpPacket], None]) -> None:
    """Show ``callback`` every RTP packet while aiortc handles (and decodes) it as usual."""
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        callback(packet)
        await original(packet, arrival_time_ms)

    setattr(receiver, "_handle_rtp_packet", handle)  # noqa: B010


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> asyncio.Future[None]:
    """Ask the remote sender of ``media_ssrc`` for a keyframe (RTCP PLI)."""
    return asyncio.ensure_future(receiver._send_rtcp_pli(media_ssrc))


# --- sending without encoding -------------------------------------------------------------
@dataclass(slots=True)
class EncodedFrame:
    """RTP payloads of one frame as they arrived, and their RTP timestamp."""

    payloads: list[bytes]
    timestamp: int


class PassthroughEncoder(Encoder):
    """Hands pre-packetized payloads to ``RTCRtpSender._run_rtp`` unchanged.

    The sender sets ``target_bitrate`` when the remote peer sends a REMB;
    ``on_bitrate`` passes it on (to the browser that really encodes).
    """

    def __init__(self, on_bitrate: Callable[[int], None] | None = None) -> None:
        self.on_bitrate = on_bitrate
        self._target_bitrate: int | None = None

    @property
    def target_bitrate(self) -> int | None:
        return self._target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target_bitrate = bitrate
        if self.on_bitrate is not None:
            self.on_bitrate(bitrate)

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise RuntimeError("a passthrough sender never encodes")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        if not isinstance(packet, EncodedFrame):
            raise TypeError(f"passthrough sender got {type(packet).__name__}")
        return packet.payloads, packet.timestamp


class FrameSink(Protocol):
    """Takes a frame's payloads at once (``aiortc_fastpath.DirectSender``)."""

    def send(self, payloads: list[bytes], timestamp: int) -> None: ...


class PassthroughTrack(MediaStreamTrack):
    """The track a passthrough sender reads: a bounded queue of ``EncodedFrame``.

    The sender marks the last payload of each frame, so payloads are grouped
    by RTP timestamp until the source's marker bit (video) or sent one per
    frame (audio). When the queue is full the oldest frame is dropped and
    counted. With a ``direct`` sink attached (``attach``), a whole frame goes
    to it at once instead of into the queue.
    """

    def __init__(self, kind: str, *, capacity: int = 64) -> None:
        super().__init__()
        self.kind = kind
        self._frames: collections.deque[EncodedFrame] = collections.deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._pending: EncodedFrame | None = None
        self.dropped = 0
        self.direct: FrameSink | None = None

    def attach(self, sink: FrameSink | None) -> None:
        """Send frames to ``sink`` from now on (None: queue them for ``recv`` again)."""
        self.direct = sink
        while sink is not None and self._frames:
            frame = self._frames.popleft()
            sink.send(frame.payloads, frame.timestamp)

    def push(self, payload: bytes, timestamp: int, marker: bool) -> None:
        pending = self._pending
        if pending is not None and pending.timestamp != timestamp:
            self._enqueue(pending)  # the source lost the frame's last packet
            pending = None
        if pending is None:
            pending = EncodedFrame([payload], timestamp)
        else:
            pending.payloads.append(payload)
        if marker or self.kind == "audio":
            self._enqueue(pending)
            pending = None
        self._pending = pending

    def _enqueue(self, frame: EncodedFrame) -> None:
        direct = self.direct
        if direct is not None:
            direct.send(frame.payloads, frame.timestamp)
            return
        if len(self._frames) >= self._capacity:
            self._frames.popleft()
            self.dropped += 1
            metrics.MEDIA_QUEUE_DROPS.inc()
        self._frames.append(frame)
        self._ready.set()

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def install_passthrough_sender(
    sender: RTCRtpSender, on_bitrate: Callable[[int], None] | None = None
) -> None:
    """Make ``sender`` packetize ``EncodedFrame``s as they are, never building an encoder.

    ``on_bitrate(bps)`` is called for every REMB the remote peer sends about this sender.
    """
    setattr(sender, SENDER_ENCODER, PassthroughEncoder(on_bitrate))


def encoder_of(sender: RTCRtpSender) -> object | None:
    """The encoder aiortc built (or was given) for ``sender``."""
    encoder: object | None = getattr(sender, SENDER_ENCODER)
    return encoder


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever the remote peer asks ``sender`` for a keyframe (PLI/FIR)."""
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        callback()

    setattr(sender, "_send_keyframe", send_keyframe)  # noqa: B010


def on_receiver_report(sender: RTCRtpSender, callback: Callable[[float], None]) -> None:
    """Call ``callback(fraction_lost)`` (0.0-1.0) for every RTCP receiver report block
    the remote peer sends about ``sender``'s stream, after aiortc has read it."""
    original = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        await original(packet)
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    callback(report.fraction_lost / 256)

    setattr(sender, "_handle_rtcp_packet", handle_rtcp_packet)  # noqa: B010


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec the transceiver's sender uses (the first common one), once negotiated."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return codecs[0] if codecs else None
