"""sd_notify against a real unix datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from gateway.systemd import SystemdNotifier


def test_notify_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        assert notifier.ready("ready, web http://x")
        assert notifier.stopping("draining")
        notifier.close()
        first = server.recv(4096).decode().splitlines()
        second = server.recv(4096).decode().splitlines()
    assert "READY=1" in first and f"MAINPID={os.getpid()}" in first
    assert "STATUS=ready, web http://x" in first
    assert "STOPPING=1" in second


def test_notify_to_an_abstract_socket() -> None:
    name = f"gatewayd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        notifier.close()
        assert server.recv(4096) == b"WATCHDOG=1"


def test_without_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_watchdog_interval_only_for_this_process() -> None:
    mine = SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 30.0
    other = SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify(status="x") is False
