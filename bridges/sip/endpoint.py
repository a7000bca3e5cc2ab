"""SipEndpoint: the SIP user agent the rest of the gateway talks to.

It owns the transports and the transaction layer, turns incoming INVITEs
into ``SipCall`` objects handed to ``on_incoming_call`` (or to a service
such as the echo), answers OPTIONS, routes in-dialog requests to their
call, and places outgoing calls (``invite``). All protocol decisions live
in the sans-IO modules; this file pumps bytes, events and one timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bridges.sip import session_timer
from bridges.sip.call import CallState, SipCall
from bridges.sip.dialog import Dialog, DialogId, dialog_id_of_request
from bridges.sip.flow import Flow
from bridges.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    validate_request,
)
from bridges.sip.outgoing import (
    IdSource,
)
from bridges.sip.ratelimit import PeerAccessList, SourceRateLimiter
from bridges.sip.tls import TlsSetupError, server_context
from bridges.sip.transaction import (
    AckTimeout,
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
)
from bridges.sip.transport import Limits, SipTransportLayer
from bridges.sip.uac import ALLOW, SUPPORTED, UacRole
from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import Clock, SystemClock
from gateway.errors import Draining
from gateway.log import get_logger
from gateway.settings import Settings

log = get_logger(__name__)

ACCEPT = "application/sdp"

IncomingHandler = Callable[[SipCall], Awaitable[None]]


class SipEndpoint(UacRole):
    """The gateway's SIP user agent (a ``gateway.app.Service``)."""

    def __init__(
        self,
        calls: CallRegistry,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
    ) -> None:
        self.calls = calls
        self.clock = clock or SystemClock()
        self.ids = ids or IdSource()
        self.layer = TransactionLayer()
        self.transport: SipTransportLayer | None = None
        self.settings: Settings | None = None
        #: Services answering a Request-URI user part (e.g. "echo").
        self.services: dict[str, IncomingHandler] = {}
        #: Everything else; None -> 404.
        self.on_incoming_call: IncomingHandler | None = None
        #: Which users ``on_incoming_call`` may get at all; the others get 404 at once
        #: (no call object, no handler task: cheap for scanners).
        self.incoming_filter: Callable[[str | None], bool] | None = None
        self._dialogs: dict[DialogId, SipCall] = {}
        self._pending: dict[ClientTransaction, asyncio.Future[SipResponse | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acl = PeerAccessList()
        self._limiter = SourceRateLimiter(0, 1)

    # --- Service -------------------------------------------------------------------------
    async def start(self, settings: Settings) -> None:
        """Open the configured listeners."""
        from gateway.app import StartupError  # app imports wiring imports us

        self._apply(settings)
        sip = settings.sip
        limits = Limits(
            max_header_bytes=sip.limits.max_header_bytes,
            max_body_bytes=sip.limits.max_body_bytes,
            max_connections=sip.limits.max_connections,
            idle_timeout=sip.limits.idle_timeout,
            udp_receive_buffer=sip.limits.udp_receive_buffer,
        )
        self.transport = SipTransportLayer(
            self._on_datagram, limits=limits, on_stream_error=self._on_stream_error
        )
        ssl_context = None
        if sip.tls is not None and any(t in ("tls", "wss") for t in sip.transports):
            try:
                ssl_context = server_context(sip.tls)
            except TlsSetupError as exc:
                raise StartupError(exc.message) from exc
        ports = {
            "udp": sip.port,
            "tcp": sip.port,
            "tls": sip.tls_port,
            "ws": sip.ws_port,
            "wss": sip.wss_port,
        }
        for name in sip.transports:
            try:
                await self.transport.listen(
                    name,
                    sip.host,
                    ports[name],
                    ssl_context=ssl_context if name in ("tls", "wss") else None,
                )
            except OSError as exc:
                await self.transport.close()
                raise StartupError(
                    f"sip: cannot listen on {name} {sip.host}:{ports[name]}: {exc.strerror}"
                ) from exc

    async def reload(self, settings: Settings) -> None:
        """New limits, access lists and timers apply to new transactions."""
        self._apply(settings)

    def _apply(self, settings: Settings) -> None:
        sip = settings.sip
        self.settings = settings
        self.layer.timers = TimerConfig(sip.timers.t1, sip.timers.t2, sip.timers.t4)
        self._acl = PeerAccessList(sip.access.allow, sip.access.deny)
        self._limiter = SourceRateLimiter(sip.limits.requests_per_second, sip.limits.burst)

    async def stop(self) -> None:
        """Close the listeners (calls have ended by now)."""
        for call in list(self._dialogs.values()):
            call.finish("endpoint stopped")
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.transport.close()

    # --- addresses -------------------------------------------------------------------------
    def _local(self, transport: str) -> tuple[str, int]:
        assert self.settings is not None and self.transport is not None
        host, port = self.transport.listening.get(transport, (self.settings.sip.host, 0))
        return self.settings.sip.public_host or host, port

    def contact_for(self, transport: str, user: str = "gatewayd") -> str:
        """Our Contact header value for a transport."""
        host, port = self._local(transport)
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user}@{hostport}{suffix}>"

    # --- incoming bytes ------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, flow: Flow) -> None:
        if not self._acl.permits(flow.remote[0]):
            metrics.SIP_REJECTED.labels(reason="access_list").inc()
            return
        try:
            message = parse_message(
                data,
                max_header_bytes=self.transport.limits.max_header_bytes
                if self.transport
                else 16384,
                max_body_bytes=self.transport.limits.max_body_bytes if self.transport else 65536,
            )
        except SipParseError as exc:
            self._answer_garbage(data, exc, flow)
            self._pump()
            return
        now = self.clock.monotonic()
        if isinstance(message, SipResponse):
            self.layer.receive_response(message, flow, now)
        else:
            self._receive_request(message, flow, now)
        self._pump()

    def _on_stream_error(self, exc: SipParseError, flow: Flow) -> None:
        self._answer_garbage(exc.raw if hasattr(exc, "raw") else b"", exc, flow)
        self._pump()

    def _answer_garbage(self, data: bytes, exc: SipParseError, flow: Flow) -> None:
        metrics.SIP_PARSE_ERRORS.labels(reason=exc.reason).inc()
        if not data:
            return
        response = build_error_response(data, exc)
        if response is not None:
            self._count_response(response.status)
            self.layer.send_stateless(response, flow)

    def _receive_request(self, request: SipRequest, flow: Flow, now: float) -> None:
        metrics.SIP_REQUESTS.labels(method=metrics.sip_method_label(request.method)).inc()
        # Requests outside a dialog are what scanners send: rate-limit them
        # per source; answering a flood would amplify it, so they are dropped.
        in_dialog = request.to_tag is not None
        if (
            not in_dialog
            and request.method not in ("ACK", "CANCEL")
            and not self._limiter.allow(flow.remote[0], now)
        ):
            metrics.SIP_REJECTED.labels(reason="rate_limit").inc()
            return
        rejection = validate_request(request, supported_extensions=SUPPORTED)
        if rejection is not None:
            if request.method != "ACK":
                metrics.SIP_REJECTED.labels(reason=rejection.reason).inc()
                self._stateless(request, flow, rejection.status, list(rejection.headers))
            return
        assert self.settings is not None
        if (
            request.method not in ("ACK", "CANCEL")
            and self.layer.active >= self.settings.sip.limits.max_transactions
        ):
            metrics.SIP_REJECTED.labels(reason="overload").inc()
            self._stateless(
                request, flow, 503, [("Retry-After", str(self.settings.sip.retry_after))]
            )
            return
        self._stamp_via(request, flow)
        self.layer.receive_request(request, flow, now)

    @staticmethod
    def _stamp_via(request: SipRequest, flow: Flow) -> None:
        """§18.2.1 / RFC 3581: received= and rport= on the top Via."""
        via = request.top_via
        host, port = flow.remote
        changed = via
        if via.sent_by[0].strip("[]") != host:
            changed = changed.with_param("received", host)
        if via.has_param("rport"):
            changed = changed.with_param("rport", str(port)).with_param("received", host)
        if changed is not via:
            request.replace_top_via(changed)

    def _stateless(
        self, request: SipRequest, flow: Flow, status: int, headers: list[tuple[str, str]]
    ) -> None:
        to_tag = None if request.to_tag else self.ids.tag()
        response = build_response(request, status, to_tag=to_tag, headers=headers)
        self._count_response(status)
        self.layer.send_stateless(response, flow)

    # --- the pump -------------------------------------------------------------------------------
    def _pump(self) -> None:
        while (event := self.layer.next_event()) is not None:
            try:
                self._dispatch(event)
            except Exception:
                metrics.ERRORS.labels(component="sip").inc()
                log.exception("SIP event handling failed", sip_event=type(event).__name__)
        if self.transport is not None:
            for data, flow in self.layer.datagrams_to_send():
                self.transport.send(data, flow)
        metrics.SIP_TRANSACTIONS_ACTIVE.set(self.layer.active)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        delay = max(0.0, deadline - self.clock.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.layer.handle_timer(self.clock.monotonic())
        self._pump()

    def hangup_soon(self, call: SipCall, reason: str) -> None:
        """End a call from a synchronous callback (an RTP timeout, say)."""
        self._spawn(call.hangup(reason))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                metrics.ERRORS.labels(component="sip").inc()
                log.exception("SIP call handler failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            if event.tx is None:
                self._on_ack(event.request)
            else:
                self._on_request(event.request, event.tx, event.flow)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.tx)
        elif isinstance(event, CancelReceived):
            call = event.tx.owner
            if isinstance(call, SipCall) and call.state is CallState.INCOMING:
                self.reject_call(call, 487, [])
                call.finish("cancelled")
        elif isinstance(event, TransactionTimeout):
            future = self._pending.pop(event.tx, None)
            if future is not None and not future.done():
                future.set_result(None)
            owner = event.tx.owner
            if isinstance(owner, SipCall) and event.tx.request.method == "INVITE":
                owner.final_status = 408
                owner.finish("no answer (timeout)")
        elif isinstance(event, AckTimeout):
            for call in list(self._dialogs.values()):
                if call.dialog is not None and call.dialog.call_id == event.call_id:
                    log.info("no ACK for our 2xx: ending the call", call_id=call.call_id)
                    self._spawn(call.hangup("no ACK"))
        elif isinstance(event, TransactionTerminated):
            self._pending.pop(event.tx, None)  # type: ignore[arg-type]

    # --- server side ------------------------------------------------------------------------------
    def _on_request(self, request: SipRequest, tx: ServerTransaction, flow: Flow) -> None:
        method = request.method
        if request.to_tag is not None:
            self._on_in_dialog(request, tx)
            return
        if method == "OPTIONS":
            self._respond(tx, 200, headers=self._capabilities())
        elif method == "INVITE":
            self._on_invite(request, tx, flow)
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._respond(tx, 481)
        elif method in ("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "NOTIFY"):
            self._respond(tx, 405, headers=[("Allow", ALLOW)])
        else:
            self._respond(tx, 501, headers=[("Allow", ALLOW)])

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ALLOW),
            ("Accept", ACCEPT),
            ("Supported", ", ".join(SUPPORTED)),
            ("Accept-Language", "de, en"),
        ]

    def _respond(
        self,
        tx: ServerTransaction,
        status: int,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> None:
        response = build_response(
            tx.request, status, to_tag=to_tag or self.ids.tag(), headers=headers or [], body=body
        )
        assert self.settings is not None
        response.headers.add("Server", self.settings.sip.user_agent)
        self._count_response(status)
        self.layer.send_response(tx, response, self.clock.monotonic())

    @staticmethod
    def _count_response(status: int) -> None:
        metrics.SIP_RESPONSES.labels(code_class=metrics.code_class(status)).inc()

    def _on_invite(self, request: SipRequest, tx: ServerTransaction, flow: Flow) -> None:
        assert self.settings is not None
        try:
            self.calls.admit()
        except Draining as exc:
            self._respond(tx, 503, headers=[("Retry-After", str(exc.retry_after))])
            return
        user = _request_user(request)
        handler = self.services.get(user) if user is not None else None
        if handler is None and (self.incoming_filter is None or self.incoming_filter(user)):
            handler = self.on_incoming_call
        if handler is None:
            self._respond(tx, 404)
            return
        decision = session_timer.negotiate_as_uas(request)
        if decision.reject_status is not None:
            self._respond(tx, decision.reject_status, headers=list(decision.headers))
            return
        call = SipCall(self, outgoing=False, flow=flow)
        call.session_timer = decision.timer
        call.answer_headers = list(decision.headers)
        call.invite = request
        call.invite_tx = tx
        call.remote_sdp = request.sdp()
        tx.owner = call
        tx.local_tag = call.local_tag
        call.dialog = Dialog.as_uas(request, call.local_tag, self.contact_for(flow.transport))
        self._track(call)
        self._spawn(self._run_handler(handler, call))

    async def _run_handler(self, handler: IncomingHandler, call: SipCall) -> None:
        """A failing handler must not leave a call hanging: 500, or BYE."""
        try:
            await handler(call)
        except Exception:
            metrics.ERRORS.labels(component="sip").inc()
            log.exception("incoming call handler failed", call_id=call.call_id)
            if call.state is CallState.INCOMING:
                await call.reject(500)
            else:
                await call.hangup("handler failed")

    def _track(self, call: SipCall) -> None:
        assert call.dialog is not None
        self._dialogs[call.dialog.id] = call
        self.calls.add(call)

        def forget(ended: SipCall) -> None:
            if ended.dialog is not None:
                self._dialogs.pop(ended.dialog.id, None)
            self.calls.remove(ended.call_id)
            log.info("sip call ended", call_id=ended.call_id, reason=ended.end_reason)

        call.on_end.append(forget)

    def answer_call(self, call: SipCall, sdp: bytes, headers: list[tuple[str, str]]) -> None:
        """200 OK with SDP for an incoming INVITE (called by ``SipCall.answer``)."""
        assert isinstance(call.invite_tx, ServerTransaction) and call.dialog is not None
        all_headers = [
            ("Contact", call.dialog.local_contact),
            ("Allow", ALLOW),
            ("Supported", ", ".join(SUPPORTED)),
            *call.answer_headers,
            *headers,
        ]
        if sdp:
            all_headers.append(("Content-Type", "application/sdp"))
        self._respond(call.invite_tx, 200, headers=all_headers, body=sdp, to_tag=call.local_tag)
        self.arm_session_timer(call)
        self._pump()

    def arm_session_timer(self, call: SipCall) -> None:
        """(Re)start the RFC 4028 clock of an established call."""
        if call.session_timer_handle is not None:
            call.session_timer_handle.cancel()
            call.session_timer_handle = None
        timer = call.session_timer
        if timer is None or call.state is CallState.ENDED:
            return
        delay = timer.next_deadline(0.0)
        call.session_timer_handle = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._session_timer_fired(call))
        )

    async def _session_timer_fired(self, call: SipCall) -> None:
        call.session_timer_handle = None
        timer = call.session_timer
        if timer is None or call.state is not CallState.ESTABLISHED:
            return
        if not timer.we_refresh:
            log.info("session timer expired: ending the call", call_id=call.call_id)
            await call.hangup("session timer expired")
            return
        response = await call.reinvite(call.local_sdp or b"")
        # RFC 4028 §10: no answer, 408 or 481 to a refresh means the session is gone.
        if response is None or response.status in (408, 481):
            await call.hangup("session refresh failed")
            return
        self.arm_session_timer(call)

    def provisional(self, call: SipCall, status: int) -> None:
        """A 1xx for an incoming INVITE."""
        assert isinstance(call.invite_tx, ServerTransaction) and call.dialog is not None
        self._respond(
            call.invite_tx,
            status,
            to_tag=call.local_tag,
            headers=[("Contact", call.dialog.local_contact)],
        )
        self._pump()

    def reject_call(self, call: SipCall, status: int, headers: list[tuple[str, str]]) -> None:
        """A final error for an incoming INVITE."""
        assert isinstance(call.invite_tx, ServerTransaction)
        self._respond(call.invite_tx, status, headers=headers, to_tag=call.local_tag)
        self._pump()

    def _on_ack(self, ack: SipRequest) -> None:
        call = self._dialogs.get(dialog_id_of_request(ack))
        answer = ack.sdp() if call is not None and ack.body else None
        if call is not None and answer is not None:
            call.remote_sdp = answer  # late offer: the answer comes in the ACK
            if call.on_answer is not None:
                call.on_answer(call, answer)

    def _on_in_dialog(self, request: SipRequest, tx: ServerTransaction) -> None:
        call = self._dialogs.get(dialog_id_of_request(request))
        if call is None or call.dialog is None:
            self._respond(tx, 481)
            return
        status = call.dialog.check_remote_cseq(request)
        if status is not None:
            self._respond(tx, status)
            return
        method = request.method
        if method == "BYE":
            self._respond(tx, 200, to_tag=call.local_tag)
            call.finish("remote hangup")
        elif method in ("INVITE", "UPDATE"):
            if method == "INVITE" and call.reinvite_pending:
                self._respond(tx, 491, to_tag=call.local_tag)  # §14.2 glare
                return
            call.dialog.update_target(request)
            self._spawn(self._answer_offer(call, request, tx))
        elif method == "PRACK":
            self._respond(tx, 200, to_tag=call.local_tag)
        elif method == "INFO":
            status = call.on_info(call, request) if call.on_info is not None else None
            self._respond(tx, status or 200, to_tag=call.local_tag)
        elif method == "OPTIONS":
            self._respond(tx, 200, headers=self._capabilities(), to_tag=call.local_tag)
        else:
            self._respond(tx, 501, headers=[("Allow", ALLOW)], to_tag=call.local_tag)

    async def _answer_offer(
        self, call: SipCall, request: SipRequest, tx: ServerTransaction
    ) -> None:
        """A re-INVITE or UPDATE: new media, hold/resume, or a session refresh."""
        decision = session_timer.negotiate_as_uas(request)
        if decision.reject_status is not None:
            self._respond(
                tx, decision.reject_status, to_tag=call.local_tag, headers=list(decision.headers)
            )
            self._pump()
            return
        offer = request.sdp()
        answer: bytes | None
        if request.method == "UPDATE" and offer is None:
            answer = b""  # a refresh without media change carries no SDP
        elif call.on_offer is None:
            answer = call.local_sdp
        else:
            answer = await call.on_offer(call, offer)
        if answer is None:
            self._respond(
                tx,
                488,
                to_tag=call.local_tag,
                headers=[("Warning", '399 gatewayd "offer not acceptable"')],
            )
            self._pump()
            return
        assert call.dialog is not None
        headers = [("Contact", call.dialog.local_contact), *decision.headers]
        if answer:
            if offer is not None:
                call.remote_sdp = offer
            call.local_sdp = answer
            headers.append(("Content-Type", "application/sdp"))
        self._respond(tx, 200, to_tag=call.local_tag, body=answer, headers=headers)
        if decision.timer is not None:
            call.session_timer = decision.timer
        self.arm_session_timer(call)
        self._pump()


def _request_user(request: SipRequest) -> str | None:
    uri = request.uri
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    return rest.split("@", 1)[0]
