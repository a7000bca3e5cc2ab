"""Bridges: named connectors that turn a room's "add participant" into a call
on another system (SIP today, WHIP later).

A ``Bridge`` is built from one ``bridges:`` entry of the settings. Its one
verb is ``dial(target, role)``: it checks the bridge's limits, starts the
call and returns an ``OutboundParticipant`` at once; what happens next
(trying, ringing, answered, busy, failed ...) arrives as ``DialEvent``s, to
a callback and to any number of ``events()`` iterators. An answered
participant hands out its ``media(kind)`` streams, which the room links to
its other legs through ``gateway.media.router.Router``.

``BridgeRegistry`` keeps the bridges by name and applies a new list on
SIGHUP: new names are built, changed ones reconfigured (calls in progress
keep the configuration they started with), removed ones retired (their
calls run to their end, new dials get 404).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import BadRequest, NotFound, Unavailable
from gateway.log import get_logger
from gateway.media.router import RoutedStream
from gateway.settings import Settings, SipBridgeSettings

log = get_logger(__name__)

#: The ``bridges:`` entries this registry dials through. ``whip`` entries are
#: not calls into a room but pushes of a room to another system; they need a
#: WebRTC leg, which bridges may not import, so ``gateway/web/whip.py`` serves
#: them (docs/decisions.md, "WHIP/WHEP lives in gateway/web").
BridgeSettings = SipBridgeSettings


class DialState(enum.StrEnum):
    """Where a dialled-out participant is; the last five are final for an
    unanswered call, ``ended`` is final for an answered one."""

    TRYING = "trying"  # the request is on its way
    RINGING = "ringing"  # the callee is alerted (180/183)
    ANSWERED = "answered"
    BUSY = "busy"  # 486 / 600
    NO_ANSWER = "no_answer"  # 408 / 480, or answer_timeout passed
    CANCELLED = "cancelled"  # we gave up before the answer (487)
    FAILED = "failed"  # any other refusal; ``status`` says which
    ENDED = "ended"  # an answered call ended (either side, or media timeout)


#: States after which no further event comes.
FINAL_STATES = frozenset(
    {DialState.BUSY, DialState.NO_ANSWER, DialState.CANCELLED, DialState.FAILED, DialState.ENDED}
)


@dataclass(frozen=True, slots=True)
class DialEvent:
    """One step of a dial-out. ``status`` is the SIP status behind it (if any);
    ``reason`` is a short text for logs and the agent's console (never a URI)."""

    state: DialState
    status: int | None = None
    reason: str = ""


DialCallback = Callable[["OutboundParticipant", DialEvent], None]


class UnknownBridge(NotFound):
    """No bridge of that name is configured."""


class BridgeFull(Unavailable):
    """The bridge has ``max_calls`` calls already; refused without dialling."""


class BadTarget(BadRequest):
    """The number or URI to dial is malformed or not allowed on this bridge."""


class DialProgress:
    """The event history of one participant: a callback and async iterators see every event."""

    def __init__(self, callback: Callable[[DialEvent], None] | None = None) -> None:
        self.history: list[DialEvent] = []
        self._callback = callback
        self._changed = asyncio.Event()

    @property
    def state(self) -> DialState:
        """The latest state (``trying`` before the first event)."""
        return self.history[-1].state if self.history else DialState.TRYING

    @property
    def final(self) -> bool:
        """True once a final state was reached."""
        return bool(self.history) and self.history[-1].state in FINAL_STATES

    def emit(self, event: DialEvent) -> bool:
        """Record ``event``; False (and nothing recorded) after a final state."""
        if self.final:
            return False
        self.history.append(event)
        self._changed.set()
        self._changed = asyncio.Event()
        if self._callback is not None:
            try:
                self._callback(event)
            except Exception:  # a listener must not break the call
                log.exception("dial event callback failed")
        return True

    async def events(self) -> AsyncIterator[DialEvent]:
        """Every event from the first, then new ones as they come, until a final one."""
        index = 0
        while True:
            while index < len(self.history):
                event = self.history[index]
                index += 1
                yield event
                if event.state in FINAL_STATES:
                    return
            await self._changed.wait()

    async def wait(self, states: frozenset[DialState], timeout: float | None = None) -> DialState:
        """Wait until the state is one of ``states`` or final; returns it."""
        async with asyncio.timeout(timeout):
            async for event in self.events():
                if event.state in states:
                    return event.state
        return self.state


class OutboundParticipant(Protocol):
    """A dialled-out call as the room sees it."""

    @property
    def participant_id(self) -> str:
        """Opaque id for logs and the room (never the dialled number)."""
        ...

    @property
    def bridge(self) -> str:
        """The bridge's name."""
        ...

    @property
    def role(self) -> str:
        """The room role it joins in (interpreter, agent, guest ...)."""
        ...

    @property
    def state(self) -> DialState:
        """The latest dial state."""
        ...

    @property
    def history(self) -> list[DialEvent]:
        """Every event so far."""
        ...

    def events(self) -> AsyncIterator[DialEvent]:
        """Every event from the first until a final one."""
        ...

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """Wait for the outcome; True if answered (and not yet ended)."""
        ...

    async def wait_state(self, *states: DialState, timeout: float | None = None) -> DialState:
        """Wait until the state is one of ``states`` or final (TimeoutError after ``timeout``)."""
        ...

    async def wait_ended(self, timeout: float | None = None) -> DialState:
        """Wait for a final state and return it."""
        ...

    def media(self, kind: str) -> RoutedStream | None:
        """The negotiated stream of ``kind`` (audio, video) once answered, else None."""
        ...

    async def cancel(self) -> None:
        """Give up before the answer (CANCEL); after it, the same as ``hangup``."""
        ...

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call whatever its state."""
        ...

    async def send_dtmf(self, digits: str) -> None:
        """Send key presses the way the bridge is configured to."""
        ...


class Bridge(Protocol):
    """One configured connector."""

    @property
    def name(self) -> str:
        """The configured name (a metric label)."""
        ...

    @property
    def active(self) -> int:
        """Calls in progress (ringing or answered)."""
        ...

    @property
    def max_calls(self) -> int:
        """The limit for new dials."""
        ...

    async def dial(
        self, target: str, role: str, *, on_event: DialCallback | None = None
    ) -> OutboundParticipant:
        """Start a call to ``target`` (a number or URI, rewritten by the bridge's rules).

        Raises ``BridgeFull``, ``BadTarget``, ``Draining`` or another
        ``GatewayError`` when no request could be sent; later failures are events.
        """
        ...

    def reconfigure(self, config: BridgeSettings, settings: Settings) -> None:
        """New dials use ``config``; calls in progress keep theirs."""
        ...

    def retire(self) -> None:
        """The bridge left the configuration: no new dials, running calls continue."""
        ...

    async def close(self) -> None:
        """Hang up every call of this bridge (node stop)."""
        ...


BridgeFactory = Callable[[BridgeSettings, Settings], Bridge]


class BridgeRegistry:
    """The bridges of a node by name, built by per-type factories."""

    def __init__(self, factories: dict[str, BridgeFactory]) -> None:
        self.factories = factories
        self._bridges: dict[str, Bridge] = {}
        self._retired: list[Bridge] = []

    @property
    def names(self) -> list[str]:
        """The bridges that take new dials, in configuration order."""
        return list(self._bridges)

    def get(self, name: str) -> Bridge:
        """The bridge called ``name``; ``UnknownBridge`` (404) when there is none."""
        bridge = self._bridges.get(name)
        if bridge is None:
            raise UnknownBridge(f"no bridge named {name!r}")
        return bridge

    async def dial(
        self, bridge: str, target: str, role: str, *, on_event: DialCallback | None = None
    ) -> OutboundParticipant:
        """``get(bridge).dial(target, role)``."""
        return await self.get(bridge).dial(target, role, on_event=on_event)

    def apply(self, settings: Settings) -> None:
        """Build, reconfigure and retire bridges to match ``settings.bridges``."""
        wanted = {config.name: config for config in settings.bridges_of(SipBridgeSettings)}
        for name in [n for n in self._bridges if n not in wanted]:
            bridge = self._bridges.pop(name)
            bridge.retire()
            self._retired.append(bridge)
            log.info("bridge removed", bridge=name, calls_active=bridge.active)
        for name, config in wanted.items():
            running = self._bridges.get(name)
            if running is None:
                self._bridges[name] = self.factories[config.type](config, settings)
                log.info("bridge configured", bridge=name, type=config.type)
            else:
                running.reconfigure(config, settings)
        self._retired = [b for b in self._retired if b.active]

    async def close(self) -> None:
        """Hang up every bridge's calls, retired ones included."""
        for bridge in [*self._bridges.values(), *self._retired]:
            await bridge.close()
