"""Fixtures that start real SIP peers (Kamailio, baresip, SIPp) on loopback.

Each fixture is a factory: call it with the peer's options, get a started peer;
teardown stops every peer it started (by PID) and removes its temp dir. When a
test fails, the peers' logs are printed in teardown, so pytest shows them under
"Captured stdout teardown".
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from bridges.service import BridgeService
from bridges.sip.endpoint import SipEndpoint
from gateway.calls import CallRegistry
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.settings import load_settings
from mediacodecs.executor import MediaExecutor
from tests.support.aio import wait_for
from tests.support.baresip import BARESIP, Baresip
from tests.support.kamailio import KAMAILIO, KamailioServer
from tests.support.net import free_port
from tests.support.sipp import SIPP, SippUas


class _HasLog(Protocol):
    def log_text(self) -> str: ...


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


def _show_logs(request: pytest.FixtureRequest, peers: list[tuple[str, _HasLog]]) -> None:
    if _failed(request):
        for name, peer in peers:
            print(f"\n===== log of {name} =====\n{peer.log_text()}")


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} missing: install Debian package {package}")


@pytest.fixture
def kamailio(request: pytest.FixtureRequest) -> Iterator[Callable[..., KamailioServer]]:
    """Factory: ``kamailio(users={"alice": "pw"}, auth_invite=True)`` -> started proxy."""
    _require(KAMAILIO, "kamailio")
    started: list[KamailioServer] = []

    def start(users: dict[str, str] | None = None, **kwargs: Any) -> KamailioServer:
        server = KamailioServer(users, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    _show_logs(request, [(f"kamailio :{s.port}", s) for s in started])


@pytest.fixture
def baresip(request: pytest.FixtureRequest) -> Iterator[Callable[..., Baresip]]:
    """Factory: ``baresip("alice", registrar=k.address, password="pw")`` -> started UA."""
    _require(BARESIP, "baresip-core")
    started: list[Baresip] = []

    def start(user: str, **kwargs: Any) -> Baresip:
        ua = Baresip(user, **kwargs)
        started.append(ua)
        return ua.start()

    yield start
    for ua in started:
        ua.stop()
    _show_logs(request, [(f"baresip {ua.user}", ua) for ua in started])


@pytest.fixture
def sipp_uas(request: pytest.FixtureRequest) -> Iterator[Callable[..., SippUas]]:
    """Factory: ``sipp_uas()`` or ``sipp_uas(UAS_RR_SCENARIO)`` -> SIPp answering at ``.address``.

    Teardown stops it hard (SIGTERM); call ``.stop()`` in the test for exact counts.
    """
    _require(SIPP, "sip-tester")
    started: list[SippUas] = []

    def start(scenario: str | Path = "uas", **kwargs: Any) -> SippUas:
        uas = SippUas(scenario, **kwargs)
        started.append(uas)
        return uas.start()

    yield start
    results = [(uas, uas.stop(soft=False)) for uas in started]
    if _failed(request):
        for uas, result in results:
            print(f"\n===== sipp uas :{uas.port} =====\n{result.output}\n{result.describe()}")


@pytest.fixture
async def executor() -> AsyncIterator[MediaExecutor]:
    """A media executor with room for the queued jobs of a few calls."""
    with MediaExecutor(2, max_queued=256) as pool:
        yield pool


@pytest.fixture
async def sip() -> AsyncIterator[SipEndpoint]:
    """An in-process SIP endpoint on a free UDP/TCP port, with short timers."""
    settings = load_settings(
        f"sip:\n  port: {free_port()}\n  timers: {{t1: 0.1, t2: 1.0, t4: 1.0}}\n"
    )
    endpoint = SipEndpoint(CallRegistry())
    await endpoint.start(settings)
    yield endpoint
    await endpoint.stop()


@pytest.fixture
async def service(sip: SipEndpoint) -> AsyncIterator[BridgeService]:
    """The bridges on ``sip`` (start them with settings); their calls end at teardown."""
    bridges = BridgeService(sip, RtpPortAllocator(43000, 43999))
    yield bridges
    await bridges.stop()
    await wait_for(lambda: sip.calls.active == 0, timeout=5)
