"""WHIP and WHEP end to end, in process: store, rooms, WebRTC legs, and aiortc
peers on loopback as another vendor's publisher and viewer (docs/whip.md).

The room's ``connect`` is the browser passthrough (``signaling.connect_legs``),
as until the room linker takes over: a publisher and a viewer in one room
get real media between them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import metrics
from gateway.calls import CallRegistry
from gateway.clock import SystemClock
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Role, Rooms
from gateway.settings import Settings, load_settings
from gateway.store.appointments import Appointment, LinkExpired
from gateway.store.service import StoreService
from gateway.web import whip
from gateway.web.keys import STORE
from gateway.web.signaling import connect_legs
from tests.support.aio import wait_for
from tests.support.webapp import serve_app
from tests.support.webrtc import BrowserPeer, _strip_candidates

pytestmark = pytest.mark.integration

TOKEN = "whip-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SDP = {"Content-Type": "application/sdp"}
EXPIRED = "a-expired-one"


@dataclass
class Rig:
    client: TestClient[Any, Any]
    store: StoreService
    calls: CallRegistry
    directory: RoomDirectory
    sessions: whip.WhipSessions
    pushes: Any
    settings: list[Settings]
    appointment: str

    async def post(self, kind: str, sdp: str, appointment: str | None = None) -> Any:
        return await self.client.post(
            f"/{kind}/{appointment or self.appointment}", data=sdp, headers={**AUTH, **SDP}
        )


Factory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[Rig] = []

    async def make(connect_timeout: float = 30.0) -> Rig:
        settings = load_settings(
            f"data_dir: {tmp_path}\napi:\n  tokens: [{TOKEN}]\n"
            f"webrtc:\n  ice_addresses: [127.0.0.1]\n  connect_timeout: {connect_timeout}\n"
        )
        current = [settings]

        def serve_whip(app: web.Application) -> None:
            store = app[STORE]

            async def lookup(appointment_id: str) -> Appointment:
                if appointment_id == EXPIRED:
                    raise LinkExpired("this appointment is over")
                return await store.appointments.get(appointment_id)

            whip.setup(app, RoomDirectory(Rooms(SystemClock(), connect_legs), lookup))

        served = await serve_app(lambda: current[0], serve_whip)
        sessions = served.app[whip.SESSIONS]
        appointment, _token = await served.store.appointments.create()
        rig = Rig(served.client, served.store, served.calls, sessions.directory, sessions,
                  served.app[whip.PUSHES], current, appointment.id)  # fmt: skip
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.client.close()
        await rig.store.stop()


@pytest.fixture
async def rig(make_rig: Factory) -> Rig:
    return await make_rig()


def _legs() -> float:
    return float(metrics.WEBRTC_LEGS_ACTIVE._value.get())


def _directions(sdp: str) -> list[str]:
    return re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)", sdp, re.M)


async def _publish(rig: Rig, peer: BrowserPeer, kind: str, appointment: str | None = None) -> str:
    response = await rig.post(kind, await peer.offer(), appointment)
    assert response.status == 201, await response.text()
    assert response.content_type == "application/sdp"
    assert response.headers["ETag"] and response.headers["Accept-Patch"]
    answer = await response.text()
    await peer.accept_answer(answer)
    return str(response.headers["Location"])


async def test_whip_publisher_is_seen_and_heard_by_a_whep_viewer(rig: Rig) -> None:
    legs_before = _legs()
    publisher, viewer = BrowserPeer(), BrowserPeer(send=False)
    try:
        response = await rig.post("whip", await publisher.offer())
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
        assert location.startswith(f"/whip/{rig.appointment}/")
        answer = await response.text()
        assert set(_directions(answer)) == {"recvonly"}  # a publisher is sent nothing
        await publisher.accept_answer(answer)
        viewing = await _publish(rig, viewer, "whep")
        assert viewing.startswith(f"/whep/{rig.appointment}/")
        assert rig.calls.active == 2 and len(rig.sessions) == 2
        room = rig.directory.rooms.get(rig.appointment)
        assert sorted(p.kind for p in room.participants.values()) == ["whep", "whip"]
        await wait_for(lambda: viewer.video_frames > 10, timeout=20)
        await wait_for(lambda: viewer.loud_audio_frames > 10, timeout=20)
        assert publisher.video_frames == 0 and publisher.audio_frames == 0

        deleted = await rig.client.delete(location, headers=AUTH)
        assert deleted.status == 200
        assert (await rig.client.delete(location, headers=AUTH)).status == 404
        assert [p.kind for p in room.participants.values()] == ["whep"]  # the room lives on
        assert (await rig.client.delete(viewing, headers=AUTH)).status == 200
    finally:
        await publisher.close()
        await viewer.close()
    assert rig.calls.active == 0 and len(rig.sessions) == 0 and len(rig.directory.rooms) == 0
    await wait_for(lambda: _legs() == legs_before)


async def test_refusals_say_why_and_leave_nothing_behind(rig: Rig) -> None:
    legs_before = _legs()
    peer = BrowserPeer()
    offer = await peer.offer()
    try:
        path = f"/whip/{rig.appointment}"
        response = await rig.client.post(path, data=offer, headers=SDP)
        assert response.status == 401 and "Bearer" in response.headers["WWW-Authenticate"]
        wrong = {"Authorization": "Bearer not-the-token-at-all", **SDP}
        assert (await rig.client.post(path, data=offer, headers=wrong)).status == 401
        json_body = {**AUTH, "Content-Type": "application/json"}
        response = await rig.client.post(path, data=offer, headers=json_body)
        assert response.status == 415 and response.headers["Accept-Post"] == "application/sdp"
        assert (await rig.post("whip", offer, "a-no-such-one")).status == 404
        assert (await rig.post("whep", offer, EXPIRED)).status == 410
        for garbage in ("v=0\r\nthis is not sdp\r\n", _no_fingerprint(offer), "x" * 100):
            response = await rig.post("whip", garbage)
            assert response.status == 400, await response.text()
            assert "offer refused" in (await response.json())["detail"]
        response = await rig.client.get(path, headers=AUTH)
        assert response.status == 405
        unknown = f"/whip/{rig.appointment}/no-such-session"
        assert (await rig.client.delete(unknown, headers=AUTH)).status == 404
        assert (await rig.client.delete(unknown)).status == 401
    finally:
        await peer.close()
    assert rig.calls.active == 0 and len(rig.sessions) == 0
    await wait_for(lambda: _legs() == legs_before)


def _no_fingerprint(sdp: str) -> str:
    return re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", sdp)


async def test_preflight_answers_cors_without_a_token(rig: Rig) -> None:
    response = await rig.client.options(f"/whep/{rig.appointment}")
    assert response.status == 204
    assert response.headers["Accept-Post"] == "application/sdp"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "Location" in response.headers["Access-Control-Expose-Headers"]


async def test_trickled_candidates_by_patch_and_what_patch_refuses(rig: Rig) -> None:
    legs_before = _legs()
    publisher, viewer = BrowserPeer(), BrowserPeer(send=False)
    try:
        offer = _strip_candidates(await publisher.offer())
        response = await rig.post("whip", offer)
        assert response.status == 201
        location, etag = response.headers["Location"], response.headers["ETag"]
        await publisher.accept_answer(await response.text())
        ufrag = re.search(r"a=ice-ufrag:(\S+)", offer)
        pwd = re.search(r"a=ice-pwd:(\S+)", offer)
        mid = re.search(r"a=mid:(\S+)", offer)
        assert ufrag and pwd and mid
        lines = [f"a=ice-ufrag:{ufrag.group(1)}", f"a=ice-pwd:{pwd.group(1)}",
                 "m=video 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid.group(1)}"]  # fmt: skip
        lines += [f"a={c}" for c, _mid, _index in publisher.local_candidates()]
        lines.append("a=end-of-candidates")
        fragment = "\r\n".join(lines) + "\r\n"
        frag = {**AUTH, "Content-Type": "application/trickle-ice-sdpfrag"}

        refused = await rig.client.patch(
            location, data=fragment, headers={**frag, "If-Match": '"x"'}
        )
        assert refused.status == 412
        restart = fragment.replace(ufrag.group(1), "newufrag")
        refused = await rig.client.patch(location, data=restart, headers={**frag, "If-Match": etag})
        assert refused.status == 422
        refused = await rig.client.patch(location, data=fragment, headers={**frag, "If-Match": "*"})
        assert refused.status == 422
        refused = await rig.client.patch(location, data=fragment, headers={**AUTH, **SDP})
        assert refused.status == 415

        patched = await rig.client.patch(
            location, data=fragment, headers={**frag, "If-Match": etag}
        )
        assert patched.status == 204, await patched.text()
        await _publish(rig, viewer, "whep")
        await wait_for(lambda: viewer.video_frames > 5, timeout=20)
    finally:
        await publisher.close()
        await viewer.close()
    await rig.sessions.close()
    await wait_for(lambda: _legs() == legs_before)


async def test_a_session_that_never_connects_times_out(make_rig: Factory) -> None:
    rig = await make_rig(connect_timeout=1.0)
    legs_before = _legs()
    peer = BrowserPeer(send=False)
    try:
        response = await rig.post("whep", await peer.offer())  # the answer is never applied
        assert response.status == 201
        location = response.headers["Location"]
        assert rig.calls.active == 1
        await wait_for(lambda: len(rig.sessions) == 0, timeout=10)
        assert (await rig.client.delete(location, headers=AUTH)).status == 404
    finally:
        await peer.close()
    assert rig.calls.active == 0 and len(rig.directory.rooms) == 0
    await wait_for(lambda: _legs() == legs_before)


async def test_the_end_of_the_rooms_call_ends_its_sessions(rig: Rig) -> None:
    legs_before = _legs()
    publisher, viewer = BrowserPeer(), BrowserPeer(send=False)
    try:
        await _publish(rig, publisher, "whip")
        viewing = await _publish(rig, viewer, "whep")
        room = rig.directory.rooms.get(rig.appointment)
        agent = room.join(Role.AGENT, lambda _message: None)
        room.hangup(agent)  # the agent ends the appointment's call for everyone
        await wait_for(lambda: len(rig.sessions) == 0)
        assert (await rig.client.delete(viewing, headers=AUTH)).status == 404
        assert rig.calls.active == 0
    finally:
        await publisher.close()
        await viewer.close()
    await wait_for(lambda: _legs() == legs_before)


async def test_a_whip_bridge_pushes_one_room_into_another(rig: Rig) -> None:
    """Room A's publisher, pushed by a ``whip`` bridge to our own WHIP endpoint for
    room B, is decoded by room B's WHEP viewer."""
    legs_before = _legs()
    other, _token = await rig.store.appointments.create()
    base = str(rig.client.make_url("/whip/"))
    rig.settings[0] = load_settings(
        f"data_dir: {rig.settings[0].data_dir}\napi:\n  tokens: [{TOKEN}]\n"
        "webrtc:\n  ice_addresses: [127.0.0.1]\n"
        f"bridges:\n  - name: loop\n    type: whip\n    url: {base}\n    token: {TOKEN}\n"
        "    max_calls: 1\n"
    )
    publisher, viewer = BrowserPeer(), BrowserPeer(send=False)
    try:
        await _publish(rig, publisher, "whip")
        assert rig.pushes.bridges() == ["loop"]
        push = await rig.pushes.push(rig.appointment, "loop", other.id)
        with pytest.raises(Exception, match="pushes already"):
            await rig.pushes.push(rig.appointment, "loop", other.id)
        with pytest.raises(Exception, match="own origin"):
            await rig.pushes.push(rig.appointment, "loop", "https://elsewhere.example/whip/x")
        await _publish(rig, viewer, "whep", other.id)
        await wait_for(lambda: push.connected, timeout=20)
        await wait_for(lambda: viewer.video_frames > 5, timeout=30)
        await wait_for(lambda: viewer.loud_audio_frames > 5, timeout=20)
        assert len(rig.sessions) == 3  # A's publisher, B's publisher (the push), B's viewer
        await rig.pushes.stop(push)
        await wait_for(lambda: len(rig.sessions) == 2)  # the remote session was DELETEd
    finally:
        await publisher.close()
        await viewer.close()
    await rig.pushes.close()
    await rig.sessions.close()
    assert rig.calls.active == 0
    await wait_for(lambda: _legs() == legs_before)
    await asyncio.sleep(0)
