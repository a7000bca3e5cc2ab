"""Pushing a room to another system's WHIP endpoint (a ``bridges:`` entry of type ``whip``).

A push is a WebRTC leg that joins the appointment's room as a viewer
(participant kind ``whep``, role guest, admitted) and publishes what the
room sends it to the remote endpoint with RFC 9725: ``POST`` of our offer
(``application/sdp``, every host candidate in it, no trickle), the answer
from the ``201 Created``, and ``DELETE`` of the session resource (its
``Location``) when the push ends: on ``stop``, when the room's call ends,
when the leg fails, or when the node stops.

The remote endpoint is the bridge's ``url``; a ``target`` resolves against
it and must stay on the same origin (no arbitrary URLs from the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import Clock, SystemClock
from gateway.errors import BadRequest, Busy, GatewayError, NotFound, Unavailable
from gateway.log import get_logger
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Message, Participant, Role
from gateway.settings import Settings, WhipBridgeSettings
from gateway.webrtc.leg import LegState, WebRtcLeg

log = get_logger(__name__)

SDP = "application/sdp"


class WhipRefused(GatewayError):
    """The remote WHIP endpoint did not take our offer."""

    http_status = 502
    reason = "Bad Gateway"


class WhipClient:
    """The HTTP half of a WHIP publisher: POST the offer, DELETE the session."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, token: str | None, timeout: float
    ) -> None:
        self.http = http
        self.url = URL(url)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.resource: URL | None = None
        self.etag: str | None = None

    async def publish(self, offer: str) -> str:
        """POST ``offer``; the remote's SDP answer (``WhipRefused`` for anything but 201)."""
        headers = {**self.headers, "Content-Type": SDP}
        try:
            async with self.http.post(
                self.url, data=offer.encode(), headers=headers, timeout=self.timeout
            ) as response:
                body = await response.text()
                if response.status != 201:
                    raise WhipRefused(f"the WHIP endpoint answered {response.status}")
                if response.content_type != SDP:
                    raise WhipRefused(f"the WHIP endpoint answered {response.content_type}")
                location = response.headers.get("Location")
                if not location:
                    raise WhipRefused("the WHIP endpoint's answer has no Location")
                self.resource = response.url.join(URL(location))
                self.etag = response.headers.get("ETag")
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WhipRefused(f"the WHIP endpoint is unreachable: {exc!r}") from None

    async def delete(self) -> None:
        """End the remote session (best effort: a failure is logged)."""
        resource, self.resource = self.resource, None
        if resource is None:
            return
        try:
            async with self.http.delete(
                resource, headers=self.headers, timeout=self.timeout
            ) as response:
                if response.status >= 300 and response.status != 404:
                    log.info("whip push: DELETE refused", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("whip push: DELETE failed", error=repr(exc))


@dataclass(eq=False)
class WhipPush:
    """One room pushed to one remote WHIP endpoint."""

    id: str
    bridge: str
    appointment_id: str
    leg: WebRtcLeg
    client: WhipClient
    pushes: WhipPushes
    participant: Participant | None = None
    ended: bool = False

    @property
    def call_id(self) -> str:
        """``gateway.calls.Call``: an opaque id for logs."""
        return self.leg.leg_id

    @property
    def connected(self) -> bool:
        """ICE and DTLS with the remote are up."""
        return self.leg.state is LegState.CONNECTED

    async def hangup(self, reason: str) -> None:
        """``gateway.calls.Call``: the node ends this push."""
        await self.pushes.stop(self, reason)

    def room_event(self, message: Message) -> None:
        if message.get("type") in ("ended", "rejected"):
            self.pushes.stop_soon(self, "room_ended")

    def leg_state(self, _leg: WebRtcLeg, state: LegState) -> None:
        if state is LegState.CONNECTED:
            participant = self.participant
            room = self.pushes.directory.room_of(participant) if participant else None
            if room is not None and participant is not None:
                room.set_leg(participant, self.leg)  # (re)link now: asks for keyframes
        elif state in (LegState.FAILED, LegState.CLOSED):
            self.pushes.stop_soon(self, "ice_failed" if state is LegState.FAILED else "closed")


class WhipPushes:
    """The node's pushes, by id; one HTTP client session for all of them."""

    def __init__(
        self,
        directory: RoomDirectory,
        settings: Callable[[], Settings],
        calls: CallRegistry,
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.calls = calls
        self.clock = clock or SystemClock()
        self._pushes: dict[str, WhipPush] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    def bridges(self) -> list[str]:
        """The configured ``whip`` bridges' names."""
        return [b.name for b in self.settings().bridges_of(WhipBridgeSettings)]

    def get(self, push_id: str) -> WhipPush:
        """A running push; NotFound when it ended or never was."""
        push = self._pushes.get(push_id)
        if push is None:
            raise NotFound("no such push")
        return push

    def active(self, bridge: str) -> int:
        """Pushes in progress on ``bridge``."""
        return sum(1 for p in self._pushes.values() if p.bridge == bridge)

    async def push(self, appointment_id: str, bridge: str, target: str | None = None) -> WhipPush:
        """Start pushing the appointment's room through ``bridge`` (to ``target`` under its url).

        Raises NotFound (no such bridge or appointment), BadRequest (a target
        off the bridge's origin), Unavailable (``max_calls``, draining, legs),
        WhipRefused (the remote said no or could not be reached).
        """
        settings = self.settings()
        config = next(
            (b for b in settings.bridges_of(WhipBridgeSettings) if b.name == bridge), None
        )
        if config is None:
            raise NotFound(f"no whip bridge named {bridge!r}")
        url = target_url(str(config.url), target)
        if self.active(bridge) >= config.max_calls:
            metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=bridge, outcome="refused").inc()
            raise Unavailable(
                f"bridge {bridge!r} has {config.max_calls} pushes already", retry_after=10
            )
        self.calls.admit()
        await self.directory.lookup(appointment_id)
        try:
            leg = WebRtcLeg(settings.webrtc, clock=self.clock, slots=("audio", "video"),
                            leg_id="whipout-" + secrets.token_hex(6))  # fmt: skip
        except Busy as exc:
            raise Unavailable(exc.message, retry_after=10) from None
        token = config.token.get_secret_value() if config.token is not None else None
        client = WhipClient(self._session(), url, token, config.request_timeout)
        push = WhipPush(secrets.token_urlsafe(12), bridge, appointment_id, leg, client, self)
        leg.on_state.append(push.leg_state)
        try:
            answer = await client.publish(await leg.create_offer())
            await leg.accept_answer(answer)
            push.participant = await self.directory.join(
                appointment_id, Role.GUEST, leg, kind="whep", admitted=True,
                on_event=push.room_event,
            )  # fmt: skip
        except BaseException:
            metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=bridge, outcome="failed").inc()
            push.ended = True
            await client.delete()
            await leg.close()
            raise
        self._pushes[push.id] = push
        self.calls.add(push)
        metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=bridge, outcome="answered").inc()
        metrics.BRIDGE_CALLS_ACTIVE.labels(bridge=bridge).inc()
        log.info("whip push started", call_id=push.call_id, bridge=bridge)
        return push

    def stop_soon(self, push: WhipPush, reason: str) -> None:
        """``stop`` from a callback that cannot await."""
        if push.ended:
            return
        task = asyncio.get_running_loop().create_task(self.stop(push, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, push: WhipPush, reason: str = "stopped") -> None:
        """Leave the room, close the leg, DELETE the remote session (idempotent)."""
        if push.ended:
            return
        push.ended = True
        if self._pushes.pop(push.id, None) is not None:
            self.calls.remove(push.call_id)
            metrics.BRIDGE_CALLS_ACTIVE.labels(bridge=push.bridge).dec()
        if push.participant is not None:
            self.directory.leave(push.participant)
        await push.leg.close()
        await push.client.delete()
        log.info("whip push ended", call_id=push.call_id, reason=reason)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        """Stop every push and close the HTTP client (node stop)."""
        for push in list(self._pushes.values()):
            await self.stop(push, "shutdown")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close()
            self._http = None


def target_url(base: str, target: str | None) -> str:
    """``target`` resolved against the bridge's url, on the same origin only."""
    if not target:
        return base
    origin = URL(base)
    resolved = origin.join(URL(target))
    if (resolved.scheme, resolved.host, resolved.port) != (origin.scheme, origin.host, origin.port):
        raise BadRequest("a whip target must stay on the bridge's own origin")
    return str(resolved)
