"""The media of one SIP call: its RTP streams and their offer/answer.

``SipMedia`` opens one ``MediaStream`` per kind (audio, video) on ports from
the configured range, writes our offers and answers through
``gateway.media.offer_answer``, starts the streams with what was agreed and
follows the call's re-INVITEs (hold, codec changes) and its end. What flows
through the streams is somebody else's business: the echo reflects it, the
router sends it to another leg.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from bridges.sip.call import SipCall
from bridges.sip.message import SipRequest
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.capabilities import LocalCapabilities, SrtpPolicy
from gateway.media.dtmf import DtmfDigit, DtmfError, parse_info_body
from gateway.media.negotiation import NegotiatedStream, answer_result, process_answer
from gateway.media.offer_answer import answer, create_offer
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.media.sdp import SessionDescription
from gateway.media.stream import MediaStream

log = get_logger(__name__)

_default_allocator: RtpPortAllocator | None = None


def default_allocator() -> RtpPortAllocator:
    """A process-wide allocator for callers that bring none (tests, tools)."""
    global _default_allocator  # noqa: PLW0603 - one allocator per process by design
    if _default_allocator is None:
        _default_allocator = RtpPortAllocator(30000, 39999)
    return _default_allocator


@dataclass
class StreamCounters:
    """RTP packets of one echo stream."""

    received: int
    sent: int


class SipMedia:
    """The media of one call: an audio and a video stream."""

    def __init__(
        self,
        media_host: str,
        *,
        media_host6: str | None = None,
        allocator: RtpPortAllocator | None = None,
        srtp: SrtpPolicy = SrtpPolicy.OFFER,
        rtp_timeout: float | None = 30.0,
    ) -> None:
        self.media_host = media_host
        self.media_host6 = media_host6
        self.allocator = allocator or default_allocator()
        self.srtp = srtp
        self.rtp_timeout = rtp_timeout
        self.streams: list[MediaStream] = []
        self.last: SessionDescription | None = None
        self.local: LocalCapabilities | None = None
        self._pending_offer: SessionDescription | None = None
        #: Key presses of the peer (RFC 4733 or SIP INFO), in order.
        self.on_dtmf: Callable[[DtmfDigit], None] | None = None
        self.digits: list[str] = []

    async def open(self) -> SipMedia:
        """Bind one port pair for audio and one for video."""
        # With an IPv6 address too, bind dual-stack so either family's peer is served.
        bind = "::" if self.media_host6 else self.media_host
        for kind in ("audio", "video"):
            stream = await MediaStream.open(self.allocator, bind, kind)
            self.streams.append(stream)
        self.local = LocalCapabilities(
            address=self.media_host,
            address6=self.media_host6,
            random_bytes=secrets.token_bytes,
            audio_port=self.streams[0].port,
            video_port=self.streams[1].port,
            srtp=self.srtp,
            username="gatewayd",
        )
        return self

    def offer(self) -> bytes:
        """Our offer (outgoing call, or a late-offer INVITE); ``apply_answer`` follows."""
        assert self.local is not None
        self.last = create_offer(self.local, self.last)
        self._pending_offer = self.last
        return bytes(self.last)

    def answer(self, offer: bytes) -> bytes:
        """Answer the peer's offer and start the streams; GatewayError (488) when nothing fits."""
        assert self.local is not None
        parsed = SessionDescription.parse(offer)
        ours = answer(parsed, self.local, self.last)
        self._start(answer_result(parsed, ours))
        self.last = ours
        return bytes(ours)

    def check_offer(self, offer: bytes) -> None:
        """Raise GatewayError (488) if we could not answer ``offer``; starts nothing."""
        assert self.local is not None
        answer(SessionDescription.parse(offer), self.local, self.last)

    def apply_answer(self, remote: bytes) -> None:
        """The peer answered our offer: start the streams."""
        if self._pending_offer is None:
            return
        offer, self._pending_offer = self._pending_offer, None
        try:
            self._start(process_answer(offer, SessionDescription.parse(remote)))
        except GatewayError as exc:
            # The call stands at the SIP level; without a usable answer there is no media.
            log.warning("media: the peer's answer is not usable", reason=exc.message)

    def negotiated(self, kind: str) -> MediaStream | None:
        """The ``kind`` stream once offer/answer agreed on it, else None."""
        return next((s for s in self.streams if s.kind == kind and s.negotiated is not None), None)

    def _start(self, negotiated: tuple[NegotiatedStream, ...]) -> None:
        for result in negotiated:
            if not result.accepted:
                continue
            stream = next((s for s in self.streams if s.kind == result.kind), None)
            if stream is not None:
                stream.start(result, self.srtp, rtp_timeout=self.rtp_timeout)

    def bind(self, call: SipCall) -> None:
        """Follow the call: answer its re-offers, apply answers to our offers, close at the end."""

        async def on_offer(_call: SipCall, offer: bytes | None) -> bytes | None:
            try:
                return self.offer() if offer is None else self.answer(offer)
            except GatewayError as exc:
                log.info("media: offer refused", call_id=call.call_id, reason=exc.message)
                return None

        def on_info(_call: SipCall, request: SipRequest) -> int | None:
            content_type = request.headers.get("Content-Type") or ""
            if not content_type.lower().startswith(("application/dtmf", "application/dtmf-relay")):
                return None
            try:
                digit = parse_info_body(content_type, request.body)
            except DtmfError as exc:
                return int(exc.sip_status)
            self._dtmf(digit)
            return None

        call.on_offer = on_offer
        call.on_answer = lambda _call, sdp: self.apply_answer(sdp)
        call.on_info = on_info
        call.on_end.append(lambda _call: self.close())
        for stream in self.streams:
            stream.on_dtmf = lambda _stream, digit: self._dtmf(digit)

    def _dtmf(self, digit: DtmfDigit) -> None:
        self.digits.append(digit.digit)
        if self.on_dtmf is not None:
            self.on_dtmf(digit)

    @property
    def stats(self) -> list[StreamCounters]:
        """Packets per stream (audio, video)."""
        return [StreamCounters(s.endpoint.stats.rtp_in, s.endpoint.stats.rtp_out)
                for s in self.streams]  # fmt: skip

    def close(self) -> None:
        """Release the ports (idempotent)."""
        for stream in self.streams:
            stream.close()
