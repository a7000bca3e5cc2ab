"""Registering at a SIP trunk (RFC 3261 §10), sans-IO.

``RegistrationClient`` is the state machine of one trunk's registration. It
builds REGISTER requests, reads their final responses, answers digest
challenges (``auth.DigestClient``) and says when it next needs to act
(``next_deadline``). Time comes from an injected ``Clock``, jitter from an
injected ``random.Random``; it never sleeps, sends or logs. The asyncio
driver that sends its requests, arms its deadline, sends OPTIONS
keep-alives and sets ``gatewayd_sip_trunk_up`` is ``trunks.TrunkManager``.

States of a registration::

    idle --start--> registering --2xx--> registered --timer/keep-alive lost--> refreshing
    registering, refreshing --2xx--> registered
                            --timeout, 5xx, other 4xx--> backoff --timer--> registering
                            --credentials refused, 403, 404--> failed
    any but idle/failed --stop--> unregistering (Expires: 0) --answer/timeout--> idle

``failed`` is final until the trunk's settings change (a reload): retrying a
refused password only gets the account locked by the registrar's fail2ban.
"""

from __future__ import annotations

import enum
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sipmessage import URI

from bridges.sip.addressing import parse_address, parse_uri
from bridges.sip.auth import AUTH_HEADERS, DigestClient
from bridges.sip.message import SipParseError, SipRequest, SipResponse
from bridges.sip.outgoing import IdSource, build_request, via_value
from gateway.clock import Clock
from gateway.settings import SipTrunk

__all__ = [
    "Backoff",
    "LocalAddress",
    "RegistrationClient",
    "RegistrationState",
    "address_of_record",
    "build_options",
    "granted_expiry",
    "refresh_delay",
    "registrar_uri",
    "trunk_transport",
]

# Challenge rounds per REGISTER attempt; DigestClient already stops sooner on a
# refused nonce, this only guards against a registrar that keeps re-challenging.
MAX_AUTH_ROUNDS = 4
# Statuses that say "not with these settings": no retry until a reload.
PERMANENT_FAILURES = frozenset({403, 404})
# A Retry-After (or Min-Expires) beyond these is a registrar bug, not a plan.
MAX_RETRY_AFTER = 3600.0
MAX_EXPIRES = 86400 * 7


class RegistrationState(enum.Enum):
    """Where one trunk's registration is."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    BACKOFF = "backoff"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


_S = RegistrationState
_TRANSITIONS: dict[RegistrationState, frozenset[RegistrationState]] = {
    _S.IDLE: frozenset({_S.REGISTERING}),
    _S.REGISTERING: frozenset({_S.REGISTERED, _S.BACKOFF, _S.FAILED, _S.UNREGISTERING, _S.IDLE}),
    _S.REFRESHING: frozenset({_S.REGISTERED, _S.BACKOFF, _S.FAILED, _S.UNREGISTERING, _S.IDLE}),
    _S.REGISTERED: frozenset({_S.REFRESHING, _S.UNREGISTERING, _S.IDLE}),
    _S.BACKOFF: frozenset({_S.REGISTERING, _S.UNREGISTERING, _S.IDLE}),
    _S.FAILED: frozenset({_S.IDLE}),
    _S.UNREGISTERING: frozenset({_S.IDLE}),
}


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off after a failed REGISTER: ``first`` doubling up to ``maximum``.

    ``jitter`` is the fraction that may be taken off at random, so that many
    gateways cut off by one registrar outage do not come back in lockstep.
    """

    first: float = 5.0
    maximum: float = 300.0
    jitter: float = 0.25

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
        raw = min(self.maximum, self.first * 2.0 ** min(max(failures, 1) - 1, 40))
        return raw * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class LocalAddress:
    """Our side of a trunk: the transport, the Via sent-by, and the Contact value."""

    transport: str
    host: str
    port: int
    contact: str


def refresh_delay(granted: float) -> float:
    """When to refresh a binding granted for ``granted`` seconds.

    At 80 %, but never later than 5 s before it expires (a slow registrar must
    not let it lapse); for grants under 10 s that would be before half of it,
    and half wins (no tight loop on tiny grants).
    """
    return max(min(0.8 * granted, granted - 5.0), granted / 2.0)


def registrar_uri(trunk: SipTrunk) -> str:
    """The Request-URI of REGISTER and OPTIONS: ``registrar`` as a sip: URI."""
    text = trunk.registrar.strip()
    return text if text.lower().startswith(("sip:", "sips:")) else f"sip:{text}"


def address_of_record(trunk: SipTrunk) -> str:
    """The AOR for To/From: ``aor``, else ``sip:<username>@<registrar host>``."""
    if trunk.aor:
        return trunk.aor
    uri = parse_uri(registrar_uri(trunk))
    user = trunk.username or "gatewayd"
    return f"{uri.scheme}:{user}@{uri.host}"


def trunk_transport(trunk: SipTrunk) -> str:
    """The trunk's transport: ``tls`` for sips:, the URI's ``transport``, else the setting."""
    uri = parse_uri(registrar_uri(trunk))
    param = {str(k).lower(): v for k, v in uri.parameters.items()}.get("transport")
    if uri.scheme == "sips":
        return "tls"
    return param.lower() if isinstance(param, str) else trunk.transport


def _same_contact(a: URI, b: URI) -> bool:
    # RFC 3261 §19.1.4, reduced to what identifies a binding we made.
    def key(uri: URI) -> tuple[str | None, str, int]:
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        return (uri.user, str(uri.host).lower(), port)

    return key(a) == key(b)


def granted_expiry(response: SipResponse, contact: URI, asked: int) -> int:
    """The seconds a 2xx to REGISTER granted our binding (RFC 3261 §10.2.4).

    The ``expires`` parameter of the Contact that is ours, else the Expires
    header, else what we asked for. Registrars list every binding of the AOR,
    so other devices' contacts are skipped.
    """
    try:
        contacts = response.contacts
    except SipParseError:
        contacts = []
    for address in contacts:
        if _same_contact(address.uri, contact):
            value = address.parameters.get("expires")
            if isinstance(value, str) and value.strip().isdigit():
                return int(value.strip())
            break
    header = response.headers.get("Expires")
    if header is not None and header.strip().isdigit():
        return int(header.strip())
    return asked


def _retry_after(response: SipResponse | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    seconds = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(seconds) if seconds.isdigit() else None


def build_options(
    uri: str, local: LocalAddress, ids: IdSource, *, from_uri: str, user_agent: str
) -> SipRequest:
    """An out-of-dialog OPTIONS keep-alive to ``uri`` (each with its own Call-ID)."""
    return build_request(
        "OPTIONS",
        uri,
        via=via_value(local.transport, local.host, local.port, ids.branch()),
        from_value=f"<{from_uri}>;tag={ids.tag()}",
        to_value=f"<{uri}>",
        call_id=ids.call_id(local.host),
        cseq=1,
        contact=local.contact,
        headers=[("Accept", "application/sdp"), ("User-Agent", user_agent)],
    )


StateListener = Callable[["RegistrationClient", RegistrationState, str], None]


class RegistrationClient:
    """The REGISTER side of one trunk, sans-IO.

    Drive it like this: ``start()``; send every ``next_request()`` and feed its
    final response (None on timeout or transport failure) to
    ``receive_response``; call ``handle_timer()`` at ``next_deadline()``;
    ``stop()`` queues the un-REGISTER if a binding may exist. One request is
    outstanding at a time. ``on_change(client, old_state, reason)`` is called
    on every state change.
    """

    def __init__(
        self,
        trunk: SipTrunk,
        local: LocalAddress,
        *,
        clock: Clock,
        ids: IdSource,
        rng: random.Random,
        cnonce_source: Callable[[int], bytes] = secrets.token_bytes,
        backoff: Backoff | None = None,
        user_agent: str = "gatewayd",
        on_change: StateListener | None = None,
    ) -> None:
        if not trunk.registration or not trunk.username:
            raise ValueError(f"trunk {trunk.name} does not register")
        self.trunk = trunk
        self.local = local
        self.registrar_uri = registrar_uri(trunk)
        self.aor = address_of_record(trunk)
        self.on_change = on_change
        self._contact_uri = parse_address(local.contact).uri
        self._clock = clock
        self._ids = ids
        self._rng = rng
        self._backoff = backoff or Backoff()
        self._user_agent = user_agent
        self._digest = (
            None
            if trunk.password is None
            else DigestClient(trunk.username, trunk.password.get_secret_value(), rng=cnonce_source)
        )
        # RFC 3261 §10.2.4: one Call-ID and From tag for every REGISTER of this
        # client, CSeq going up by one per request, so the registrar can order them.
        self.call_id = ids.call_id(local.host)
        self._from_tag = ids.tag()
        self._cseq = 0
        #: Seconds asked for in REGISTER (raised by a 423's Min-Expires).
        self.expires = trunk.expires
        self.state = RegistrationState.IDLE
        #: Seconds the registrar granted last time, None when not registered.
        self.granted: int | None = None
        #: Failed attempts in a row (drives the back-off).
        self.failures = 0
        #: The status of the last final response, None after a timeout.
        self.last_status: int | None = None
        self._outbox: SipRequest | None = None
        self._in_flight: SipRequest | None = None
        self._deadline: float | None = None
        self._binding_until: float | None = None
        self._auth_rounds = 0

    # --- what the driver reads ---------------------------------------------------------------
    @property
    def up(self) -> bool:
        """True while a binding is confirmed (registered, or refreshing it)."""
        return self.state in (RegistrationState.REGISTERED, RegistrationState.REFRESHING)

    def next_request(self) -> SipRequest | None:
        """The request to send now, if any (it becomes the one in flight)."""
        request, self._outbox = self._outbox, None
        if request is not None:
            self._in_flight = request
        return request

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must run next (clock's monotonic time), None for never."""
        return self._deadline

    # --- inputs -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin registering (from idle)."""
        self._begin(RegistrationState.REGISTERING, "start")

    def handle_timer(self) -> None:
        """Refresh or retry once the deadline has come; early calls do nothing."""
        if self._deadline is None or self._clock.monotonic() < self._deadline:
            return
        if self.state is RegistrationState.REGISTERED:
            self._begin(RegistrationState.REFRESHING, "refresh")
        elif self.state is RegistrationState.BACKOFF:
            self._begin(RegistrationState.REGISTERING, "retry")

    def keepalive_lost(self) -> None:
        """The registrar did not answer an OPTIONS: re-REGISTER now instead of at the refresh."""
        if self.state is RegistrationState.REGISTERED:
            self._begin(RegistrationState.REFRESHING, "keep-alive lost")

    def receive_response(self, response: SipResponse | None) -> None:
        """The final response to the request in flight, or None if it timed out."""
        request = self._in_flight
        if request is None:
            return  # nothing in flight (stopped meanwhile): a late answer
        if response is not None and response.status < 200:
            return  # only final responses count; the driver should not pass these
        self._in_flight = None
        if response is not None and response.cseq_number != request.cseq_number:
            response = None  # not an answer to what we sent: as good as none
        self.last_status = None if response is None else response.status
        if self.state is RegistrationState.UNREGISTERING:
            self._after_unregister(response)
        elif response is None:
            self._fail(None, "no answer")
        elif 200 <= response.status < 300:
            self._registered(response)
        elif response.status in AUTH_HEADERS:
            self._challenged(response, self.expires)
        elif response.status == 423:
            self._too_brief(response)
        elif response.status in PERMANENT_FAILURES:
            self._give_up(f"refused with {response.status}")
        else:
            self._fail(response, f"answered {response.status}")

    def stop(self) -> bool:
        """Stop: queue an un-REGISTER (Expires: 0) if a binding may exist, else go idle.

        Returns whether this call queued an un-REGISTER; the driver sends it
        (bounded in time) and calls ``abandon()`` if it gives up waiting. A
        REGISTER in flight may have reached the registrar, so it counts as a
        binding.
        """
        if self.state in (_S.IDLE, _S.UNREGISTERING):
            return False  # nothing to do, or already on it
        now = self._clock.monotonic()
        in_flight = self._in_flight is not None
        bound = self._binding_until is not None and self._binding_until > now
        self._outbox = self._in_flight = None
        self._deadline = None
        if self.state is _S.FAILED or not (bound or in_flight):
            self._set_state(_S.IDLE, "stopped")
            return False
        self._auth_rounds = 0
        self._set_state(_S.UNREGISTERING, "stopping")
        self._queue(0, preemptive=True)
        return True

    def abandon(self) -> None:
        """Forget whatever is in flight and go idle (the un-REGISTER took too long)."""
        self._outbox = self._in_flight = None
        self._deadline = None
        if self.state is not _S.IDLE:
            self._set_state(_S.IDLE, "gave up waiting")

    # --- transitions ----------------------------------------------------------------------------
    def _set_state(self, new: RegistrationState, reason: str) -> None:
        old = self.state
        if new not in _TRANSITIONS[old]:
            raise RuntimeError(f"illegal registration state change {old.value} -> {new.value}")
        self.state = new
        if self.on_change is not None:
            self.on_change(self, old, reason)

    def _begin(self, state: RegistrationState, reason: str) -> None:
        self._auth_rounds = 0
        self._deadline = None
        self._set_state(state, reason)
        self._queue(self.expires, preemptive=True)

    def _queue(
        self, expires: int, credentials: tuple[str, str] | None = None, *, preemptive: bool = False
    ) -> None:
        if credentials is None and preemptive and self._digest is not None:
            # Re-use the last challenge (nc+1) and save the 401 round trip;
            # a registrar that expired the nonce answers stale=true.
            credentials = self._digest.authorize("REGISTER", self.registrar_uri)
        self._cseq += 1
        headers = [("Expires", str(expires)), ("User-Agent", self._user_agent)]
        if credentials is not None:
            headers.append(credentials)
        local = self.local
        self._outbox = build_request(
            "REGISTER",
            self.registrar_uri,
            via=via_value(local.transport, local.host, local.port, self._ids.branch()),
            from_value=f"<{self.aor}>;tag={self._from_tag}",
            to_value=f"<{self.aor}>",
            call_id=self.call_id,
            cseq=self._cseq,
            contact=local.contact,
            headers=headers,
        )

    def _registered(self, response: SipResponse) -> None:
        if self._digest is not None:
            self._digest.accepted()
        granted = granted_expiry(response, self._contact_uri, self.expires)
        if granted <= 0:
            self._fail(response, "registrar kept no binding")
            return
        now = self._clock.monotonic()
        self.granted = granted
        self.failures = 0
        self._binding_until = now + granted
        self._deadline = now + refresh_delay(granted)
        self._set_state(_S.REGISTERED, f"granted {granted} s")

    def _answer(self, response: SipResponse) -> tuple[str, str] | None:
        """Credentials for a 401/407, or None when we cannot or should not answer."""
        self._auth_rounds += 1
        if self._digest is None or self._auth_rounds > MAX_AUTH_ROUNDS:
            return None
        challenges = response.headers.getlist(AUTH_HEADERS[response.status][0])
        return self._digest.respond(response.status, challenges, "REGISTER", self.registrar_uri)

    def _challenged(self, response: SipResponse, expires: int) -> None:
        answer = self._answer(response)
        if answer is None:
            why = "no password configured" if self._digest is None else "credentials refused"
            self._give_up(f"{response.status}: {why}")
            return
        self._queue(expires, answer)

    def _too_brief(self, response: SipResponse) -> None:
        raw = (response.headers.get("Min-Expires") or "").strip()
        minimum = int(raw) if raw.isdigit() else None
        if minimum is None or minimum <= self.expires or minimum > MAX_EXPIRES:
            self._fail(response, "423 without a usable Min-Expires")
            return
        self.expires = minimum  # RFC 3261 §10.2.8: retry with at least Min-Expires
        self._queue(self.expires, preemptive=True)

    def _fail(self, response: SipResponse | None, reason: str) -> None:
        self.failures += 1
        delay = self._backoff.delay(self.failures, self._rng)
        retry_after = _retry_after(response)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        self._deadline = self._clock.monotonic() + delay
        self.granted = None
        self._set_state(_S.BACKOFF, f"{reason}; retry in {delay:.1f} s")

    def _give_up(self, reason: str) -> None:
        self._deadline = None
        self.granted = None
        self._set_state(_S.FAILED, reason)

    def _after_unregister(self, response: SipResponse | None) -> None:
        if response is not None and response.status in AUTH_HEADERS:
            answer = self._answer(response)
            if answer is not None:
                self._queue(0, answer)
                return
        self._binding_until = None
        self.granted = None
        if response is None:
            reason = "un-REGISTER not answered"
        elif response.status < 300:
            reason = "unregistered"
        else:
            reason = f"un-REGISTER answered {response.status}"
        self._set_state(_S.IDLE, reason)
