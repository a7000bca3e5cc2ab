"""Agent accounts and their console sessions.

Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106's second
recommended parameter set); hashing and checking run in a thread, since each
takes tens of milliseconds on purpose. An unknown user name costs the same
as a wrong password, so a login does not reveal which names exist. Hashes
made with older parameters are upgraded at the next successful login.

A session is a 256-bit random token in an HttpOnly cookie; the store keeps
only its SHA-256. Each session has its own CSRF token, which forms and
fetch() calls echo back.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.clock import Clock
from gateway.errors import BadRequest, Busy
from gateway.store.db import Database

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password of anybody")
MIN_PASSWORD = 10


@dataclass(frozen=True)
class Agent:
    """An agent as the console knows them."""

    id: int
    username: str
    display_name: str


@dataclass(frozen=True)
class Session:
    """A logged-in agent and the CSRF token of their session."""

    agent: Agent
    csrf_token: str
    expires_at: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class Agents:
    """Accounts, logins and sessions."""

    def __init__(self, db: Database, clock: Clock, *, session_ttl: float = 8 * 3600) -> None:
        self.db = db
        self.clock = clock
        self.session_ttl = session_ttl

    async def create(self, username: str, display_name: str, password: str) -> Agent:
        """A new account; 400 for a short password or bad name, 409 if the name is taken."""
        if not 1 <= len(username) <= 64 or not username.replace("-", "").replace(".", "").isalnum():
            raise BadRequest("user names are 1-64 letters, digits, '.' or '-'")
        if len(password) < MIN_PASSWORD:
            raise BadRequest(f"passwords need at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        if await self.db.fetch_one("SELECT 1 FROM agents WHERE username = ?", (username,)):
            raise Busy("that user name is taken")
        await self.db.execute(
            "INSERT INTO agents (username, display_name, password_hash, created_at)"
            " VALUES (?, ?, ?, ?)",
            (username, display_name, hashed, self.clock.time()),
        )
        agent = await self.find(username)
        assert agent is not None
        return agent

    async def find(self, username: str) -> Agent | None:
        """By user name."""
        row = await self.db.fetch_one(
            "SELECT id, username, display_name FROM agents WHERE username = ?", (username,)
        )
        return None if row is None else Agent(int(row[0]), str(row[1]), str(row[2]))

    async def login(self, username: str, password: str) -> Agent | None:
        """The agent if the password is right, else None (same cost either way)."""
        row = await self.db.fetch_one(
            "SELECT id, username, display_name, password_hash FROM agents WHERE username = ?",
            (username[:64],),
        )
        stored = str(row[3]) if row is not None else _DUMMY_HASH
        ok = await asyncio.to_thread(_check, stored, password)
        if row is None or not ok:
            return None
        if _hasher.check_needs_rehash(stored):
            rehashed = await asyncio.to_thread(_hasher.hash, password)
            await self.db.execute(
                "UPDATE agents SET password_hash = ? WHERE id = ?", (rehashed, int(row[0]))
            )
        return Agent(int(row[0]), str(row[1]), str(row[2]))

    async def start_session(self, agent: Agent) -> tuple[str, Session]:
        """A new session: the cookie value (shown once) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(agent, secrets.token_urlsafe(24), self.clock.time() + self.session_ttl)
        await self.db.execute(
            "INSERT INTO sessions (token_hash, agent_id, csrf_token, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (_digest(token), agent.id, session.csrf_token, session.expires_at),
        )
        return token, session

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie value, or None."""
        if not 20 <= len(token) <= 64:
            return None
        row = await self.db.fetch_one(
            "SELECT a.id, a.username, a.display_name, s.csrf_token, s.expires_at"
            " FROM sessions s JOIN agents a ON a.id = s.agent_id WHERE s.token_hash = ?",
            (_digest(token),),
        )
        if row is None or float(row[4]) <= self.clock.time():
            return None
        agent = Agent(int(row[0]), str(row[1]), str(row[2]))
        return Session(agent, str(row[3]), float(row[4]))

    async def end_session(self, token: str) -> None:
        """Log out (idempotent)."""
        await self.db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

    async def purge_sessions(self) -> int:
        """Delete expired sessions; the number deleted."""
        return await self.db.execute(
            "DELETE FROM sessions WHERE expires_at <= ?", (self.clock.time(),)
        )
