"""SIP legs get a keyframe now and then even when they never ask."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.webrtc.group import periodic_keyframes


class FakeRoute:
    def __init__(self) -> None:
        self.asked = 0

    def keyframe_requested(self) -> None:
        self.asked += 1


async def test_keyframes_come_on_a_period_until_stopped() -> None:
    route = FakeRoute()
    stop = periodic_keyframes(route, every=0.05)  # type: ignore[arg-type]
    await asyncio.sleep(0.28)
    stop()
    asked: Any = route.asked
    assert 3 <= asked <= 6
    await asyncio.sleep(0.15)
    assert route.asked == asked, "no keyframe after stop"
