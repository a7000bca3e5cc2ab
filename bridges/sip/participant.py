"""What a dialled-out and a dialled-in SIP call share as room participants.

Both have the shape of ``bridges.base.OutboundParticipant``: an opaque id, a
role, and their ``DialEvent`` history with its waits. ``SipCallParticipant``
holds that part once; ``SipParticipant`` (``bridges.sip.bridge``) and
``DialInParticipant`` (``bridges.sip.dialin_leg``) add how their call is
set up, answered and ended, and when their media may be used.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

from bridges.base import DialEvent, DialProgress, DialState


class SipCallParticipant:
    """The progress of one SIP call as a room participant: id, role, state, events, waits."""

    def __init__(
        self, role: str, id_prefix: str, on_event: Callable[[DialEvent], None] | None = None
    ) -> None:
        self._role = role
        self.participant_id = id_prefix + secrets.token_hex(6)
        self._progress = DialProgress(on_event)

    @property
    def role(self) -> str:
        """The room role the participant joins in."""
        return self._role

    @property
    def state(self) -> DialState:
        """The latest dial state."""
        return self._progress.state

    @property
    def history(self) -> list[DialEvent]:
        """Every event so far."""
        return list(self._progress.history)

    def events(self) -> AsyncIterator[DialEvent]:
        """Every event from the first until a final one."""
        return self._progress.events()

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """Wait for the outcome; True if answered and not yet ended."""
        state = await self._progress.wait(frozenset({DialState.ANSWERED}), timeout)
        return state is DialState.ANSWERED

    async def wait_state(self, *states: DialState, timeout: float | None = None) -> DialState:
        """Wait until the state is one of ``states`` or final; returns it."""
        return await self._progress.wait(frozenset(states), timeout)

    async def wait_ended(self, timeout: float | None = None) -> DialState:
        """Wait for a final state and return it."""
        return await self._progress.wait(frozenset(), timeout)
