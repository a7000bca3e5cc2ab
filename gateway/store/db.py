"""The SQLite database under ``data_dir``, with forward-only schema migrations.

One ``aiosqlite`` connection per process (SQLite serialises writers anyway);
WAL mode so readers never wait for the writer; foreign keys on. Migrations
are numbered SQL scripts applied in order inside one transaction each, and
the number reached is kept in ``PRAGMA user_version``; a database written by
a newer gatewayd (higher version than we know) is refused rather than
silently misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.errors import GatewayError
from gateway.log import get_logger

log = get_logger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: agents, their sessions, appointments
    """
    CREATE TABLE agents (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);
    CREATE TABLE appointments (
        id TEXT PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        language TEXT NOT NULL,
        created_by INTEGER REFERENCES agents(id) ON DELETE SET NULL,
        state TEXT NOT NULL DEFAULT 'scheduled',
        created_at REAL NOT NULL
    );
    CREATE INDEX appointments_expiry ON appointments(expires_at);
    """,
    # 2: SIP dial-in: a room address (sip:<sip_alias>@<domain>) and a lobby PIN per
    # appointment; older appointments keep NULL (no dial-in). The PIN is stored as
    # given: see gateway/store/appointments.py for why it is not hashed.
    """
    ALTER TABLE appointments ADD COLUMN sip_alias TEXT;
    ALTER TABLE appointments ADD COLUMN pin TEXT;
    CREATE UNIQUE INDEX appointments_sip_alias ON appointments(sip_alias);
    CREATE INDEX appointments_pin ON appointments(pin);
    """,
)


class StoreError(GatewayError):
    """The database cannot be opened or is not ours."""

    http_status = 500


class Database:
    """The node's SQLite file; ``await Database.open(path)``, then ``close()``."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[str] = MIGRATIONS) -> Database:
        """Open (creating file and directories) and migrate to the newest schema."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        database = cls(connection, path)
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA foreign_keys=ON")
            await connection.execute("PRAGMA busy_timeout=5000")
            await database._migrate(migrations)
        except BaseException:
            await connection.close()
            raise
        return database

    async def _migrate(self, migrations: Sequence[str]) -> None:
        version = int((await self.fetch_one("PRAGMA user_version"))[0])
        if version > len(migrations):
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this "
                f"gatewayd knows ({len(migrations)}); refusing to use it"
            )
        for number in range(version + 1, len(migrations) + 1):
            script = migrations[number - 1]
            try:
                await self.connection.executescript(
                    f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )
            except aiosqlite.Error as exc:
                await self.connection.execute("ROLLBACK")
                raise StoreError(f"database migration {number} failed: {exc}") from exc
            log.info("database migrated", version=number)

    @property
    async def version(self) -> int:
        """The schema version reached."""
        return int((await self.fetch_one("PRAGMA user_version"))[0])

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        cursor = await self.connection.execute(sql, tuple(parameters))
        count = cursor.rowcount
        await cursor.close()
        return count

    async def fetch_one(self, sql: str, parameters: Iterable[Any] = ()) -> Any:
        """The first row, or None."""
        cursor = await self.connection.execute(sql, tuple(parameters))
        row = await cursor.fetchone()
        await cursor.close()
        return row

    async def fetch_all(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        """Every row."""
        cursor = await self.connection.execute(sql, tuple(parameters))
        rows = await cursor.fetchall()
        await cursor.close()
        return list(rows)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self.connection.close()
