"""The pages in a real Chromium against the real daemon: agent, citizen, links, languages."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import Checked, DemoDaemon, metric

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TEXT = {
    "de": {
        "login": "Anmelden",
        "create": "Termin anlegen",
        "created": "Termin angelegt",
        "test": "Weiter zum Gerätetest",
        "continue": "Weiter zum Warteraum",
        "wait": "Warteraum",
        "required": "Bitte setzen Sie den Haken",
    },
    "en": {
        "login": "Sign in",
        "create": "Create appointment",
        "created": "Appointment created",
        "test": "Continue to the device test",
        "continue": "Continue to the waiting room",
        "wait": "Waiting room",
        "required": "Please tick the box",
    },
}


def _create_link(browser: Browser, demo: DemoDaemon, axe: str, lang: str) -> str:
    """The agent logs in and creates an appointment; returns the citizen link."""
    context = browser.new_context(locale="de-DE")
    checked = Checked(context.new_page(), axe)
    page = checked.page
    text = TEXT[lang]
    page.goto(f"{demo.base}/agent/login?lang={lang}")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    checked.audit(f"agent-login-{lang}")
    page.get_by_label(re.compile("Benutzername|User name")).fill("demo")
    page.get_by_label(re.compile("Passwort|Password")).fill(demo.password)
    page.get_by_role("button", name=text["login"]).click()
    expect(page).to_have_url(f"{demo.base}/agent/")
    checked.audit(f"agent-console-{lang}")
    page.get_by_role("button", name=text["create"]).click()
    expect(page.get_by_role("heading", name=text["created"])).to_be_visible()
    checked.audit(f"agent-created-{lang}")
    link = page.locator("#citizen-link").input_value()
    assert link.startswith(f"{demo.base}/c/")
    page.get_by_role(
        "link", name=re.compile("Gespräch dieses Termins|this appointment's call")
    ).click()
    expect(page.locator("#agent-call")).to_be_visible()
    expect(page.locator("#btn-hangup")).to_be_visible()
    checked.audit(f"agent-call-{lang}")
    context.close()
    return link


@pytest.mark.parametrize("lang", ["de", "en"])
def test_agent_creates_an_appointment_and_the_citizen_reaches_the_waiting_room(
    browser: Browser, demo: DemoDaemon, axe_source: str, lang: str
) -> None:
    link = _create_link(browser, demo, axe_source, lang)
    text = TEXT[lang]
    context = browser.new_context()
    checked = Checked(context.new_page(), axe_source)
    page = checked.page
    page.goto(f"{link}?lang={lang}")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    checked.audit(f"citizen-consent-{lang}")
    page.get_by_role("button", name=text["test"]).click()
    expect(page.get_by_text(text["required"])).to_be_visible()  # consent first
    page.locator("#consent").check()
    page.get_by_role("button", name=text["test"]).click()
    expect(page.locator("#step-test")).to_be_visible()
    # The fake camera delivers frames, the fake microphone's beeps move the meter.
    page.wait_for_function(
        "() => Number(document.getElementById('dt-preview').dataset.frames || 0) > 10",
        timeout=15000,
    )
    page.wait_for_function(
        "() => Number(document.getElementById('dt-meter').dataset.peak || 0) > 0.01",
        timeout=15000,
    )
    assert page.evaluate("document.getElementById('dt-preview').videoWidth") > 0
    expect(page.locator("#dt-check-webrtc")).to_have_attribute("data-state", "ok")
    expect(page.locator("#dt-check-codecs")).to_have_attribute("data-state", "ok")
    expect(page.locator("#dt-check-media")).to_have_attribute("data-state", "ok")
    expect(page.locator("#dt-summary")).to_have_attribute("data-state", "ok", timeout=20000)
    expect(page.locator("#dt-check-connection")).to_have_attribute("data-state", "ok")
    page.get_by_role("button", name=re.compile("Testton|test tone")).click()
    checked.audit(f"citizen-device-test-{lang}")
    page.get_by_role("button", name=text["continue"]).click()
    expect(page.get_by_role("heading", name=text["wait"], exact=True)).to_be_visible()
    expect(page.locator("#wait-heading")).to_be_focused()
    checked.audit(f"citizen-waiting-room-{lang}")
    context.close()


def test_expired_not_yet_and_forged_links(
    browser: Browser, demo: DemoDaemon, axe_source: str
) -> None:
    link = _create_link(browser, demo, axe_source, "de")
    token = link.rsplit("/", 1)[1]
    db = sqlite3.connect(demo.daemon.workdir / "data" / "gatewayd.sqlite")
    import hashlib

    digest = hashlib.sha256(token.encode()).digest()
    with db:
        db.execute("UPDATE appointments SET expires_at = 1 WHERE token_hash = ?", (digest,))
    db.close()
    context = browser.new_context()
    checked = Checked(context.new_page(), axe_source)
    page = checked.page
    for lang in ("de", "en"):
        response = page.goto(f"{link}?lang={lang}")
        assert response is not None and response.status == 410
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Dieser Link ist abgelaufen" if lang == "de" else "This link has expired"
        )
        checked.audit(f"link-expired-{lang}")
        response = page.goto(f"{demo.base}/c/{'x' * 43}?lang={lang}")
        assert response is not None and response.status == 404
        assert "Traceback" not in page.content()
        checked.audit(f"link-forged-{lang}")
    context.close()


def test_language_switch_on_the_device_test_page(
    browser: Browser, demo: DemoDaemon, axe_source: str
) -> None:
    context = browser.new_context(locale="de-DE")
    checked = Checked(context.new_page(), axe_source)
    page = checked.page
    page.goto(f"{demo.base}/test")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_role("heading", level=1)).to_have_text("Gerät testen")
    page.wait_for_function(
        "() => Number(document.getElementById('dt-meter').dataset.peak || 0) > 0.01",
        timeout=15000,
    )
    checked.audit("device-test-de")
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Test your device")
    checked.audit("device-test-en")
    page.goto(f"{demo.base}/agent/login")  # the choice is remembered
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("link", name="Deutsch").click()
    expect(page.locator("html")).to_have_attribute("lang", "de")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    context.close()


def test_audio_only_fallback_without_a_camera(
    browser: Browser, demo: DemoDaemon, axe_source: str
) -> None:
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    checked = Checked(page, axe_source)
    # A browser whose camera request fails: only the microphone is there.
    page.add_init_script(
        "const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        "navigator.mediaDevices.getUserMedia = (c) => c.video"
        " ? Promise.reject(new DOMException('no camera', 'NotFoundError')) : real(c);"
    )
    page.goto(f"{demo.base}/test")
    expect(page.locator("#dt-audio-only")).to_be_visible()
    expect(page.locator("#dt-summary")).to_have_text(re.compile("sound only"))
    checked.audit("device-test-audio-only-en")
    context.close()


def test_the_test_page_calls_the_gateway_echo(
    browser: Browser, demo: DemoDaemon, axe_source: str
) -> None:
    """F11: a real call to the gateway: connected, bandwidth measured, own picture echoed."""
    context = browser.new_context(locale="en-GB")
    checked = Checked(context.new_page(), axe_source)
    page = checked.page
    page.goto(f"{demo.base}/test")
    connection = page.locator("#dt-check-connection")
    expect(connection).to_have_attribute("data-state", "ok", timeout=20000)
    expect(connection).to_contain_text(re.compile(r"connected \(\d+ ms round trip\)"))
    bandwidth = page.locator("#dt-check-bandwidth")
    expect(bandwidth).to_have_attribute("data-state", "ok")
    assert int(bandwidth.get_attribute("data-kbps") or 0) > 0
    expect(page.locator("#dt-echo")).to_be_visible()
    page.wait_for_function("() => document.getElementById('dt-echo').videoWidth > 0")
    expect(page.locator("#dt-summary")).to_have_attribute("data-state", "ok")
    checked.audit("device-test-echo-en")
    assert metric(demo, "gatewayd_webrtc_legs_active") == 1
    context.close()  # the page goes: its test call ends with its socket
    deadline = time.monotonic() + 10
    while metric(demo, "gatewayd_webrtc_legs_active") != 0:
        assert time.monotonic() < deadline, "the test call's leg outlived its page"
        time.sleep(0.2)
