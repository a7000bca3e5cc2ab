"""Dial-out into a room: an agent (console or REST API) adds a participant through a bridge.

``RoomDialer.dial`` checks the appointment, dials through the named bridge
and follows the call: every progress step (trying, ringing, answered, busy,
no answer, cancelled, failed, ended) goes to the room's agents as
``{"type": "dial", "id", "bridge", "role", "state", "status"}`` (never the
number or URI: the agent who typed it has it); once answered the call joins
the room admitted (the agent asked for it) and its media is linked by the
room; when it ends it leaves, and the room lives on. ``cancel`` gives up a
ringing call or hangs up an answered one. The web layer knows this only
through ``gateway.web.keys.Dialer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from bridges.base import BridgeRegistry, DialEvent, DialState, OutboundParticipant
from gateway.errors import NotFound
from gateway.log import get_logger
from gateway.media.router import RoutedStream
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Message, Participant, Role

log = get_logger(__name__)


class SipLeg:
    """A dialled-out call as a room leg: its streams for the linker, close = hang up."""

    def __init__(self, participant: OutboundParticipant) -> None:
        self.participant = participant

    def media(self, kind: str) -> RoutedStream | None:
        """The call's stream of ``kind`` (audio, video)."""
        return self.participant.media(kind)

    async def close(self) -> None:
        """Hang up."""
        await self.participant.hangup("left the room")


@dataclass(eq=False)
class Dial:
    """One dial-out of a room."""

    id: str
    appointment_id: str
    bridge: str
    role: Role
    call: OutboundParticipant
    member: Participant | None = None
    task: asyncio.Task[None] | None = None
    history: list[str] = field(default_factory=list)


class RoomDialer:
    """Dial-outs of the node's rooms (``gateway.web.keys.Dialer``)."""

    def __init__(
        self, registry: Callable[[], BridgeRegistry | None], directory: RoomDirectory
    ) -> None:
        self._registry = registry
        self.directory = directory
        self.dials: dict[str, Dial] = {}

    def bridges(self) -> list[str]:
        """The names of the bridges one may dial through now."""
        registry = self._registry()
        return list(registry.names) if registry is not None else []

    async def dial(self, appointment_id: str, bridge: str, target: str, role: Role) -> str:
        """Start a dial-out; returns its id. Raises NotFound/LinkExpired for the
        appointment, ``UnknownBridge`` (404), ``BadTarget`` (400), ``BridgeFull`` (503)."""
        await self.directory.lookup(appointment_id)
        registry = self._registry()
        if registry is None:
            raise NotFound("this node has no bridges")
        dial_id = "d-" + secrets.token_hex(6)
        room = self.directory.rooms.get(appointment_id)

        def progress(_call: OutboundParticipant, event: DialEvent) -> None:
            dial = self.dials.get(dial_id)
            if dial is not None:
                dial.history.append(event.state.value)
            room.tell_agents({"type": "dial", "id": dial_id, "bridge": bridge, "role": role.value,
                              "state": event.state.value, "status": event.status})  # fmt: skip

        call = await registry.dial(bridge, target, role.value, on_event=progress)
        dial = self.dials[dial_id] = Dial(dial_id, appointment_id, bridge, role, call)
        dial.history = [e.state.value for e in call.history]
        dial.task = asyncio.get_running_loop().create_task(self._follow(dial))
        log.info("dial-out started", dial=dial_id, bridge=bridge, role=role.value)
        return dial_id

    async def cancel(self, appointment_id: str, dial_id: str) -> None:
        """Give up a ringing call or hang up an answered one (NotFound if unknown)."""
        dial = self.dials.get(dial_id)
        if dial is None or dial.appointment_id != appointment_id:
            raise NotFound("no such dial-out in this appointment")
        if dial.call.state is DialState.ANSWERED:
            await dial.call.hangup("hung up by the agent")
        else:
            await dial.call.cancel()

    def state(self, appointment_id: str, dial_id: str) -> Message:
        """Where a dial-out is now."""
        dial = self.dials.get(dial_id)
        if dial is None or dial.appointment_id != appointment_id:
            raise NotFound("no such dial-out in this appointment")
        return {"id": dial.id, "bridge": dial.bridge, "role": dial.role.value,
                "state": dial.call.state.value, "history": list(dial.history)}  # fmt: skip

    async def close(self) -> None:
        """Hang up every dial-out (the node stops)."""
        for dial in list(self.dials.values()):
            with contextlib.suppress(Exception):
                await dial.call.hangup("node stopping")
            if dial.task is not None:
                dial.task.cancel()

    async def _follow(self, dial: Dial) -> None:
        call = dial.call
        try:
            if await call.wait_answered():
                leg = SipLeg(call)

                def room_event(message: Message) -> None:
                    if message.get("type") in ("ended", "rejected"):
                        asyncio.get_running_loop().create_task(call.hangup("room ended"))

                try:
                    dial.member = await self.directory.join(
                        dial.appointment_id, dial.role, leg, kind="sip", admitted=True,
                        on_event=room_event,
                    )  # fmt: skip
                except Exception as exc:  # the room ended or filled while it rang
                    log.info("dial-out answered but not joined", dial=dial.id, reason=str(exc))
                    await call.hangup("room not available")
            await call.wait_ended()
        finally:
            if dial.member is not None:
                self.directory.leave(dial.member)
            # Keep the finished dial a while for GET; forget it after a minute.
            loop = asyncio.get_running_loop()
            loop.call_later(60.0, self.dials.pop, dial.id, None)
