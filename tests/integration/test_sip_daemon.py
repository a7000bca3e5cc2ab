"""The real daemon's SIP side: echo calls from SIPp, OPTIONS, drain with a live call."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from bridges.sip.message import SipResponse, parse_message
from bridges.sip.outgoing import build_request, via_value
from tests.support.daemon import Daemon
from tests.support.net import free_port
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.integration

Start = Callable[..., Daemon]
FAST_TIMERS = {"t1": 0.05, "t2": 0.5, "t4": 0.5}


def probe(
    daemon: Daemon,
    method: str,
    user: str = "echo",
    *,
    timeout: float = 3.0,
    headers: list[tuple[str, str]] | None = None,
) -> SipResponse:
    """Send one request over UDP from a fresh socket; return the final response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        request = build_request(
            method,
            f"sip:{user}@127.0.0.1:{daemon.sip_port}",
            via=via_value("udp", "127.0.0.1", port, f"z9hG4bK{method.lower()}{port}"),
            from_value=f"<sip:probe@127.0.0.1:{port}>;tag=p{port}",
            to_value=f"<sip:{user}@127.0.0.1>",
            call_id=f"probe-{port}@127.0.0.1",
            cseq=1,
            contact=f"<sip:probe@127.0.0.1:{port}>",
            headers=headers or [],
        )
        sock.sendto(bytes(request), ("127.0.0.1", daemon.sip_port))
        sock.settimeout(timeout)
        while True:
            data, _ = sock.recvfrom(65535)
            message = parse_message(data)
            assert isinstance(message, SipResponse)
            if message.status >= 200:
                return message


@contextlib.contextmanager
def long_call(daemon: Daemon, hold_ms: int) -> Iterator[None]:
    """One SIPp call to the echo held for ``hold_ms``; yields once it is up."""
    sipp = subprocess.Popen(
        ["sipp", "-sn", "uac", f"127.0.0.1:{daemon.sip_port}", "-s", "echo", "-m", "1",
         "-d", str(hold_ms), "-nostdin", "-i", "127.0.0.1",
         "-p", str(free_port(socket.SOCK_DGRAM)), "-timeout", str(hold_ms // 1000 + 10)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and metric(daemon, "gatewayd_calls_active") < 1:
            time.sleep(0.05)
        assert metric(daemon, "gatewayd_calls_active") == 1
        yield
    finally:
        sipp.terminate()
        try:
            sipp.wait(5)
        except subprocess.TimeoutExpired:
            sipp.kill()
            sipp.wait(5)


def metric(daemon: Daemon, name: str) -> float:
    for line in daemon.http("/metrics")[2].decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing")


def test_options_is_answered_with_capabilities(gatewayd: Start) -> None:
    daemon = gatewayd()
    response = probe(daemon, "OPTIONS", "anyone")
    assert response.status == 200
    allow = response.headers.getlist("Allow")
    assert "INVITE" in allow and "BYE" in allow and "CANCEL" in allow
    assert response.headers.get("Accept") == "application/sdp"
    assert response.to_tag


def test_unknown_user_gets_404_and_register_405(gatewayd: Start) -> None:
    daemon = gatewayd()
    assert probe(daemon, "INVITE", "nobody").status == 404
    assert probe(daemon, "REGISTER", "nobody").status == 405


def test_sipp_burst_to_the_echo_leaves_nothing_behind(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"timers": FAST_TIMERS}})
    result = run_sipp(
        "uac", f"127.0.0.1:{daemon.sip_port}", service="echo", calls=200, rate=50, timeout=30
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 200 and result.failed == 0
    assert metric(daemon, "gatewayd_calls_active") == 0
    deadline = time.monotonic() + 10  # Timer J/L = 64*T1 = 3.2 s here
    while time.monotonic() < deadline and metric(daemon, "gatewayd_sip_transactions_active"):
        time.sleep(0.2)
    assert metric(daemon, "gatewayd_sip_transactions_active") == 0
    assert metric(daemon, 'gatewayd_sip_requests_total{method="INVITE"}') == 200


def test_drain_refuses_new_calls_with_503_and_waits_for_the_live_one(gatewayd: Start) -> None:
    daemon = gatewayd({"drain_timeout": 20, "sip": {"retry_after": 42}})
    with long_call(daemon, hold_ms=4000):
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        daemon.wait_notification("STOPPING=1", timeout=5)
        assert daemon.http("/readyz")[0] == 503
        refused = probe(daemon, "INVITE", "echo")
        assert refused.status == 503
        assert refused.headers.get("Retry-After") == "42"
        assert probe(daemon, "OPTIONS").status == 200  # still answers while draining
        assert daemon.proc.wait(15) == 0
        elapsed = time.monotonic() - signalled
        assert 2.0 < elapsed < 10.0  # it waited for the call's BYE, not for drain_timeout
    records = daemon.log_records()
    assert any(
        r.get("event") == "sip call ended" and r.get("reason") == "remote hangup" for r in records
    )


def test_drain_timeout_hangs_up_with_bye(gatewayd: Start) -> None:
    daemon = gatewayd({"drain_timeout": 1, "sip": {"timers": FAST_TIMERS}})
    with long_call(daemon, hold_ms=20000):
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0
        assert time.monotonic() - signalled < 5
    assert any(r.get("event") == "drain time is up: hanging up" for r in daemon.log_records())


def test_session_interval_below_min_se_gets_422(gatewayd: Start) -> None:
    daemon = gatewayd()
    answer = probe(daemon, "INVITE", headers=[("Session-Expires", "30"), ("Supported", "timer")])
    assert answer.status == 422
    assert answer.headers.get("Min-SE") == "90"


def test_unknown_required_extension_gets_420(gatewayd: Start) -> None:
    daemon = gatewayd()
    answer = probe(daemon, "INVITE", headers=[("Require", "foo-bar")])
    assert answer.status == 420
    assert answer.headers.get("Unsupported") == "foo-bar"
