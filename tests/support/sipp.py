"""SIPp (Debian ``sip-tester``) as a bounded subprocess on loopback.

``run_sipp()`` runs a scenario to completion (a built-in one such as ``uac`` or
``uas``, an XML file, or XML text) and returns a ``SippResult`` with the exit
code, the successful/failed call counts (from the ``-trace_stat`` CSV, or from the
final ``-trace_screen`` dump) and the ``-trace_err`` log. ``SippUas`` keeps a
scenario (by default the built-in ``uas``) running in the background until
``stop()``. Every run has a wall-clock bound (SIPp's ``-timeout`` and a kill
after it); each gets its own temp dir, removed once the result is read.

Through a record-routing proxy (Kamailio) the built-in scenarios fail: ``uas``
drops Record-Route from its answers and ``uac`` ignores it, sending ACK and BYE
to the proxy's own URI without Route (Kamailio: 404). Use ``UAC_RR_SCENARIO``
and ``UAS_RR_SCENARIO`` there.

SIPp exit codes: 0 every call succeeded, 1 at least one failed, 97 stopped by
an internal command, 99 no call processed, 255/254 (-1/-2) fatal error / bind.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port

SIPP = "/usr/bin/sipp"
TEMPLATES = Path(__file__).with_name("templates")
REGISTER_SCENARIO = TEMPLATES / "sipp_register.xml"
"""REGISTER, expect 401, REGISTER with digest (-au/-ap), expect 200."""
UAC_RR_SCENARIO = TEMPLATES / "sipp_uac_rr.xml"
"""The built-in ``uac`` made dialog-aware (Record-Route, Contact) for use via a proxy."""
UAS_RR_SCENARIO = TEMPLATES / "sipp_uas_rr.xml"
"""The built-in ``uas`` echoing Record-Route, with a 500 ms timewait instead of 4 s."""


@dataclass
class SippResult:
    """What one SIPp run did."""

    returncode: int
    successful: int
    failed: int
    errors: str
    screen: str
    output: str
    timed_out: bool = False
    stats: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        return (
            f"sipp rc={self.returncode} ok={self.successful} failed={self.failed} "
            f"timed_out={self.timed_out}\n--- errors\n{self.errors}\n--- screen\n{self.screen}"
        )


def _loopback_target(remote: str) -> str:
    """Refuse any remote that is not 127.0.0.0/8 or ::1 (tests never leave the host)."""
    host = (
        remote[1 : remote.index("]")]
        if remote.startswith("[")
        else remote.split(":", maxsplit=1)[0]
    )
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"SIPp target {remote!r} is not on loopback")
    return remote


def _media_port() -> int:
    """A free UDP port P with P+2 free too: SIPp binds both (audio and video echo)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port + 2))
        except (OSError, OverflowError):
            continue
        return port
    raise RuntimeError("no free media port")


def scenario_args(
    *,
    calls: int | None = None,
    rate: float | None = None,
    limit: int | None = None,
    service: str | None = None,
    auth: tuple[str, str] | None = None,
    keys: Mapping[str, str] | None = None,
) -> list[str]:
    """SIPp flags for ``-m``, ``-r``, ``-l``, ``-s``, ``-au``/``-ap`` and ``-key``."""
    args: list[str] = []
    for flag, value in (("-m", calls), ("-r", rate), ("-l", limit), ("-s", service)):
        if value is not None:
            args += [flag, str(value)]
    if auth is not None:
        args += ["-au", auth[0], "-ap", auth[1]]
    for key, value in (keys or {}).items():
        args += ["-key", key, value]
    return args


class _SippRun:
    """Builds the command line and turns the files SIPp wrote into a SippResult."""

    def __init__(
        self,
        scenario: str | Path,
        remote: str | None,
        *,
        local_port: int,
        transport: str,
        args: Sequence[str],
        timeout: float,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-test-"))
        self.stat_path = self.workdir / "stat.csv"
        self.error_path = self.workdir / "errors.log"
        self.screen_path = self.workdir / "screen.log"
        self.output_path = self.workdir / "output.log"
        if isinstance(scenario, Path):
            scen = ["-sf", str(scenario)]
        elif scenario.lstrip().startswith("<"):
            path = self.workdir / "scenario.xml"
            path.write_text(scenario)
            scen = ["-sf", str(path)]
        else:
            scen = ["-sn", scenario]
        self.cmd = [SIPP, *scen]
        if remote is not None:
            self.cmd.append(_loopback_target(remote))
        self.cmd += [
            *("-i", "127.0.0.1", "-p", str(local_port), "-t", transport),
            *("-mi", "127.0.0.1", "-mp", str(_media_port())),
            *("-cp", str(free_port(socket.SOCK_DGRAM))),
            "-nostdin",
            *("-timeout", f"{max(1, int(timeout))}s", "-timeout_error"),
            *("-trace_stat", "-stf", str(self.stat_path), "-fd", "1"),
            *("-trace_err", "-error_file", str(self.error_path)),
            *("-trace_screen", "-screen_file", str(self.screen_path)),
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.output_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def finish(self, wait: float, soft_stop: bool = False) -> SippResult:
        """Wait up to ``wait`` s (USR1 first if ``soft_stop``), kill if needed, read files."""
        assert self.proc is not None
        timed_out = False
        if soft_stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp's 'q': finish calls, then exit
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(2.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            return self._result(self.proc.returncode, timed_out)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _result(self, returncode: int, timed_out: bool) -> SippResult:
        def read(path: Path) -> str:
            return path.read_text(errors="replace") if path.exists() else ""

        stats = _last_stats_row(read(self.stat_path))
        screen = read(self.screen_path)
        ok, failed = _counts(stats, screen)
        return SippResult(
            returncode,
            ok,
            failed,
            read(self.error_path),
            screen,
            read(self.output_path),
            timed_out,
            stats,
        )


def _last_stats_row(text: str) -> dict[str, str]:
    """The last row of the ``;``-separated -trace_stat CSV, keyed by its header."""
    rows = [r for r in csv.reader(text.splitlines(), delimiter=";") if r]
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}


def _counts(stats: Mapping[str, str], screen: str) -> tuple[int, int]:
    """Successful and failed calls: from the CSV, else from the last screen dump."""
    if "SuccessfulCall(C)" in stats:
        return int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])

    def last(label: str) -> int:
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
        return int(found[-1]) if found else 0

    return last("Successful call"), last("Failed call")


def run_sipp(
    scenario: str | Path = "uac",
    remote: str | None = None,
    *,
    calls: int | None = 1,
    rate: float | None = 10,
    limit: int | None = None,
    service: str | None = None,
    auth: tuple[str, str] | None = None,
    local_port: int | None = None,
    transport: str = "u1",
    keys: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 15.0,
) -> SippResult:
    """Run SIPp to the end (``-m calls``) or for at most ``timeout`` seconds.

    ``scenario``: built-in name (``uac``, ``uas``, ...), a ``Path`` to XML, or XML
    text. ``remote``: ``127.0.0.1:PORT``. ``auth``: (user, password) for ``-au/-ap``.
    """
    args = scenario_args(calls=calls, rate=rate, limit=limit, service=service, auth=auth, keys=keys)
    run = _SippRun(
        scenario,
        remote,
        local_port=local_port or free_port(),
        transport=transport,
        args=[*args, *extra_args],
        timeout=timeout,
    )
    run.start()
    return run.finish(timeout + 3.0)


class SippUas:
    """A SIPp scenario (default: built-in ``uas``) answering in the background."""

    def __init__(
        self,
        scenario: str | Path = "uas",
        *,
        port: int | None = None,
        calls: int | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        self.scenario = scenario
        self.port = port or free_port()
        self.args = [*scenario_args(calls=calls), *extra_args]
        self.timeout = timeout
        self._run: _SippRun | None = None
        self.result: SippResult | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` where it listens."""
        return f"127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        """The temp dir of the running SIPp (trace files); removed by ``stop()``."""
        if self._run is None:
            raise RuntimeError("SippUas not started")
        return self._run.workdir

    def start(self, ready_timeout: float = 5.0) -> SippUas:
        """Start SIPp and wait until its UDP port is taken (it is listening)."""
        self._run = _SippRun(
            self.scenario,
            None,
            local_port=self.port,
            transport="u1",
            args=self.args,
            timeout=self.timeout,
        )
        self._run.start()
        assert self._run.proc is not None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._run.proc.poll() is not None:
                result = self.stop()
                raise RuntimeError(f"sipp exited early:\n{result.output}\n{result.describe()}")
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", self.port))
            except OSError:
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("sipp did not bind its port")

    def stop(self, soft: bool = True, wait: float = 6.0) -> SippResult:
        """End SIPp and return its result (the first result on later calls).

        ``soft``: SIGUSR1, SIPp's 'q', lets calls finish; the built-in ``uas`` keeps
        each call 4 s in its closing timewait, so this can take that long. Counts
        are exact. Otherwise SIGTERM at once: fast, but SIPp writes no final stats.
        SIGTERM/SIGKILL follow if SIPp is still there after ``wait`` seconds.
        """
        if self._run is None:
            raise RuntimeError("SippUas.stop() before start()")
        if self.result is None:
            if not soft and self._run.proc is not None:
                self._run.proc.send_signal(signal.SIGTERM)
            self.result = self._run.finish(wait, soft_stop=soft)
        return self.result

    def __enter__(self) -> SippUas:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
