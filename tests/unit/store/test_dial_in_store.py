"""Dial-in in the store: the migration, room aliases and lobby PINs, their windows."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.errors import NotFound
from gateway.store import appointments as appointments_module
from gateway.store.appointments import Appointments, LinkExpired, LinkNotYet
from gateway.store.db import MIGRATIONS, Database

HOUR = 3600.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "gatewayd.sqlite")
    yield database
    await database.close()


async def test_a_version_1_database_gains_the_columns_and_keeps_its_appointments(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = await Database.open(path, MIGRATIONS[:1])
    clock = FakeClock()
    await old.execute(
        "INSERT INTO appointments (id, token_hash, starts_at, ends_at, expires_at, language,"
        " created_at) VALUES ('a-old', x'00', ?, ?, ?, 'de', ?)",
        (clock.time(), clock.time() + HOUR, clock.time() + 2 * HOUR, clock.time()),
    )
    await old.close()
    db = await Database.open(path)
    try:
        assert await db.version == len(MIGRATIONS) >= 2
        store = Appointments(db, clock)
        kept = await store.get("a-old")
        assert kept.sip_alias is None and kept.pin is None  # no dial-in for it
        fresh, _ = await store.create()
        assert fresh.sip_alias and fresh.pin
        with pytest.raises(sqlite3.IntegrityError):  # the alias index is unique
            await db.execute("UPDATE appointments SET sip_alias = ? WHERE id = 'a-old'",
                             (fresh.sip_alias,))  # fmt: skip
    finally:
        await db.close()


async def test_aliases_and_pins_look_right_and_are_stored_as_given(db: Database) -> None:
    store = Appointments(db, FakeClock())
    made = [(await store.create())[0] for _ in range(20)]
    for appointment in made:
        assert appointment.sip_alias is not None and appointment.pin is not None
        assert re.fullmatch(r"[a-z2-7]{10}", appointment.sip_alias)
        assert re.fullmatch(r"[0-9]{6}", appointment.pin)
        again = await store.get(appointment.id)
        assert (again.sip_alias, again.pin) == (appointment.sip_alias, appointment.pin)
    assert len({a.sip_alias for a in made}) == 20
    assert len({a.pin for a in made}) == 20  # all windows overlap: unique PINs


async def test_by_sip_alias_follows_the_link_window(db: Database) -> None:
    clock = FakeClock()
    store = Appointments(db, clock, link_lead=HOUR, link_grace=1800)
    appointment, _ = await store.create(starts_at=clock.time() + 3 * HOUR, duration_min=30)
    alias = appointment.sip_alias
    assert alias is not None
    with pytest.raises(LinkNotYet) as early:
        await store.by_sip_alias(alias)
    assert early.value.opens_at == appointment.starts_at - HOUR
    clock.advance(2 * HOUR)
    assert (await store.by_sip_alias(alias)).id == appointment.id
    assert (await store.by_sip_alias(alias.upper())).id == appointment.id  # case-blind
    clock.advance(HOUR + 30 * 60 + 1800)
    with pytest.raises(LinkExpired):
        await store.by_sip_alias(alias)
    for wrong in ("", "lobby", "echo", alias[:-1], alias + "a", "0" * 10, "a'; --x", "é" * 10):
        with pytest.raises(NotFound):
            await store.by_sip_alias(wrong)


async def test_a_cancelled_appointment_is_expired_by_alias_and_pin(db: Database) -> None:
    store = Appointments(db, FakeClock())
    appointment, _ = await store.create()
    await store.set_state(appointment.id, "cancelled")
    assert appointment.sip_alias and appointment.pin
    with pytest.raises(LinkExpired):
        await store.by_sip_alias(appointment.sip_alias)
    with pytest.raises(LinkExpired):
        await store.by_pin(appointment.pin)


async def test_by_pin_finds_the_open_appointment_among_reused_pins(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    store = Appointments(db, clock, link_lead=HOUR, link_grace=1800)
    pins = iter(["123456", "123456", "654321", "123456"])
    monkeypatch.setattr(appointments_module, "new_pin", lambda: next(pins))
    now, _ = await store.create(duration_min=60)
    # Overlapping window: 123456 is taken, the next try draws 654321.
    overlapping, _ = await store.create(starts_at=clock.time() + 30 * 60, duration_min=30)
    # A week later the windows do not overlap: 123456 may be used again.
    later, _ = await store.create(starts_at=clock.time() + 7 * 86400, duration_min=30)
    assert (now.pin, overlapping.pin, later.pin) == ("123456", "654321", "123456")
    assert (await store.by_pin("123456")).id == now.id
    clock.advance(3 * HOUR)  # now's window is over, later's not open yet
    with pytest.raises(LinkNotYet):
        await store.by_pin("123456")
    clock.advance(7 * 86400 - 3 * HOUR)
    assert (await store.by_pin("123456")).id == later.id
    clock.advance(2 * HOUR)
    with pytest.raises(LinkExpired):
        await store.by_pin("123456")
    for wrong in ("", "12345", "1234567", "12345a", "000000", " 123456"):
        with pytest.raises(NotFound):
            await store.by_pin(wrong)


async def test_two_open_appointments_with_one_pin_are_refused_not_guessed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    short = Appointments(db, clock, link_lead=0, link_grace=0)
    monkeypatch.setattr(appointments_module, "new_pin", lambda: "111111")
    await short.create(duration_min=30)
    await short.create(starts_at=clock.time() + 3600, duration_min=30)
    # An operator raised link_lead afterwards: both windows are open now.
    wide = Appointments(db, clock, link_lead=2 * HOUR, link_grace=0)
    with pytest.raises(NotFound):
        await wide.by_pin("111111")


async def test_no_free_pin_is_a_503_not_a_loop(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Appointments(db, FakeClock())
    monkeypatch.setattr(appointments_module, "new_pin", lambda: "222222")
    await store.create()
    from gateway.errors import Unavailable

    with pytest.raises(Unavailable):
        await store.create()
