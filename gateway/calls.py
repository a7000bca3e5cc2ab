"""Calls in progress on this node, and the gate new calls pass.

Both edges (the web app for browser calls, the SIP endpoint for SIP calls)
ask ``CallRegistry.admit()`` before they create a call; while the node drains
it raises ``Draining``, which each edge turns into its own 503 with
Retry-After. Drain then waits for ``active`` to reach zero.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway import metrics
from gateway.errors import Draining
from gateway.log import get_logger

log = get_logger(__name__)


class Call(Protocol):
    """What the registry needs of a call, whatever its kind."""

    @property
    def call_id(self) -> str:
        """An opaque id for logs (never a phone number or a name)."""
        ...

    async def hangup(self, reason: str) -> None:
        """End the call now (BYE, close the peer connection ...)."""
        ...


class CallRegistry:
    """Counts calls and refuses new ones while draining."""

    def __init__(self, retry_after: int = 30) -> None:
        self.retry_after = retry_after
        self._calls: dict[str, Call] = {}
        self._accepting = True
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def accepting(self) -> bool:
        """False once draining has begun."""
        return self._accepting

    @property
    def active(self) -> int:
        """Number of calls in progress."""
        return len(self._calls)

    def admit(self) -> None:
        """Raise ``Draining`` when no new call may start here."""
        if not self._accepting:
            metrics.CALLS_REJECTED.labels(reason="draining").inc()
            raise Draining("this node is draining", retry_after=self.retry_after)

    def add(self, call: Call) -> None:
        """A call has started."""
        self._calls[call.call_id] = call
        self._empty.clear()
        metrics.CALLS_ACTIVE.set(len(self._calls))

    def remove(self, call_id: str) -> None:
        """A call has ended; unknown ids are ignored (ending twice is normal)."""
        if self._calls.pop(call_id, None) is not None:
            metrics.CALLS_ACTIVE.set(len(self._calls))
        if not self._calls:
            self._empty.set()

    def stop_accepting(self) -> None:
        """From now on ``admit()`` refuses."""
        self._accepting = False

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no call is left; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def hangup_all(self, reason: str) -> None:
        """End every remaining call; a failing hang-up is logged, not raised."""
        for call in list(self._calls.values()):
            try:
                await call.hangup(reason)
            except Exception:
                metrics.ERRORS.labels(component="calls").inc()
                log.exception("hangup failed", call_id=call.call_id)
            self.remove(call.call_id)
