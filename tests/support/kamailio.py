"""A real Kamailio SIP proxy/registrar on loopback for interop tests.

``KamailioServer`` writes a generated ``kamailio.cfg`` and a db_text credentials
directory into a temp dir, runs ``kamailio -DD -E`` in the foreground with a
small memory budget, waits until it answers an OPTIONS, and stops it by PID.

Policy of the generated config:
- REGISTER needs digest auth (``www_authorize``: 401 challenge), then ``save``.
- Out-of-dialog requests whose From is a local user need proxy auth (407) when
  ``auth_invite`` is set; requests from foreign domains may only reach local users.
- Requests to a local user are looked up in ``location`` (or in ``static_routes``)
  and relayed with ``record_route()`` + ``t_relay()``; in-dialog requests follow
  ``loose_route``. OPTIONS to the proxy itself gets 200 (the readiness probe).

db_text format (Kamailio 5.6, copied from /usr/share/kamailio/dbtext/kamailio):
one file per table, first line the header ``name(type[,null|auto]) ...``, then
one row per line with ``:`` between columns and ``\\:`` for a colon in a value;
a ``version`` table must give the schema version of every table used
(``subscriber`` is 7).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

from tests.support.net import free_port

KAMAILIO = "/usr/sbin/kamailio"
MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
SUBSCRIBER_VERSION = 7

TEMPLATE = Path(__file__).with_name("templates") / "kamailio.cfg"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _dbtext_value(value: str) -> str:
    """Escape one db_text column value (``:``, ``\\`` and line breaks are special)."""
    if any(c in value for c in "\r\n"):
        raise ValueError("db_text values cannot hold line breaks")
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_dbtext(dbdir: Path, users: Mapping[str, str], domain: str) -> None:
    """Write the ``version`` and ``subscriber`` db_text tables for ``users`` (name -> password)."""
    dbdir.mkdir(parents=True, exist_ok=True)
    (dbdir / "version").write_text(
        f"id(int,auto) table_name(string) table_version(int) \n1:subscriber:{SUBSCRIBER_VERSION}\n"
    )
    rows = [
        "id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) "
    ]
    for n, (user, password) in enumerate(users.items(), start=1):
        ha1 = _md5(f"{user}:{domain}:{password}")
        ha1b = _md5(f"{user}@{domain}:{domain}:{password}")
        cols = [str(n), user, domain, password, ha1, ha1b]
        rows.append(":".join(_dbtext_value(c) for c in cols))
    (dbdir / "subscriber").write_text("\n".join(rows) + "\n")


def sip_options(host: str, port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS over UDP; return the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(timeout)
        lport = sock.getsockname()[1]
        tag, call_id = uuid.uuid4().hex[:8], uuid.uuid4().hex
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{host}:{lport}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), (host, port))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        return data.split(b"\r\n", 1)[0].decode(errors="replace")


class KamailioServer:
    """A Kamailio process on ``127.0.0.1:<free port>`` (UDP and TCP) with digest users.

    Use as a context manager, or call ``start()`` and ``stop()``. ``static_routes``
    maps a user part to a SIP URI the proxy relays to without registration (for a
    peer that does not REGISTER, such as the gateway under test).
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        auth_invite: bool = True,
        static_routes: Mapping[str, str] | None = None,
        port: int | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.users = dict(users or {})
        self.auth_invite = auth_invite
        self.static_routes = dict(static_routes or {})
        self.domain = "127.0.0.1"
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self._port_given = port is not None
        # made by start(), removed by stop()
        self.workdir = Path(tempfile.gettempdir()) / f"kamailio-test-{uuid.uuid4().hex[:12]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    def uri(self, user: str) -> str:
        """``sip:user@127.0.0.1:PORT`` at this proxy."""
        return f"sip:{user}@{self.domain}:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as SIPp and outbound proxy settings want it."""
        return f"{self.domain}:{self.port}"

    def log_text(self) -> str:
        """Everything Kamailio wrote so far (kept after ``stop()`` removed the temp dir)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def config_text(self) -> str:
        """The generated kamailio.cfg."""
        routes = []
        for user, target in self.static_routes.items():
            if '"' in user or '"' in target:
                raise ValueError("static route user and target cannot hold quotes")
            routes.append(
                f'    if ($rU == "{user}") {{\n        $du = "{target}";\n'
                "        route(RELAY);\n        exit;\n    }"
            )
        values = {
            "@HOST@": self.domain,
            "@PORT@": str(self.port),
            "@MODULES@": MODULES_DIR,
            "@DBDIR@": str(self.workdir / "db"),
            "@AUTH_INVITE@": "1==1" if self.auth_invite else "1==0",
            "@STATIC_ROUTES@": "\n".join(routes),
        }
        text = TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    @property
    def cfg_path(self) -> Path:
        """The generated kamailio.cfg (in the temp dir)."""
        return self.workdir / "kamailio.cfg"

    @property
    def log_path(self) -> Path:
        """Kamailio's stderr (in the temp dir)."""
        return self.workdir / "kamailio.log"

    def start(self) -> KamailioServer:
        """Write config and tables, start Kamailio, wait until it answers OPTIONS.

        If another process took the free port first, retries on a new one (unless
        the port was given).
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except RuntimeError as exc:
                if self._port_given or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self.port = free_port()
                self.workdir = self.workdir.with_name(f"kamailio-test-{uuid.uuid4().hex[:12]}")
                self._final_log = None
        raise AssertionError("unreachable")

    def _start_once(self) -> KamailioServer:
        self.workdir.mkdir(mode=0o700)
        write_dbtext(self.workdir / "db", self.users, self.domain)
        self.cfg_path.write_text(self.config_text())
        (self.workdir / "run").mkdir()
        cmd = [
            KAMAILIO,
            *("-DD", "-E", "-f", str(self.cfg_path), "-P", str(self.workdir / "kamailio.pid")),
            *("-Y", str(self.workdir / "run"), "-w", str(self.workdir), "-m", "64", "-M", "8"),
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kamailio exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            if sip_options(self.domain, self.port, 0.3) is not None:
                return
        raise TimeoutError(f"kamailio silent for {self.start_timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM the main process (it stops its children), SIGKILL if it lingers."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._note_hang(timeout)
                    self.proc.kill()
                    self.proc.wait(timeout)
            code = self.proc.returncode
            self._kill_orphans()
        self._final_log = self.log_text()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def _note_hang(self, timeout: float) -> None:
        """Say in the log and as a warning which processes ignored SIGTERM, and where."""
        states = []
        for pid in self._our_pids():
            try:
                states.append(f"{pid}:{Path(f'/proc/{pid}/wchan').read_text()}")
            except OSError:
                continue
        note = f"kamailio ignored SIGTERM for {timeout}s, SIGKILL; pid:wchan {states}"
        with self.log_path.open("a") as log:
            log.write(f"\n[fixture] {note}\n")
        warnings.warn(note, RuntimeWarning, stacklevel=3)

    def _our_pids(self) -> list[int]:
        """Every process running our config: the main process and its children."""
        needle, pids = str(self.cfg_path).encode(), []
        for procdir in Path("/proc").glob("[0-9]*"):
            try:
                if needle in (procdir / "cmdline").read_bytes():
                    pids.append(int(procdir.name))
            except OSError:
                continue
        return pids

    def _kill_orphans(self) -> None:
        """SIGKILL any process still running our config (children of a killed main)."""
        for pid in self._our_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> KamailioServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
