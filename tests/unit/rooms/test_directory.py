"""Non-browser legs in rooms: dialled in and out, WHIP/WHEP; waiting, leaving, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.errors import Busy, Forbidden, NotFound
from gateway.rooms import room as room_module
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Leg, Presence, Role, Rooms
from tests.support.rooms import FakeLeg, Links


async def _lookup(appointment_id: str) -> Any:
    if appointment_id != "a1":
        raise NotFound("no such appointment")
    return object()


@pytest.fixture
def setup() -> tuple[RoomDirectory, Links]:
    links = Links()
    return RoomDirectory(Rooms(FakeClock(), links), _lookup), links


async def test_a_dialled_in_phone_waits_is_admitted_and_leaving_keeps_the_room(
    setup: tuple[RoomDirectory, Links],
) -> None:
    directory, links = setup
    room = directory.rooms.get("a1")
    agent_inbox: list[dict[str, Any]] = []
    agent = room.join(Role.AGENT, agent_inbox.append)
    room.set_leg(agent, agent_leg := FakeLeg())
    citizen = room.join(Role.CITIZEN, lambda m: None, admitted=True)
    room.set_leg(citizen, FakeLeg())
    phone_events: list[dict[str, Any]] = []
    phone = await directory.join(
        "a1", Role.INTERPRETER, FakeLeg(), kind="sip", on_event=phone_events.append
    )
    assert phone_events == [{"type": "waiting"}] and phone.presence is Presence.WAITING
    waiting = agent_inbox[-1]["participants"]
    assert [(w["id"], w["role"], w["kind"]) for w in waiting] == [(phone.id, "interpreter", "sip")]
    assert len(links.live) == 1  # agent <-> citizen only
    room.admit(agent, phone.id)
    assert phone_events[-1] == {"type": "admitted"}
    assert len(links.live) == 3
    assert any(m["type"] == "peer-joined" and m["kind"] == "sip" for m in agent_inbox)
    directory.leave(phone)  # BYE from the phone: the others go on
    assert len(links.live) == 1 and not room.ended
    assert frozenset((id(agent_leg), id(citizen.leg))) in links.live
    assert agent_inbox[-2]["type"] == "peer-left"
    directory.leave(phone)  # idempotent


async def test_dial_out_joins_admitted_and_its_hangup_only_leaves(
    setup: tuple[RoomDirectory, Links],
) -> None:
    directory, links = setup
    room = directory.rooms.get("a1")
    agent = room.join(Role.AGENT, lambda m: None)
    room.set_leg(agent, FakeLeg())
    events: list[dict[str, Any]] = []
    colleague = await directory.join(
        "a1", Role.GUEST, FakeLeg(), kind="sip", admitted=True, on_event=events.append
    )
    assert colleague.presence is Presence.ADMITTED and len(links.live) == 1
    room.hangup(colleague)
    assert events[-1]["type"] == "ended" and not room.ended and links.live == set()
    room.hangup(agent)  # the agent ends the appointment for all
    assert room.ended


async def test_unknown_full_and_ended_rooms_are_refused(
    setup: tuple[RoomDirectory, Links], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _links = setup
    with pytest.raises(NotFound):
        await directory.join("nope", Role.GUEST, FakeLeg(), kind="sip")
    monkeypatch.setattr(room_module, "MAX_PARTICIPANTS", 2)
    await directory.join("a1", Role.GUEST, FakeLeg(), kind="whip", admitted=True)
    await directory.join("a1", Role.GUEST, FakeLeg(), kind="whep", admitted=True)
    with pytest.raises(Busy):
        await directory.join("a1", Role.GUEST, FakeLeg(), kind="sip")
    with pytest.raises(ValueError, match="unknown participant kind"):
        directory.rooms.get("a1").join(Role.GUEST, lambda m: None, kind="fax")
    room = directory.rooms.get("a1")
    guest = next(iter(room.participants.values()))
    room.hangup(guest)  # a guest leaves; the room goes on
    assert not room.ended and len(room.participants) == 1
    room.ended = True
    with pytest.raises(Forbidden):
        room.join(Role.GUEST, lambda m: None, kind="sip")


class Groups:
    """The room's ``group``: records which sets of legs are grouped now."""

    def __init__(self) -> None:
        self.live: list[frozenset[int]] = []

    def __call__(self, legs: list[Leg]) -> Callable[[], None]:
        key = frozenset(id(leg) for leg in legs)
        self.live.append(key)
        return lambda: self.live.remove(key)


async def test_three_legs_are_one_group_and_two_are_a_pair_again() -> None:
    links, groups = Links(), Groups()
    directory = RoomDirectory(Rooms(FakeClock(), links, groups), _lookup)
    room = directory.rooms.get("a1")
    agent = room.join(Role.AGENT, lambda m: None)
    citizen = room.join(Role.CITIZEN, lambda m: None, admitted=True)
    room.set_leg(agent, FakeLeg())
    room.set_leg(citizen, FakeLeg())
    assert len(links.live) == 1 and groups.live == []
    phone = await directory.join("a1", Role.INTERPRETER, FakeLeg(), kind="sip", admitted=True)
    assert links.live == set(), "the pair gave way to the group"
    assert len(groups.live) == 1 and len(groups.live[0]) == 3
    room.set_leg(citizen, new_leg := FakeLeg())  # an ICE restart: a new leg, a new group
    assert len(groups.live) == 1 and id(new_leg) in groups.live[0]
    directory.leave(phone)
    assert groups.live == [] and len(links.live) == 1
