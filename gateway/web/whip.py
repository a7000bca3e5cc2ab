"""WHIP and WHEP: other vendors' WebRTC systems in an appointment room (docs/whip.md).

``POST /whip/{appointment_id}`` (RFC 9725) publishes into the room,
``POST /whep/{appointment_id}`` (draft-ietf-wish-whep) receives from it:
the body is an SDP offer (``application/sdp``), the answer is ``201 Created``
with the SDP answer (every host candidate in it), the session resource in
``Location``, its entity tag in ``ETag`` and the ICE servers as ``Link``
headers. ``PATCH`` on the resource takes trickled candidates
(``application/trickle-ice-sdpfrag``); ``DELETE`` leaves the room. Every
request but the CORS preflight (``OPTIONS``) carries a REST API bearer token
(``api.tokens``, the check of ``gateway/web/api.py``).

Each session is one ``WebRtcLeg`` and one participant of the room (kind
``whip`` or ``whep``, role guest, admitted: a token holder is trusted). A
publisher only sends and a viewer only receives: the gateway answers their
m-lines ``recvonly`` and ``sendonly`` whatever they offered. A session ends
on DELETE, when the room's call ends, when its leg fails (ICE, or not
connected within ``webrtc.connect_timeout``) and when the node stops or
drains (sessions are calls of the ``CallRegistry``).

The outbound direction (a ``bridges:`` entry of type ``whip`` pushing a room
to another system's WHIP endpoint) is ``gateway/webrtc/whip_client.py``;
``setup`` adds it to the app as ``PUSHES``.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import Clock, SystemClock
from gateway.errors import BadRequest, Busy, GatewayError, NotFound, Unavailable
from gateway.log import get_logger
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Message, Participant, Role
from gateway.web.api import authorize
from gateway.web.keys import CALLS, SETTINGS, SettingsGetter
from gateway.webrtc.ice import ice_servers
from gateway.webrtc.leg import LegState, WebRtcLeg
from gateway.webrtc.whip_client import WhipPushes

log = get_logger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_SDP = 60_000
KINDS = ("whip", "whep")
#: What each kind of session does with media, forced onto every offered m-line:
#: a publisher only sends to us, a viewer only receives from us.
_DIRECTIONS = {
    "whip": {"sendrecv": "sendonly", "recvonly": "inactive"},
    "whep": {"sendrecv": "recvonly", "sendonly": "inactive"},
}
_DIRECTION = re.compile(r"^a=(sendrecv|sendonly|recvonly|inactive)(?=\r?$)", re.M)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.M)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
    "Access-Control-Max-Age": "600",
}


class UnprocessablePatch(GatewayError):
    """A PATCH this session does not do (an ICE restart)."""

    http_status = 422
    reason = "Unprocessable Content"


class PreconditionFailed(GatewayError):
    """If-Match does not name this session's entity tag."""

    http_status = 412
    reason = "Precondition Failed"


def restrict_directions(sdp: str, kind: str) -> str:
    """The offer as this kind of session takes it: publishers send, viewers receive."""
    table = _DIRECTIONS[kind]
    return _DIRECTION.sub(lambda m: "a=" + table.get(m.group(1), m.group(1)), sdp)


@dataclass(frozen=True, slots=True)
class Trickle:
    """A ``application/trickle-ice-sdpfrag`` body (RFC 8840), as far as we use it."""

    ufrag: str | None
    pwd: str | None
    #: (candidate line without ``a=``, mid, m-line index) in order.
    candidates: list[tuple[str, str | None, int]]
    end: bool


def parse_sdpfrag(text: str) -> Trickle:
    """Read ufrag/pwd, candidates per media section and end-of-candidates."""
    ufrag = pwd = None
    mid: str | None = None
    index = -1
    candidates: list[tuple[str, str | None, int]] = []
    end = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise BadRequest(f"not an SDP fragment line: {line[:60]!r}")
        if line.startswith("m="):
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line[6:]
            candidates = [(c, mid if i == index else m, i) for c, m, i in candidates]
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            pwd = line[10:]
        elif line.startswith("a=candidate:"):
            candidates.append((line[2:], mid, max(index, 0)))
        elif line == "a=end-of-candidates":
            end = True
    return Trickle(ufrag, pwd, candidates, end)


@dataclass(eq=False)
class WhipSession:
    """One WHIP publisher or WHEP viewer: its resource, leg and participant."""

    kind: str
    resource: str
    appointment_id: str
    leg: WebRtcLeg
    sessions: WhipSessions
    ufrag: str | None = None
    participant: Participant | None = None
    etag: str = field(default_factory=lambda: '"' + secrets.token_hex(8) + '"')

    @property
    def call_id(self) -> str:
        """``gateway.calls.Call``: an opaque id for logs."""
        return self.leg.leg_id

    @property
    def location(self) -> str:
        """The session resource's path."""
        return f"/{self.kind}/{self.appointment_id}/{self.resource}"

    async def hangup(self, reason: str) -> None:
        """``gateway.calls.Call``: the node ends this session (drain, stop)."""
        await self.sessions.end(self, reason)

    def room_event(self, message: Message) -> None:
        """What the room tells this participant: only its end matters."""
        if message.get("type") in ("ended", "rejected"):
            self.sessions.end_soon(self, str(message.get("reason", message["type"])))

    def leg_state(self, leg: WebRtcLeg, state: LegState) -> None:
        """Link media once the transport is up; a failed leg ends the session."""
        if state is LegState.CONNECTED:
            self.sessions.relink(self)
        elif state in (LegState.FAILED, LegState.CLOSED):
            self.sessions.end_soon(self, "ice_failed" if state is LegState.FAILED else "closed")


class WhipSessions:
    """The node's WHIP and WHEP sessions."""

    def __init__(
        self,
        directory: RoomDirectory,
        settings: SettingsGetter,
        calls: CallRegistry,
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.calls = calls
        self.clock = clock or SystemClock()
        self._sessions: dict[str, WhipSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, kind: str, appointment_id: str, offer: str) -> tuple[WhipSession, str]:
        """A new session in the appointment's room; returns it and the SDP answer."""
        self.calls.admit()
        await self.directory.lookup(appointment_id)  # 404 / 410 / 425 before any work
        try:
            leg = WebRtcLeg(
                self.settings().webrtc, clock=self.clock, leg_id=f"{kind}-{secrets.token_hex(6)}"
            )
        except Busy as exc:
            raise Unavailable(exc.message, retry_after=10) from None
        session = WhipSession(kind, secrets.token_urlsafe(18), appointment_id, leg, self)
        session.ufrag = _ufrag(offer)
        leg.on_state.append(session.leg_state)
        try:
            answer = await leg.accept_offer(restrict_directions(offer, kind))
            session.participant = await self.directory.join(
                appointment_id, Role.GUEST, leg, kind=kind, admitted=True,
                on_event=session.room_event,
            )  # fmt: skip
        except BaseException:
            await leg.close()
            raise
        self._sessions[session.resource] = session
        self.calls.add(session)
        metrics.WHIP_SESSIONS_ACTIVE.labels(kind=kind).inc()
        log.info("whip: session opened", call_id=session.call_id, kind=kind,
                 participant=session.participant.id)  # fmt: skip
        return session, answer

    def get(self, kind: str, appointment_id: str, resource: str) -> WhipSession:
        """The session behind a resource path; NotFound (404) when it ended or never was."""
        session = self._sessions.get(resource)
        if session is None or session.kind != kind or session.appointment_id != appointment_id:
            raise NotFound("no such WHIP/WHEP session")
        return session

    async def trickle(self, session: WhipSession, body: str, if_match: str | None) -> None:
        """Apply a PATCH body: trickled candidates (an ICE restart is refused)."""
        if if_match is not None and if_match.strip() == "*":
            raise UnprocessablePatch("ICE restart is not supported; start a new session")
        if if_match is not None and not hmac.compare_digest(if_match.strip(), session.etag):
            raise PreconditionFailed("If-Match does not match this session's ETag")
        fragment = parse_sdpfrag(body)
        if fragment.ufrag is not None and fragment.ufrag != session.ufrag:
            raise UnprocessablePatch("ICE restart is not supported; start a new session")
        for candidate, mid, index in fragment.candidates:
            await session.leg.add_ice_candidate(candidate, mid, None if mid else index)
        if fragment.end:
            await session.leg.add_ice_candidate(None)

    def relink(self, session: WhipSession) -> None:
        """The leg is connected: (re)link it in its room, which asks for keyframes."""
        participant = session.participant
        room = self.directory.room_of(participant) if participant is not None else None
        if room is not None and participant is not None and session.leg.state is LegState.CONNECTED:
            room.set_leg(participant, session.leg)

    def end_soon(self, session: WhipSession, reason: str) -> None:
        """``end`` from a callback that cannot await."""
        if session.resource not in self._sessions:
            return
        task = asyncio.get_running_loop().create_task(self.end(session, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end(self, session: WhipSession, reason: str) -> None:
        """Leave the room, close the leg, forget the resource (idempotent)."""
        if self._sessions.pop(session.resource, None) is None:
            return
        self.calls.remove(session.call_id)
        metrics.WHIP_SESSIONS_ACTIVE.labels(kind=session.kind).dec()
        metrics.WHIP_SESSIONS_ENDED.labels(kind=session.kind, reason=_reason(reason)).inc()
        if session.participant is not None:
            self.directory.leave(session.participant)
        await session.leg.close()
        log.info("whip: session ended", call_id=session.call_id, reason=reason)

    async def close(self) -> None:
        """End every session (node stop)."""
        for session in list(self._sessions.values()):
            await self.end(session, "shutdown")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


_REASONS = ("deleted", "ended", "ice_failed", "closed", "shutdown")


def _reason(reason: str) -> str:
    """A low-cardinality label."""
    return reason if reason in _REASONS else "ended"


def _ufrag(sdp: str) -> str | None:
    match = _UFRAG.search(sdp)
    return match.group(1) if match else None


SESSIONS = web.AppKey("whip_sessions", WhipSessions)
PUSHES = web.AppKey("whip_pushes", WhipPushes)
routes = web.RouteTableDef()
_ENDPOINT = "/{kind:whip|whep}/{appointment_id}"
_RESOURCE = "/{kind:whip|whep}/{appointment_id}/{resource}"


def _cors(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(CORS)
    return response


async def _body(request: web.Request, content_type: str) -> str:
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f"send {content_type}\n", headers={"Accept-Post": content_type, **CORS}
        )
    if request.content_length is not None and request.content_length > MAX_SDP:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SDP, actual_size=request.content_length)
    body = await request.read()
    if len(body) > MAX_SDP:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SDP, actual_size=len(body))
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None


def _links(request: web.Request, user: str, now: float) -> list[str]:
    """RFC 9725 section 4.6: the ICE servers as Link headers."""
    servers = ice_servers(list(request.app[SETTINGS]().webrtc.ice_servers), user=user, now=now)
    links = []
    for server in servers:
        urls = server.urls if isinstance(server.urls, list) else [server.urls]
        for url in urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username and server.credential:
                link += f'; username="{server.username}"; credential="{server.credential}"'
                link += '; credential-type="password"'
            links.append(link)
    return links


@routes.post(_ENDPOINT)
async def create_session(request: web.Request) -> web.StreamResponse:
    """A WHIP publisher's or WHEP viewer's offer: 201 with the answer."""
    authorize(request)
    kind, appointment_id = request.match_info["kind"], request.match_info["appointment_id"][:64]
    offer = await _body(request, SDP)
    sessions = request.app[SESSIONS]
    session, answer = await sessions.open(kind, appointment_id, offer)
    response = web.Response(status=201, text=answer, content_type=SDP)
    response.headers["Location"] = session.location
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = SDPFRAG
    for link in _links(request, session.call_id, sessions.clock.time()):
        response.headers.add("Link", link)
    return _cors(response)


@routes.patch(_RESOURCE)
async def patch_session(request: web.Request) -> web.StreamResponse:
    """Trickled candidates: 204; an ICE restart: 422."""
    authorize(request)
    session = _session(request)
    body = await _body(request, SDPFRAG)
    await request.app[SESSIONS].trickle(session, body, request.headers.get("If-Match"))
    return _cors(web.Response(status=204))


@routes.delete(_RESOURCE)
async def delete_session(request: web.Request) -> web.StreamResponse:
    """Leave the room."""
    authorize(request)
    session = _session(request)
    await request.app[SESSIONS].end(session, "deleted")
    return _cors(web.Response(status=200))


@routes.options(_ENDPOINT)
@routes.options(_RESOURCE)
async def preflight(request: web.Request) -> web.StreamResponse:
    """CORS preflight (no token: browsers send none with it)."""
    headers = {"Accept-Post": SDP} if "resource" not in request.match_info else {
        "Accept-Patch": SDPFRAG}  # fmt: skip
    return _cors(web.Response(status=204, headers=headers))


def _session(request: web.Request) -> WhipSession:
    info = request.match_info
    return request.app[SESSIONS].get(info["kind"], info["appointment_id"], info["resource"])


def setup(
    app: web.Application, directory: RoomDirectory, clock: Clock | None = None
) -> WhipSessions:
    """Serve WHIP/WHEP on ``app`` (after ``build_web_app``) and add the ``whip`` bridges.

    The sessions are ended and the pushes stopped when the app shuts down.
    """
    sessions = WhipSessions(directory, app[SETTINGS], app[CALLS], clock)
    app[SESSIONS] = sessions
    app[PUSHES] = WhipPushes(directory, app[SETTINGS], app[CALLS], clock)
    app.add_routes(routes)

    async def _stop(app: web.Application) -> None:
        await app[PUSHES].close()
        await app[SESSIONS].close()

    app.on_shutdown.append(_stop)
    return sessions
