"""A whole appointment in two real Chromium pages through the real daemon.

The agent logs in and creates the appointment, the citizen opens the link,
consents, passes the device test and waits; the agent sees the device status
and admits; then both pages must decode each other's video (getStats and a
non-black sample of the <video>) and hear each other (audio energy), chat
both ways, see the other's shared screen, and the agent must receive less
when the citizen switches to data saving. A hang-up on either side leaves no
call and no WebRTC leg in the daemon's metrics.

The pages are used as a person would (buttons, labels); only getStats needs
a hook: an init script keeps the page's RTCPeerConnections in
``window.__pcs``.
"""

from __future__ import annotations

import functools
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import Checked, DemoDaemon, create_appointment, metric

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

KEEP_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""

#: Per m-line (mid "0" audio, "1" camera, "2" screen) what the call's connection received.
INBOUND = """
async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  const out = {};
  if (!pc) return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    out[r.mid] = { frames: r.framesDecoded || 0, width: r.frameWidth || 0,
      bytes: r.bytesReceived || 0, energy: r.totalAudioEnergy || 0,
      level: r.audioLevel || 0, at: r.timestamp };
  });
  return out;
}
"""

#: Mean brightness (0-255) of a 64x48 sample of a <video>; 0 when it has no picture.
BRIGHTNESS = """
(id) => {
  const video = document.getElementById(id);
  if (!video || !video.videoWidth) return 0;
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 48;
  const g = canvas.getContext('2d');
  g.drawImage(video, 0, 0, 64, 48);
  const data = g.getImageData(0, 0, 64, 48).data;
  let sum = 0;
  for (let i = 0; i < data.length; i += 4) sum += data[i] + data[i + 1] + data[i + 2];
  return sum / (data.length / 4) / 3;
}
"""


def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def inbound(page: Page, mid: str) -> dict[str, Any]:
    stats: dict[str, dict[str, Any]] = page.evaluate(INBOUND)
    return stats.get(mid, {"frames": 0, "width": 0, "bytes": 0, "energy": 0, "level": 0, "at": 0})


def video_bitrate(page: Page, mid: str = "1", seconds: float = 3.0) -> float:
    """kbit/s received on ``mid`` over the next ``seconds``."""
    first = inbound(page, mid)
    time.sleep(seconds)
    last = inbound(page, mid)
    bits = float(last["bytes"] - first["bytes"]) * 8
    elapsed_ms = float(last["at"] - first["at"])
    return bits / max(0.001, elapsed_ms)


@dataclass
class Appointment:
    agent: Page
    citizen: Page
    agent_checked: Checked
    citizen_checked: Checked


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900})
    context.add_init_script(KEEP_PEER_CONNECTIONS)
    return context


@pytest.fixture
def appointment(browser: Browser, demo: DemoDaemon, axe_source: str) -> Iterator[Appointment]:
    """Agent and citizen up to the admitted, connected call."""
    agent_context, citizen_context = _context(browser), _context(browser)
    agent_checked = Checked(agent_context.new_page(), axe_source)
    agent = agent_checked.page
    link = create_appointment(agent, demo)
    agent.get_by_role("link", name=re.compile("this appointment's call")).click()
    expect(agent.locator("#lobby-empty")).to_be_visible()

    citizen_checked = Checked(citizen_context.new_page(), axe_source)
    citizen = citizen_checked.page
    citizen.goto(f"{link}?lang=en")
    citizen.locator("#consent").check()
    citizen.get_by_role("button", name="Continue to the device test").click()
    expect(citizen.locator("#dt-summary")).to_have_attribute("data-state", "ok", timeout=20000)
    citizen.get_by_role("button", name="Continue to the waiting room").click()
    expect(citizen.get_by_role("heading", name="Waiting room", exact=True)).to_be_visible()

    # The agent sees who waits, with the live device status, and lets them in.
    status = agent.locator("#lobby .device-status")
    expect(status).to_contain_text("camera on", timeout=15000)
    expect(status).to_contain_text("Chrome")
    agent.get_by_role("button", name=re.compile("^Admit")).click()
    expect(citizen.locator("#step-call")).to_be_visible(timeout=10000)
    for page in (agent, citizen):
        expect(page.locator("#call-state")).to_have_text(re.compile("Connected"), timeout=20000)
    yield Appointment(agent, citizen, agent_checked, citizen_checked)
    agent_context.close()
    citizen_context.close()


def _sees_and_hears(page: Page) -> None:
    until("remote video frames decoded", lambda: inbound(page, "1")["frames"] > 10)
    until("a non-black remote picture", lambda: page.evaluate(BRIGHTNESS, "remote-video") > 20)
    until("remote audio", lambda: inbound(page, "0")["energy"] > 0)
    until("an audio level above zero", lambda: inbound(page, "0")["level"] > 0, timeout=10)


def _chat(sender: Page, receiver: Page, text: str) -> None:
    sender.get_by_label("Message").fill(text)
    sender.get_by_role("button", name="Send").click()
    expect(receiver.locator("#chat-log")).to_contain_text(text)


def test_a_whole_appointment_in_two_browsers(appointment: Appointment, demo: DemoDaemon) -> None:
    agent, citizen = appointment.agent, appointment.citizen
    assert metric(demo, "gatewayd_webrtc_legs_active") == 2
    _sees_and_hears(agent)
    _sees_and_hears(citizen)
    appointment.citizen_checked.audit("citizen-in-call-en")
    appointment.agent_checked.audit("agent-in-call-en")

    _chat(citizen, agent, "Guten Tag, ich höre Sie gut.")
    _chat(agent, citizen, "Ich Sie auch. <b>kein HTML</b>")
    assert citizen.locator("#chat-log b").count() == 0  # text, never markup

    # The citizen shares the screen: the agent shows it large, camera small.
    citizen.get_by_role("button", name="Share screen").click()
    expect(citizen.locator("#btn-screen")).to_have_attribute("aria-pressed", "true")
    expect(agent.locator("#call")).to_have_class(re.compile("remote-screen"))
    expect(agent.locator("#remote-screen")).to_be_visible()
    until("screen frames at the agent", lambda: inbound(agent, "2")["frames"] > 10)
    until("a screen picture", lambda: agent.evaluate(BRIGHTNESS, "remote-screen") > 5)
    assert inbound(agent, "2")["width"] >= 640  # the screen keeps its resolution
    appointment.agent_checked.audit("agent-sees-screen-en")
    citizen.get_by_role("button", name="Share screen").click()  # stop sharing
    expect(agent.locator("#call")).not_to_have_class(re.compile("remote-screen"))
    expect(agent.locator("#remote-screen")).to_be_hidden()

    # Data saving on the citizen's side: the agent receives smaller, cheaper video.
    # (Chrome itself lowers the resolution when the machine is busy: more than
    # 320 pixels is the size before, whatever the load.)
    until("a camera picture over 320 pixels", lambda: inbound(agent, "1")["width"] > 320)
    # Without the gateway's cap the citizen's video would stay well above it.
    until("over 300 kbit/s to the citizen", lambda: video_bitrate(citizen, seconds=1) > 300)
    before = video_bitrate(agent)
    citizen.get_by_role("button", name="Data saving mode").click()
    expect(citizen.locator("#call-quality")).to_contain_text("200")
    expect(agent.locator("#in-call")).to_contain_text("data saving")  # the agent sees it
    until("a 320-pixel picture", lambda: 0 < inbound(agent, "1")["width"] <= 320, timeout=20)
    time.sleep(2)  # let the encoder settle on its new budget
    after = video_bitrate(agent)
    assert after <= 260, f"{after:.0f} kbit/s after data saving (was {before:.0f})"
    # ... and the gateway keeps what the citizen is sent under the same budget.
    received = video_bitrate(citizen)
    assert received <= 260, f"the citizen still receives {received:.0f} kbit/s"

    agent.get_by_role("button", name="End call").click()
    expect(citizen.locator("#step-ended")).to_be_visible(timeout=10000)
    until("no call left", lambda: metric(demo, "gatewayd_calls_active") == 0)
    until("no WebRTC leg left", lambda: metric(demo, "gatewayd_webrtc_legs_active") == 0)
    assert appointment.agent_checked.problems == []
    assert appointment.citizen_checked.problems == []


def test_the_citizen_hangs_up(appointment: Appointment, demo: DemoDaemon) -> None:
    agent, citizen = appointment.agent, appointment.citizen
    until("remote video at the agent", lambda: inbound(agent, "1")["frames"] > 0)
    citizen.get_by_role("button", name="End call").click()
    expect(citizen.locator("#step-ended")).to_be_visible()
    expect(agent.locator("#connection-state")).to_contain_text(re.compile("ended", re.I))
    until("no call left", lambda: metric(demo, "gatewayd_calls_active") == 0)
    until("no WebRTC leg left", lambda: metric(demo, "gatewayd_webrtc_legs_active") == 0)


def _more_frames(page: Page, than: int) -> bool:
    return bool(inbound(page, "1")["frames"] > than)


UFRAG = (
    "() => /a=ice-ufrag:(\\S+)/.exec(window.__pcs[window.__pcs.length - 1].localDescription.sdp)[1]"
)


def test_both_browsers_reconnect_after_a_network_blip(
    appointment: Appointment, demo: DemoDaemon
) -> None:
    """The gateway goes silent for seconds (SIGSTOP): the browsers notice, restart ICE
    by themselves, accept the gateway's new DTLS fingerprint, and the picture returns."""
    agent, citizen = appointment.agent, appointment.citizen
    until("video both ways", lambda: min(inbound(p, "1")["frames"] for p in (agent, citizen)) > 5)
    ufrags = [page.evaluate(UFRAG) for page in (agent, citizen)]
    demo.daemon.signal(signal.SIGSTOP)
    try:
        for page in (agent, citizen):
            expect(page.locator("#call-state")).not_to_have_text(
                re.compile("^Connected$"), timeout=20000
            )
        time.sleep(3)  # past the 2 s after which a browser restarts ICE
    finally:
        demo.daemon.signal(signal.SIGCONT)
    for page, ufrag in zip((agent, citizen), ufrags, strict=True):
        expect(page.locator("#call-state")).to_have_text("Connected", timeout=20000)
        assert page.evaluate(UFRAG) != ufrag  # a restart, not the old path coming back
    frames = [inbound(page, "1")["frames"] for page in (agent, citizen)]
    for page, before in zip((agent, citizen), frames, strict=True):
        until("new frames after the restart", functools.partial(_more_frames, page, before + 10))
    assert metric(demo, "gatewayd_webrtc_legs_active") == 2
