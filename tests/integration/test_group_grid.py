"""What a room system sees in a room of three: the others in a grid, a shared screen full size.

Two aiortc "browsers" send solid red and blue VP8 video; the room system is a
real ``MediaStream`` (H.264, as a SIP room system negotiates it) whose RTP
goes to a UDP socket on loopback, where it is decoded again. The picture
must show red left and blue right (``media.sip_layout: grid``), the first
browser's shared screen alone while it shares, the grid again after; in the
``speaker`` layout, one browser's picture fills it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.capabilities import SrtpPolicy
from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.router import Router
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.media.sdp_attributes import Direction
from gateway.media.stream import MediaStream
from gateway.webrtc.group import GroupMedia
from gateway.webrtc.leg import WebRtcLeg
from mediacodecs.executor import MediaExecutor
from tests.support.aio import wait_for
from tests.support.pictures import Rgb, colour_at, decode_rgb, near
from tests.support.webrtc import LEG_SETTINGS, BrowserPeer, peer_to_answering_leg

pytestmark = pytest.mark.integration

H264 = NegotiatedCodec(97, "H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")
RED, BLUE = (255, 0, 0), (0, 0, 255)


@dataclass
class Screen(asyncio.DatagramProtocol):
    """The room system's video input: every RTP packet the gateway sends it."""

    packets: list[bytes] = field(default_factory=list)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not 192 <= data[1] <= 223:  # RTCP aside
            self.packets.append(data)

    def picture(self) -> npt.NDArray[np.uint8] | None:
        """The newest picture decoded from the last second or so of packets."""
        pictures = decode_rgb(self.packets[-400:], H264)
        return pictures[-1] if pictures else None


class RoomSystem:
    """A SIP leg with video only, as the room's legs are (``media(kind)``)."""

    def __init__(self, stream: MediaStream) -> None:
        self.stream = stream

    def media(self, kind: str) -> MediaStream | None:
        return self.stream if kind == "video" else None


def middle(rgb: npt.NDArray[np.uint8], x0: float, x1: float) -> Rgb:
    """Mean colour of a band across the middle of the picture, x as fractions."""
    return colour_at(rgb, x0, 0.42, x1, 0.58)


@dataclass
class Room:
    peers: list[BrowserPeer]
    legs: list[WebRtcLeg]
    system: RoomSystem
    screen: Screen
    router: Router

    def group(self, layout: str) -> GroupMedia:
        return GroupMedia(self.router, [*self.legs, self.system], layout=layout)

    async def shows(self, check: Callable[[npt.NDArray[np.uint8]], bool], timeout: float) -> None:
        """Wait until the newest picture passes ``check`` (fresh packets each time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.screen.packets.clear()
            await asyncio.sleep(0.8)
            picture = self.screen.picture()
            if picture is not None and check(picture):
                return
            if loop.time() > deadline:
                seen = None if picture is None else (middle(picture, 0.05, 0.45),
                                                     middle(picture, 0.55, 0.95))  # fmt: skip
                raise AssertionError(f"the room system's picture never passed: {seen}")


@pytest.fixture
async def room(executor: MediaExecutor) -> AsyncIterator[Room]:
    peers = [BrowserPeer(colour=RED, screen=True), BrowserPeer(colour=BLUE)]
    legs = [WebRtcLeg(LEG_SETTINGS) for _ in peers]
    for peer, leg in zip(peers, legs, strict=True):
        await peer_to_answering_leg(peer, leg)
    await asyncio.wait_for(asyncio.gather(*(leg.connected.wait() for leg in legs)), 15)
    loop = asyncio.get_running_loop()
    screen = Screen()
    transport, _ = await loop.create_datagram_endpoint(lambda: screen, local_addr=("127.0.0.1", 0))
    stream = await MediaStream.open(RtpPortAllocator(41000, 41100), "127.0.0.1", "video")
    stream.start(
        NegotiatedStream(
            index=1,
            kind="video",
            proto="RTP/AVP",
            accepted=True,
            codecs=(H264,),
            remote_address="127.0.0.1",
            remote_port=transport.get_extra_info("sockname")[1],
            direction=Direction.SENDRECV,
            rtcp_mux=True,
            local_port=stream.port,
        ),
        SrtpPolicy.OFF,
        rtp_timeout=None,
    )
    yield Room(peers, legs, RoomSystem(stream), screen, Router(executor))
    stream.close()
    transport.close()
    for leg in legs:
        await leg.close()
    for peer in peers:
        await peer.close()


def _grid(picture: npt.NDArray[np.uint8]) -> bool:
    return near(middle(picture, 0.05, 0.45), RED, 50) and near(
        middle(picture, 0.55, 0.95), BLUE, 50
    )


async def test_a_room_system_sees_both_browsers_and_a_share_alone(room: Room) -> None:
    group = room.group("grid")
    await room.shows(_grid, timeout=10)
    assert group.compositor is not None
    assert room.legs[0].request_keyframe("video")  # the grid's sources were asked
    picture = room.screen.picture()
    assert picture is not None and picture.shape[:2] == (480, 640)  # no size declared
    # A's share takes the whole picture (neither red left nor blue right any more) ...
    await room.peers[0].share()
    await room.shows(lambda p: not near(middle(p, 0.55, 0.95), BLUE, 50), timeout=10)
    # ... and the grid comes back when it ends.
    await room.peers[0].stop_sharing()
    await room.shows(_grid, timeout=10)
    group.close()
    # Nothing is sent once the group is gone.
    await asyncio.sleep(0.3)
    room.screen.packets.clear()
    await asyncio.sleep(0.5)
    assert room.screen.packets == []


async def test_the_speaker_layout_shows_one_picture(room: Room) -> None:
    group = room.group("speaker")
    await room.shows(lambda p: near(middle(p, 0.05, 0.95), RED, 50), timeout=10)
    assert group.compositor is None  # passed through the router, never composed
    group.close()


async def test_a_keyframe_request_from_the_room_system_reaches_the_grid(room: Room) -> None:
    group = room.group("grid")
    await room.shows(_grid, timeout=10)
    assert group.compositor is not None
    sink = room.system.stream

    def keyframes() -> int:  # packets of IDR slices, SPS, or aggregates (SPS+PPS)
        return sum(1 for p in room.screen.packets if p[12] & 0x1F in (5, 7, 24))

    room.screen.packets.clear()
    await asyncio.sleep(0.5)
    assert room.screen.packets and keyframes() == 0, "only delta frames while nobody asks"
    assert sink.on_keyframe_request is not None
    sink.on_keyframe_request(sink)  # what a PLI from the room system does
    await wait_for(lambda: keyframes() > 0, timeout=2)
    group.close()
