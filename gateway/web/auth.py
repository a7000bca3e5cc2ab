"""Agent console sessions: cookies, CSRF checks and the login rate limit.

The session cookie is HttpOnly, SameSite=Strict, Path=/ and Secure when the
web listener speaks TLS. Every POST of the console carries the session's
CSRF token in a form field (compared in constant time) and, when the browser
sends an Origin header, must come from this very origin. The login form,
which has no session yet, uses a double-submit token: a random cookie the
form echoes.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections import OrderedDict
from urllib.parse import urlsplit

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.store.agents import Session
from gateway.web.keys import SETTINGS, STORE

SESSION_COOKIE = "gw_session"
LOGIN_COOKIE = "gw_login"


def secure_cookies(request: web.Request) -> bool:
    """Cookies get the Secure flag when this listener is HTTPS."""
    return request.app[SETTINGS]().web.tls is not None


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, token: str, max_age: int
) -> None:
    """The console session: HttpOnly, SameSite=Strict, Path=/, Secure with TLS."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    """Log out in the browser too."""
    response.del_cookie(SESSION_COOKIE, path="/", secure=secure_cookies(request), samesite="Strict")


def login_token(request: web.Request) -> str:
    """The login form's double-submit token: the cookie's value, or a new one."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    return token if 20 <= len(token) <= 64 else secrets.token_urlsafe(24)


def set_login_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    """The login form's cookie, sent only to /agent/login."""
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path="/agent/login",
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
    )


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site.

    With ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on
    form POSTs, so Sec-Fetch-Site decides then; the CSRF token is checked
    in any case."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.host


def tokens_match(given: object, expected: str) -> bool:
    """Constant-time comparison of a submitted token."""
    if not isinstance(given, str) or not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


async def current_session(request: web.Request) -> Session | None:
    """The logged-in agent's session, or None."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    return await request.app[STORE].agents.session(token)


def client_key(address: str | None) -> str:
    """What the rate limit counts by: the IPv4 address, or the IPv6 /64."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginLimiter:
    """At most ``attempts`` logins per ``window`` seconds per client, in a bounded table.

    When the table is full the least recently seen client is forgotten, so a
    flood of addresses costs memory of ``max_clients`` entries at most."""

    def __init__(
        self,
        *,
        attempts: int = 10,
        window: float = 300.0,
        max_clients: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.max_clients = max_clients
        self.clock = clock or SystemClock()
        self._table: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def hit(self, client: str) -> float:
        """Count one attempt; 0.0 if allowed, else the seconds until the next is."""
        now = self.clock.time()
        started, count = self._table.pop(client, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        if count >= self.attempts:
            self._table[client] = (started, count)
            return max(started + self.window - now, 1.0)
        self._table[client] = (started, count + 1)
        while len(self._table) > self.max_clients:
            self._table.popitem(last=False)
        return 0.0

    def reset(self, client: str) -> None:
        """A successful login clears the client's count."""
        self._table.pop(client, None)


LIMITER = web.AppKey("login_limiter", LoginLimiter)
