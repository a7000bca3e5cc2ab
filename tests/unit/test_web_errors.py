"""The web edge maps gateway errors to HTTP: Draining -> 503 with Retry-After."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.calls import CallRegistry
from gateway.settings import Settings
from gateway.web.app import build_web_app
from gateway.web.keys import CALLS


class _Lifecycle:
    ready = True
    state_name = "ready"
    retry_after = 30


async def _new_call(request: web.Request) -> web.Response:
    request.app[CALLS].admit()  # what every call-creating handler does first
    return web.json_response({"ok": True})


async def _boom(_request: web.Request) -> web.Response:
    raise RuntimeError("secret detail erika@example.org")


async def test_new_calls_get_503_with_retry_after_while_draining() -> None:
    calls = CallRegistry(retry_after=12)
    app = build_web_app(_Lifecycle(), Settings, calls)
    app.router.add_post("/calls", _new_call)
    app.router.add_get("/boom", _boom)
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/calls")).status == 200
        calls.stop_accepting()
        response = await client.post("/calls")
        assert response.status == 503
        assert response.headers["Retry-After"] == "12"
        assert (await response.json())["error"] == "Service Unavailable"
        crashed = await client.get("/boom")
        assert crashed.status == 500
        assert "erika" not in await crashed.text()
        assert crashed.headers["X-Content-Type-Options"] == "nosniff"
