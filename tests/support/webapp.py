"""The gateway's web app served in process on loopback, with a started store
(the signaling and WHIP integration tests and the signaling fuzz)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.calls import CallRegistry
from gateway.settings import Settings
from gateway.store.service import StoreService
from gateway.web.app import build_web_app
from gateway.web.keys import STORE


class Ready:
    """The node's lifecycle as the app sees it: up and taking calls."""

    ready = True
    state_name = "ready"
    retry_after = 5


@dataclass
class ServedApp:
    """The app, its test client (server started), its store and its call registry."""

    app: web.Application
    client: TestClient[Any, Any]
    store: StoreService
    calls: CallRegistry

    async def close(self) -> None:
        """Stop the server and the store."""
        await self.client.close()
        await self.store.stop()


async def serve_app(
    settings: Callable[[], Settings], setup: Callable[[web.Application], object]
) -> ServedApp:
    """``build_web_app`` with a store started on ``settings()``, ``setup`` adding
    what the test serves (``signaling.setup``, ``whip.setup`` ...; ``app[STORE]``
    is set by then), served on a free loopback port."""
    store = StoreService()
    await store.start(settings())
    calls = CallRegistry()
    app = build_web_app(Ready(), settings, calls)
    app[STORE] = store
    setup(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return ServedApp(app, client, store, calls)


async def agent_session(store: StoreService) -> tuple[str, str]:
    """A new agent "Agent One" logged in: its session cookie and CSRF token."""
    agent = await store.agents.create("agent1", "Agent One", "a long password here")
    cookie, session = await store.agents.start_session(agent)
    return cookie, session.csrf_token
