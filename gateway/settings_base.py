"""What every settings model shares (``gateway.settings`` and its ``bridges:`` part)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every settings model: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def check_host(value: str) -> str:
    """A listen address is an IP literal or a host name, never a URL."""
    if not value or "/" in value or " " in value:
        raise ValueError("must be an IP address or host name, e.g. 127.0.0.1 or ::1")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not all(part and len(part) < 64 for part in value.split(".")):
            raise ValueError("must be an IP address or host name") from None
    return value
