"""A back-to-back call: answer an incoming SIP call by placing one to a
target and routing the media between the two through the media router.

Each side negotiates on its own: the caller gets an answer from our full
codec list restricted to what it offered, the callee gets our offer and
picks. Where the two ended on the same codec the router forwards packets
untouched; where they did not, it transcodes (Opus <-> G.711, VP8 <-> H.264).
This is the kernel of the SIP bridge of a room; on its own it serves as a
relay to a fixed target (tests, benchmarks, an operator's loop test).

Either side's end (BYE, CANCEL, RTP timeout) ends the other; a callee that
does not answer gets the caller a 480, one that refuses passes its status on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from bridges.sip.call import CallState, SipCall
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.media import SipMedia
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.router import Route, Router

log = get_logger(__name__)


@dataclass
class RelayTarget:
    """Where relayed calls go."""

    uri: str
    remote: tuple[str, int]
    transport: str = "udp"
    answer_timeout: float = 30.0


@dataclass
class RelayedCall:
    """Both halves of one relayed call and the routes between their streams."""

    inbound: SipCall
    outbound: SipCall | None
    inbound_media: SipMedia
    outbound_media: SipMedia
    routes: list[Route]


class RelayService:
    """Answers each call by calling ``target`` and relaying the media."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        target: RelayTarget,
        router: Router,
        new_media: Callable[[], SipMedia],
    ) -> None:
        self.endpoint = endpoint
        self.target = target
        self.router = router
        self._new_media = new_media
        #: Calls in progress, by the incoming call's id.
        self.calls: dict[str, RelayedCall] = {}

    async def handle(self, call: SipCall) -> None:
        """The incoming-call handler."""
        inbound = await self._new_media().open()
        outbound = await self._new_media().open()
        inbound.bind(call)
        relayed = RelayedCall(call, None, inbound, outbound, [])
        self.calls[call.call_id] = relayed
        call.on_end.append(lambda _c: self._end(relayed, "caller hung up"))
        try:
            # The caller's offer must be answerable before anyone rings.
            if call.remote_sdp is not None:
                inbound.check_offer(call.remote_sdp)
            other = await self.endpoint.invite(
                self.target.uri,
                outbound.offer(),
                remote=self.target.remote,
                transport=self.target.transport,
            )
        except GatewayError as exc:
            log.info("relay: cannot place the call", reason=exc.message)
            outbound.close()
            await self._reject(call, exc.sip_status)
            return
        relayed.outbound = other
        outbound.bind(other)
        await call.ring()
        other.on_end.append(lambda _c: self._end(relayed, "callee hung up"))
        with contextlib.suppress(TimeoutError):
            await other.wait_answered(self.target.answer_timeout)
        if other.state is not CallState.ESTABLISHED:
            status = other.final_status if 400 <= (other.final_status or 0) < 700 else 480
            await other.hangup("no answer")
            await self._reject(call, status or 480)
            return
        if call.state is not CallState.INCOMING:
            await other.hangup("caller gave up")
            return
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        if body is None:
            await other.hangup("no common media")
            await self._reject(call, 488)
            return
        await call.answer(body)
        for kind in ("audio", "video"):
            a, b = inbound.negotiated(kind), outbound.negotiated(kind)
            if a is not None and b is not None:
                relayed.routes += self.router.connect(a, b)
        log.info("relay: call connected", call_id=call.call_id)

    @staticmethod
    async def _reject(call: SipCall, status: int) -> None:
        if call.state is CallState.INCOMING:
            await call.reject(status)

    def _end(self, relayed: RelayedCall, why: str) -> None:
        if self.calls.pop(relayed.inbound.call_id, None) is None:
            return
        for media in (relayed.inbound_media, relayed.outbound_media):
            for stream in media.streams:
                self.router.remove(stream)
            media.close()
        for call in (relayed.inbound, relayed.outbound):
            if call is not None and call.state is not CallState.ENDED:
                self.endpoint.hangup_soon(call, why)
