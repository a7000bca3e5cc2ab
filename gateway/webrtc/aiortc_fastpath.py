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
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpSender, clock
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import random32

from gateway import metrics
from gateway.log import get_logger
from gateway.webrtc.aiortc_internals import HOOK

log = get_logger(__name__)

#: Marks a protocol switched to the direct path (the value: its DTLS transport).
DIRECT = "_gatewayd_direct"

_spawned: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> None:
    task = asyncio.ensure_future(coroutine)
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)


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


def _receiver(dtls: Any, original: Any) -> Any:
    router = dtls._rtp_router
    extensions = dtls._rtp_header_extensions_map
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
            packet = RtpPacket.parse(srtp.unprotect(data), extensions)
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
            _spawn(receiver._handle_rtp_packet(packet, arrival_time_ms=clock.current_ms()))

    return datagram_received


# --- sending ------------------------------------------------------------------------------
class DirectSender:
    """Sends a passthrough sender's frames at once, as its RTP task would have.

    Numbering (random first sequence number and timestamp offset), header
    extensions (abs-send-time, mid), the marker on a frame's last packet, the
    NACK history and the sender-report counters are aiortc's.
    """

    def __init__(self, sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
        s: Any = sender
        self.sender = s
        self.dtls: Any = sender.transport
        self.connection: Any = self.dtls.transport._connection
        self.payload_type = codec.payloadType or 0
        self.mid = s._RTCRtpSender__mid
        self.extensions = s._RTCRtpSender__rtp_header_extensions_map
        self.history: dict[int, RtpPacket] = s._RTCRtpSender__rtp_history
        self.sequence = random_sequence_number()  # lower half: no early SRTP rollover
        self.origin = random32()
        self.sent = 0
        self.dropped = 0

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
        ntp = clock.current_ntp_time()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        ssrc, last, sequence, octets, wire = s._ssrc, len(payloads) - 1, self.sequence, 0, 0
        for i, payload in enumerate(payloads):
            packet = RtpPacket(self.payload_type, int(i == last), sequence, timestamp, ssrc)
            packet.payload = payload
            packet.extensions.abs_send_time = abs_send_time
            packet.extensions.mid = self.mid
            self.history[sequence % RTP_HISTORY_SIZE] = packet
            data = srtp.protect(packet.serialize(self.extensions))
            transport.sendto(data, address)
            sequence = (sequence + 1) & 0xFFFF
            octets += len(payload)
            wire += len(data)
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
