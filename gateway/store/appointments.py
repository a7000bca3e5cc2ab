"""Appointments: a time window, a language, and an unguessable citizen link.

The citizen's token is 256 random bits, shown once (in the creation answer)
and stored only as its SHA-256, so a copy of the database opens no call.
A link works from ``link_lead`` before the start until the window's end plus
``link_grace``; outside that it gets a clear "expired" or "not yet" answer,
never a stack trace, and a forged token is indistinguishable from a deleted
appointment (404).

For SIP dial-in each appointment also has a room alias (``sip_alias``: 10
lowercase base32 characters, 50 random bits, unique; the room's address is
``sip:<alias>@<dial-in domain>``) and a 6-digit lobby PIN, unique among the
appointments whose windows overlap. Both are stored as they are, not hashed:
agents read them back (GET, the console) to pass them on, and a hash of a
PIN would protect nothing (a million candidates, and a lookup by PIN cannot
use a per-row salt). What limits their use instead: they work only inside
the appointment's window, the PIN only through the lobby with a few attempts
per call and a node-wide cap on wrong PINs, and either only leads into the
waiting room, where an agent decides (unless ``sip.dial_in.admit`` is
``direct``). Neither is logged at info level.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.errors import BadRequest, GatewayError, NotFound, Unavailable
from gateway.log import get_logger
from gateway.store.db import Database

log = get_logger(__name__)

MIN_DURATION, MAX_DURATION = 5, 8 * 60  # minutes
MAX_AHEAD = 366 * 86400.0  # seconds: appointments are booked at most a year ahead
TOKEN_BYTES = 32
ALIAS_LENGTH = 10  # base32 characters: 50 bits
PIN_DIGITS = 6
_ALIAS = re.compile(rf"^[a-z2-7]{{{ALIAS_LENGTH}}}$")
_PIN = re.compile(rf"^[0-9]{{{PIN_DIGITS}}}$")
_CREATE_TRIES = 20


class LinkExpired(GatewayError):
    """The appointment's window is over."""

    http_status = 410
    sip_status = 404
    reason = "Gone"


class LinkNotYet(GatewayError):
    """The appointment's link opens later: at ``opens_at`` (for ``starts_at``), epoch seconds."""

    http_status = 425
    sip_status = 480
    reason = "Too Early"

    def __init__(self, message: str, *, starts_at: float, opens_at: float) -> None:
        super().__init__(message)
        self.starts_at = starts_at
        self.opens_at = opens_at


@dataclass(frozen=True)
class Appointment:
    """One appointment as stored (no token: the store does not have it)."""

    id: str
    starts_at: float
    ends_at: float
    expires_at: float
    language: str
    state: str
    created_by: int | None
    #: The room's SIP user part and its lobby PIN (None: made before dial-in existed).
    sip_alias: str | None = None
    pin: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The public fields, times as ISO 8601 UTC."""
        return {
            "id": self.id,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "expires_at": iso(self.expires_at),
            "language": self.language,
            "state": self.state,
        }


def iso(timestamp: float) -> str:
    """``2026-11-23T14:00:00Z``."""
    moment = dt.datetime.fromtimestamp(round(timestamp), dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def parse_time(text: object) -> float:
    """An ISO 8601 date-time with a time zone as a UNIX timestamp; 400 otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise BadRequest("starts_at must be an ISO 8601 date-time string")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest("starts_at is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise BadRequest("starts_at needs a time zone (e.g. Z or +01:00)")
    return moment.timestamp()


def token_hash(token: str) -> bytes:
    """What the store keeps of a link token."""
    return hashlib.sha256(token.encode()).digest()


def new_alias() -> str:
    """A fresh room alias: ``ALIAS_LENGTH`` characters of lowercase base32."""
    return base64.b32encode(secrets.token_bytes(7)).decode()[:ALIAS_LENGTH].lower()


_ALIAS = re.compile(rf"^[a-z2-7]{{{ALIAS_LENGTH}}}$")


def looks_like_alias(user: str | None) -> bool:
    """Whether ``user`` has the shape of a room alias (a cheap check before a lookup)."""
    return user is not None and _ALIAS.match(user) is not None


def new_pin() -> str:
    """A fresh lobby PIN of ``PIN_DIGITS`` digits (leading zeros kept)."""
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"


_SELECT = (
    "SELECT id, starts_at, ends_at, expires_at, language, state, created_by, sip_alias, pin"
    " FROM appointments"
)
_SELECT_WITH_HASH = (
    "SELECT id, starts_at, ends_at, expires_at, language, state, created_by, sip_alias, pin,"
    " token_hash FROM appointments"
)
# A PIN is taken when an appointment whose window overlaps the new one's has it.
_INSERT = (
    "INSERT INTO appointments (id, starts_at, ends_at, expires_at, language, state, created_by,"
    " sip_alias, pin, token_hash, created_at)"
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM appointments"
    " WHERE pin = ? AND state != 'cancelled' AND expires_at > ? AND starts_at - ? < ?)"
)


def _row(row: Any) -> Appointment:
    return Appointment(
        str(row[0]), float(row[1]), float(row[2]), float(row[3]), str(row[4]), str(row[5]),
        None if row[6] is None else int(row[6]),
        None if row[7] is None else str(row[7]), None if row[8] is None else str(row[8]),
    )  # fmt: skip


class Appointments:
    """Creating and finding appointments."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        languages: tuple[str, ...] = ("de", "en"),
        link_lead: float = 3600.0,
        link_grace: float = 1800.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.languages = languages
        self.link_lead = link_lead
        self.link_grace = link_grace

    async def create(
        self,
        *,
        starts_at: float | None = None,
        duration_min: int = 60,
        language: str | None = None,
        created_by: int | None = None,
    ) -> tuple[Appointment, str]:
        """A new appointment and its citizen token (the only time the token exists)."""
        now = self.clock.time()
        start = now if starts_at is None else starts_at
        if isinstance(duration_min, bool) or not isinstance(duration_min, int):
            raise BadRequest("duration_min must be a whole number of minutes")
        if not MIN_DURATION <= duration_min <= MAX_DURATION:
            raise BadRequest(f"duration_min must be {MIN_DURATION} to {MAX_DURATION}")
        language = language or self.languages[0]
        if language not in self.languages:
            raise BadRequest(f"language must be one of {', '.join(self.languages)}")
        end = start + duration_min * 60
        if end <= now:
            raise BadRequest("the appointment would be over already")
        if start - now > MAX_AHEAD:
            raise BadRequest("starts_at is more than a year ahead")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        for _ in range(_CREATE_TRIES):  # a PIN taken in the window, or (hardly) an alias
            appointment = Appointment(
                "a" + secrets.token_hex(8), start, end, end + self.link_grace, language,
                "scheduled", created_by, new_alias(), new_pin(),
            )  # fmt: skip
            try:
                inserted = await self.db.execute(
                    _INSERT,
                    (
                        appointment.id, appointment.starts_at, appointment.ends_at,
                        appointment.expires_at, appointment.language, appointment.state,
                        appointment.created_by, appointment.sip_alias, appointment.pin,
                        token_hash(token), now,
                        appointment.pin, start - self.link_lead, self.link_lead,
                        appointment.expires_at,
                    ),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                continue
            if inserted:
                return appointment, token
        raise Unavailable("no free dial-in PIN for this window; try again", retry_after=5)

    async def get(self, appointment_id: str) -> Appointment:
        """By id; NotFound if there is none."""
        row = await self.db.fetch_one(_SELECT + " WHERE id = ?", (appointment_id,))
        if row is None:
            raise NotFound("no such appointment")
        return _row(row)

    async def by_token(self, token: str) -> Appointment:
        """The appointment a citizen link opens, if it is open now.

        NotFound for an unknown or malformed token, LinkExpired after the
        window, LinkNotYet more than ``link_lead`` before the start."""
        if not 20 <= len(token) <= 64:
            raise NotFound("no such appointment")
        digest = token_hash(token)
        row = await self.db.fetch_one(_SELECT_WITH_HASH + " WHERE token_hash = ?", (digest,))
        if row is None or not hmac.compare_digest(bytes(row[9]), digest):
            raise NotFound("no such appointment")
        return self._in_window(_row(row))

    def _in_window(self, appointment: Appointment) -> Appointment:
        """``appointment`` if its link works now; LinkExpired / LinkNotYet otherwise."""
        now = self.clock.time()
        if now >= appointment.expires_at or appointment.state == "cancelled":
            raise LinkExpired("this appointment link has expired")
        if now < appointment.starts_at - self.link_lead:
            raise LinkNotYet(
                "this appointment link opens later",
                starts_at=appointment.starts_at,
                opens_at=appointment.starts_at - self.link_lead,
            )
        return appointment

    async def by_sip_alias(self, alias: str) -> Appointment:
        """The appointment whose room address is ``sip:<alias>@...``, if open now
        (the window rules of ``by_token``; case does not matter)."""
        alias = alias.lower()
        if not _ALIAS.match(alias):
            raise NotFound("no such appointment")
        row = await self.db.fetch_one(_SELECT + " WHERE sip_alias = ?", (alias,))
        if row is None:
            raise NotFound("no such appointment")
        return self._in_window(_row(row))

    async def by_pin(self, pin: str) -> Appointment:
        """The appointment a lobby PIN opens now.

        PINs repeat across windows that do not overlap: the one open now wins;
        otherwise LinkNotYet for the next one, LinkExpired for a past one,
        NotFound for none. Two open at once (only after ``link_lead`` was
        raised) is ambiguous and NotFound: a caller must never land in the
        wrong room."""
        if not _PIN.match(pin):
            raise NotFound("no such appointment")
        rows = await self.db.fetch_all(_SELECT + " WHERE pin = ? ORDER BY starts_at", (pin,))
        open_now: list[Appointment] = []
        problems: list[GatewayError] = []
        for row in rows:
            try:
                open_now.append(self._in_window(_row(row)))
            except (LinkExpired, LinkNotYet) as exc:
                problems.append(exc)
        if len(open_now) == 1:
            return open_now[0]
        if open_now:
            log.warning("two open appointments share a PIN; refused", count=len(open_now))
            raise NotFound("no such appointment")
        not_yet = [p for p in problems if isinstance(p, LinkNotYet)]
        if not_yet:
            raise not_yet[0]
        if problems:
            raise problems[-1]
        raise NotFound("no such appointment")

    async def upcoming(self, limit: int = 100) -> list[Appointment]:
        """Appointments whose link still works, soonest first."""
        rows = await self.db.fetch_all(
            _SELECT + " WHERE expires_at > ? ORDER BY starts_at LIMIT ?",
            (self.clock.time(), limit),
        )
        return [_row(row) for row in rows]

    async def set_state(self, appointment_id: str, state: str) -> None:
        """scheduled -> waiting -> in_call -> ended, or cancelled."""
        if state not in ("scheduled", "waiting", "in_call", "ended", "cancelled"):
            raise ValueError(f"unknown appointment state {state}")
        if not await self.db.execute(
            "UPDATE appointments SET state = ? WHERE id = ?", (state, appointment_id)
        ):
            raise NotFound("no such appointment")

    async def purge_expired(self, keep: float = 0.0) -> int:
        """Delete appointments expired more than ``keep`` seconds ago (no personal data
        lingers); the number deleted."""
        return await self.db.execute(
            "DELETE FROM appointments WHERE expires_at < ?", (self.clock.time() - keep,)
        )
