"""The ``sip.dial_in`` section: calling into appointment rooms from SIP.

Kept beside ``settings.py`` (which is at its size limit) and imported by it;
the base configuration is the same as ``settings.Section``'s (unknown keys are
errors, values are frozen). ``dial_in_domain`` and ``room_uri`` turn the
settings into the addresses shown to agents (the web layer uses them, so they
live on the gateway side, not in ``bridges``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from gateway.settings import Settings

_USER = r"^[a-z0-9][a-z0-9._-]{0,31}$"
_DOMAIN = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")


class DialInSettings(BaseModel):
    """SIP dial-in: ``sip:<room alias>@<domain>`` or the lobby with a DTMF PIN."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: Rooms answer at their alias and the lobby answers at all (false: both 404).
    enabled: bool = True
    #: Host part of the room addresses shown to agents (``host`` or ``host:port``);
    #: default: sip.public_host, else sip.host, with sip.port when it is not 5060.
    domain: str | None = None
    #: The lobby's user part (sip:<lobby_user>@<domain>): asks for a PIN by DTMF; "" turns it off.
    lobby_user: Annotated[str, Field(pattern=r"^$|" + _USER)] = "lobby"
    #: Where callers land: "wait" (the waiting room; an agent admits) or "direct" (the call).
    admit: Literal["wait", "direct"] = "wait"
    #: Role of dialled-in participants (never agent: an agent admits and ends calls).
    role: Literal["guest", "interpreter", "guardian", "counsel", "citizen"] = "guest"
    #: PIN entries a lobby caller gets before the gateway hangs up.
    pin_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    #: Seconds for one PIN entry (digits ended by # or the sixth digit).
    pin_timeout: Annotated[float, Field(ge=3, le=300)] = 20.0
    #: Wrong PINs per minute on this node before the lobby refuses calls (503) for a
    #: while: caps guessing across many calls. 0: no cap.
    bad_pins_per_minute: Annotated[int, Field(ge=0, le=100_000)] = 30
    #: Dial-in calls on this node at once (licences); more get 503 with Retry-After.
    max_calls: Annotated[int, Field(ge=1, le=100_000)] = 50

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _DOMAIN.match(value):
            raise ValueError("must be a host name or address, optionally with :port")
        return value


def _hostport(host: str, port: int) -> str:
    try:
        literal6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        literal6 = False
    host = f"[{host}]" if literal6 else host
    return host if port == 5060 else f"{host}:{port}"


def dial_in_domain(settings: Settings) -> str:
    """The host part of room and lobby addresses."""
    sip = settings.sip
    if sip.dial_in.domain:
        return sip.dial_in.domain
    return _hostport(sip.public_host or sip.host, sip.port)


def room_uri(settings: Settings, alias: str | None) -> str | None:
    """``sip:<alias>@<domain>``; None when dial-in is off or the appointment has no alias."""
    if alias is None or not settings.sip.dial_in.enabled:
        return None
    return f"sip:{alias}@{dial_in_domain(settings)}"


def lobby_uri(settings: Settings) -> str | None:
    """``sip:<lobby_user>@<domain>``; None when dial-in or the lobby is off."""
    dial_in = settings.sip.dial_in
    if not dial_in.enabled or not dial_in.lobby_user:
        return None
    return f"sip:{dial_in.lobby_user}@{dial_in_domain(settings)}"
