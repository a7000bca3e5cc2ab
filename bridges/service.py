"""The node's bridges as a ``gateway.app.Service``: built at start from
``settings.bridges``, re-applied on SIGHUP, their calls hung up at stop.

The room side reaches them through ``BridgeService.registry`` (find the
service in ``gateway.services`` with ``bridge_registry()``):

    participant = await registry.dial("agency-b", "0301234", "interpreter",
                                      on_event=show_progress)
    if await participant.wait_answered():
        router.connect(participant.media("audio"), browser_audio_stream)
"""

from __future__ import annotations

from collections.abc import Iterable

from bridges.base import BridgeRegistry, BridgeSettings
from bridges.sip.bridge import SipBridge
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.resolver import SipResolver
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.settings import Settings

__all__ = ["BridgeService", "bridge_registry"]


class BridgeService:
    """Bridges from settings on the node's SIP endpoint and RTP port range."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        allocator: RtpPortAllocator,
        *,
        resolver: SipResolver | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.allocator = allocator
        self.resolver = resolver or SipResolver(clock=endpoint.clock)
        self.registry = BridgeRegistry({"sip": self._sip})

    def _sip(self, config: BridgeSettings, settings: Settings) -> SipBridge:
        return SipBridge(
            config,
            settings,
            endpoint=self.endpoint,
            allocator=self.allocator,
            resolver=self.resolver,
        )

    async def start(self, settings: Settings) -> None:
        """Build the configured bridges (the endpoint has started)."""
        self.registry.apply(settings)

    async def reload(self, settings: Settings) -> None:
        """New, changed and removed bridges; calls in progress are not touched."""
        self.resolver.clear_cache()
        self.registry.apply(settings)

    async def stop(self) -> None:
        """Hang up the bridges' calls (before the endpoint stops)."""
        await self.registry.close()


def bridge_registry(services: Iterable[object]) -> BridgeRegistry | None:
    """The registry of the ``BridgeService`` among a node's services, if any."""
    for service in services:
        if isinstance(service, BridgeService):
            return service.registry
    return None
