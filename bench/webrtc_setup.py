"""Call set-up in real browsers: the citizen's click to the first decoded remote frame.

Debian's Chromium (fake camera and microphone) under Playwright, against
the real daemon on loopback, one appointment per run: the agent page is
open and admits as soon as somebody waits (a script clicks "Admit" the
moment the button appears, an agent who is paying attention); the citizen
consents and clicks "Continue to the waiting room". Measured per run, on
the wall clock shared by both pages (``Date.now()``):

* ``enter_to_frame``: the citizen's click to the first remote video frame
  presented on the citizen's page (``requestVideoFrameCallback``), the
  issue's measure: waiting room, admission, offer/answer, ICE, DTLS, the
  first keyframe through the gateway;
* ``admit_to_frame``: the agent's click to that frame (without the time
  the citizen spends in the waiting room);
* ``enter_to_agent_frame``: the click to the agent's first frame of the
  citizen.

Prints p50/p95/max in milliseconds as JSON (goal: enter_to_frame p50 and
p95 < 500 ms on loopback).
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from bench import emit, log, percentile
from tests.support.daemon import start_daemon

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]

#: The first presented frame of a <video>, stored as window.__firstFrame (ms since epoch).
FIRST_FRAME = """
(id) => {
  const video = document.getElementById(id);
  window.__firstFrame = null;
  video.requestVideoFrameCallback(() => { window.__firstFrame = Date.now(); });
}
"""

#: Click "Admit" as soon as it appears; the click time goes to window.__admitAt.
AUTO_ADMIT = """
() => {
  window.__admitAt = null;
  const lobby = document.getElementById('lobby');
  const admit = () => {
    const button = lobby.querySelector('button.primary');
    if (button && window.__admitAt === null) { window.__admitAt = Date.now(); button.click(); }
  };
  new MutationObserver(admit).observe(lobby, { childList: true, subtree: true });
  admit();
}
"""


def _run_once(agent: Any, citizen: Any, base: str) -> dict[str, float]:
    agent.goto(f"{base}/agent/")
    agent.get_by_role("button", name="Create appointment").click()
    link = agent.locator("#citizen-link").input_value()
    agent.get_by_role("link", name=re.compile("this appointment's call")).click()
    agent.locator("#lobby-empty").wait_for()
    agent.evaluate(AUTO_ADMIT)
    agent.evaluate(FIRST_FRAME, "remote-video")

    citizen.goto(f"{link}?lang=en")
    citizen.locator("#consent").check()
    citizen.get_by_role("button", name="Continue to the device test").click()
    citizen.wait_for_selector("#dt-summary[data-state=ok]", timeout=30000)
    citizen.evaluate(FIRST_FRAME, "remote-video")
    clicked = citizen.evaluate("() => Date.now()")
    citizen.get_by_role("button", name="Continue to the waiting room").click()
    citizen.wait_for_function("() => window.__firstFrame !== null", timeout=30000)
    agent.wait_for_function("() => window.__firstFrame !== null", timeout=30000)
    first = citizen.evaluate("() => window.__firstFrame")
    agent_first = agent.evaluate("() => window.__firstFrame")
    admitted = agent.evaluate("() => window.__admitAt")
    agent.get_by_role("button", name="End call").click()
    citizen.locator("#step-ended").wait_for()
    return {
        "enter_to_frame": first - clicked,
        "admit_to_frame": first - admitted,
        "enter_to_agent_frame": agent_first - clicked,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench webrtc_setup")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    daemon = start_daemon(extra_args=["--demo"])
    try:
        match = re.search(r"user: demo\s+password: (\S+)", daemon.logs())
        if match is None:
            raise RuntimeError("the demo daemon printed no agent password")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
            )
            agent = browser.new_context(locale="en-GB").new_page()
            agent.goto(f"{daemon.base_url}/agent/login?lang=en")
            agent.get_by_label("User name").fill("demo")
            agent.get_by_label("Password").fill(match.group(1))
            agent.get_by_role("button", name="Sign in").click()
            samples: dict[str, list[float]] = {}
            for run in range(args.runs):
                citizen_context = browser.new_context(locale="en-GB")
                started = time.monotonic()
                result = _run_once(agent, citizen_context.new_page(), daemon.base_url)
                citizen_context.close()
                for key, value in result.items():
                    samples.setdefault(key, []).append(value)
                log(f"run {run + 1}: {result} ({time.monotonic() - started:.1f} s)")
            browser.close()
    finally:
        daemon.stop()
    for key, values in samples.items():
        for q in (50, 95):
            emit("webrtc_setup", f"{key}_p{q}", percentile(values, q), "ms",
                 runs=args.runs, goal_ms=500 if key == "enter_to_frame" else None)  # fmt: skip
        emit("webrtc_setup", f"{key}_max", max(values), "ms", runs=args.runs)
