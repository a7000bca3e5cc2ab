"""SIP dial-in against real baresip: by room address and by lobby PIN (RFC 4733 DTMF),
into a real ``RoomDirectory`` whose ``connect`` only records which legs it links.

What is checked is what the room and the caller see: the waiting room (the
agent's lobby lists a ``sip`` participant), admission, the waiting tone in
baresip's own recording, BYE after wrong PINs or a rejection, the status of
every refusal (and Retry-After where there is one, read with a raw SIP
client), and that a hang-up leaves the room, its licence and its RTP ports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridges.sip.dialin import DialInService
from bridges.sip.endpoint import SipEndpoint
from gateway import metrics
from gateway.clock import SystemClock
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.rooms import room as room_module
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Participant, Presence, Role, Room, Rooms
from gateway.settings import load_settings
from gateway.store.appointments import Appointment, Appointments, LinkExpired
from gateway.store.db import Database
from mediacodecs.executor import MediaExecutor
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.rooms import FakeLeg, Links
from tests.support.sip_client import SipTestClient, UdpChannel, channel, sdp_offer

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    sip: SipEndpoint
    service: DialInService
    store: Appointments
    directory: RoomDirectory
    links: Links
    allocator: RtpPortAllocator
    inbox: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.sip.local_address("udp")[1]

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.port}"

    def agent_in(self, appointment: Appointment) -> tuple[Room, Participant]:
        room = self.directory.rooms.get(appointment.id)
        agent = room.join(Role.AGENT, self.inbox.append)
        room.set_leg(agent, FakeLeg())
        return room, agent

    def lobby(self) -> list[dict[str, Any]]:
        lobbies = [m for m in self.inbox if m["type"] == "lobby"]
        return list(lobbies[-1]["participants"]) if lobbies else []

    async def start(self, **dial_in: Any) -> Rig:
        options = "".join(f"\n    {k}: {v}" for k, v in dial_in.items())
        settings = load_settings(
            f"sip:\n  port: {self.port}\n  retry_after: 7\n  dial_in:\n    enabled: true{options}\n"
            "media:\n  rtp_timeout: 10\n"
        )
        await self.service.start(settings)
        return self


def _count(outcome: str) -> float:
    return float(metrics.DIAL_IN.labels(outcome=outcome)._value.get())


@pytest.fixture
async def rig(
    sip: SipEndpoint, executor: MediaExecutor, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    db = await Database.open(tmp_path / "gatewayd.sqlite")
    store = Appointments(db, SystemClock())

    async def lookup(appointment_id: str) -> Appointment:
        appointment = await store.get(appointment_id)
        if time.time() >= appointment.expires_at:
            raise LinkExpired("over")
        return appointment

    links = Links()
    directory = RoomDirectory(Rooms(SystemClock(), links), lookup)
    allocator = RtpPortAllocator(41000, 41999)
    service = DialInService(
        sip, directory, lambda: store, allocator=allocator, executor=lambda: executor
    )
    made: list[Rig] = []

    async def start(**dial_in: Any) -> Rig:
        made.append(Rig(sip, service, store, directory, links, allocator))
        return await made[-1].start(**dial_in)

    yield start
    await service.stop()
    await wait_for(lambda: sip.calls.active == 0)
    assert not service.participants and allocator.available == allocator.capacity
    await db.close()


async def _closed(ua: Baresip) -> str:
    event = await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=10))
    assert isinstance(event, dict)
    return str(event.get("param", ""))


async def test_room_address_waits_is_admitted_and_hanging_up_leaves_the_room(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig()
    appointment, _ = await r.store.create()
    room, agent = r.agent_in(appointment)
    joined = _count("joined")
    ua = baresip("phone", codecs=("PCMA",))
    await in_thread(lambda: ua.dial(r.uri(appointment.sip_alias or "")))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await wait_for(lambda: len(r.lobby()) == 1)
    (waiting,) = r.lobby()
    assert (waiting["kind"], waiting["role"]) == ("sip", "guest")
    assert _count("joined") == joined + 1
    (participant,) = r.service.participants
    assert participant.waiting and participant.media("audio") is not None
    assert len(r.links.live) == 0  # nobody is linked to a waiting caller
    await asyncio.sleep(2.5)  # the waiting tone plays (425 Hz, 1 s of every 5)
    assert participant.player is not None and participant.player.sent > 40
    room.admit(agent, waiting["id"])
    assert not participant.waiting and len(r.links.live) == 1
    sent = participant.player.sent
    await asyncio.sleep(0.5)
    assert participant.player.sent == sent  # admitted: the tone stopped
    await in_thread(ua.hangup)
    await _closed(ua)
    await wait_for(lambda: not r.service.participants)
    assert not room.ended and list(room.participants) == [agent.id]
    assert len(r.links.live) == 0
    assert any(m["type"] == "peer-left" and m["kind"] == "sip" for m in r.inbox)
    wav = await in_thread(lambda: ua.wait_recording(timeout=5))
    assert abs(dominant_frequency(wav) - 425) < 15, "the waiting tone is not in the recording"


async def test_lobby_pin_by_rfc4733_joins_directly_as_configured(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig(admit="direct", role="interpreter")
    appointment, _ = await r.store.create()
    other, _ = await r.store.create()
    room, _agent = r.agent_in(appointment)
    ua = baresip("desk", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(r.uri("lobby")))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(0.5)
    assert appointment.pin and other.pin
    for digit in appointment.pin:
        await in_thread(lambda d=digit: ua.send_dtmf(d))  # type: ignore[misc]
        await asyncio.sleep(0.25)
    await wait_for(lambda: any(m["type"] == "peer-joined" for m in r.inbox), timeout=5)
    (joined,) = [m for m in r.inbox if m["type"] == "peer-joined"]
    assert (joined["kind"], joined["role"]) == ("sip", "interpreter")
    assert r.lobby() == [] and len(r.links.live) == 1
    assert not r.directory.rooms.get(other.id).participants  # the other room saw nobody
    (participant,) = r.service.participants
    assert participant.member is not None and participant.member.presence is Presence.ADMITTED
    await in_thread(ua.hangup)
    await _closed(ua)
    await wait_for(lambda: not room.participants.get(joined["participant"]))
    assert not room.ended


async def test_three_wrong_pins_end_in_bye(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig(pin_attempts=3)
    appointment, _ = await r.store.create()
    wrong = "000000" if appointment.pin != "000000" else "111111"
    bad = _count("bad_pin")
    ua = baresip("guess", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(r.uri("lobby")))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(0.5)
    for entry in (wrong, "12#", wrong):
        for digit in entry:
            await in_thread(lambda d=digit: ua.send_dtmf(d))  # type: ignore[misc]
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)
    await _closed(ua)  # the gateway sent BYE
    assert _count("bad_pin") == bad + 1
    await wait_for(lambda: not r.service.participants)
    assert not r.directory.rooms.get(appointment.id).participants


async def test_refusals_get_their_status(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig()
    over, _ = await r.store.create()
    await r.store.db.execute(
        "UPDATE appointments SET expires_at = ? WHERE id = ?", (time.time() - 1, over.id)
    )
    ua = baresip("caller", codecs=("PCMU",))
    not_found, expired = _count("not_found"), _count("expired")
    await in_thread(lambda: ua.dial(r.uri("zzzzzzzzzz")))
    assert "404" in await _closed(ua)
    await in_thread(lambda: ua.dial(r.uri(over.sip_alias or "")))
    assert "404" in await _closed(ua)
    assert (_count("not_found"), _count("expired")) == (not_found + 1, expired + 1)
    full, _ = await r.store.create()
    room = r.directory.rooms.get(full.id)
    for _ in range(room_module.MAX_PARTICIPANTS):
        room.join(Role.GUEST, lambda m: None)
    await in_thread(lambda: ua.dial(r.uri(full.sip_alias or "")))
    assert "486" in await _closed(ua)
    later, _ = await r.store.create(starts_at=time.time() + 3 * 3600)
    async with channel(lambda: UdpChannel.open("127.0.0.1", r.port)) as ch:
        client = SipTestClient(ch, "127.0.0.1", r.port)
        invite = client.request("INVITE", later.sip_alias or "", body=sdp_offer("127.0.0.1", 9))
        answer = await client.transact(invite)
    assert answer.status == 480
    retry = int(answer.headers.get("Retry-After") or 0)
    assert 2 * 3600 - 60 < retry <= 2 * 3600  # until the link opens (1 h before the start)
    await wait_for(lambda: r.sip.calls.active == 0)


async def test_licences_exhausted_get_503_with_retry_after(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig(max_calls=1)
    appointment, _ = await r.store.create()
    ua = baresip("first", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(r.uri(appointment.sip_alias or "")))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    unavailable = _count("unavailable")
    async with channel(lambda: UdpChannel.open("127.0.0.1", r.port)) as ch:
        client = SipTestClient(ch, "127.0.0.1", r.port)
        for user in (appointment.sip_alias or "", "lobby"):
            invite = client.request("INVITE", user, body=sdp_offer("127.0.0.1", 9))
            answer = await client.transact(invite)
            assert answer.status == 503, answer
            assert answer.headers.get("Retry-After") == "7"
    assert _count("unavailable") == unavailable + 2
    await in_thread(ua.hangup)
    await _closed(ua)
    await wait_for(lambda: not r.service.participants)
    ua2 = baresip("second", codecs=("PCMU",))  # the licence is free again
    await in_thread(lambda: ua2.dial(r.uri(appointment.sip_alias or "")))
    await in_thread(lambda: ua2.wait_event("CALL_ESTABLISHED", timeout=5))
    await in_thread(ua2.hangup)
    await _closed(ua2)


async def test_a_rejected_caller_gets_bye(
    rig: Callable[..., Any], baresip: Callable[..., Baresip]
) -> None:
    r: Rig = await rig()
    appointment, _ = await r.store.create()
    room, agent = r.agent_in(appointment)
    ua = baresip("rejected", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(r.uri(appointment.sip_alias or "")))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await wait_for(lambda: len(r.lobby()) == 1)
    room.reject(agent, r.lobby()[0]["id"])
    await _closed(ua)
    await wait_for(lambda: not r.service.participants)
    assert list(room.participants) == [agent.id] and not room.ended
