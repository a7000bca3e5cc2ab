"""Gateway lifecycle in-process: drain with calls, reload, state table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway, State
from gateway.calls import CallRegistry
from gateway.errors import Draining
from gateway.settings import load_settings
from gateway.systemd import SystemdNotifier
from tests.support.net import free_port


class FakeCall:
    """A call that ends when told to, or when hung up."""

    def __init__(self, call_id: str, registry: CallRegistry) -> None:
        self._id = call_id
        self.registry = registry
        self.hung_up_with: str | None = None

    @property
    def call_id(self) -> str:
        return self._id

    async def hangup(self, reason: str) -> None:
        self.hung_up_with = reason

    def end(self) -> None:
        self.registry.remove(self._id)


def _gateway(tmp_path: Path, drain_timeout: float = 2.0) -> Gateway:
    port = free_port()
    settings = load_settings(
        f"data_dir: {tmp_path / 'data'}\ndrain_timeout: {drain_timeout}\n"
        f"web:\n  port: {port}\nsip:\n  retry_after: 17\n"
    )
    return Gateway(settings, notifier=SystemdNotifier({}))


async def _get(gateway: Gateway, path: str) -> tuple[int, dict[str, str]]:
    url = f"http://127.0.0.1:{gateway.settings.web.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, dict(resp.headers)


async def test_drain_refuses_new_calls_and_waits_for_active_ones(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, drain_timeout=5.0)
    await gateway.start()
    assert (await _get(gateway, "/readyz"))[0] == 200
    call = FakeCall("c1", gateway.calls)
    gateway.calls.admit()
    gateway.calls.add(call)

    drain = asyncio.create_task(gateway.drain())
    await asyncio.sleep(0.1)
    assert gateway.state_name == "draining"
    status, headers = await _get(gateway, "/readyz")
    assert status == 503
    assert headers["Retry-After"] == "17"
    with pytest.raises(Draining) as info:
        gateway.calls.admit()
    assert info.value.retry_after == 17
    assert info.value.sip_status == 503
    assert not drain.done()  # the active call keeps the node up

    call.end()
    await asyncio.wait_for(drain, 2)
    assert gateway.state is State.STOPPED
    assert call.hung_up_with is None  # it ended by itself


async def test_drain_hangs_up_what_is_left_after_the_timeout(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, drain_timeout=0.3)
    await gateway.start()
    call = FakeCall("c1", gateway.calls)
    gateway.calls.add(call)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(gateway.drain(), 3)
    assert 0.25 < loop.time() - started < 2
    assert call.hung_up_with == "node shutting down"
    assert gateway.calls.active == 0


async def test_second_stop_request_hurries_the_drain(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, drain_timeout=30)
    await gateway.start()
    call = FakeCall("c1", gateway.calls)
    gateway.calls.add(call)
    serve = asyncio.create_task(gateway.serve())
    gateway.request_stop()
    await asyncio.sleep(0.1)
    assert not serve.done()
    gateway.request_stop()
    assert await asyncio.wait_for(serve, 3) == 0
    assert call.hung_up_with is not None


async def test_illegal_transitions_raise(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    with pytest.raises(RuntimeError, match="illegal state change"):
        gateway._set_state(State.DRAINING)


async def test_reload_without_a_file_changes_nothing(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    before = gateway.settings
    assert await gateway.reload() is False
    assert gateway.settings is before


async def test_data_dir_that_cannot_be_created_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    settings = load_settings(f"data_dir: {blocker / 'sub'}\nweb:\n  port: {free_port()}\n")
    gateway = Gateway(settings, notifier=SystemdNotifier({}))
    with pytest.raises(Exception, match="data_dir"):
        await gateway.start()
    assert gateway.state is State.STOPPED
