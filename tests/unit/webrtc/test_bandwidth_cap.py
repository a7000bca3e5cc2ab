"""A browser's video to a SIP leg stays under the bandwidth the SIP side declared."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.media.negotiation import NegotiatedStream
from gateway.settings import WebRtcSettings
from gateway.webrtc.group import bandwidth_cap
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.port import WebRtcPort


@dataclass
class Sink:
    negotiated: NegotiatedStream | None
    kind: str = "video"

    def send_rtp(self, data: bytes | bytearray) -> bool:
        return True

    def switch_source(self) -> None:
        return None

    def request_keyframe(self) -> None:
        return None


def _sink(bandwidth: int | None) -> Sink:
    stream = NegotiatedStream(
        index=1, kind="video", proto="RTP/AVP", accepted=True, remote_bandwidth=bandwidth
    )
    return Sink(stream)


async def test_the_declared_bandwidth_is_told_to_the_browser_again_and_again() -> None:
    told: list[tuple[str, int]] = []

    class Leg(WebRtcLeg):
        def send_bitrate_estimate(self, slot: str, bitrate: int) -> bool:
            told.append((slot, bitrate))
            return True

    leg = Leg(WebRtcSettings())
    port = WebRtcPort(leg, "video")
    stop = bandwidth_cap(port, _sink(384_000), every=0.05)
    assert told == [("video", 384_000)], "at once"
    await asyncio.sleep(0.18)
    stop()
    count = len(told)
    assert count >= 3 and set(told) == {("video", 384_000)}
    await asyncio.sleep(0.1)
    assert len(told) == count, "nothing after stop"
    assert bandwidth_cap(port, _sink(None))() is None  # no declaration: nothing to cap
    assert len(told) == count
    port.close()
    await leg.close()
