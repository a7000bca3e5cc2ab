"""The built-in echo service: ``sip:echo@<gateway>`` answers and sends the
caller's media back, so an operator or a peer agency can test its path.

Each accepted stream is a ``gateway.media.stream.MediaStream`` (RTP port from
the configured range, symmetric RTP with latching, SDES-SRTP per the media
policy, RTCP); what arrives is sent back through the same stream's RTP
session, so the caller sees our SSRC with continuous sequence numbers, not
its own packets. Offer/answer goes through ``gateway.media.offer_answer``
like every other leg.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Any

from bridges.sip.call import SipCall
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.capabilities import LocalCapabilities, SrtpPolicy
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


def _reflect(stream: MediaStream, data: bytes, _arrival: float) -> None:
    stream.send_rtp(data)


class EchoMedia:
    """The media of one echo call: an audio and a video stream reflecting back."""

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

    async def open(self) -> EchoMedia:
        """Bind one port pair for audio and one for video."""
        # With an IPv6 address too, bind dual-stack so either family's peer is served.
        bind = "::" if self.media_host6 else self.media_host
        for kind in ("audio", "video"):
            stream = await MediaStream.open(self.allocator, bind, kind)
            stream.on_rtp = _reflect
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

    def apply_answer(self, remote: bytes) -> None:
        """The peer answered our offer: start the streams."""
        if self._pending_offer is None:
            return
        offer, self._pending_offer = self._pending_offer, None
        try:
            self._start(process_answer(offer, SessionDescription.parse(remote)))
        except GatewayError as exc:
            # The call stands at the SIP level; without a usable answer there is no media.
            log.warning("echo: the peer's answer is not usable", reason=exc.message)

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
                log.info("echo: offer refused", call_id=call.call_id, reason=exc.message)
                return None

        call.on_offer = on_offer
        call.on_answer = lambda _call, sdp: self.apply_answer(sdp)
        call.on_end.append(lambda _call: self.close())

    @property
    def stats(self) -> list[StreamCounters]:
        """Packets per stream (audio, video)."""
        return [StreamCounters(s.endpoint.stats.rtp_in, s.endpoint.stats.rtp_out)
                for s in self.streams]  # fmt: skip

    def close(self) -> None:
        """Release the ports (idempotent)."""
        for stream in self.streams:
            stream.close()


class EchoService:
    """Answers calls and sends their media back; the arguments are ``EchoMedia``'s."""

    def __init__(self, media_host: str, **media_options: Any) -> None:
        self._new_media = functools.partial(EchoMedia, media_host, **media_options)
        #: Media of calls in progress, by call id (tests read the counters).
        self.calls: dict[str, EchoMedia] = {}

    async def handle(self, call: SipCall) -> None:
        """The incoming-call handler for ``sip:echo@...``."""
        media = await self._new_media().open()
        self.calls[call.call_id] = media
        media.bind(call)

        def forget(_call: SipCall) -> None:
            self.calls.pop(call.call_id, None)

        call.on_end.append(forget)
        for stream in media.streams:
            stream.on_timeout = lambda _s: self._timed_out(call)
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        if body is None:
            await call.reject(488, headers=[("Warning", '399 gatewayd "no common media"')])
            return
        await call.answer(body)
        log.info("echo call answered", call_id=call.call_id)

    @staticmethod
    def _timed_out(call: SipCall) -> None:
        log.info("echo: no RTP from the caller, hanging up", call_id=call.call_id)
        call.endpoint.hangup_soon(call, "rtp timeout")
