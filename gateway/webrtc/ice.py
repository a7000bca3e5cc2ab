"""ICE servers for browser legs: settings -> aiortc ``RTCIceServer`` (pure).

TURN credentials are long-term (a username and password from the settings)
or ephemeral, as coturn's ``use-auth-secret`` expects (the "TURN REST API"
draft, draft-uberti-behave-turn-rest-00): the username is
``"<expiry unix time>:<user>"`` and the password is
``base64(HMAC-SHA1(shared secret, username))``. The same credentials go to
the browser, so each leg gets its own expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from aiortc import RTCIceServer

from gateway.settings import IceServer


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """A username/password pair for a TURN server."""

    username: str
    password: str


def turn_rest_credentials(secret: str, user: str, *, now: float, ttl: int) -> TurnCredentials:
    """Ephemeral TURN credentials valid until ``now + ttl`` (coturn use-auth-secret)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if ":" in user:
        raise ValueError("the user part of a TURN REST username must not contain ':'")
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"))


def ice_servers(servers: list[IceServer], *, user: str, now: float) -> list[RTCIceServer]:
    """The configured servers as aiortc wants them (an empty list stays empty).

    ``user`` names the leg in ephemeral TURN usernames; it must be an opaque
    id, never a person's name (it reaches the TURN server's logs).
    """
    result: list[RTCIceServer] = []
    for server in servers:
        if server.turn_secret is not None:
            creds = turn_rest_credentials(
                server.turn_secret.get_secret_value(), user, now=now, ttl=server.ttl
            )
            result.append(RTCIceServer(list(server.urls), creds.username, creds.password))
        elif server.username is not None and server.credential is not None:
            result.append(
                RTCIceServer(
                    list(server.urls), server.username, server.credential.get_secret_value()
                )
            )
        else:
            result.append(RTCIceServer(list(server.urls)))
    return result
