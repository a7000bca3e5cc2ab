"""Which services a node runs, chosen from its settings.

Kept apart from ``app.py`` so the lifecycle does not import every bridge.
"""

from __future__ import annotations

from gateway.app import Gateway


def add_services(gateway: Gateway) -> None:
    """Attach the services the settings ask for (the SIP endpoint, ...)."""
    del gateway  # the SIP endpoint joins here once bridges/sip has its transport
