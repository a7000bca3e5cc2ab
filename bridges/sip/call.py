"""One SIP call leg as an explicit state machine.

``SipCall`` is what the rest of the gateway holds: answer, reject, hang up,
send INFO, and wait for the end. The endpoint (``endpoint.py``) drives it
from transaction events; the call itself never touches a socket.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bridges.sip.auth import DigestClient
from bridges.sip.dialog import Dialog
from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse
from bridges.sip.session_timer import SessionTimer
from bridges.sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from bridges.sip.endpoint import SipEndpoint


class CallState(enum.Enum):
    """Where a call leg is."""

    INCOMING = "incoming"  # INVITE received, not answered yet
    CALLING = "calling"  # INVITE sent, no answer yet
    EARLY = "early"  # INVITE sent, 1xx with a To tag received
    ESTABLISHED = "established"
    ENDING = "ending"  # BYE or CANCEL sent
    ENDED = "ended"


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.INCOMING: frozenset({CallState.ESTABLISHED, CallState.ENDED}),
    CallState.CALLING: frozenset(
        {CallState.EARLY, CallState.ESTABLISHED, CallState.ENDING, CallState.ENDED}
    ),
    CallState.EARLY: frozenset({CallState.ESTABLISHED, CallState.ENDING, CallState.ENDED}),
    CallState.ESTABLISHED: frozenset({CallState.ENDING, CallState.ENDED}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class CallStateError(Exception):
    """An operation that the call's state does not allow (e.g. answer twice)."""


#: Answers a re-INVITE/UPDATE offer (or produces an offer for a late-offer
#: re-INVITE when given None); returning None rejects it with 488.
OfferHandler = Callable[["SipCall", bytes | None], Awaitable[bytes | None]]


class SipCall:
    """One call leg, incoming or outgoing."""

    def __init__(self, endpoint: SipEndpoint, *, outgoing: bool, flow: Flow) -> None:
        self.endpoint = endpoint
        #: Opaque id for logs and the call registry (never the SIP Call-ID,
        #: which may carry a host name or address).
        self.call_id = "sip-" + secrets.token_hex(6)
        self.outgoing = outgoing
        self.flow = flow
        self.state = CallState.CALLING if outgoing else CallState.INCOMING
        self.dialog: Dialog | None = None
        self.invite: SipRequest | None = None
        self.invite_tx: ServerTransaction | ClientTransaction | None = None
        self.local_tag = endpoint.ids.tag()
        self.remote_sdp: bytes | None = None
        self.local_sdp: bytes | None = None
        self.final_status: int | None = None
        self.end_reason: str | None = None
        self.ack_bytes: bytes | None = None
        self.on_offer: OfferHandler | None = None
        #: An INFO in the dialog; returns the response status (None: 200).
        self.on_info: Callable[[SipCall, SipRequest], int | None] | None = None
        #: The peer's answer to our offer arrived (2xx to our INVITE, or the ACK
        #: after our offer in a 200 to a late-offer INVITE).
        self.on_answer: Callable[[SipCall, bytes], None] | None = None
        self.on_end: list[Callable[[SipCall], None]] = []
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.provisional: list[int] = []
        #: A provisional response (100-199) to our INVITE arrived (outgoing calls).
        self.on_provisional: Callable[[SipCall, int], None] | None = None
        #: Answers 401/407 challenges on this call's requests (outgoing calls).
        self.digest: DigestClient | None = None
        #: RFC 4028 agreement, and the timer handle the endpoint arms for it.
        self.session_timer: SessionTimer | None = None
        self.session_timer_handle: asyncio.TimerHandle | None = None
        #: Headers our 2xx must carry (Session-Expires, Require: timer).
        self.answer_headers: list[tuple[str, str]] = []
        #: Our own re-INVITE is in progress (a peer's one meanwhile gets 491).
        self.reinvite_pending = False
        #: Highest RSeq we PRACKed (RFC 3262).
        self.last_rseq = 0
        #: hangup() asked for a CANCEL before any provisional response came.
        self.cancel_wanted = False

    def __repr__(self) -> str:
        return f"<SipCall {self.call_id} {self.state.value}>"

    # --- state ----------------------------------------------------------------------------
    def _set_state(self, new: CallState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise CallStateError(f"{self.call_id}: {self.state.value} -> {new.value} not allowed")
        self.state = new
        if new is CallState.ESTABLISHED:
            self.answered.set()
        if new is CallState.ENDED:
            if self.session_timer_handle is not None:
                self.session_timer_handle.cancel()
                self.session_timer_handle = None
            self.answered.set()
            self.ended.set()
            for callback in self.on_end:
                callback(self)

    def finish(self, reason: str) -> None:
        """Mark the call ended (idempotent)."""
        if self.state is CallState.ENDED:
            return
        self.end_reason = reason
        self._set_state(CallState.ENDED)

    # --- the API the gateway uses -------------------------------------------------------------
    async def answer(
        self, sdp: bytes, *, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Answer an incoming call with 200 OK carrying ``sdp``."""
        if self.state is not CallState.INCOMING:
            raise CallStateError(f"cannot answer a call that is {self.state.value}")
        self.local_sdp = sdp
        self.endpoint.answer_call(self, sdp, extra_headers or [])
        self._set_state(CallState.ESTABLISHED)

    async def ring(self) -> None:
        """Send 180 Ringing for an incoming call."""
        if self.state is CallState.INCOMING:
            self.endpoint.provisional(self, 180)

    async def reject(
        self, status: int = 486, *, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Refuse an incoming call with a final error status."""
        if self.state is not CallState.INCOMING:
            raise CallStateError(f"cannot reject a call that is {self.state.value}")
        self.endpoint.reject_call(self, status, headers or [])
        self.final_status = status
        self.finish(f"rejected {status}")

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call whatever its state: BYE, CANCEL, or a 480 to an unanswered INVITE."""
        if self.state is CallState.ENDED:
            return
        if self.state is CallState.INCOMING:
            await self.reject(480)
            return
        if self.state in (CallState.CALLING, CallState.EARLY):
            self.end_reason = reason
            self.endpoint.cancel_call(self)
            self._set_state(CallState.ENDING)
            return
        if self.state is CallState.ESTABLISHED:
            self.end_reason = reason
            self._set_state(CallState.ENDING)
            await self.endpoint.send_bye(self)
            self.finish(reason)

    async def info(self, body: bytes, content_type: str) -> SipResponse | None:
        """Send INFO in the dialog (e.g. application/dtmf-relay); returns the final answer."""
        if self.state is not CallState.ESTABLISHED:
            raise CallStateError("INFO needs an established call")
        return await self.endpoint.send_in_dialog(
            self, "INFO", body=body, content_type=content_type
        )

    async def reinvite(self, sdp: bytes) -> SipResponse | None:
        """Send a re-INVITE with a new offer (hold, resume, media change)."""
        if self.state is not CallState.ESTABLISHED:
            raise CallStateError("re-INVITE needs an established call")
        response = await self.endpoint.send_in_dialog(
            self, "INVITE", body=sdp, content_type="application/sdp"
        )
        if response is not None and 200 <= response.status < 300:
            self.local_sdp = sdp
            self.remote_sdp = response.sdp() or self.remote_sdp
        return response

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """Wait for the final answer of an outgoing call; True if established."""
        await asyncio.wait_for(self.answered.wait(), timeout)
        return self.state is CallState.ESTABLISHED
