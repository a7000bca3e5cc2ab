"""The SQLite store: migrations, appointments and their links, agents and sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.errors import BadRequest, Busy, NotFound
from gateway.store.agents import Agents
from gateway.store.appointments import (
    Appointments,
    LinkExpired,
    LinkNotYet,
    iso,
    parse_time,
    token_hash,
)
from gateway.store.db import MIGRATIONS, Database, StoreError


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "state" / "gatewayd.sqlite")
    yield database
    await database.close()


async def test_migrations_reach_the_newest_version_and_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    first = await Database.open(path)
    assert await first.version == len(MIGRATIONS)
    await first.close()
    again = await Database.open(path)
    assert await again.version == len(MIGRATIONS)
    await again.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this gatewayd knows"):
        await Database.open(path)


async def test_a_failing_migration_leaves_the_version_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    with pytest.raises(StoreError, match=f"migration {len(MIGRATIONS) + 1} failed"):
        await Database.open(path, (*MIGRATIONS, "CREATE TABLE broken (;"))
    reopened = await Database.open(path)
    assert await reopened.version == len(MIGRATIONS)
    await reopened.close()


async def test_appointment_link_opens_within_its_window_only(db: Database) -> None:
    clock = FakeClock()
    appointments = Appointments(db, clock, link_lead=600, link_grace=900)
    start = clock.time() + 3600
    created, token = await appointments.create(starts_at=start, duration_min=30, language="en")
    assert created.ends_at == start + 1800 and created.expires_at == start + 1800 + 900
    with pytest.raises(LinkNotYet) as early:
        await appointments.by_token(token)
    assert (early.value.starts_at, early.value.opens_at) == (start, start - 600)
    clock.advance(3600 - 600)
    assert (await appointments.by_token(token)).id == created.id
    clock.advance(600 + 1800 + 899)
    assert (await appointments.by_token(token)).id == created.id
    clock.advance(1)
    with pytest.raises(LinkExpired):
        await appointments.by_token(token)


async def test_tokens_are_stored_hashed_and_forged_ones_are_not_found(db: Database) -> None:
    appointments = Appointments(db, FakeClock())
    created, token = await appointments.create()
    assert len(token) >= 40
    rows = await db.fetch_all("SELECT * FROM appointments")
    assert all(token not in str(value) for value in rows[0])
    assert bytes(rows[0][1]) == token_hash(token)
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 43, "short", ""):
        with pytest.raises(NotFound):
            await appointments.by_token(forged)
    assert created.language == "de"  # German first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_min": 4}, "duration_min"),
        ({"duration_min": 481}, "duration_min"),
        ({"duration_min": True}, "whole number"),
        ({"language": "fr"}, "language"),
        ({"starts_at": 1_000.0}, "over already"),
        ({"starts_at": 1_700_000_000.0 + 400 * 86400}, "a year ahead"),
    ],
)
async def test_bad_appointments_are_refused(
    db: Database, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await Appointments(db, FakeClock()).create(**kwargs)  # type: ignore[arg-type]


def test_times_parse_with_zone_only() -> None:
    assert parse_time("2026-11-23T14:00:00Z") == parse_time("2026-11-23T15:00:00+01:00")
    assert iso(parse_time("2026-11-23T14:00:00+00:00")) == "2026-11-23T14:00:00Z"
    for bad in ("2026-11-23T14:00:00", "tomorrow", 5, "9" * 50):
        with pytest.raises(BadRequest):
            parse_time(bad)


async def test_purge_removes_expired_appointments(db: Database) -> None:
    clock = FakeClock()
    appointments = Appointments(db, clock, link_grace=0)
    old, _ = await appointments.create(duration_min=5)
    clock.advance(3600)
    new, _ = await appointments.create(duration_min=5)
    assert await appointments.purge_expired() == 1
    with pytest.raises(NotFound):
        await appointments.get(old.id)
    assert (await appointments.get(new.id)).id == new.id
    assert [a.id for a in await appointments.upcoming()] == [new.id]


async def test_agent_login_and_sessions(db: Database) -> None:
    clock = FakeClock()
    agents = Agents(db, clock, session_ttl=60)
    agent = await agents.create("m.muster", "M. Muster", "correct horse battery")
    with pytest.raises(Busy):
        await agents.create("m.muster", "Other", "another long password")
    with pytest.raises(BadRequest):
        await agents.create("x", "X", "short")
    with pytest.raises(BadRequest):
        await agents.create("bad name!", "X", "long enough password")
    assert await agents.login("m.muster", "wrong password") is None
    assert await agents.login("nobody", "correct horse battery") is None
    assert await agents.login("m.muster", "correct horse battery") == agent
    stored = await db.fetch_one("SELECT password_hash FROM agents")
    assert str(stored[0]).startswith("$argon2id$")
    token, session = await agents.start_session(agent)
    found = await agents.session(token)
    assert found is not None and found.agent == agent and found.csrf_token == session.csrf_token
    assert await agents.session(token + "x") is None
    clock.advance(61)
    assert await agents.session(token) is None
    assert await agents.purge_sessions() == 1
    token, _ = await agents.start_session(agent)
    await agents.end_session(token)
    assert await agents.session(token) is None
