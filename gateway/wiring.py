"""Which services a node runs, chosen from its settings.

Kept apart from ``app.py`` so the lifecycle does not import every bridge.
"""

from __future__ import annotations

import time

from aiohttp import web

from bridges.dialout import RoomDialer
from bridges.service import BridgeService
from bridges.sip.dialin import add_dial_in
from bridges.sip.echo import EchoService
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.trunks import TrunkManager, TrunkService
from gateway.app import Gateway
from gateway.clock import SystemClock
from gateway.log import get_logger
from gateway.media.capabilities import SrtpPolicy
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.media.service import MediaService
from gateway.rooms.directory import Lookup, RoomDirectory
from gateway.rooms.room import Rooms
from gateway.store.appointments import Appointment, LinkExpired
from gateway.store.service import StoreService
from gateway.web import api, pages, participants, signaling, whip
from gateway.web.keys import DIALER, DIRECTORY, STORE
from gateway.webrtc.links import MediaLinker

log = get_logger(__name__)


def add_services(gateway: Gateway, *, demo: bool = False) -> SipEndpoint:
    """Attach the store and REST API, the media plane and the node's rooms, the SIP
    endpoint (with the echo service when configured), the trunks and the bridges."""
    settings = gateway.settings
    store = StoreService()
    gateway.services.append(store)
    linker = MediaLinker(None)
    gateway.services.append(MediaService(linker))
    rooms = Rooms(SystemClock(), linker, linker.group)
    directory = RoomDirectory(rooms, _open_appointment(store))

    def web_setup(app: web.Application) -> None:
        app[STORE] = store
        app[DIRECTORY] = directory
        app[DIALER] = dialer
        app.add_routes(api.routes)
        app.add_routes(participants.routes)
        pages.setup(app)
        signaling.setup(app, rooms=rooms)
        whip.setup(app, directory)

    gateway.web_setup.append(web_setup)
    if demo:
        from gateway.web.demo import DemoService, is_loopback

        if is_loopback(settings.web.host):
            gateway.services.append(DemoService(store))
        else:
            log.warning("--demo ignored: web.host is not a loopback address")
    if not settings.api.tokens:
        log.warning("REST API off: api.tokens is empty (set GATEWAYD_API_TOKEN)")
    endpoint = SipEndpoint(gateway.calls)
    media = settings.media
    allocator = RtpPortAllocator(media.rtp_port_min, media.rtp_port_max)
    if settings.sip.echo_user:
        echo = EchoService(
            media.address,
            media_host6=media.address6,
            allocator=allocator,
            srtp=SrtpPolicy(media.srtp),
            rtp_timeout=media.rtp_timeout or None,
        )
        endpoint.services[settings.sip.echo_user] = echo.handle
    gateway.services.append(endpoint)
    # After the endpoint: it starts first and stops last, so un-REGISTERs go out.
    gateway.services.append(TrunkService(TrunkManager(endpoint, endpoint.clock)))
    # After the endpoint too: the bridges' calls are hung up before it stops.
    bridges = BridgeService(endpoint, allocator)
    gateway.services.append(bridges)
    dialer = RoomDialer(lambda: bridges.registry, directory)
    add_dial_in(gateway, endpoint, allocator, directory)
    return endpoint


def _open_appointment(store: StoreService) -> Lookup:
    """The directory's check: the appointment exists and its link has not expired."""

    async def lookup(appointment_id: str) -> Appointment:
        appointment = await store.appointments.get(appointment_id)
        if time.time() >= appointment.expires_at or appointment.state == "cancelled":
            raise LinkExpired("this appointment is over")
        return appointment

    return lookup
