"""The real daemon as a subprocess: ops endpoints, reload, drain, systemd notify."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.support.daemon import Daemon, write_config

Start = Callable[..., Daemon]


def _metric(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_ops_endpoints_answer(gatewayd: Start) -> None:
    daemon = gatewayd()
    status, _, body = daemon.http("/healthz")
    assert status == 200 and b'"ok"' in body
    status, _, body = daemon.http("/readyz")
    assert status == 200 and b'"ready"' in body
    status, headers, body = daemon.http("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert _metric(body, "gatewayd_up") == 1.0
    assert _metric(body, "gatewayd_calls_active") == 0.0
    assert b'gatewayd_build_info{python="' in body and b'version="' in body
    assert b'gatewayd_config_reloads_total{result="ok"} 0.0' in body
    assert b"process_resident_memory_bytes" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _, _ = daemon.http("/no/such/page")
    assert status == 404


def test_metrics_token_is_required_when_set(gatewayd: Start) -> None:
    token = "0123456789abcdef-token"
    daemon = gatewayd(
        {"web": {"metrics_token": "${env:GW_METRICS_TOKEN}"}}, env={"GW_METRICS_TOKEN": token}
    )
    assert daemon.http("/metrics")[0] == 401
    assert daemon.http("/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert daemon.http("/metrics", {"Authorization": f"Bearer {token}"})[0] == 200
    assert token not in daemon.logs()


def test_systemd_hears_ready_and_stopping_and_exit_is_clean(gatewayd: Start) -> None:
    daemon = gatewayd()
    ready = [n for n in daemon.read_notifications() if "READY=1" in n]
    assert ready and f"MAINPID={daemon.proc.pid}" in ready[0]
    daemon.signal(signal.SIGTERM)
    daemon.wait_notification("STOPPING=1", timeout=5)
    assert daemon.proc.wait(10) == 0
    events = [r.get("event") for r in daemon.log_records()]
    assert "gatewayd ready" in events and "stopped" in events


def test_watchdog_pings_when_systemd_asks(gatewayd: Start) -> None:
    daemon = gatewayd(env={"WATCHDOG_USEC": "400000"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sum("WATCHDOG=1" in n for n in daemon.read_notifications(0.2)) >= 2:
            break
    assert sum("WATCHDOG=1" in n for n in daemon.notifications) >= 2


def _reload_count(daemon: Daemon, result: str) -> float:
    return _metric(
        daemon.http("/metrics")[2], f'gatewayd_config_reloads_total{{result="{result}"}}'
    )


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_sighup_applies_a_good_file_and_rejects_a_broken_one(gatewayd: Start) -> None:
    daemon = gatewayd()
    config: dict[str, Any] = yaml.safe_load(daemon.config_path.read_text())
    config["log"]["level"] = "debug"
    config["drain_timeout"] = 7
    write_config(daemon.config_path, config)
    daemon.signal(signal.SIGHUP)
    _wait_for(lambda: _reload_count(daemon, "ok") == 1.0)
    assert any(r.get("event") == "config reloaded" for r in daemon.log_records())

    broken = daemon.config_path.read_text().replace("drain_timeout: 7", "drain_timeout: never")
    daemon.config_path.write_text(broken + "web_port: 1\n")
    daemon.signal(signal.SIGHUP)
    _wait_for(lambda: _reload_count(daemon, "error") == 1.0)
    rejected = [r for r in daemon.log_records() if r.get("event") == "config reload rejected"]
    problems = " | ".join(str(r["problem"]) for r in rejected)
    assert "web_port: unknown key" in problems and "drain_timeout: " in problems
    assert "(line" in problems
    # still serving with the previous configuration
    assert daemon.http("/readyz")[0] == 200
    assert _reload_count(daemon, "ok") == 1.0


def test_sigterm_drains_and_exits_zero_within_drain_timeout(gatewayd: Start) -> None:
    daemon = gatewayd({"drain_timeout": 3})
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - started < 3 + 2


def test_start_up_failure_is_a_clear_error(gatewayd: Start) -> None:
    first = gatewayd()
    second = gatewayd({"web": {"port": first.web_port}}, wait_ready=False)
    assert second.proc.wait(15) == 1
    failure = [r for r in second.log_records() if r.get("event") == "start-up failed"]
    assert failure and f":{first.web_port}" in str(failure[0]["error"])
    assert "Traceback" not in second.logs()
