"""A web app with the pages and a real store on a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.calls import CallRegistry
from gateway.clock import FakeClock
from gateway.settings import Settings
from gateway.store.service import StoreService
from gateway.web import pages
from gateway.web.app import build_web_app
from gateway.web.keys import STORE


class _Lifecycle:
    ready = True
    state_name = "ready"
    retry_after = 30


@dataclass
class Site:
    client: TestClient[web.Request, web.Application]
    store: StoreService
    clock: FakeClock
    settings: dict[str, Settings]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = FakeClock()
    store = StoreService(clock=clock)
    holder = {"settings": Settings(data_dir=tmp_path)}
    await store.start(holder["settings"])
    getter: Callable[[], Settings] = lambda: holder["settings"]  # noqa: E731
    app = build_web_app(_Lifecycle(), getter, CallRegistry())
    app[STORE] = store
    pages.setup(app)
    async with TestClient(TestServer(app)) as client:
        yield Site(client, store, clock, holder)
    await store.stop()
