"""The node's media plane as a ``gateway.app.Service``: one codec executor and one router.

Rooms link their legs through ``linker`` (``gateway.webrtc.links.MediaLinker``
or any ``connect``), which gets the router when the service starts.
"""

from __future__ import annotations

from typing import Protocol

from gateway.log import get_logger
from gateway.media.router import Router
from gateway.settings import Settings
from mediacodecs.executor import MediaExecutor

log = get_logger(__name__)


class RouterUser(Protocol):
    """Something that needs the router once it exists (and the rooms' video layout)."""

    router: Router | None
    sip_layout: str


class MediaService:
    """Starts the executor (``media.codec_threads`` workers, 0 = one per core) and the
    router (``media.opus_complexity``, ``media.playout_grid``); tells the users the
    room systems' layout (``media.sip_layout``, also on reload)."""

    def __init__(self, *users: RouterUser) -> None:
        self.users = users
        self.executor: MediaExecutor | None = None
        self.router: Router | None = None

    async def start(self, settings: Settings) -> None:
        media = settings.media
        self.executor = MediaExecutor(media.codec_threads or None)
        self.router = Router(
            self.executor, opus_complexity=media.opus_complexity, playout_grid=media.playout_grid
        )
        for user in self.users:
            user.router = self.router
            user.sip_layout = media.sip_layout
        log.info("media plane ready", codec_workers=self.executor.workers)

    async def reload(self, settings: Settings) -> None:
        """A new ``media.sip_layout`` applies to rooms that form from now on; worker
        count changes take effect on restart."""
        for user in self.users:
            user.sip_layout = settings.media.sip_layout

    async def stop(self) -> None:
        for user in self.users:
            user.router = None
        if self.router is not None:
            self.router.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        self.router = self.executor = None
