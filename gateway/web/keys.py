"""Typed keys for what the web app shares (aiohttp AppKey, no module globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from gateway.calls import CallRegistry
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Role
from gateway.settings import Settings
from gateway.store.agents import Agents
from gateway.store.appointments import Appointments


class Lifecycle(Protocol):
    """What the web layer may ask about the node's state."""

    @property
    def ready(self) -> bool:
        """True while new calls are taken."""
        ...

    @property
    def state_name(self) -> str:
        """starting, ready, draining or stopped."""
        ...

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait."""
        ...


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
#: Returns the settings in force now (they change on SIGHUP).
SettingsGetter = Callable[[], Settings]
SETTINGS: web.AppKey[SettingsGetter] = web.AppKey("settings")
CALLS = web.AppKey("calls", CallRegistry)


class AppointmentStore(Protocol):
    """What the web layer uses of the store (``gateway.store.service.StoreService``)."""

    @property
    def appointments(self) -> Appointments:
        """Appointments (503 before the store is open)."""
        ...

    @property
    def agents(self) -> Agents:
        """Agent accounts and sessions."""
        ...


STORE = web.AppKey("store", AppointmentStore)


class Dialer(Protocol):
    """Dial-out into rooms (``bridges.dialout.RoomDialer``; the web layer never imports bridges)."""

    def bridges(self) -> list[str]:
        """The names of the bridges one may dial through now."""
        ...

    async def dial(self, appointment_id: str, bridge: str, target: str, role: Role) -> str:
        """Start a dial-out; its id. NotFound, BadRequest, Unavailable on refusal."""
        ...

    async def cancel(self, appointment_id: str, dial_id: str) -> None:
        """Give up or hang up a dial-out."""
        ...

    def state(self, appointment_id: str, dial_id: str) -> dict[str, Any]:
        """Where a dial-out is now."""
        ...


DIALER = web.AppKey("dialer", Dialer)
DIRECTORY = web.AppKey("directory", RoomDirectory)
