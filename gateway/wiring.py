"""Which services a node runs, chosen from its settings.

Kept apart from ``app.py`` so the lifecycle does not import every bridge.
"""

from __future__ import annotations

from bridges.sip.echo import EchoService
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.trunks import TrunkManager, TrunkService
from gateway.app import Gateway


def add_services(gateway: Gateway) -> SipEndpoint:
    """Attach the SIP endpoint (with the echo service when configured) and the trunks."""
    settings = gateway.settings
    endpoint = SipEndpoint(gateway.calls)
    if settings.sip.echo_user:
        echo = EchoService(settings.sip.public_host or settings.sip.host)
        endpoint.services[settings.sip.echo_user] = echo.handle
    gateway.services.append(endpoint)
    # After the endpoint: it starts first and stops last, so un-REGISTERs go out.
    gateway.services.append(TrunkService(TrunkManager(endpoint, endpoint.clock)))
    return endpoint
