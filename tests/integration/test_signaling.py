"""The signaling socket end to end, in process: store, rooms, WebRTC legs, and
aiortc peers playing the citizen's and the agent's browsers on loopback.

Covers docs/signaling.md: hello for both roles, waiting room and admission,
device status in the agent's lobby, offer/answer, media between the two
browsers through the gateway, chat, quality limits, hang-up, bad frames.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway import metrics
from gateway.calls import CallRegistry
from gateway.settings import load_settings
from gateway.store.service import StoreService
from gateway.web import auth, signaling
from tests.support.webapp import agent_session, serve_app
from tests.support.webrtc import BrowserPeer

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    client: TestClient[Any, Any]
    store: StoreService
    calls: CallRegistry
    agent_cookie: str
    csrf: str
    appointment: str
    token: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = load_settings(f"data_dir: {tmp_path}\nwebrtc:\n  ice_addresses: [127.0.0.1]\n")
    served = await serve_app(lambda: settings, signaling.setup)
    cookie, csrf = await agent_session(served.store)
    appointment, token = await served.store.appointments.create()
    yield Rig(served.client, served.store, served.calls, cookie, csrf, appointment.id, token)
    await served.close()


class Socket:
    """One browser page's signaling socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps({"v": 1, **message}))

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        for message in self.seen:
            if message["type"] == kind:
                self.seen.remove(message)
                return dict(message)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if frame.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended waiting for {kind}: {frame}")
            message = json.loads(frame.data)
            assert message["v"] == 1
            if message["type"] == kind:
                return dict(message)
            self.seen.append(message)


async def _socket(rig: Rig, cookie: bool = False) -> Socket:
    headers = {"Cookie": f"{auth.SESSION_COOKIE}={rig.agent_cookie}"} if cookie else {}
    return Socket(await rig.client.ws_connect("/ws", headers=headers))


async def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _media(socket: Socket, peer: BrowserPeer) -> None:
    await socket.send(type="offer", sdp=await peer.offer())
    answer = await socket.expect("answer")
    await peer.accept_answer(answer["sdp"])


async def test_citizen_waits_is_admitted_and_both_see_each_other(rig: Rig) -> None:
    legs_before = metrics.WEBRTC_LEGS_ACTIVE._value.get()
    citizen, agent = await _socket(rig), await _socket(rig, cookie=True)
    await citizen.send(type="hello", role="citizen", token=rig.token)
    welcome = await citizen.expect("welcome")
    assert welcome["role"] == "citizen" and welcome["ice_servers"] == []
    assert "Agent One" not in json.dumps(welcome)  # the agent's name is never shown
    await citizen.expect("waiting")
    await citizen.send(type="device", status={"camera": True, "mic": True, "browser": "x"})
    await agent.send(type="hello", role="agent", appointment=rig.appointment, csrf=rig.csrf)
    await agent.expect("welcome")
    lobby = await agent.expect("lobby")
    (waiting,) = lobby["participants"]
    assert waiting["status"]["camera"] is True
    # no media before admission
    await citizen.send(type="offer", sdp="v=0")
    assert (await citizen.expect("error"))["code"] == "not_admitted"
    await agent.send(type="admit", participant=waiting["id"])
    await citizen.expect("admitted")
    peer_c, peer_a = BrowserPeer(), BrowserPeer()
    try:
        await _media(citizen, peer_c)
        await _media(agent, peer_a)
        await _until(lambda: peer_c.video_frames > 5 and peer_a.video_frames > 5)
        await _until(lambda: peer_c.loud_audio_frames > 5 and peer_a.loud_audio_frames > 5)
        assert rig.calls.active == 2
        await citizen.send(type="chat", text="Guten Tag")
        chat = await agent.expect("chat")
        assert chat["text"] == "Guten Tag" and chat["from"] == "citizen"
        await citizen.send(type="quality", mode="low")
        limits = await citizen.expect("limits")
        assert limits["max_width"] == 320 and limits["max_kbps"] <= 200
        assert (await agent.expect("quality"))["mode"] == "low"
        await agent.send(type="hangup")
        assert (await citizen.expect("ended"))["by"] == "agent"
    finally:
        await citizen.ws.close()
        await agent.ws.close()
        await peer_c.close()
        await peer_a.close()
    await _until(lambda: rig.calls.active == 0)
    await _until(lambda: metrics.WEBRTC_LEGS_ACTIVE._value.get() == legs_before)


async def test_rejected_citizen_is_told_and_removed(rig: Rig) -> None:
    citizen, agent = await _socket(rig), await _socket(rig, cookie=True)
    await citizen.send(type="hello", role="citizen", token=rig.token)
    await citizen.expect("waiting")
    await agent.send(type="hello", role="agent", appointment=rig.appointment, csrf=rig.csrf)
    lobby = await agent.expect("lobby")
    await agent.send(type="reject", participant=lobby["participants"][0]["id"])
    await citizen.expect("rejected")
    assert (await agent.expect("lobby"))["participants"] == []
    await citizen.send(type="admit", participant="p-x")
    assert (await citizen.expect("error"))["code"] in ("forbidden", "not_found")


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"role": "citizen", "token": "x" * 43}, "not_found"),
        ({"role": "citizen", "token": 5}, "bad_message"),
        ({"role": "agent", "appointment": "a1", "csrf": "wrong"}, "unauthorized"),
        ({"role": "admin"}, "bad_message"),
    ],
)
async def test_bad_hellos_get_a_coded_error(rig: Rig, hello: dict[str, Any], code: str) -> None:
    socket = await _socket(rig)
    await socket.send(type="hello", **hello)
    assert (await socket.expect("error"))["code"] == code
    assert rig.calls.active == 0


async def test_bad_frames_keep_the_socket_and_floods_close_it(rig: Rig) -> None:
    socket = await _socket(rig)
    for frame in ("not json", json.dumps([1]), json.dumps({"v": 2, "type": "hello"}),
                  json.dumps({"v": 1, "type": "nope"}), json.dumps({"v": 1, "type": "chat"})):  # fmt: skip
        await socket.ws.send_str(frame)
        error = await socket.expect("error")
        assert error["code"] in ("bad_message", "not_joined")
    for _ in range(200):
        if socket.ws.closed:
            break
        await socket.ws.send_str(json.dumps({"v": 1, "type": "nope"}))
    message = await socket.ws.receive(timeout=5)
    while message.type is aiohttp.WSMsgType.TEXT:
        message = await socket.ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert socket.ws.close_code == 1008


async def test_oversized_frame_closes_the_socket(rig: Rig) -> None:
    socket = await _socket(rig)
    await socket.ws.send_str(json.dumps({"v": 1, "type": "chat", "text": "x" * 70_000}))
    frame = await socket.ws.receive(timeout=5)
    assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert socket.ws.close_code == 1009


async def test_a_test_call_echoes_the_browser_and_ends_on_time(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device test's call (role "test"): no appointment, own media comes back."""
    monkeypatch.setattr(signaling, "TEST_CALL_SECONDS", 4.0)
    legs_before = metrics.WEBRTC_LEGS_ACTIVE._value.get()
    socket, peer = await _socket(rig), BrowserPeer()
    await socket.send(type="hello", role="test")
    welcome = await socket.expect("welcome")
    assert welcome["role"] == "test" and "appointment" not in welcome
    await socket.send(type="chat", text="hello?")  # nothing of a room in a test call
    assert "no meaning in a test call" in (await socket.expect("error"))["message"]
    await _media(socket, peer)
    # What the peer sent comes back to it, decoded there (never at the gateway).
    await _until(lambda: peer.video_frames >= 20 and peer.loud_audio_frames >= 10)
    assert rig.calls.active == 1
    ended = await socket.expect("ended", timeout=10)
    assert ended["reason"] == "test_time_limit"
    assert (await socket.ws.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
    await _until(lambda: rig.calls.active == 0)
    await _until(lambda: metrics.WEBRTC_LEGS_ACTIVE._value.get() == legs_before)
    await peer.close()


async def test_test_calls_are_limited(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signaling, "MAX_TEST_CALLS", 2)
    sockets = [await _socket(rig) for _ in range(3)]
    for socket in sockets:
        await socket.send(type="hello", role="test")
    for socket in sockets[:2]:
        await socket.expect("welcome")
    refused = await sockets[2].expect("error")
    assert refused["code"] == "busy"
    await sockets[0].send(type="hangup")
    await sockets[0].expect("ended")
    await _until(lambda: rig.calls.active == 1)
    late = await _socket(rig)
    await late.send(type="hello", role="test")
    await late.expect("welcome")  # a place became free
    for socket in [*sockets, late]:
        await socket.ws.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_calls_leave_no_file_descriptor_task_or_leg_behind(rig: Rig) -> None:
    """Five appointments in a row through the socket with media (aiortc browsers):
    afterwards the process has the descriptors, tasks and legs it had before."""

    async def one_call(token: str, appointment: str) -> None:
        citizen, agent = await _socket(rig), await _socket(rig, cookie=True)
        await citizen.send(type="hello", role="citizen", token=token)
        await agent.send(type="hello", role="agent", appointment=appointment, csrf=rig.csrf)
        waiting = (await agent.expect("lobby"))["participants"]
        while not waiting:
            waiting = (await agent.expect("lobby"))["participants"]
        await agent.send(type="admit", participant=waiting[0]["id"])
        await citizen.expect("admitted")
        peers = [BrowserPeer(), BrowserPeer()]
        try:
            await _media(citizen, peers[0])
            await _media(agent, peers[1])
            await _until(lambda: all(p.video_frames > 3 for p in peers))
            await citizen.send(type="hangup")
            await agent.expect("ended")
        finally:
            for socket in (citizen, agent):
                await socket.ws.close()
            for peer in peers:
                await peer.close()

    async def settled() -> tuple[int, int]:
        await _until(lambda: rig.calls.active == 0)
        await asyncio.sleep(0.5)  # aiortc's transports finish closing
        return _open_fds(), len(asyncio.all_tasks())

    store = rig.store.appointments
    await one_call(rig.token, rig.appointment)  # the first call warms up what stays
    fds, tasks = await settled()
    legs = metrics.WEBRTC_LEGS_ACTIVE._value.get()
    for _ in range(5):
        appointment, token = await store.create()
        await one_call(token, appointment.id)
    after_fds, after_tasks = await settled()
    assert metrics.WEBRTC_LEGS_ACTIVE._value.get() == legs
    assert after_fds <= fds + 2, f"{after_fds - fds} file descriptors more after five calls"
    assert after_tasks <= tasks, f"{after_tasks - tasks} tasks more after five calls"
