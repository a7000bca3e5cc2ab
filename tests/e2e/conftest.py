"""Browser end-to-end fixtures: Debian's Chromium under Playwright, axe-core, the daemon.

Chromium is /usr/bin/chromium from Debian (scripts/system-packages.txt);
Playwright never downloads a browser. axe-core comes from npm into
``.cache/axe`` the first time a session needs it. Screenshots go to
``.artifacts/screenshots``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.daemon import REPO, Daemon, start_daemon

CHROMIUM = Path("/usr/bin/chromium")
AXE_VERSION = "4.14.1"
AXE_DIR = REPO / ".cache" / "axe"
AXE_FILE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / ".artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",  # WebAudio analysers in the tests
    # getDisplayMedia without a picker: the fake devices give a 1280x720 screen.
    "--auto-select-desktop-capture-source=gatewayd",
]


def ensure_axe() -> Path:
    """axe.min.js of the pinned axe-core, installed with npm when missing."""
    if (
        not AXE_FILE.is_file()
        or f'"version": "{AXE_VERSION}"' not in (AXE_FILE.parent / "package.json").read_text()
    ):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install axe-core for the e2e tests (apt-get install npm)")
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund",
             "--no-save", f"axe-core@{AXE_VERSION}"],
            check=True,
            capture_output=True,
            timeout=300,
        )  # fmt: skip
    return AXE_FILE


@pytest.fixture(scope="session")
def axe_source() -> str:
    return ensure_axe().read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: Playwright's sync API keeps an event loop
    # running in this thread while it is open, and asyncio tests that run
    # after it would fail with "cannot be called from a running event loop".
    if not CHROMIUM.is_file():
        pytest.fail("e2e tests need Debian's chromium: make system-packages (as root)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@dataclass
class DemoDaemon:
    daemon: Daemon
    password: str

    @property
    def base(self) -> str:
        return self.daemon.base_url


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoDaemon]:
    """The real daemon in demo mode (it prints the demo agent's password once)."""
    daemon = start_daemon(extra_args=["--demo"])
    try:
        match = re.search(r"user: demo\s+password: (\S+)", daemon.logs())
        assert match, daemon.logs()
        yield DemoDaemon(daemon, match.group(1))
    finally:
        daemon.stop()


def metric(demo: DemoDaemon, name: str, **labels: str) -> float:
    """One series of the daemon's /metrics (0 when a labelled series is not there yet)."""
    with urllib.request.urlopen(f"{demo.base}/metrics", timeout=5) as response:
        text = response.read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = re.escape(f"{name}{{{selector}}}" if labels else name)
    match = re.search(rf"^{series} (\S+)$", text, re.M)
    if match is None and labels:
        return 0.0
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def create_appointment(agent: Page, demo: DemoDaemon) -> str:
    """The demo agent logs in (English) and creates an appointment; returns the citizen
    link, with the agent's page on the "appointment created" page."""
    agent.goto(f"{demo.base}/agent/login?lang=en")
    agent.get_by_label("User name").fill("demo")
    agent.get_by_label("Password").fill(demo.password)
    agent.get_by_role("button", name="Sign in").click()
    agent.get_by_role("button", name="Create appointment").click()
    return agent.locator("#citizen-link").input_value()


class Checked:
    """A page whose CSP violations and script errors are collected."""

    def __init__(self, page: Page, axe: str) -> None:
        self.page = page
        self.axe = axe
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text:
            self.problems.append(f"CSP: {text}")

    def _response(self, response: Any) -> None:
        # Link pages answer 404/410/425 on purpose (documents); the signaling
        # socket's own answers are the signaling tests' business.
        if (
            response.status >= 400
            and response.request.resource_type != "document"
            and not response.url.endswith("/ws")
        ):
            self.problems.append(f"{response.status} for {response.url}")

    def audit(self, name: str) -> None:
        """axe finds no serious or critical violation; a screenshot is kept; no CSP errors."""
        self.page.evaluate(self.axe)
        result = self.page.evaluate(
            "async () => (await axe.run(document)).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => v.id + ': ' + v.help + ' @ ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        assert result == [], f"{name}: accessibility violations: {result}"
        assert self.problems == [], f"{name}: {self.problems}"
