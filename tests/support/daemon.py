"""Start the real gatewayd as a subprocess, as systemd would, and talk to it.

Used by integration tests and by benchmarks. The daemon gets a private
NOTIFY_SOCKET (a real unix datagram socket) so READY=1 / STOPPING=1 are
observed exactly as systemd would see them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Daemon:
    """A running gatewayd subprocess."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    web_port: int
    sip_port: int
    notify: socket.socket
    log_path: Path
    workdir: Path
    notifications: list[str] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def http(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """GET a path; returns status, headers, body (errors included, not raised)."""
        req = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def read_notifications(self, timeout: float = 0.0) -> list[str]:
        """Collect every sd_notify datagram received so far (waits up to ``timeout`` for one)."""
        self.notify.settimeout(timeout if timeout > 0 else 0.0001)
        while True:
            try:
                data = self.notify.recv(4096)
            except (TimeoutError, BlockingIOError):
                break
            self.notifications.append(data.decode())
            self.notify.settimeout(0.0001)
        return self.notifications

    def wait_notification(self, needle: str, timeout: float = 15.0) -> float:
        """Wait until a datagram containing ``needle`` arrives; returns the time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in n for n in self.read_notifications(0.1)):
                return time.monotonic()
            if self.proc.poll() is not None:
                raise RuntimeError(f"gatewayd exited with {self.proc.returncode}:\n{self.logs()}")
        raise TimeoutError(f"no {needle!r} from gatewayd within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        return self.proc.returncode


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def base_config(workdir: Path, web_port: int, sip_port: int) -> dict[str, Any]:
    return {
        "node_id": "test-node",
        "data_dir": str(workdir / "data"),
        "drain_timeout": 5,
        "log": {"level": "info", "format": "json"},
        "web": {"host": "127.0.0.1", "port": web_port},
        "sip": {"host": "127.0.0.1", "port": sip_port, "transports": ["udp", "tcp"]},
    }


def start_daemon(
    config: dict[str, Any] | None = None,
    *,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    workdir: Path | None = None,
) -> Daemon:
    """Start gatewayd on free ports; ``config`` entries override the base config."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
    web_port, sip_port = free_port(), free_port()
    full = base_config(workdir, web_port, sip_port)
    for key, value in (config or {}).items():
        if isinstance(value, dict) and isinstance(full.get(key), dict):
            full[key] = {**full[key], **value}
        else:
            full[key] = value
    web_port = int(full["web"]["port"])
    sip_port = int(full["sip"]["port"])
    config_path = workdir / "gatewayd.yaml"
    write_config(config_path, full)
    notify_path = workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    log_path = workdir / "gatewayd.log"
    proc_env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    proc_env.update({"NOTIFY_SOCKET": str(notify_path), "PYTHONUNBUFFERED": "1"})
    proc_env.update(env or {})
    with log_path.open("wb") as log_file:
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "gatewayd.py"),
                "run",
                "--config",
                str(config_path),
                *(extra_args or []),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=proc_env,
            cwd=workdir,
        )
    daemon = Daemon(
        proc, config_path, web_port, sip_port, notify, log_path, workdir, started_at=started
    )
    if wait_ready:
        try:
            daemon.wait_notification("READY=1")
        except BaseException:
            daemon.stop()
            raise
    return daemon
