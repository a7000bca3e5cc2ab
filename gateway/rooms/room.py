"""One appointment's room: who is in it, who waits, who may see whom.

Sans-IO: participants are given a ``send`` function (the signaling socket's
outbox) and the room only calls it; times come from an injected clock. The
room knows legs only through the ``Leg`` protocol and hands pairs of legs
to an injected ``connect`` function (browser passthrough, later the media
router), so it imports neither WebRTC nor SIP.

Every kind of leg is a participant: a browser (``kind`` "browser"), a SIP
call dialled in or out ("sip"), a WHIP publisher or WHEP viewer ("whip",
"whep"). Each has a role (citizen, agent, interpreter, guardian, counsel,
guest).

Rules: anybody but an agent enters the waiting room and sees nobody until an
agent admits them (a participant the agent dialled out to, or one let in by
configuration, joins admitted); the agent's name is never sent to a citizen;
agents see every waiting participant with live device status; chat reaches
admitted participants only and is never stored; a browser's hang-up ends the
call for all, a SIP or WHIP/WHEP leg that ends just leaves and the room lives
on; a room holds at most ``MAX_PARTICIPANTS``.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import metrics
from gateway.clock import Clock
from gateway.errors import Busy, Forbidden, NotFound

Message = dict[str, Any]
MAX_CHAT = 2000
#: Participants (waiting or admitted) in one room at most.
MAX_PARTICIPANTS = 8
#: What a participant's leg is (shown to agents; never personal data).
KINDS = ("browser", "sip", "whip", "whep")


class Role(enum.Enum):
    """What a participant is in the appointment."""

    CITIZEN = "citizen"
    AGENT = "agent"
    INTERPRETER = "interpreter"
    GUARDIAN = "guardian"
    COUNSEL = "counsel"
    GUEST = "guest"


class Presence(enum.Enum):
    """Where a participant is."""

    WAITING = "waiting"
    ADMITTED = "admitted"
    GONE = "gone"


class Leg(Protocol):
    """A participant's media leg as the room sees it."""

    async def close(self) -> None:
        """End the leg's media."""
        ...


#: Connects two admitted participants' legs; returns a function that undoes it.
Connect = Callable[[Leg, Leg], Callable[[], None]]
#: Connects three or more legs at once (a mix); returns a function that undoes it.
Group = Callable[[list[Leg]], Callable[[], None]]


@dataclass(eq=False)
class Participant:
    """Someone in the room (or its waiting room)."""

    id: str
    role: Role
    send: Callable[[Message], None]
    presence: Presence
    joined_at: float
    device: Message = field(default_factory=dict)
    leg: Leg | None = None
    screen: bool = False
    kind: str = "browser"


def _now_iso(clock: Clock) -> str:
    return dt.datetime.fromtimestamp(round(clock.time()), dt.UTC).isoformat().replace("+00:00", "Z")


class Room:
    """One appointment's participants."""

    def __init__(
        self,
        appointment_id: str,
        clock: Clock,
        connect: Connect | None = None,
        group: Group | None = None,
    ) -> None:
        self.appointment_id = appointment_id
        self.clock = clock
        self.connect = connect
        self.participants: dict[str, Participant] = {}
        self.ended = False
        self.group = group
        self._links: dict[frozenset[str], Callable[[], None]] = {}
        self._grouped: tuple[tuple[str, int], ...] = ()
        self._ungroup: Callable[[], None] | None = None
        self._had_call = False

    # --- joining and leaving -----------------------------------------------------------
    def join(
        self,
        role: Role,
        send: Callable[[Message], None],
        *,
        kind: str = "browser",
        admitted: bool | None = None,
    ) -> Participant:
        """A new participant: agents are in, everybody else waits unless ``admitted``."""
        if self.ended:
            raise Forbidden("this appointment's call has ended")
        if kind not in KINDS:
            raise ValueError(f"unknown participant kind {kind!r}")
        if len(self.participants) >= MAX_PARTICIPANTS:
            raise Busy(f"this appointment's room is full ({MAX_PARTICIPANTS} participants)")
        if admitted is None:
            admitted = role is Role.AGENT
        presence = Presence.ADMITTED if admitted else Presence.WAITING
        participant = Participant(
            "p-" + secrets.token_hex(6), role, send, presence, self.clock.monotonic(), kind=kind
        )
        self.participants[participant.id] = participant
        if presence is Presence.WAITING:
            metrics.WAITING_PARTICIPANTS.inc()
            send({"type": "waiting"})
        elif role is not Role.AGENT:
            self._had_call = True
            self._broadcast(self._joined(participant), but=participant)
        # A joining agent gets the lobby after its welcome, from the caller.
        self._lobby_changed(but=participant)
        return participant

    @staticmethod
    def _joined(participant: Participant) -> Message:
        return {"type": "peer-joined", "participant": participant.id,
                "role": participant.role.value, "kind": participant.kind}  # fmt: skip

    def leave(self, participant: Participant) -> None:
        """The participant's socket closed (or it hung up)."""
        if participant.presence is Presence.GONE:
            return
        if participant.presence is Presence.WAITING:
            metrics.WAITING_PARTICIPANTS.dec()
            metrics.APPOINTMENTS.labels(outcome="abandoned").inc()
        was_in = participant.presence is Presence.ADMITTED
        participant.presence = Presence.GONE
        self.participants.pop(participant.id, None)
        self._unlink(participant)
        self._link_all()  # the others: a group of two becomes a direct link again
        if was_in:
            message = {"type": "peer-left", "participant": participant.id,
                       "role": participant.role.value, "kind": participant.kind}  # fmt: skip
            self._broadcast(message, but=participant)
        self._lobby_changed()

    # --- admission ------------------------------------------------------------------------
    def _waiting(self, agent: Participant, participant_id: str) -> Participant:
        if agent.role is not Role.AGENT or agent.presence is not Presence.ADMITTED:
            raise Forbidden("only an agent in the room may admit or reject")
        target = self.participants.get(participant_id)
        if target is None or target.presence is not Presence.WAITING:
            raise NotFound("nobody by that id is waiting")
        return target

    def admit(self, agent: Participant, participant_id: str) -> Participant:
        """Let a waiting participant in."""
        citizen = self._waiting(agent, participant_id)
        citizen.presence = Presence.ADMITTED
        metrics.WAITING_PARTICIPANTS.dec()
        metrics.TIME_TO_ADMIT.observe(self.clock.monotonic() - citizen.joined_at)
        self._had_call = True
        citizen.send({"type": "admitted"})
        self._broadcast(self._joined(citizen), but=citizen)
        self._lobby_changed()
        self._link_all()
        return citizen

    def reject(self, agent: Participant, participant_id: str) -> None:
        """Send a waiting citizen away."""
        citizen = self._waiting(agent, participant_id)
        metrics.WAITING_PARTICIPANTS.dec()
        metrics.APPOINTMENTS.labels(outcome="rejected").inc()
        citizen.presence = Presence.GONE
        self.participants.pop(citizen.id, None)
        citizen.send({"type": "rejected"})
        self._lobby_changed()

    # --- in the call ----------------------------------------------------------------------
    def set_leg(self, participant: Participant, leg: Leg | None) -> None:
        """The participant's media leg is ready (or gone)."""
        self._unlink(participant)
        participant.leg = leg
        self._link_all()

    def chat(self, sender: Participant, text: str) -> None:
        """Relay a chat line to the other admitted participants (nothing is stored)."""
        if sender.presence is not Presence.ADMITTED:
            raise Forbidden("chat opens when the call starts")
        text = text.strip()[:MAX_CHAT]
        if text:
            message = {"type": "chat", "from": sender.role.value, "text": text,
                       "at": _now_iso(self.clock)}  # fmt: skip
            self._broadcast(message, but=sender)

    def relay(self, sender: Participant, message: Message) -> None:
        """Pass a call-state message (mute, screen) to the other admitted participants."""
        if sender.presence is Presence.ADMITTED:
            self._broadcast({**message, "from": sender.role.value}, but=sender)

    def device(self, participant: Participant, status: Message) -> None:
        """A participant's device status changed (agents see it live)."""
        participant.device = status
        self._lobby_changed()

    def hangup(self, participant: Participant, reason: str = "hangup") -> None:
        """End the call for everyone (an agent or the admitted citizen), or just leave
        (anybody else, and whoever is still waiting)."""
        if self.ended:
            return
        not_in_call = participant.presence is not Presence.ADMITTED
        if not_in_call or participant.role not in (Role.AGENT, Role.CITIZEN):
            # somebody still waiting, or not a party of the appointment: they just leave
            participant.send({"type": "ended", "reason": reason, "by": participant.role.value})
            self.leave(participant)
            return
        self.ended = True
        outcome = "completed" if self._had_call else "abandoned"
        metrics.APPOINTMENTS.labels(outcome=outcome).inc()
        for other in list(self.participants.values()):
            if other.presence is Presence.WAITING:
                metrics.WAITING_PARTICIPANTS.dec()
            other.send({"type": "ended", "reason": reason, "by": participant.role.value})
            other.presence = Presence.GONE
            self._unlink(other)
        self.participants.clear()

    # --- helpers ------------------------------------------------------------------------------
    def _admitted(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.presence is Presence.ADMITTED]

    def _broadcast(self, message: Message, *, but: Participant | None = None) -> None:
        for other in self._admitted():
            if other is not but:
                other.send(message)

    def lobby(self) -> Message:
        """What agents see of the waiting room."""
        waiting = [
            {
                "id": p.id,
                "role": p.role.value,
                "kind": p.kind,
                "waiting_s": round(self.clock.monotonic() - p.joined_at),
                "status": p.device,
            }
            for p in self.participants.values()
            if p.presence is Presence.WAITING
        ]
        in_call = [
            {"id": p.id, "role": p.role.value, "kind": p.kind, "status": p.device}
            for p in self._admitted() if p.role is not Role.AGENT
        ]  # fmt: skip
        return {"type": "lobby", "participants": waiting, "in_call": in_call}

    def tell_agents(self, message: Message) -> None:
        """Something only agents follow (a dial-out's progress)."""
        for agent in self._admitted():
            if agent.role is Role.AGENT:
                agent.send(message)

    def _lobby_changed(self, *, but: Participant | None = None) -> None:
        lobby = self.lobby()
        for agent in self._admitted():
            if agent.role is Role.AGENT and agent is not but:
                agent.send(lobby)

    def _link_all(self) -> None:
        """Two legs: linked directly; three or more: one group (when the room has ``group``)."""
        if self.connect is None:
            return
        ready = [p for p in self._admitted() if p.leg is not None]
        if self.group is not None and len(ready) >= 3:
            members = tuple((p.id, id(p.leg)) for p in ready)
            if members != self._grouped:
                self._dissolve()
                for key in list(self._links):
                    self._links.pop(key)()
                self._grouped = members
                self._ungroup = self.group([p.leg for p in ready if p.leg is not None])
            return
        self._dissolve()
        for index, a in enumerate(ready):
            for b in ready[index + 1 :]:
                key = frozenset((a.id, b.id))
                if key not in self._links:
                    assert a.leg is not None and b.leg is not None
                    self._links[key] = self.connect(a.leg, b.leg)

    def _unlink(self, participant: Participant) -> None:
        for key in [k for k in self._links if participant.id in k]:
            self._links.pop(key)()
        if any(member == participant.id for member, _leg in self._grouped):
            self._dissolve()

    def _dissolve(self) -> None:
        undo, self._ungroup = self._ungroup, None
        self._grouped = ()
        if undo is not None:
            undo()


class Rooms:
    """The rooms of this node, by appointment id."""

    def __init__(
        self, clock: Clock, connect: Connect | None = None, group: Group | None = None
    ) -> None:
        self.clock = clock
        self.connect = connect
        self.group = group
        self._rooms: dict[str, Room] = {}

    def get(self, appointment_id: str) -> Room:
        """The appointment's room, made on first use."""
        room = self._rooms.get(appointment_id)
        if room is None or (room.ended and not room.participants):
            room = Room(appointment_id, self.clock, self.connect, self.group)
            self._rooms[appointment_id] = room
        return room

    def forget_if_empty(self, room: Room) -> None:
        """Drop an empty room."""
        if not room.participants and self._rooms.get(room.appointment_id) is room:
            del self._rooms[room.appointment_id]

    def __len__(self) -> int:
        return len(self._rooms)
