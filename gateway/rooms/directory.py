"""The node's rooms as every kind of leg reaches them.

Browsers join through the signaling socket (``gateway/web/signaling.py``);
everything else (a SIP call dialled in or out, a WHIP publisher, a WHEP
viewer) joins through ``RoomDirectory.join`` with its leg and a callback for
what the room tells it. Sans-IO towards the legs: the directory never
touches a socket; the caller reacts to the events:

* ``{"type": "waiting"}``: the participant is in the waiting room;
* ``{"type": "admitted"}``: an agent let it in (media is linked by the room);
* ``{"type": "rejected"}`` / ``{"type": "ended", ...}``: it is out of the
  room already; the caller ends its leg (BYE, DELETE) and calls ``leave``
  (which forgets it; harmless twice);
* ``peer-joined`` / ``peer-left`` / ``chat`` / ``lobby`` and the rest of
  docs/signaling.md, which a non-browser leg may ignore.

A leg that ends by itself (BYE, RTP timeout, DELETE) calls ``leave``: the
room lives on for the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.log import get_logger
from gateway.rooms.room import Leg, Message, Participant, Role, Room, Rooms

log = get_logger(__name__)

#: Checks that an appointment exists and its window is open now (raises
#: ``NotFound`` / ``LinkExpired`` / ``LinkNotYet``); returns the appointment.
Lookup = Callable[[str], Awaitable[Any]]
EventCallback = Callable[[Message], None]


class RoomDirectory:
    """Where non-browser legs enter and leave appointment rooms."""

    def __init__(self, rooms: Rooms, lookup: Lookup) -> None:
        self.rooms = rooms
        self.lookup = lookup
        self._rooms_of: dict[str, Room] = {}

    async def join(
        self,
        appointment_id: str,
        role: Role,
        leg: Leg,
        *,
        kind: str,
        admitted: bool = False,
        on_event: EventCallback | None = None,
    ) -> Participant:
        """Put ``leg`` into the appointment's room (its waiting room unless ``admitted``).

        Raises ``NotFound`` for an unknown appointment, ``LinkExpired`` /
        ``LinkNotYet`` outside its window, ``Busy`` when the room is full and
        ``Forbidden`` when its call has ended.
        """
        await self.lookup(appointment_id)
        room = self.rooms.get(appointment_id)
        participant = room.join(role, on_event or _ignore, kind=kind, admitted=admitted)
        self._rooms_of[participant.id] = room
        room.set_leg(participant, leg)
        log.info(
            "room: joined", participant=participant.id, kind=kind, role=role.value,
            waiting=participant.presence.value == "waiting",
        )  # fmt: skip
        return participant

    def room_of(self, participant: Participant) -> Room | None:
        """The room ``participant`` joined through the directory (None once it left)."""
        return self._rooms_of.get(participant.id)

    def leave(self, participant: Participant) -> None:
        """The participant's leg ended: out of the room; the others go on (idempotent)."""
        room = self._rooms_of.pop(participant.id, None)
        if room is None:
            return
        room.leave(participant)
        self.rooms.forget_if_empty(room)
        log.info("room: left", participant=participant.id, kind=participant.kind)


def _ignore(_message: Message) -> None:
    return None
