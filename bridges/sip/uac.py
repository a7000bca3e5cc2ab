"""The client half of the SIP user agent: outgoing calls and requests.

``UacRole`` is mixed into ``SipEndpoint`` (which supplies the transaction
layer, the transports and the pump); it keeps ``endpoint.py`` to the server
half and under the size the style asks for.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from bridges.sip import session_timer
from bridges.sip.auth import AUTH_HEADERS, DigestClient
from bridges.sip.call import CallState, SipCall
from bridges.sip.dialog import Dialog, DialogId, dialog_id_of_response
from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse
from bridges.sip.outgoing import (
    IdSource,
    authorized_retry,
    build_cancel,
    build_request,
    retry_of,
    via_value,
)
from bridges.sip.tls import client_context
from bridges.sip.transaction import ClientTransaction, TransactionLayer
from bridges.sip.transport import SipTransportLayer
from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import Clock
from gateway.log import get_logger
from gateway.settings import Settings

if TYPE_CHECKING:
    from bridges.sip.endpoint import SipEndpoint

log = get_logger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
SUPPORTED: tuple[str, ...] = ("replaces", "timer", "100rel")


class UacRole:
    """Outgoing calls, CANCEL, in-dialog and out-of-dialog requests."""

    # Supplied by SipEndpoint.
    calls: CallRegistry
    clock: Clock
    ids: IdSource
    layer: TransactionLayer
    transport: SipTransportLayer | None
    settings: Settings | None
    _dialogs: dict[DialogId, SipCall]
    _pending: dict[ClientTransaction, asyncio.Future[SipResponse | None]]

    def _pump(self) -> None:
        raise NotImplementedError

    def _local(self, transport: str) -> tuple[str, int]:
        raise NotImplementedError

    def contact_for(self, transport: str, user: str = "gatewayd") -> str:
        raise NotImplementedError

    def _spawn(self, coro: Awaitable[None]) -> None:
        raise NotImplementedError

    def arm_session_timer(self, call: SipCall) -> None:
        raise NotImplementedError

    async def invite(
        self,
        uri: str,
        sdp: bytes,
        *,
        remote: tuple[str, int],
        transport: str = "udp",
        from_user: str = "gatewayd",
        headers: list[tuple[str, str]] | None = None,
        credentials: tuple[str, str] | None = None,
        routes: list[str] | None = None,
        from_uri: str | None = None,
    ) -> SipCall:
        """Place a call; returns at once, ``call.wait_answered()`` waits for the answer.

        ``credentials`` (user, password) answer 401/407 challenges (digest);
        ``routes`` is a preloaded route set (an outbound proxy, ``<sip:p;lr>``);
        ``from_uri`` our address of record at a trunk (default ``sip:from_user@us``).
        """
        assert self.transport is not None and self.settings is not None
        self.calls.admit()
        flow = await self.transport.connect(transport, remote)
        host, port = self._local(transport)
        call = SipCall(cast("SipEndpoint", self), outgoing=True, flow=flow)
        request = build_request(
            "INVITE",
            uri,
            via=via_value(transport, host, port, self.ids.branch()),
            from_value=f"<{from_uri or f'sip:{from_user}@{host}'}>;tag={call.local_tag}",
            to_value=f"<{uri}>",
            call_id=self.ids.call_id(host),
            cseq=1,
            contact=self.contact_for(transport, from_user),
            routes=routes or (),
            headers=[
                ("Allow", ALLOW),
                ("Supported", ", ".join(SUPPORTED)),
                *session_timer.request_headers(),
                ("User-Agent", self.settings.sip.user_agent),
                *(headers or []),
            ],
            body=sdp,
        )
        call.invite = request
        call.local_sdp = sdp
        if credentials is not None:
            call.digest = DigestClient(credentials[0], credentials[1], rng=secrets.token_bytes)
        call.invite_tx = self.layer.send_request(request, flow, self.clock.monotonic(), owner=call)
        self.calls.add(call)
        call.on_end.append(lambda c: self.calls.remove(c.call_id))
        self._pump()
        return call

    def _on_response(self, response: SipResponse, tx: ClientTransaction | None) -> None:
        if tx is None:
            # 2xx retransmission after the INVITE transaction ended: ACK again.
            call = self._dialogs.get(dialog_id_of_response(response))
            if call is not None and call.ack_bytes is not None:
                self.layer.send_stateless(call.ack_bytes, call.flow)
            return
        owner = tx.owner
        if (
            isinstance(owner, SipCall)
            and tx.request.method == "INVITE"
            and owner.invite is tx.request
        ):
            self._on_invite_response(owner, response)
        elif isinstance(owner, SipCall) and tx.request.method == "INVITE":
            self._ack_2xx(owner, response)  # our re-INVITE was answered
        if response.status >= 200:
            future = self._pending.pop(tx, None)
            if future is not None and not future.done():
                future.set_result(response)

    def _on_invite_response(self, call: SipCall, response: SipResponse) -> None:
        status = response.status
        assert call.invite is not None
        if status < 200:
            call.provisional.append(status)
            if call.on_provisional is not None:
                call.on_provisional(call, status)
            if response.to_tag and call.state is CallState.CALLING:
                call.dialog = Dialog.as_uac(call.invite, response)
                call._set_state(CallState.EARLY)
            if status > 100 and "100rel" in [t.lower() for t in response.require]:
                self._prack(call, response)  # in the early dialog made just above
            if call.cancel_wanted:
                self.cancel_call(call)
            return
        if status < 300:
            if call.dialog is None or call.dialog.remote_tag != response.to_tag:
                call.dialog = Dialog.as_uac(call.invite, response)
            else:
                call.dialog.confirm(response)
            self._dialogs[call.dialog.id] = call
            call.on_end.append(self._forget_dialog)
            call.remote_sdp = response.sdp()
            if call.remote_sdp is not None and call.invite.body and call.on_answer is not None:
                try:
                    call.on_answer(call, call.remote_sdp)
                except Exception:  # the media side must not stop the SIP state machine
                    metrics.ERRORS.labels(component="sip").inc()
                    log.exception("applying the answer failed", call_id=call.call_id)
            call.final_status = status
            call.session_timer = session_timer.negotiate_as_uac(response)
            self._ack_2xx(call, response)
            if call.state is CallState.ENDING:
                # We cancelled but the 200 won the race: end it with BYE.
                call.state = CallState.ESTABLISHED
                self._spawn(call.hangup(call.end_reason or "cancelled"))
            elif call.state in (CallState.CALLING, CallState.EARLY):
                call._set_state(CallState.ESTABLISHED)
                self.arm_session_timer(call)
            return
        if status == 422 and call.state is CallState.CALLING:
            retry = self._retry_after_422(call.invite, response)
            if retry is not None:
                call.invite = retry
                call.invite_tx = self.layer.send_request(
                    retry, call.flow, self.clock.monotonic(), owner=call
                )
                return
        if status in AUTH_HEADERS and call.digest is not None and call.state is CallState.CALLING:
            retry = authorized_retry(call.invite, response, call.digest, self.ids.branch())
            if retry is not None:
                call.invite = retry
                call.invite_tx = self.layer.send_request(
                    retry, call.flow, self.clock.monotonic(), owner=call
                )
                return
        call.final_status = status
        call.finish(f"rejected {status}")

    def _forget_dialog(self, call: SipCall) -> None:
        if call.dialog is not None:
            self._dialogs.pop(call.dialog.id, None)

    def _in_dialog(self, call: SipCall, method: str, **kwargs: Any) -> SipRequest:
        """A request in the call's dialog, from our address on the call's transport."""
        assert call.dialog is not None
        transport = call.flow.transport
        host, port = self._local(transport)
        return call.dialog.create_request(
            method, self.ids, transport=transport, host=host, port=port, **kwargs
        )

    def _ack_2xx(self, call: SipCall, response: SipResponse) -> None:
        invite = call.invite
        late_offer = (
            invite is not None
            and not invite.body
            and response.cseq_number == invite.cseq_number
            and response.sdp() is not None
        )
        if late_offer and call.ack_bytes is None:
            # We sent no offer: the 2xx carries it and our ACK must carry the answer.
            self._spawn(self._ack_with_answer(call, response))
            return
        call.ack_bytes = bytes(self._in_dialog(call, "ACK", cseq=response.cseq_number))
        self.layer.send_stateless(call.ack_bytes, call.flow)

    async def _ack_with_answer(self, call: SipCall, response: SipResponse) -> None:
        offer = response.sdp()
        answer = await call.on_offer(call, offer) if call.on_offer is not None else None
        call.local_sdp = answer
        ack = self._in_dialog(
            call, "ACK", cseq=response.cseq_number, body=answer or b"",
            content_type="application/sdp" if answer else None,
        )  # fmt: skip
        call.ack_bytes = bytes(ack)
        self.layer.send_stateless(call.ack_bytes, call.flow)
        self._pump()
        if answer is None:
            await call.hangup("late offer not acceptable")

    def cancel_call(self, call: SipCall) -> None:
        """CANCEL a pending outgoing INVITE (§9.1); before any provisional
        response it waits for one (a CANCEL must not overtake the INVITE)."""
        assert call.invite is not None
        if not call.provisional:
            call.cancel_wanted = True
            return
        call.cancel_wanted = False
        cancel = build_cancel(call.invite)
        self.layer.send_request(cancel, call.flow, self.clock.monotonic())
        self._pump()

    async def send_bye(self, call: SipCall) -> None:
        """BYE in the call's dialog; waits for the answer (or the timeout)."""
        await self.send_in_dialog(call, "BYE")

    async def send_in_dialog(
        self, call: SipCall, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> SipResponse | None:
        """Send a request in the call's dialog and wait for its final response."""
        assert call.dialog is not None
        request = self._in_dialog(call, method, body=body, content_type=content_type)
        if method == "INVITE":
            call.reinvite_pending = True
        try:
            response = await self.send_request(request, call.flow, owner=call, digest=call.digest)
            if response is not None and response.status == 491 and method == "INVITE":
                # §14.1 glare: wait 2.1-4 s if we own the Call-ID, else 0-2 s, and retry once.
                # Meanwhile the peer's re-INVITE must be accepted, not 491'd again.
                low, high = (2.1, 4.0) if call.dialog.is_uac else (0.0, 2.0)
                call.reinvite_pending = False
                await asyncio.sleep(low + (high - low) * secrets.randbelow(1000) / 1000)
                if call.state is not CallState.ESTABLISHED:
                    return response
                call.reinvite_pending = True
                request = self._in_dialog(call, method, body=body, content_type=content_type)
                response = await self.send_request(
                    request, call.flow, owner=call, digest=call.digest
                )
        finally:
            call.reinvite_pending = False
        if response is not None and method in ("INVITE", "UPDATE") and response.status < 300:
            timer = session_timer.negotiate_as_uac(response)
            if timer is not None:
                call.session_timer = timer
            self.arm_session_timer(call)
        return response

    async def send_request(
        self,
        request: SipRequest,
        flow: Flow,
        *,
        owner: object = None,
        digest: DigestClient | None = None,
    ) -> SipResponse | None:
        """Send a non-ACK request in a new client transaction and wait for its
        final response; None when the transaction timed out (Timer B/F).
        With ``digest``, 401/407 challenges are answered (at most a few times)."""
        for _attempt in range(4):
            tx = self.layer.send_request(request, flow, self.clock.monotonic(), owner=owner)
            future: asyncio.Future[SipResponse | None] = asyncio.get_running_loop().create_future()
            self._pending[tx] = future
            self._pump()
            try:
                response = await future
            except asyncio.CancelledError:
                self._pending.pop(tx, None)
                raise
            if response is None or response.status not in AUTH_HEADERS or digest is None:
                return response
            retry = authorized_retry(request, response, digest, self.ids.branch())
            if retry is None:
                return response
            request = retry
            if isinstance(owner, SipCall) and owner.dialog is not None:
                owner.dialog.local_seq = retry.cseq_number
        return None

    async def flow_to(
        self, transport: str, remote: tuple[str, int], *, server_name: str | None = None
    ) -> Flow:
        """A flow to ``remote`` (UDP from our listener, or a reused/new connection).
        TLS verifies the peer against ``sip.tls`` (CA, verify_peer) and sends
        ``server_name`` (the SIP domain, RFC 5922) as SNI."""
        assert self.transport is not None and self.settings is not None
        ssl_context = client_context(self.settings.sip.tls) if transport == "tls" else None
        return await self.transport.connect(
            transport, remote, ssl_context=ssl_context, server_hostname=server_name
        )

    def local_address(self, transport: str) -> tuple[str, int]:
        """Host and port we put in Via/Contact for ``transport``."""
        return self._local(transport)

    def _retry_after_422(self, request: SipRequest, response: SipResponse) -> SipRequest | None:
        """RFC 4028 §7.4: retry with the Min-SE the 422 asked for."""
        current = int((request.headers.get("Session-Expires") or "0").split(";")[0] or 0)
        wanted = session_timer.after_422(response, current)
        if wanted is None:
            return None
        retry = retry_of(request, self.ids.branch())
        retry.headers.set("Session-Expires", str(wanted))
        retry.headers.set("Min-SE", str(wanted))
        return retry

    def _prack(self, call: SipCall, response: SipResponse) -> None:
        """RFC 3262: acknowledge a reliable provisional response once."""
        try:
            rseq = int((response.headers.get("RSeq") or "").strip())
        except ValueError:
            return
        if call.dialog is None or rseq <= call.last_rseq:
            return
        call.last_rseq = rseq
        prack = self._in_dialog(
            call, "PRACK", headers=[("RAck", f"{rseq} {response.cseq_number} INVITE")]
        )
        self.layer.send_request(prack, call.flow, self.clock.monotonic())
