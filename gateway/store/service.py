"""The store as a node service: opened at start, purged periodically, closed at stop."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.clock import Clock, SystemClock
from gateway.errors import Unavailable
from gateway.log import get_logger
from gateway.settings import Settings
from gateway.store.agents import Agents
from gateway.store.appointments import Appointments
from gateway.store.db import Database

log = get_logger(__name__)

DB_FILE = "gatewayd.sqlite"
PURGE_INTERVAL = 600.0  # seconds
KEEP_EXPIRED = 86400.0  # seconds an expired appointment stays (for the agent's list)


class StoreService:
    """Owns the database; ``appointments`` and ``agents`` once started."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.db: Database | None = None
        self._appointments: Appointments | None = None
        self._agents: Agents | None = None
        self._purge: asyncio.Task[None] | None = None

    @property
    def appointments(self) -> Appointments:
        """Appointments; 503 before the store is open."""
        if self._appointments is None:
            raise Unavailable("the store is not open yet")
        return self._appointments

    @property
    def agents(self) -> Agents:
        """Agent accounts and sessions; 503 before the store is open."""
        if self._agents is None:
            raise Unavailable("the store is not open yet")
        return self._agents

    def _configure(self, settings: Settings) -> None:
        assert self.db is not None
        config = settings.appointments
        self._appointments = Appointments(
            self.db,
            self.clock,
            languages=tuple(config.languages),
            link_lead=config.link_lead,
            link_grace=config.link_grace,
        )
        if self._agents is None:
            self._agents = Agents(self.db, self.clock)

    async def start(self, settings: Settings) -> None:
        """Open (and migrate) ``data_dir/gatewayd.sqlite``."""
        self.db = await Database.open(settings.data_dir / DB_FILE)
        self._configure(settings)
        self._purge = asyncio.get_running_loop().create_task(self._purge_loop())

    async def reload(self, settings: Settings) -> None:
        """New appointment settings apply to links checked from now on."""
        if self.db is not None:
            self._configure(settings)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                gone = await self.appointments.purge_expired(KEEP_EXPIRED)
                gone += await self.agents.purge_sessions()
            except Exception:  # a failed purge must not end the loop
                log.exception("store purge failed")
                continue
            if gone:
                log.info("store purged", rows=gone)

    async def stop(self) -> None:
        """Close the database."""
        if self._purge is not None:
            self._purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge
            self._purge = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        self._appointments = self._agents = None
