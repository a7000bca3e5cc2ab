"""DialProgress and BridgeRegistry (fake bridges: the registry's own logic only)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from bridges.base import (
    BridgeRegistry,
    BridgeSettings,
    DialEvent,
    DialProgress,
    DialState,
    OutboundParticipant,
    UnknownBridge,
)
from gateway.settings import Settings, load_settings


async def test_progress_reaches_the_callback_and_every_iterator() -> None:
    seen: list[DialEvent] = []
    progress = DialProgress(seen.append)
    early: list[DialState] = []

    async def follow() -> None:
        async for event in progress.events():
            early.append(event.state)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    progress.emit(DialEvent(DialState.TRYING))
    progress.emit(DialEvent(DialState.RINGING, 180))
    await asyncio.sleep(0)
    progress.emit(DialEvent(DialState.BUSY, 486))
    assert not progress.emit(DialEvent(DialState.ANSWERED, 200)), "nothing after a final state"
    await asyncio.wait_for(follower, 1)
    assert early == [DialState.TRYING, DialState.RINGING, DialState.BUSY]
    assert [e.state for e in seen] == early
    late = [e.state async for e in progress.events()]  # a late iterator replays the history
    assert late == early
    assert progress.final and progress.state is DialState.BUSY
    assert await progress.wait(frozenset({DialState.ANSWERED})) is DialState.BUSY


async def test_a_failing_callback_does_not_stop_the_events() -> None:
    def broken(_event: DialEvent) -> None:
        raise RuntimeError("listener bug")

    progress = DialProgress(broken)
    assert progress.emit(DialEvent(DialState.TRYING))
    assert progress.state is DialState.TRYING


async def test_waiting_for_an_answer_times_out() -> None:
    progress = DialProgress()
    progress.emit(DialEvent(DialState.TRYING))
    with pytest.raises(TimeoutError):
        await progress.wait(frozenset({DialState.ANSWERED}), timeout=0.05)


@dataclass
class FakeBridge:
    config: BridgeSettings
    active: int = 0
    retired: bool = False
    closed: bool = False
    reconfigured: list[BridgeSettings] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def max_calls(self) -> int:
        return self.config.max_calls

    async def dial(self, target: str, role: str, *, on_event: object = None) -> OutboundParticipant:
        raise NotImplementedError

    def reconfigure(self, config: BridgeSettings, settings: Settings) -> None:
        self.reconfigured.append(config)
        self.config = config

    def retire(self) -> None:
        self.retired = True

    async def close(self) -> None:
        self.closed = True


def _settings(*bridges: str) -> Settings:
    items = "".join(
        f"  - {{name: {b}, type: sip, proxy: p.example, max_calls: 2}}\n" for b in bridges
    )
    return load_settings("bridges:\n" + items if bridges else "")


async def test_registry_builds_reconfigures_and_retires_on_reload() -> None:
    built: list[FakeBridge] = []

    def factory(config: BridgeSettings, _settings: Settings) -> FakeBridge:
        built.append(FakeBridge(config))
        return built[-1]

    registry = BridgeRegistry({"sip": factory})
    registry.apply(_settings("a", "b"))
    assert registry.names == ["a", "b"]
    a, b = built
    b.active = 1  # a call in progress on b
    registry.apply(_settings("a", "c"))
    assert registry.names == ["a", "c"]
    assert len(built) == 3, "a is kept, c is new"
    assert a.reconfigured and not a.retired
    assert b.retired and not b.closed, "a removed bridge's calls keep running"
    with pytest.raises(UnknownBridge) as info:
        registry.get("b")
    assert info.value.http_status == 404
    await registry.close()
    assert a.closed and b.closed and built[2].closed, "close reaches retired bridges with calls"
    registry.apply(_settings())
    assert registry.names == []
