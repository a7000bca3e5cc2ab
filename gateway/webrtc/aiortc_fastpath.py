"""A synchronous packet path through aiortc for legs that forward and never decode.

aiortc moves every packet through asyncio machinery: a received SRTP
datagram is first tried as STUN (an exception for every media packet), put
in aioice's queue, taken by the DTLS transport's task, unprotected, parsed
and awaited through two coroutines to the receiver; a sent payload waits in
the track's queue for the sender's task, then goes down three more
coroutines to ``sendto``. For a gateway that forwards audio that is most of
the CPU a packet costs (``bench bridge_media``'s PCMU passthrough), and none
of the awaits ever waits.

Here the same work is done as plain calls, with aiortc's own objects
(``RtpPacket``, its header-extension map, its SRTP sessions, its RTP
router, aioice's nominated pair), its counters kept as aiortc keeps them
(RTCP sender reports, NACK history, transport statistics), so everything
that still runs in aiortc (RTCP, DTLS, STUN consent, ICE restart) sees what
it would have seen:

* ``receive_directly(pc)``: each ICE socket of ``pc`` hands SRTP (not SRTCP)
  datagrams straight to the receiver's ``ReceiverHook``; STUN, DTLS and RTCP
  take aiortc's usual path. A receiver without a hook gets the packet as
  aiortc would give it (a task).
* ``DirectSender``: a passthrough sender's frames are packetized, protected
  and sent the moment they are pushed (``PassthroughTrack.direct``), instead
  of by the sender's RTP task, which is replaced by one that only waits.

Private names relied on (aiortc 1.16.0, aioice 0.13.0; checked by
``tests/unit/webrtc/test_aiortc_internals.py``): ``RTCDtlsTransport``
``_rx_srtp``, ``_tx_srtp``, ``_state``, ``_rtp_router``,
``_rtp_header_extensions_map``, ``_RTCDtlsTransport__rx_bytes`` / ``__rx_packets``
/ ``__tx_bytes`` / ``__tx_packets``; ``RTCIceTransport._connection``;
aioice ``Connection._protocols`` / ``_nominated`` and ``StunProtocol.datagram_received``
/ ``transport``; ``RTCRtpSender`` ``_run_rtp(codec)``, ``_enabled``, ``_ssrc``,
``__mid``, ``__rtp_header_extensions_map``, ``__rtp_history``, ``__rtp_started``,
``__rtp_exited``, ``__ntp_timestamp``, ``__rtp_timestamp``, ``__octet_count``,
``__packet_count``.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpSender, clock
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, RtpPacket
from aiortc.utils import random32

from gateway import metrics
from gateway.webrtc.aiortc_internals import HOOK, spawn

#: Marks a protocol switched to the direct path (the value: its DTLS transport).
DIRECT = "_gatewayd_direct"

_SEQUENCE = struct.Struct("!H")
_TIMESTAMP = struct.Struct("!I")


# --- receiving ----------------------------------------------------------------------------
def receive_directly(pc: RTCPeerConnection) -> int:
    """Give SRTP packets arriving on ``pc``'s ICE sockets straight to the receivers.

    Call once ICE is connected (the sockets exist); again after an ICE
    restart built new ones. Returns how many sockets were switched.
    """
    switched = 0
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        connection = dtls.transport._connection
        for protocol in connection._protocols:
            if getattr(protocol, DIRECT, None) is dtls:
                continue
            original = type(protocol).datagram_received.__get__(protocol)
            setattr(protocol, "datagram_received", _receiver(dtls, original))  # noqa: B010
            setattr(protocol, DIRECT, dtls)
            switched += 1
    return switched


_HEADER = struct.Struct("!BBHII")
_NO_EXTENSIONS = HeaderExtensions()


def parse_rtp(data: bytes) -> RtpPacket:
    """``RtpPacket.parse`` for a forwarding gateway: the same checks of the header, but
    the header-extension block is skipped by its length, its elements unread (nothing on
    the direct path reads them: ``extensions`` is an empty, shared ``HeaderExtensions``,
    ``csrc`` empty). Raises ValueError like aiortc (tests/fuzz/test_rtp_parse_fuzz.py)."""
    if len(data) < 12:
        raise ValueError("RTP packet length is less than 12 bytes")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    start, end = 12 + 4 * (first & 0x0F), len(data)
    if first & 0x10:
        if end < start + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    if start > end:
        raise ValueError("RTP packet has truncated CSRC or extension value")
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if not padding or padding > end - start:
            raise ValueError("RTP packet padding length is invalid")
    packet: Any = object.__new__(RtpPacket)
    packet.version = 2
    packet.marker = second >> 7
    packet.payload_type = second & 0x7F
    packet.sequence_number = sequence
    packet.timestamp = timestamp
    packet.ssrc = ssrc
    packet.csrc = []
    packet.extensions = _NO_EXTENSIONS
    packet.padding_size = padding
    packet.payload = data[start : end - padding]
    result: RtpPacket = packet
    return result


def _receiver(dtls: Any, original: Any) -> Any:
    router = dtls._rtp_router
    connected = State.CONNECTED

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        srtp = dtls._rx_srtp
        if (
            srtp is None
            or len(data) < 12
            or not 127 < data[0] < 192
            or 192 <= data[1] <= 208  # RTCP: aiortc's path
            or dtls._state is not connected
        ):
            original(data, addr)
            return
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        try:
            packet = parse_rtp(srtp.unprotect(data))
        except (pylibsrtp.Error, ValueError):
            metrics.RTP_DROPPED.labels(reason="srtp").inc()
            return
        receiver = router.route_rtp(packet)
        if receiver is None:
            return
        hook = getattr(receiver, HOOK, None)
        if hook is not None:
            hook.handle(packet)
        else:
            spawn(receiver._handle_rtp_packet(packet, arrival_time_ms=clock.current_ms()))

    return datagram_received


# --- sending ------------------------------------------------------------------------------
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
_NTP_OFFSET = 2_208_988_800


def _ntp_now() -> int:
    """NTP time as aiortc's ``clock.current_ntp_time()`` gives it, without datetimes."""
    now = time.time() + _NTP_OFFSET
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * 4_294_967_296)


@dataclass(slots=True)
class Sent:
    """A sent packet as the sender's NACK history keeps it: what ``_retransmit`` (and
    ``wrap_rtx``) read of an ``RtpPacket``, the header and payload kept as sent."""

    data: bytes
    payload: bytes
    marker: int
    sequence_number: int
    timestamp: int
    extensions: Any
    csrc: tuple[int, ...] = ()

    def serialize(self, _extensions_map: Any = None) -> bytes:
        return self.data


class DirectSender:
    """Sends a passthrough sender's frames at once, as its RTP task would have.

    Numbering (random first sequence number and timestamp offset), header
    extensions (abs-send-time, mid), the marker on a frame's last packet, the
    NACK history and the sender-report counters are aiortc's. The header is
    aiortc's own serialization of a template packet, made once; per packet
    only the marker, numbers and abs-send-time are written into a copy.
    """

    def __init__(self, sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
        s: Any = sender
        self.sender = s
        self.dtls: Any = sender.transport
        self.connection: Any = self.dtls.transport._connection
        self.payload_type = codec.payloadType or 0
        # NACK history as aiortc keeps it, for video: aiortc negotiates no NACK for audio
        self.history: dict[int, Any] | None = (
            s._RTCRtpSender__rtp_history if sender.kind == "video" else None
        )
        self.sequence = random_sequence_number()  # lower half: no early SRTP rollover
        self.origin = random32()
        self.sent = 0
        self.dropped = 0
        template = RtpPacket(self.payload_type, 0, 0, 0, s._ssrc)
        template.extensions.mid = s._RTCRtpSender__mid
        extensions_map = s._RTCRtpSender__rtp_header_extensions_map
        template.extensions.abs_send_time = 0
        zero = template.serialize(extensions_map)
        template.extensions.abs_send_time = 0xFFFFFF
        ones = template.serialize(extensions_map)
        self.extensions = template.extensions
        self.header = bytearray(zero)
        changed = [i for i, (a, b) in enumerate(zip(zero, ones, strict=True)) if a != b]
        # no abs-send-time negotiated: nothing to write per packet
        self.abs_at = changed[0] if changed else -1

    def send(self, payloads: list[bytes], timestamp: int) -> None:
        """One frame's payloads, the last one marked."""
        s, dtls = self.sender, self.dtls
        srtp = dtls._tx_srtp
        pair = self.connection._nominated.get(1)
        if not s._enabled or srtp is None or pair is None or dtls._state is not State.CONNECTED:
            self.dropped += len(payloads)
            return
        transport, address = pair.protocol.transport, pair.remote_addr
        if transport is None:
            self.dropped += len(payloads)
            return
        timestamp = (self.origin + timestamp) & 0xFFFFFFFF
        ntp = _ntp_now()
        header, abs_at, history = self.header, self.abs_at, self.history
        extensions = self.extensions
        if abs_at >= 0:
            header[abs_at : abs_at + 3] = ((ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big")
        _TIMESTAMP.pack_into(header, 4, timestamp)
        last, sequence, octets, wire = len(payloads) - 1, self.sequence, 0, 0
        for i, payload in enumerate(payloads):
            marker = int(i == last)
            header[1] = (marker << 7) | self.payload_type
            _SEQUENCE.pack_into(header, 2, sequence)
            data = bytes(header) + payload
            if history is not None:
                history[sequence % RTP_HISTORY_SIZE] = Sent(
                    data, payload, marker, sequence, timestamp, extensions
                )
            protected = srtp.protect(data)
            transport.sendto(protected, address)
            sequence = (sequence + 1) & 0xFFFF
            octets += len(payload)
            wire += len(protected)
        self.sequence = sequence
        count = len(payloads)
        self.sent += count
        dtls._RTCDtlsTransport__tx_bytes += wire
        dtls._RTCDtlsTransport__tx_packets += count
        s._RTCRtpSender__ntp_timestamp = ntp
        s._RTCRtpSender__rtp_timestamp = timestamp
        s._RTCRtpSender__octet_count += octets
        s._RTCRtpSender__packet_count += count


def send_directly(sender: RTCRtpSender, attach: Any) -> None:
    """Replace ``sender``'s RTP task: once it starts, ``attach(DirectSender)`` is called (the
    track pushes frames to it) and the task only waits to be stopped; ``attach(None)`` at
    the end."""
    s: Any = sender

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        direct = DirectSender(sender, codec)
        attach(direct)
        s._RTCRtpSender__rtp_started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass
        finally:
            attach(None)
            s._RTCRtpSender__rtp_exited.set()

    setattr(sender, "_run_rtp", run_rtp)  # noqa: B010
