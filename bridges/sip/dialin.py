"""SIP dial-in: calls to a room's address or to the lobby join appointment rooms.

``sip:<alias>@<domain>`` (the appointment's ``sip_alias``) is looked up
before anything is answered, so every refusal is a final status:

| case | status | ``outcome`` |
|---|---|---|
| no such alias (or dial-in off) | 404 | ``not_found`` |
| the window is over, or the appointment was cancelled | 404 | ``expired`` |
| the window opens later | 480 + Retry-After (seconds until then) | ``not_yet`` |
| the room is full | 486 | ``full`` |
| the room's call has ended | 403 | ``expired`` |
| ``max_calls`` reached, no RTP ports, store not open | 503 + Retry-After | ``unavailable`` |
| nothing in the offer we can use | 488 | ``failed`` |

Why 404 after the window and 480 before it (RFC 3261 §21.4.5, §21.4.18):
an expired room address no longer exists (404 "does not exist at the
domain"; 410 Gone would tell a guesser that the alias once existed), while a
room that opens later is a callee "currently unavailable" whose Retry-After
says when to try again.

``sip:<lobby_user>@<domain>`` is answered at once (the caller needs audio to
hear the prompt and send DTMF): two beeps ask for the PIN, digits end with
``#`` or the sixth digit, ``*`` starts over; a wrong, unknown, expired or
late PIN plays the error signal and asks again, up to
``sip.dial_in.pin_attempts``; then the error signal and BYE (``bad_pin``).
Wrong PINs also drain a node-wide budget (``bad_pins_per_minute``): while it
is empty the lobby answers 503, so guessing over many calls stays slow. A
room that turns out full after the PIN gets the error signal and BYE.

Either way the caller joins the room through ``RoomDirectory.join`` as a
participant of kind ``sip`` in ``sip.dial_in.role``: in the waiting room
(hearing a 425 Hz waiting tone until an agent admits it) or, with
``admit: direct``, in the call. Rejected, or the call ended by the agent:
BYE. The caller's BYE, an RTP timeout (``media.rtp_timeout``) or the node
stopping: ``RoomDirectory.leave``; the room lives on.

Logs carry the call id, the participant id and the appointment id, never
the PIN, the alias (debug only) or the caller's URI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bridges.sip.call import CallState, SipCall
from bridges.sip.dialin_leg import ERROR, PROMPT, DialInParticipant
from bridges.sip.endpoint import IncomingHandler, SipEndpoint
from bridges.sip.media import SipMedia
from gateway import metrics
from gateway.errors import Busy, Forbidden, GatewayError, NotFound, Unavailable
from gateway.log import get_logger
from gateway.media.capabilities import SrtpPolicy
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Role
from gateway.settings import Settings
from gateway.store.appointments import (
    PIN_DIGITS,
    Appointment,
    LinkExpired,
    LinkNotYet,
    looks_like_alias,
)
from mediacodecs.executor import MediaExecutor

__all__ = ["AppointmentLookup", "DialInService", "add_dial_in"]

log = get_logger(__name__)

#: How long the error signal plays before the next prompt or the BYE.
ERROR_SECONDS = 1.5


class AppointmentLookup(Protocol):
    """What dial-in needs of the store (``gateway.store.appointments.Appointments``)."""

    async def by_sip_alias(self, alias: str) -> Appointment:
        """The appointment of a room address, if its window is open."""
        ...

    async def by_pin(self, pin: str) -> Appointment:
        """The appointment a lobby PIN opens now."""
        ...


class _Refused(Exception):
    """A call refused before answering: ``status``, headers and the metric outcome."""

    def __init__(self, status: int, outcome: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(status)
        self.status, self.outcome, self.headers = status, outcome, headers


class _PinBudget:
    """Wrong PINs allowed per minute on this node (a token bucket; 0 = unlimited)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.per_minute = 0
        self.tokens = 0.0
        self.at = clock()

    def configure(self, per_minute: int) -> None:
        if per_minute != self.per_minute:
            self.per_minute, self.tokens, self.at = per_minute, float(per_minute), self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(
            float(self.per_minute), self.tokens + (now - self.at) * self.per_minute / 60
        )
        self.at = now

    def exhausted(self) -> bool:
        if not self.per_minute:
            return False
        self._refill()
        return self.tokens < 1

    def spend(self) -> None:
        if self.per_minute:
            self._refill()
            self.tokens = max(0.0, self.tokens - 1)


def outcome_of(exc: GatewayError) -> str:
    """The ``gatewayd_dial_in_total`` outcome of a refusal."""
    if isinstance(exc, LinkNotYet):
        return "not_yet"
    if isinstance(exc, LinkExpired | Forbidden):
        return "expired"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, Busy):
        return "full"
    if isinstance(exc, Unavailable):
        return "unavailable"
    return "failed"


class DialInService:
    """Calls into rooms by room address and lobby PIN (a ``gateway.app.Service``).

    ``appointments`` returns the store's lookups when called (the store opens at
    start); ``executor`` the media executor for the tones (None: the service
    starts a one-thread executor of its own).
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        directory: RoomDirectory,
        appointments: Callable[[], AppointmentLookup],
        *,
        allocator: RtpPortAllocator,
        executor: Callable[[], MediaExecutor | None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.directory = directory
        self.appointments = appointments
        self.allocator = allocator
        self._shared_executor = executor
        self._own_executor: MediaExecutor | None = None
        self.settings: Settings | None = None
        #: Dial-in calls in progress (lobby, waiting or in a room): the licences used.
        self.participants: set[DialInParticipant] = set()
        self._lobby_user: str | None = None
        self._fallback: IncomingHandler | None = None
        self._bad_pins = _PinBudget(endpoint.clock.monotonic)

    # --- Service -----------------------------------------------------------------------------
    async def start(self, settings: Settings) -> None:
        """Take the settings and answer the lobby and room addresses."""
        from gateway.app import StartupError  # app imports wiring imports us

        dial_in = settings.sip.dial_in
        if dial_in.lobby_user and dial_in.lobby_user == settings.sip.echo_user:
            raise StartupError("sip.dial_in.lobby_user: the same as sip.echo_user; pick another")
        if self._shared_executor is None or self._shared_executor() is None:
            self._own_executor = MediaExecutor(1, name="dial-in")
        self._fallback = self.endpoint.on_incoming_call
        self.endpoint.on_incoming_call = self._room_call
        if self._fallback is None:  # only alias-shaped users can be ours
            self.endpoint.incoming_filter = looks_like_alias
        self._apply(settings)

    async def reload(self, settings: Settings) -> None:
        """New calls use the new settings; calls in progress keep their role and state."""
        dial_in = settings.sip.dial_in
        if dial_in.lobby_user and dial_in.lobby_user == settings.sip.echo_user:
            log.warning("dial-in: lobby_user equals sip.echo_user; keeping the old lobby")
            return
        self._apply(settings)

    def _apply(self, settings: Settings) -> None:
        self.settings = settings
        dial_in = settings.sip.dial_in
        if self._lobby_user is not None:
            self.endpoint.services.pop(self._lobby_user, None)
            self._lobby_user = None
        if dial_in.enabled and dial_in.lobby_user:
            self.endpoint.services[dial_in.lobby_user] = self._lobby_call
            self._lobby_user = dial_in.lobby_user
        self._bad_pins.configure(dial_in.bad_pins_per_minute)

    async def stop(self) -> None:
        """Hang up every dial-in call (before the endpoint stops)."""
        for participant in list(self.participants):
            await participant.hangup("node stopping")
        if self.endpoint.on_incoming_call == self._room_call:
            self.endpoint.on_incoming_call = self._fallback
            self.endpoint.incoming_filter = None
        if self._lobby_user is not None:
            self.endpoint.services.pop(self._lobby_user, None)
            self._lobby_user = None
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False)
            self._own_executor = None

    @property
    def executor(self) -> MediaExecutor | None:
        """The executor the tones are encoded on."""
        shared = self._shared_executor() if self._shared_executor is not None else None
        return shared or self._own_executor

    # --- room addresses ----------------------------------------------------------------------
    async def _room_call(self, call: SipCall) -> None:
        """INVITE to any user without a service of its own: a room alias, or 404."""
        settings = self.settings
        if settings is None or not settings.sip.dial_in.enabled:
            await self._not_ours(call)
            return
        alias = _request_user(call)
        try:
            appointment = await self._lookup(lambda store: store.by_sip_alias(alias or ""))
        except _Refused as refused:
            if refused.outcome == "not_found" and self._fallback is not None:
                await self._fallback(call)  # not an alias: whoever else answers calls
                return
            await self._refuse(call, refused)
            return
        log.debug("dial-in: room address", alias=alias, appointment=appointment.id)
        try:
            participant, body = await self._accept(call, settings)
            await self._join(participant, appointment, settings)
        except _Refused as refused:
            await self._refuse(call, refused)
            return
        if call.state is not CallState.INCOMING:  # the caller gave up meanwhile
            self._leave(participant)
            return
        await call.answer(body)
        participant.answered()
        self._count("joined")

    async def _not_ours(self, call: SipCall) -> None:
        if self._fallback is not None:
            await self._fallback(call)
        elif call.state is CallState.INCOMING:
            await call.reject(404)

    # --- the lobby -----------------------------------------------------------------------------
    async def _lobby_call(self, call: SipCall) -> None:
        """INVITE to the lobby: answer, ask for the PIN, join its room."""
        settings = self.settings
        assert settings is not None
        dial_in = settings.sip.dial_in
        try:
            if self._bad_pins.exhausted():
                log.warning("dial-in: too many wrong PINs on this node; lobby refuses calls")
                raise _Refused(503, "unavailable", self._retry_after(60))
            participant, body = await self._accept(call, settings)
        except _Refused as refused:
            await self._refuse(call, refused)
            return
        if call.state is not CallState.INCOMING:
            return
        await call.answer(body)
        participant.answered()
        appointment = await self._ask_pin(participant, dial_in.pin_attempts, dial_in.pin_timeout)
        if appointment is None:
            return
        try:
            await self._join(participant, appointment, settings)
        except _Refused as refused:
            self._count(refused.outcome)
            await self._fail(participant, f"room refused: {refused.status}")
            return
        if participant.call.state is CallState.ENDED:
            self._leave(participant)
            return
        if not participant.waiting:  # a waiting caller hears the waiting tone already
            participant.stop_playing()
        self._count("joined")

    async def _ask_pin(
        self, participant: DialInParticipant, attempts: int, timeout: float
    ) -> Appointment | None:
        call = participant.call
        outcome = "bad_pin"
        participant.play(PROMPT)
        for attempt in range(1, attempts + 1):
            pin = await participant.read_pin(PIN_DIGITS, timeout)
            if call.state is not CallState.ESTABLISHED:
                return None
            if pin is not None:
                try:
                    return await self._lookup(functools.partial(_by_pin, pin=pin))
                except _Refused as refused:
                    if refused.outcome == "unavailable":
                        outcome = "unavailable"
                        break
            self._bad_pins.spend()
            log.info("dial-in: wrong PIN", call_id=call.call_id, attempt=attempt)
            if attempt < attempts:
                participant.play(ERROR + PROMPT)
                await participant.pause(ERROR_SECONDS)
        self._count(outcome)
        await self._fail(participant, "no valid PIN")
        return None

    async def _fail(self, participant: DialInParticipant, reason: str) -> None:
        participant.play(ERROR)
        await participant.pause(ERROR_SECONDS)
        await participant.hangup(reason)

    # --- shared steps ---------------------------------------------------------------------------
    async def _lookup(
        self, find: Callable[[AppointmentLookup], Awaitable[Appointment]]
    ) -> Appointment:
        try:
            return await find(self.appointments())
        except LinkNotYet as exc:
            wait = max(1, math.ceil(exc.opens_at - self.endpoint.clock.time()))
            raise _Refused(480, "not_yet", [("Retry-After", str(wait))]) from exc
        except Unavailable as exc:
            raise _Refused(503, "unavailable", self._retry_after(exc.retry_after)) from exc
        except GatewayError as exc:
            raise _Refused(exc.sip_status, outcome_of(exc), []) from exc

    async def _accept(self, call: SipCall, settings: Settings) -> tuple[DialInParticipant, bytes]:
        """Take a licence, open the media and answer the offer (not yet sent)."""
        dial_in, media_settings = settings.sip.dial_in, settings.media
        if len(self.participants) >= dial_in.max_calls:
            log.info("dial-in: all licences in use", max_calls=dial_in.max_calls)
            raise _Refused(503, "unavailable", self._retry_after(settings.sip.retry_after))
        media = SipMedia(
            media_settings.address,
            media_host6=media_settings.address6,
            allocator=self.allocator,
            srtp=SrtpPolicy(media_settings.srtp),
            rtp_timeout=media_settings.rtp_timeout or None,
        )
        try:
            await media.open()
        except Unavailable as exc:
            media.close()
            log.warning("dial-in: no RTP ports", reason=exc.message)
            raise _Refused(503, "unavailable", self._retry_after(exc.retry_after)) from exc
        except BaseException:
            media.close()
            raise
        media.bind(call)  # from here the call's end closes the media
        participant = DialInParticipant(
            call, media, dial_in.role, executor=self.executor, leave=self._leave
        )
        self.participants.add(participant)
        metrics.DIAL_IN_ACTIVE.set(len(self.participants))
        for stream in media.streams:
            stream.on_timeout = functools.partial(self._media_timeout, call)
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        if body is None:
            raise _Refused(488, "failed", [("Warning", '399 gatewayd "no common media"')])
        return participant, body

    async def _join(
        self, participant: DialInParticipant, appointment: Appointment, settings: Settings
    ) -> None:
        dial_in = settings.sip.dial_in
        try:
            participant.member = await self.directory.join(
                appointment.id,
                Role(participant.role),
                participant,
                kind="sip",
                admitted=dial_in.admit == "direct",
                on_event=participant.on_room_event,
            )
        except GatewayError as exc:
            raise _Refused(exc.sip_status, outcome_of(exc), []) from exc
        log.info(
            "dial-in: joined", call_id=participant.call.call_id,
            participant=participant.member.id, appointment=appointment.id,
            waiting=participant.waiting,
        )  # fmt: skip

    def _leave(self, participant: DialInParticipant) -> None:
        """Out of the room and the licence back (idempotent)."""
        member, participant.member = participant.member, None
        if member is not None:
            self.directory.leave(member)
        if participant.call.state is CallState.ENDED and participant in self.participants:
            self.participants.discard(participant)
            metrics.DIAL_IN_ACTIVE.set(len(self.participants))

    def _media_timeout(self, call: SipCall, _stream: Any) -> None:
        if call.state is CallState.ESTABLISHED:
            log.info("dial-in: no RTP from the caller, hanging up", call_id=call.call_id)
            self.endpoint.hangup_soon(call, "rtp timeout")

    async def _refuse(self, call: SipCall, refused: _Refused) -> None:
        self._count(refused.outcome)
        log.info("dial-in: refused", call_id=call.call_id, status=refused.status,
                 outcome=refused.outcome)  # fmt: skip
        if call.state is CallState.INCOMING:
            await call.reject(refused.status, headers=refused.headers)

    def _retry_after(self, seconds: int) -> list[tuple[str, str]]:
        return [("Retry-After", str(seconds))]

    @staticmethod
    def _count(outcome: str) -> None:
        metrics.DIAL_IN.labels(outcome=outcome).inc()


def _by_pin(store: AppointmentLookup, *, pin: str) -> Awaitable[Appointment]:
    return store.by_pin(pin)


def _request_user(call: SipCall) -> str | None:
    uri = call.invite.uri if call.invite is not None else ""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    return rest.split("@", 1)[0]


def add_dial_in(
    gateway: Any, endpoint: SipEndpoint, allocator: RtpPortAllocator, directory: RoomDirectory
) -> DialInService:
    """Add dial-in to a node: call from ``gateway/wiring.py`` once the shared
    ``RoomDirectory`` exists, after the endpoint was appended to
    ``gateway.services`` (the service then stops before the endpoint). Uses the
    node's ``StoreService`` and, when there is one, the media executor of a
    service with an ``executor`` attribute (``gateway.media.service.MediaService``)."""
    from gateway.store.service import StoreService

    store = next(s for s in gateway.services if isinstance(s, StoreService))
    shared = [s for s in gateway.services if hasattr(s, "executor") and s is not store]

    def executor() -> MediaExecutor | None:
        for service in shared:
            candidate = getattr(service, "executor", None)
            if isinstance(candidate, MediaExecutor):
                return candidate
        return None

    service = DialInService(
        endpoint, directory, lambda: store.appointments, allocator=allocator, executor=executor
    )
    gateway.services.append(service)
    return service
