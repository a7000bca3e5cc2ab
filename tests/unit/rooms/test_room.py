"""The room's rules, sans-IO: waiting, admission, chat, device status, hang-up, links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway import metrics
from gateway.clock import FakeClock
from gateway.errors import Forbidden, NotFound
from gateway.rooms.room import Leg, Participant, Presence, Role, Room, Rooms
from tests.support.rooms import FakeLeg


class Inbox(list[dict[str, Any]]):
    def types(self) -> list[str]:
        return [m["type"] for m in self]


def _counter(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def _presence(participant: Participant) -> Presence:
    return participant.presence


@pytest.fixture
def room() -> Room:
    return Room("a1", FakeClock())


def test_citizen_waits_until_admitted_and_the_wait_is_measured(room: Room) -> None:
    waiting_before = _counter("gatewayd_waiting_participants")
    admits_before = _counter("gatewayd_time_to_admit_seconds_count")
    agent_inbox, citizen_inbox = Inbox(), Inbox()
    agent = room.join(Role.AGENT, agent_inbox.append)
    citizen = room.join(Role.CITIZEN, citizen_inbox.append)
    assert citizen_inbox.types() == ["waiting"]
    assert _counter("gatewayd_waiting_participants") == waiting_before + 1
    lobby = agent_inbox[-1]
    assert lobby["type"] == "lobby" and lobby["participants"][0]["id"] == citizen.id
    room.device(citizen, {"camera": False, "mic": True})
    assert agent_inbox[-1]["participants"][0]["status"] == {"camera": False, "mic": True}
    assert isinstance(room.clock, FakeClock)
    room.clock.advance(42)
    room.admit(agent, citizen.id)
    assert citizen_inbox.types()[-1] == "admitted" and _presence(citizen) is Presence.ADMITTED
    assert _counter("gatewayd_waiting_participants") == waiting_before
    assert _counter("gatewayd_time_to_admit_seconds_count") == admits_before + 1
    assert agent_inbox[-1]["participants"] == []


def test_only_agents_admit_and_only_waiting_people(room: Room) -> None:
    citizen = room.join(Role.CITIZEN, Inbox().append)
    other = room.join(Role.CITIZEN, Inbox().append)
    with pytest.raises(Forbidden):
        room.admit(citizen, other.id)
    agent = room.join(Role.AGENT, Inbox().append)
    with pytest.raises(NotFound):
        room.admit(agent, "p-nobody")
    room.admit(agent, citizen.id)
    with pytest.raises(NotFound):
        room.admit(agent, citizen.id)  # not waiting any more


def test_chat_reaches_admitted_people_only_and_is_capped(room: Room) -> None:
    agent_inbox, waiting_inbox = Inbox(), Inbox()
    agent = room.join(Role.AGENT, agent_inbox.append)
    waiting = room.join(Role.CITIZEN, waiting_inbox.append)
    with pytest.raises(Forbidden):
        room.chat(waiting, "hello")
    room.chat(agent, "x" * 5000)
    assert "chat" not in waiting_inbox.types()
    citizen_inbox = Inbox()
    citizen = room.join(Role.CITIZEN, citizen_inbox.append)
    room.admit(agent, citizen.id)
    room.chat(agent, "  Guten Tag  ")
    assert citizen_inbox[-1]["text"] == "Guten Tag" and citizen_inbox[-1]["from"] == "agent"
    room.chat(citizen, "y" * 5000)
    assert len(agent_inbox[-1]["text"]) == 2000


def test_abandoned_and_rejected_are_counted(room: Room) -> None:
    abandoned = _counter("gatewayd_appointments_total", outcome="abandoned")
    rejected = _counter("gatewayd_appointments_total", outcome="rejected")
    agent = room.join(Role.AGENT, Inbox().append)
    leaving = room.join(Role.CITIZEN, Inbox().append)
    room.leave(leaving)
    room.leave(leaving)  # twice is harmless
    inbox = Inbox()
    sent_away = room.join(Role.CITIZEN, inbox.append)
    room.reject(agent, sent_away.id)
    assert inbox.types()[-1] == "rejected"
    assert _counter("gatewayd_appointments_total", outcome="abandoned") == abandoned + 1
    assert _counter("gatewayd_appointments_total", outcome="rejected") == rejected + 1


def test_hangup_ends_it_for_everyone(room: Room) -> None:
    completed = _counter("gatewayd_appointments_total", outcome="completed")
    agent_inbox, citizen_inbox = Inbox(), Inbox()
    agent = room.join(Role.AGENT, agent_inbox.append)
    citizen = room.join(Role.CITIZEN, citizen_inbox.append)
    room.admit(agent, citizen.id)
    room.hangup(citizen)
    room.hangup(citizen)
    assert agent_inbox[-1] == {"type": "ended", "reason": "hangup", "by": "citizen"}
    assert citizen_inbox[-1]["type"] == "ended"
    assert room.ended and not room.participants
    assert _counter("gatewayd_appointments_total", outcome="completed") == completed + 1
    with pytest.raises(Forbidden):
        room.join(Role.CITIZEN, Inbox().append)


def test_legs_are_linked_once_both_are_in_and_unlinked_on_leave() -> None:
    links: list[tuple[Leg, Leg]] = []
    undone: list[int] = []

    def connect(a: Leg, b: Leg) -> Callable[[], None]:
        links.append((a, b))
        return lambda: undone.append(1)

    room = Room("a2", FakeClock(), connect)
    agent = room.join(Role.AGENT, Inbox().append)
    citizen = room.join(Role.CITIZEN, Inbox().append)
    room.set_leg(agent, FakeLeg())
    room.set_leg(citizen, FakeLeg())
    assert links == []  # the citizen still waits
    room.admit(agent, citizen.id)
    assert len(links) == 1
    room.set_leg(citizen, FakeLeg())  # a new leg (ICE restart): relinked
    assert len(links) == 2 and undone == [1]
    room.leave(agent)
    assert undone == [1, 1]


def test_rooms_are_made_on_use_and_forgotten_when_empty() -> None:
    rooms = Rooms(FakeClock())
    room = rooms.get("a1")
    assert rooms.get("a1") is room
    participant = room.join(Role.AGENT, Inbox().append)
    rooms.forget_if_empty(room)
    assert len(rooms) == 1
    room.leave(participant)
    rooms.forget_if_empty(room)
    assert len(rooms) == 0


def test_a_waiting_citizen_who_hangs_up_only_leaves(room: Room) -> None:
    agent_inbox, citizen_inbox = Inbox(), Inbox()
    room.join(Role.AGENT, agent_inbox.append)
    citizen = room.join(Role.CITIZEN, citizen_inbox.append)
    room.hangup(citizen)
    assert citizen_inbox.types()[-1] == "ended"
    assert not room.ended and "ended" not in agent_inbox.types()
    assert agent_inbox[-1] == {"type": "lobby", "participants": [], "in_call": []}
