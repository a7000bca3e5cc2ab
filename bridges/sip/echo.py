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
from typing import Any

from bridges.sip.call import SipCall
from bridges.sip.media import SipMedia, StreamCounters, default_allocator
from gateway.log import get_logger
from gateway.media.stream import MediaStream

log = get_logger(__name__)

__all__ = ["EchoMedia", "EchoService", "StreamCounters", "default_allocator"]


def _reflect(stream: MediaStream, data: bytes, _arrival: float) -> None:
    stream.send_rtp(data)


class EchoMedia(SipMedia):
    """The media of one echo call: what arrives on a stream goes back on it."""

    async def open(self) -> EchoMedia:
        """Bind the streams and let each reflect what it receives."""
        await super().open()
        for stream in self.streams:
            stream.on_rtp = _reflect
        return self


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
