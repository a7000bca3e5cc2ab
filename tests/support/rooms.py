"""Stand-ins for what a room links, for room tests that need no media."""

from __future__ import annotations

from collections.abc import Callable

from gateway.rooms.room import Leg


class FakeLeg:
    """A participant's leg, as far as the room needs one."""

    async def close(self) -> None:
        return None


class Links:
    """The room's ``connect``: records which pairs of legs are linked now."""

    def __init__(self) -> None:
        self.live: set[frozenset[int]] = set()

    def __call__(self, a: Leg, b: Leg) -> Callable[[], None]:
        key = frozenset((id(a), id(b)))
        self.live.add(key)
        return lambda: self.live.discard(key)
