"""``gatewayd run --demo`` on a loopback listener: a demo agent and appointment.

At start the agent ``demo`` is (re)created with a fresh random password,
printed once on stdout together with the console and citizen URLs; the
password is kept nowhere else (the store has only its argon2id hash, and it
is not logged). Only wired when the web host is a loopback address.
"""

from __future__ import annotations

import ipaddress
import secrets

from gateway.settings import Settings
from gateway.settings_dialin import lobby_uri, room_uri
from gateway.store.service import StoreService
from gateway.web.api import citizen_url

DEMO_USER = "demo"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base(settings: Settings) -> str:
    if settings.appointments.public_url is not None:
        return str(settings.appointments.public_url).rstrip("/")
    host = settings.web.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.web.tls else "http"
    return f"{scheme}://{host}:{settings.web.port}"


class DemoService:
    """Runs after the store: makes the demo agent and one appointment starting now."""

    def __init__(self, store: StoreService) -> None:
        self.store = store
        self.printed: list[str] = []

    async def start(self, settings: Settings) -> None:
        """(Re)create the demo agent and an appointment; print how to use them."""
        agents = self.store.agents
        # A previous run's demo agent (its password is gone): replace it.
        await agents.db.execute("DELETE FROM agents WHERE username = ?", (DEMO_USER,))
        password = secrets.token_urlsafe(12)
        agent = await agents.create(DEMO_USER, "Demo", password)
        appointment, token = await self.store.appointments.create(
            duration_min=settings.appointments.default_duration_min, created_by=agent.id
        )
        base = _base(settings)
        lines = [
            "demo mode: a demo agent and appointment were created",
            f"  agent console: {base}/agent/login  user: {DEMO_USER}  password: {password}",
            f"  agent call:    {base}/agent/appointments/{appointment.id}",
            f"  citizen link:  {citizen_url(base, token)}",
            f"  device test:   {base}/test",
        ]
        room = room_uri(settings, appointment.sip_alias)
        if room is not None:  # a SIP phone can join: by the room's address or the lobby
            lines.append(f"  SIP dial-in:   {room}")
            lobby = lobby_uri(settings)
            if lobby is not None and appointment.pin is not None:
                lines.append(f"  SIP lobby:     {lobby}  PIN: {appointment.pin}")
        self.printed = lines
        print("\n".join(lines), flush=True)

    async def reload(self, settings: Settings) -> None:
        """Nothing to reload."""

    async def stop(self) -> None:
        """Nothing to stop (the demo rows stay until the next --demo start)."""
