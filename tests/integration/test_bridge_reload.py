"""SIGHUP with bridge changes, in a real node (``Gateway`` + ``add_services``):
new rules, limits and bridges apply to new dials; a call in progress keeps
its configuration and its media; a removed bridge's call runs to its end."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from bridges.base import BadTarget, DialState, UnknownBridge
from bridges.service import bridge_registry
from bridges.sip.bridge import SipParticipant
from gateway import metrics
from gateway.app import Gateway
from gateway.media.stream import MediaStream
from gateway.settings import load_settings_file
from gateway.systemd import SystemdNotifier
from gateway.wiring import add_services
from mediacodecs.executor import MediaExecutor
from tests.integration.test_bridge_sip import USERS, Ear
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip
from tests.support.kamailio import KamailioServer
from tests.support.net import free_port

pytestmark = pytest.mark.integration

ENV = {"GW_PW": USERS["gw"]}


def config(tmp_path: Path, web: int, sip: int, bridges: str) -> str:
    return (
        f"data_dir: {tmp_path / 'data'}\ndrain_timeout: 2\n"
        f"web: {{port: {web}}}\nsip: {{port: {sip}, echo_user: ''}}\n"
        "media: {address: 127.0.0.1, rtp_port_min: 43000, rtp_port_max: 43999}\n"
        "systemd: {notify: false}\n"
    ) + (f"bridges:\n{bridges}" if bridges else "bridges: []\n")


def bridge(name: str, proxy: KamailioServer, prefix: str, max_calls: int) -> str:
    return (
        f"  - {{name: {name}, type: sip, proxy: '{proxy.address}', username: gw,"
        " password: '${env:GW_PW}', codecs: {audio: [PCMU], video: []},"
        f" rewrite: [{{match: '^{prefix}-(\\w+)$', replace: '\\1'}}],"
        f" reject_unmatched: true, max_calls: {max_calls}}}\n"
    )


def reloads() -> float:
    value = metrics.REGISTRY.get_sample_value("gatewayd_config_reloads_total", {"result": "ok"})
    return value or 0.0


async def sighup(path: Path, text: str) -> None:
    before = reloads()
    await asyncio.to_thread(path.write_text, text)
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for(lambda: reloads() == before + 1, timeout=5)


async def test_sighup_changes_bridges_without_touching_a_running_call(
    tmp_path: Path,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio({**USERS, "carol": "carol-secret"})
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    baresip("carol", registrar=proxy.address, password="carol-secret", codecs=("PCMU",))
    web, sip = free_port(), free_port()
    path = tmp_path / "gatewayd.yaml"
    await asyncio.to_thread(
        path.write_text, config(tmp_path, web, sip, bridge("kam", proxy, "ext", 1))
    )
    settings = load_settings_file(path, environ=ENV)
    gateway = Gateway(settings, config_path=path, environ=ENV, notifier=SystemdNotifier({}))
    add_services(gateway)
    await gateway.start()
    loop = asyncio.get_running_loop()
    gateway.install_signal_handlers()
    try:
        registry = bridge_registry(gateway.services)
        assert registry is not None and registry.names == ["kam"]
        first = await registry.dial("kam", "ext-bob", "interpreter")
        assert isinstance(first, SipParticipant)
        assert await first.wait_answered(timeout=10), first.history
        audio = first.media("audio")
        assert isinstance(audio, MediaStream)
        ear = Ear(audio, executor)
        started_with = first.profile

        # 1. New rules and a higher limit: new dials only.
        await sighup(path, config(tmp_path, web, sip, bridge("kam", proxy, "x", 2)))
        assert first.state is DialState.ANSWERED and first.profile is started_with
        with pytest.raises(BadTarget):
            await registry.dial("kam", "ext-carol", "guest")  # the old prefix is gone
        second = await registry.dial("kam", "x-carol", "guest")  # max_calls 1 would refuse
        assert await second.wait_answered(timeout=10), second.history
        await second.hangup("done")
        assert await second.wait_ended(timeout=5) is DialState.ENDED

        # 2. The bridge leaves the configuration: its call goes on, new dials get 404.
        heard_before = len(ear.heard)
        await sighup(path, config(tmp_path, web, sip, ""))
        assert registry.names == []
        with pytest.raises(UnknownBridge):
            await registry.dial("kam", "x-bob", "guest")
        await asyncio.sleep(1.0)
        assert first.state is DialState.ANSWERED
        assert len(ear.heard) > heard_before + 20, "media stopped after the reload"
        assert abs(ear.peak() - 1000) < 15
        assert not [e for e in bob.events if e.get("type") == "CALL_CLOSED"]
        await first.hangup("done")
        ear.player.stop()
        assert await first.wait_ended(timeout=5) is DialState.ENDED
        await in_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
        await wait_for(lambda: gateway.calls.active == 0, timeout=5)
    finally:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await gateway.drain()
