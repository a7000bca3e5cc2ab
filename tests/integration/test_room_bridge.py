"""Rooms with browsers and a SIP phone dialled out through Kamailio (digest auth).

* video between an aiortc browser (VP8) and baresip, passed through (VP8)
  or transcoded (baresip's avcodec H.264): frames decoded at both ends;
* hold and resume from the phone: the gateway stops sending to it while it
  holds, and goes on after;
* three in a room (two browsers and the phone), then the phone vanishes
  (killed, no BYE): the RTP timeout takes it out and the two browsers talk
  on directly (a pair again, no mix).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from typing import Any

import pytest

from bridges.base import DialState
from bridges.dialout import RoomDialer
from bridges.service import BridgeService
from bridges.sip.bridge import SipParticipant
from gateway.clock import SystemClock
from gateway.media.router import Router
from gateway.media.stream import MediaStream
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Role, Rooms
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.links import MediaLinker
from mediacodecs.executor import MediaExecutor
from tests.integration.test_bridge_sip import USERS, bridge_yaml, settings_for
from tests.integration.test_media_video import frames_displayed, video_stats
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip
from tests.support.kamailio import KamailioServer
from tests.support.webrtc import LEG_SETTINGS, BrowserPeer, peer_to_answering_leg

pytestmark = pytest.mark.integration


async def _browser(**options: Any) -> tuple[BrowserPeer, WebRtcLeg]:
    peer, leg = BrowserPeer(**options), WebRtcLeg(LEG_SETTINGS)
    await peer_to_answering_leg(peer, leg)
    await asyncio.wait_for(leg.connected.wait(), 15)
    return peer, leg


@pytest.mark.parametrize(
    "case", [("VP8", "vp8", "passthrough"), ("H264", "h264", "transcode")], ids=["vp8", "h264"]
)
async def test_video_between_a_browser_and_a_sip_room_system(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
    case: tuple[str, str, str],
) -> None:
    codec, baresip_video, mode = case
    proxy = kamailio(USERS)
    bob = baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",),
        video=baresip_video,
    )  # fmt: skip
    codecs = f"{{audio: [PCMU], video: [{codec}]}}"
    await service.start(settings_for(bridge_yaml("room", proxy, codecs=codecs)))
    peer, leg = await _browser()
    phone = await service.registry.dial("room", "ext-bob", "guest")
    assert await phone.wait_answered(timeout=10), phone.history
    router = Router(executor)
    unlink = MediaLinker(router)(leg, phone)
    video_routes = [r for r in router.routes() if r.source.kind == "video"]
    assert len(video_routes) == 2
    await asyncio.sleep(3.0)
    before_browser, before_phone = peer.video_frames, frames_displayed(await video_stats(bob))
    await asyncio.sleep(2.0)
    assert peer.video_frames > before_browser + 10, "the browser decodes the phone's video"
    shown = frames_displayed(await video_stats(bob))
    assert shown > before_phone + 10, "the phone displays the browser's video"
    assert {r.mode for r in video_routes} == {mode}
    unlink()
    await phone.hangup("done")
    await leg.close()
    await peer.close()


async def test_hold_and_resume_from_the_phone(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    await service.start(settings_for(bridge_yaml("desk", proxy)))
    peer, leg = await _browser(video=False)
    phone = await service.registry.dial("desk", "ext-bob", "guest")
    assert await phone.wait_answered(timeout=10)
    router = Router(executor)
    unlink = MediaLinker(router)(leg, phone)
    to_phone = next(r for r in router.routes() if isinstance(r.sink, MediaStream))

    async def sent_in(seconds: float) -> int:
        before = to_phone.stats.transcoded_in
        await asyncio.sleep(seconds)
        return to_phone.stats.transcoded_in - before

    assert await sent_in(1.0) > 30
    await in_thread(bob.hold)
    await asyncio.sleep(0.5)
    assert await sent_in(1.0) == 0, "nothing goes to a phone that holds the call"
    assert phone.state is DialState.ANSWERED
    await in_thread(bob.resume)
    await asyncio.sleep(0.5)
    assert await sent_in(1.0) > 30, "media flows again after resume"
    unlink()
    await phone.hangup("done")
    await leg.close()
    await peer.close()


async def test_a_vanished_phone_leaves_and_the_browsers_talk_on(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    await service.start(settings_for(bridge_yaml("desk", proxy), rtp_timeout=3))
    linker = MediaLinker(Router(executor))
    rooms = Rooms(SystemClock(), linker, linker.group)

    async def lookup(appointment_id: str) -> object:
        return appointment_id

    directory = RoomDirectory(rooms, lookup)
    dialer = RoomDialer(lambda: service.registry, directory)
    room = rooms.get("a1")
    (agent_peer, agent_leg), (citizen_peer, citizen_leg) = [
        await _browser(tone_hz=440),
        await _browser(tone_hz=700),
    ]
    agent = room.join(Role.AGENT, lambda m: None)
    citizen = room.join(Role.CITIZEN, lambda m: None, admitted=True)
    room.set_leg(agent, agent_leg)
    room.set_leg(citizen, citizen_leg)
    dial_id = await dialer.dial("a1", "desk", "ext-bob", Role.INTERPRETER)
    await wait_for(lambda: len(room.participants) == 3, timeout=10)
    assert room._ungroup is not None, "three legs: one group"
    await wait_for(lambda: agent_peer.strength(1000) > 0.2, timeout=10)  # the phone, mixed

    assert bob.proc is not None
    bob.proc.send_signal(signal.SIGKILL)  # no BYE: only silence
    dial = dialer.dials[dial_id]
    assert isinstance(dial.call, SipParticipant)
    assert await dial.call.wait_ended(timeout=10) is DialState.ENDED
    await wait_for(lambda: len(room.participants) == 2, timeout=5)
    assert room._ungroup is None and len(room._links) == 1, "a pair again"
    await asyncio.sleep(2.0)
    assert agent_peer.strength(700) > 0.5 and citizen_peer.strength(440) > 0.5
    frames = agent_peer.video_frames
    await asyncio.sleep(1.0)
    assert agent_peer.video_frames > frames + 10, "the video goes on"
    room.hangup(agent)
    for closable in (agent_leg, citizen_leg):
        await closable.close()
    for peer in (agent_peer, citizen_peer):
        await peer.close()


def displayed_size(raw: str) -> tuple[int, int]:
    """The size of the last picture baresip displayed (``vidisp: fakevideo W x H``)."""
    found = re.search(r"vidisp: \S+ (\d+) x (\d+)", raw)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


async def test_a_shared_screen_replaces_the_camera_for_a_sip_room_system(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    """The browser's camera is 320x240, its "screen" 640x360: baresip shows the one
    the browser shares, then the camera again, in one continuous stream."""
    proxy = kamailio(USERS)
    bob = baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), video="vp8"
    )
    codecs = "{audio: [PCMU], video: [VP8]}"
    await service.start(settings_for(bridge_yaml("room", proxy, codecs=codecs)))
    peer, leg = await _browser(screen=True)
    assert leg.attached() == ["audio", "video", "screen"]
    phone = await service.registry.dial("room", "ext-bob", "guest")
    assert await phone.wait_answered(timeout=10), phone.history
    unlink = MediaLinker(Router(executor))(leg, phone)

    async def shown() -> tuple[int, int]:
        await asyncio.sleep(2.0)
        return displayed_size((await video_stats(bob)).raw)

    assert await shown() == (320, 240), "the camera first"
    await peer.share(640, 360)
    assert await shown() == (640, 360), "the shared screen"
    assert leg.sharing()
    await peer.stop_sharing()
    assert await shown() == (320, 240), "the camera again"
    unlink()
    await phone.hangup("done")
    await leg.close()
    await peer.close()
