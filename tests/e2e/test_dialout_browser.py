"""The gateway role in a real Chromium: the agent dials a SIP phone into the appointment.

Kamailio (digest auth) with baresip registered behind it (PCMU only, a
600 Hz tone); the daemon has a bridge to that proxy. The agent adds the
phone from the console: the progress shows live, the phone answers, and
the router transcodes the browser's Opus to the phone's PCMU and back: the
agent's page finds the phone's 600 Hz with a WebAudio analyser and the
phone's recording holds the browser's sound. The agent hangs the phone up
from the console; the appointment goes on. Then the phone dials in by the
room's SIP address while agent and citizen talk: three in a mix.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Checked, DemoDaemon, create_appointment, metric
from tests.e2e.test_call_browser import BRIGHTNESS, KEEP_PEER_CONNECTIONS, inbound, until
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.daemon import start_daemon
from tests.support.kamailio import KamailioServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

USERS = {"gw": "gw-secret", "bob": "bob-secret", "vp8": "vp8-secret", "h264": "h264-secret"}
API_TOKEN = "t" * 32
PHONE_TONE = 600

#: The loudest frequency (Hz) of #remote-video's sound over one second, by WebAudio.
REMOTE_TONE = """
async () => {
  const video = document.getElementById('remote-video');
  if (!(video.srcObject instanceof MediaStream)) return { hz: 0, db: -200 };
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  context.createMediaStreamSource(video.srcObject).connect(analyser);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const bins = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(bins);
  let best = 0;
  for (let i = 1; i < bins.length; i += 1) if (bins[i] > bins[best]) best = i;
  await context.close();
  return { hz: best * context.sampleRate / analyser.fftSize, db: bins[best] };
}
"""


@dataclass
class Phones:
    proxy: KamailioServer
    bob: Baresip


@pytest.fixture(scope="module")
def phones() -> Iterator[Phones]:
    proxy = KamailioServer(USERS).start()
    bob = Baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), tone_hz=PHONE_TONE
    ).start()
    yield Phones(proxy, bob)
    bob.stop()
    proxy.stop()


@pytest.fixture(scope="module")
def demo(phones: Phones) -> Iterator[DemoDaemon]:
    """The daemon in demo mode with one SIP bridge, to the Kamailio above."""
    bridge = {
        "name": "desk",
        "type": "sip",
        "proxy": phones.proxy.address,
        "username": "gw",
        "password": "${env:GW_PW}",
        "codecs": {"audio": ["PCMU"], "video": []},
        "answer_timeout": 15,
    }
    video = {**bridge, "name": "room", "codecs": {"audio": ["PCMU"], "video": ["VP8", "H264"]}}
    daemon = start_daemon(
        {
            "bridges": [bridge, video],
            "media": {"address": "127.0.0.1"},
            "api": {"tokens": ["${env:API_TOKEN}"]},
        },
        extra_args=["--demo"],
        env={"GW_PW": USERS["gw"], "API_TOKEN": API_TOKEN},
    )
    try:
        match = re.search(r"user: demo\s+password: (\S+)", daemon.logs())
        assert match, daemon.logs()
        # the demo tells how a phone joins its appointment, too
        assert re.search(r"SIP dial-in: +sip:[a-z2-7]{10}@127\.0\.0\.1:\d+\n", daemon.logs())
        assert re.search(r"SIP lobby: +sip:lobby@127\.0\.0\.1:\d+ +PIN: \d{6}\n", daemon.logs())
        yield DemoDaemon(daemon, match.group(1))
    finally:
        daemon.stop()


def test_the_agent_dials_a_phone_in_and_they_hear_each_other(
    browser: Browser, demo: DemoDaemon, phones: Phones, axe_source: str
) -> None:
    context = browser.new_context(locale="en-GB")
    checked = Checked(context.new_page(), axe_source)
    agent = checked.page
    _log_in_and_open_a_call(agent, demo)
    expect(agent.get_by_label("Connection")).to_have_value("desk")
    agent.get_by_label("SIP address or phone number").fill("bob")
    agent.get_by_label("Role").select_option("interpreter")
    agent.get_by_role("button", name="Call", exact=True).click()
    entry = agent.locator("#dial-list li").first
    expect(entry).to_have_attribute("data-state", "answered", timeout=20000)
    expect(entry).to_contain_text("bob as interpreter: connected")
    expect(agent.locator("#in-call")).to_contain_text("interpreter (Phone or video system)")
    checked.audit("agent-dial-out-en")

    heard = _heard(agent, PHONE_TONE)
    assert abs(heard["hz"] - PHONE_TONE) < 15, f"the phone's tone not heard: {heard}"
    # The browser was asked for PCMU and renegotiated: audio passes through both ways.
    until_metric(demo, "gatewayd_media_passthrough_active", 2, kind="audio")
    assert metric(demo, "gatewayd_media_transcodes_active", kind="audio") == 0

    entry.get_by_role("button", name="Hang up").click()
    expect(entry).to_have_attribute("data-state", "ended", timeout=10000)
    phones.bob.wait_event("CALL_CLOSED", timeout=10)
    wav = phones.bob.wait_recording(timeout=10)
    assert _rms(wav) > 100, "the phone's recording of the browser is silent"
    expect(agent.locator("#call-state")).to_have_text(re.compile("Connected"))
    assert metric(demo, "gatewayd_webrtc_legs_active") == 1  # the agent is still in
    assert dominant_frequency(wav) > 0
    context.close()


def _rms(wav_path: object) -> float:
    import wave

    with wave.open(str(wav_path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(data**2))) if data.size else 0.0


def until_metric(demo: DemoDaemon, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 10
    while metric(demo, name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} is not {value}"
        time.sleep(0.2)


def _heard(page: Page, hz: float, seconds: float = 20) -> dict[str, float]:
    heard: dict[str, float] = {"hz": 0.0, "db": -200.0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        heard = dict(page.evaluate(REMOTE_TONE))
        if abs(heard["hz"] - hz) < 15:
            return heard
        time.sleep(0.2)
    return heard


def test_a_phone_dials_in_by_room_address_and_all_three_hear_it(
    browser: Browser, demo: DemoDaemon, phones: Phones
) -> None:
    """Agent and citizen in the call; the phone dials the room's SIP address, waits,
    the agent admits it: a group of three, both browsers hear the phone's tone."""
    agent_context, citizen_context = browser.new_context(), browser.new_context()
    agent = agent_context.new_page()
    link = create_appointment(agent, demo)
    room_uri = agent.locator("#dial-in-uri").input_value()
    alias = re.fullmatch(r"sip:([a-z2-7]+)@.*", room_uri)
    assert alias, room_uri
    agent.get_by_role("link", name=re.compile("this appointment's call")).click()
    citizen = citizen_context.new_page()
    citizen.goto(f"{link}?lang=en")
    citizen.locator("#consent").check()
    citizen.get_by_role("button", name="Go to the waiting room without a test").click()
    agent.get_by_role("button", name=re.compile("^Admit")).click()
    for page in (agent, citizen):
        expect(page.locator("#call-state")).to_have_text(re.compile("Connected"), timeout=20000)

    phones.bob.dial(f"sip:{alias.group(1)}@127.0.0.1:{demo.daemon.sip_port}")
    waiting = agent.locator("#lobby li")
    expect(waiting).to_contain_text("Phone or video system 1 (guest)", timeout=15000)
    waiting.get_by_role("button", name=re.compile("^Admit")).click()
    expect(agent.locator("#in-call")).to_contain_text("guest (Phone or video system)")
    for page in (agent, citizen):
        heard = _heard(page, PHONE_TONE)
        assert abs(heard["hz"] - PHONE_TONE) < 15, f"the phone is not heard: {heard}"
    phones.bob.hangup()
    phones.bob.wait_event("CALL_CLOSED", timeout=10)
    expect(agent.locator("#in-call")).not_to_contain_text("Phone", timeout=10000)
    for page in (agent, citizen):
        expect(page.locator("#call-state")).to_have_text(re.compile("Connected"))
    assert metric(demo, "gatewayd_webrtc_legs_active") == 2
    agent_context.close()
    citizen_context.close()


def _api(demo: DemoDaemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{demo.base}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "null")


def test_the_rest_api_dials_a_participant_in_and_hangs_up(demo: DemoDaemon, phones: Phones) -> None:
    """POST .../participants with an agent in the room: the phone rings in, GET follows
    it, DELETE hangs up; bad requests get precise answers."""
    status, created = _api(demo, "POST", "/api/v1/appointments", {})
    assert status == 201, created
    path = f"/api/v1/appointments/{created['id']}/participants"
    assert _api(demo, "POST", path, {"bridge": "nope", "uri": "bob"})[0] == 404
    status, error = _api(demo, "POST", path, {"bridge": "desk", "uri": "bob", "role": "agent"})
    assert status == 400 and "role" in error["detail"], error
    assert _api(demo, "POST", path, {"bridge": "desk"})[0] == 400
    assert _api(demo, "POST", "/api/v1/appointments/unknown/participants",
                {"bridge": "desk", "uri": "bob"})[0] == 404  # fmt: skip
    status, dial = _api(demo, "POST", path, {"bridge": "desk", "uri": "bob", "role": "counsel"})
    assert status == 202 and dial["role"] == "counsel", dial
    deadline = time.monotonic() + 15
    state = dial
    while state["state"] != "answered":
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
        state = _api(demo, "GET", f"{path}/{dial['id']}")[1]
    assert state["history"][-1] == "answered"
    assert _api(demo, "DELETE", f"{path}/{dial['id']}")[0] == 204
    phones.bob.wait_event("CALL_CLOSED", timeout=10)
    state = _api(demo, "GET", f"{path}/{dial['id']}")[1]
    assert state["state"] == "ended", state


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_a_sip_room_system_and_the_agent_see_each_other(
    browser: Browser, demo: DemoDaemon, phones: Phones, codec: str
) -> None:
    """baresip with video (VP8: passed through; H.264: transcoded from the browser's VP8)
    dialled out through the video bridge: each side decodes the other's pictures; the
    agent's shared screen reaches the room system in place of the camera."""
    room = Baresip(
        codec, registrar=phones.proxy.address, password=USERS[codec], codecs=("PCMU",),
        video=codec,
    ).start()  # fmt: skip
    context = browser.new_context(locale="en-GB")
    context.add_init_script(KEEP_PEER_CONNECTIONS)
    agent = context.new_page()
    try:
        _log_in_and_open_a_call(agent, demo)
        agent.get_by_label("Connection").select_option("room")
        agent.get_by_label("SIP address or phone number").fill(codec)
        agent.get_by_role("button", name="Call", exact=True).click()
        entry = agent.locator("#dial-list li").first
        expect(entry).to_have_attribute("data-state", "answered", timeout=20000)
        until("the room system's video", lambda: inbound(agent, "1")["frames"] > 30)
        until("a picture", lambda: agent.evaluate(BRIGHTNESS, "remote-video") > 5)
        before = frames_shown(room)
        time.sleep(2.0)
        assert frames_shown(room) > before + 10, "the room system shows the agent's video"
        if codec == "vp8":  # passed through: the room system shows what Chromium sends, as sent
            # The agent shares the screen: it replaces the camera in the room system's
            # video (no BFCP), at the screen's own size; stopping brings the camera back.
            camera = displayed_size(room)
            share = agent.get_by_role("button", name="Share screen")
            share.click()
            expect(agent.locator("#btn-screen")).to_have_attribute("aria-pressed", "true")
            until("the screen at the room system", lambda: displayed_size(room) != camera)
            width, _height = displayed_size(room)
            assert width >= 640, displayed_size(room)
            share.click()
            until("the camera again", lambda: displayed_size(room) == camera)
        entry.get_by_role("button", name="Hang up").click()
        expect(entry).to_have_attribute("data-state", "ended", timeout=10000)
    finally:
        context.close()
        room.stop()


def displayed_size(ua: Baresip) -> tuple[int, int]:
    """The size of the last picture baresip displayed (``vidisp: fakevideo W x H``)."""
    found = re.search(r"vidisp: \S+ (\d+) x (\d+)", ua.video_stats().raw)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def frames_shown(ua: Baresip) -> int:
    found = re.search(r"vidisp: \S+ \d+ x \d+ frames=(\d+)", ua.video_stats().raw)
    return int(found.group(1)) if found else 0


def _log_in_and_open_a_call(agent: Page, demo: DemoDaemon) -> None:
    create_appointment(agent, demo)
    agent.get_by_role("link", name=re.compile("this appointment's call")).click()
    expect(agent.locator("#dial-out")).to_be_visible(timeout=15000)
