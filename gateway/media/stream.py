"""One negotiated RTP stream of a SIP leg: sockets, SRTP and the RTP session.

``MediaStream`` glues the parts the media plane is built from: an
``RtpEndpoint`` (socket pair, symmetric RTP latching, SRTP protect and
unprotect), the sans-IO ``RtpSession`` (sequence validation, loss and jitter
statistics, SSRC/sequence/timestamp rewriting, RTCP) and one asyncio timer
for RTCP and the inactivity timeout. What arrives is handed to ``on_rtp``
(valid packets only); what is sent goes through the session's rewrite so the
peer sees one continuous stream whoever feeds it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.log import get_logger
from gateway.media.capabilities import SrtpPolicy
from gateway.media.dtmf import DtmfDigit, DtmfError, DtmfReceiver
from gateway.media.negotiation import NegotiatedStream
from gateway.media.rtp import header_sizes
from gateway.media.rtp_session import (
    KeyframeRequested,
    RtpSession,
    RtpSessionConfig,
    RtpTimeout,
)
from gateway.media.rtp_transport import (
    ReceivedPacket,
    RtpEndpoint,
    RtpEndpointOptions,
    RtpPeer,
    RtpPortAllocator,
)
from gateway.media.srtp import srtp_context_for

log = get_logger(__name__)

OnRtp = Callable[["MediaStream", bytes, float], None]


class MediaStream:
    """An RTP stream from open (port known, for the SDP) to close."""

    def __init__(self, endpoint: RtpEndpoint, kind: str, clock: Clock) -> None:
        self.endpoint = endpoint
        self.kind = kind
        self.clock = clock
        self.session: RtpSession | None = None
        self.negotiated: NegotiatedStream | None = None
        #: Valid RTP from the peer (after SRTP and sequence checks).
        self.on_rtp: OnRtp | None = None
        #: The peer stopped sending (RTP inactivity timeout).
        self.on_timeout: Callable[[MediaStream], None] | None = None
        #: The peer asked for a keyframe (PLI/FIR) — for video routers.
        self.on_keyframe_request: Callable[[MediaStream], None] | None = None
        #: A key press the peer sent as RFC 4733 telephone-events.
        self.on_dtmf: Callable[[MediaStream, DtmfDigit], None] | None = None
        self._dtmf: DtmfReceiver | None = None
        self._dtmf_payload_type = -1
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        allocator: RtpPortAllocator,
        host: str,
        kind: str,
        *,
        options: RtpEndpointOptions | None = None,
        clock: Clock | None = None,
    ) -> MediaStream:
        """Bind the port pair; ``port`` can go into our SDP from now on."""
        clock = clock or SystemClock()
        holder: list[MediaStream] = []

        def deliver(packet: ReceivedPacket) -> None:
            if holder:
                holder[0]._received(packet)

        endpoint = await RtpEndpoint.open(
            allocator, host, options=options, on_packet=deliver, clock=clock
        )
        stream = cls(endpoint, kind, clock)
        holder.append(stream)
        return stream

    @property
    def port(self) -> int:
        """Our RTP port."""
        return self.endpoint.port

    def start(
        self,
        negotiated: NegotiatedStream,
        policy: SrtpPolicy,
        *,
        rtp_timeout: float | None = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """Apply what offer/answer agreed (again after every re-INVITE).

        Raises ``NotAcceptable`` (488) when the SRTP policy forbids what was
        agreed, so the caller can refuse the offer."""
        srtp = srtp_context_for(policy, negotiated)
        self.endpoint.connect(RtpPeer.from_stream(negotiated), srtp)
        self.negotiated = negotiated
        if self.session is None:
            first = negotiated.codecs[0] if negotiated.codecs else None
            config = RtpSessionConfig(
                clock_rate=first.clock_rate if first is not None else 8000,
                cname=f"gatewayd-{secrets.token_hex(4)}",
                kind="video" if self.kind == "video" else "audio",
                inactivity_timeout=rtp_timeout or None,
            )
            self.session = RtpSession(config, clock=self.clock, rng=rng or random.SystemRandom())
        event = negotiated.telephone_event
        if event is None:
            self._dtmf, self._dtmf_payload_type = None, -1
        elif self._dtmf is None or self._dtmf.clock_rate != event.clock_rate:
            self._dtmf = DtmfReceiver(event.clock_rate)
        if event is not None:
            self._dtmf_payload_type = event.payload_type
        receiving = negotiated.direction.receives if negotiated.accepted else False
        self.session.set_receiving(receiving, self.clock.monotonic())
        self._arm()

    # --- packets ------------------------------------------------------------------------
    def _received(self, packet: ReceivedPacket) -> None:
        session = self.session
        if session is None or self._closed:
            return
        if packet.rtcp:
            session.handle_rtcp(packet.data, packet.arrival)
            self._drain_events()
            return
        if not session.receive_rtp(packet.data, packet.arrival):
            return
        if packet.data[1] & 0x7F == self._dtmf_payload_type:
            self._telephone_event(packet)
        if self.on_rtp is not None:
            self.on_rtp(self, packet.data, packet.arrival)

    def _telephone_event(self, packet: ReceivedPacket) -> None:
        assert self._dtmf is not None
        data = packet.data
        header, size = header_sizes(data)
        try:
            digits = self._dtmf.receive(
                int.from_bytes(data[4:8], "big"),
                (data[2] << 8) | data[3],
                bool(data[1] & 0x80),
                bytes(data[header : header + size]),
                packet.arrival,
            )
        except DtmfError:
            metrics.RTP_DROPPED.labels(reason="dtmf").inc()
            return
        self._emit_digits(digits)
        self._arm()

    def _emit_digits(self, digits: list[DtmfDigit]) -> None:
        for digit in digits:
            if self.on_dtmf is not None:
                self.on_dtmf(self, digit)

    def send_rtp(self, data: bytes | bytearray) -> bool:
        """Send a packet from the router: SSRC, sequence and timestamp rewritten."""
        if self.session is None or self._closed:
            return False
        rewritten = self.session.send_rtp(data, self.clock.monotonic())
        if rewritten is None:
            metrics.RTP_DROPPED.labels(reason="payload_type").inc()
            return False
        return self.endpoint.send_rtp(rewritten)

    def switch_source(self) -> None:
        """The packets we send will come from another source from now on."""
        if self.session is not None:
            self.session.switch_source()

    def request_keyframe(self) -> None:
        """Ask the peer for a keyframe (PLI)."""
        if self.session is not None:
            self.session.request_keyframe(self.clock.monotonic())
            self._flush_rtcp()

    # --- timers and events --------------------------------------------------------------------
    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.session is None or self._closed:
            return
        deadline = self.session.next_deadline()
        dtmf = self._dtmf.next_deadline() if self._dtmf is not None else None
        if dtmf is not None:
            deadline = dtmf if deadline is None else min(deadline, dtmf)
        if deadline is None:
            return
        delay = max(0.0, deadline - self.clock.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.session is None or self._closed:
            return
        now = self.clock.monotonic()
        self.session.handle_timer(now)
        if self._dtmf is not None:
            self._emit_digits(self._dtmf.handle_timer(now))
        self._flush_rtcp()
        self._drain_events()
        self._arm()

    def _flush_rtcp(self) -> None:
        if self.session is None:
            return
        for packet in self.session.rtcp_to_send():
            self.endpoint.send_rtcp(packet)

    def _drain_events(self) -> None:
        if self.session is None:
            return
        while (event := self.session.next_event()) is not None:
            if isinstance(event, RtpTimeout) and self.on_timeout is not None:
                self.on_timeout(self)
            elif isinstance(event, KeyframeRequested) and self.on_keyframe_request is not None:
                self.on_keyframe_request(self)

    def close(self) -> None:
        """Send RTCP BYE and release the ports (idempotent)."""
        if self._closed:
            return
        if self.session is not None:
            self.session.close(self.clock.monotonic())
            self._flush_rtcp()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.endpoint.close()
