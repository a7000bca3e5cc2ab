"""Citizen links, the device test page, branding, headers: HTML in both languages."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import Settings
from tests.unit.web.conftest import Site


def _no_inline_code(html: str) -> None:
    assert " style=" not in html and "<style" not in html
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'type="application/json"' in tag or "src=" in tag, tag


async def test_citizen_link_opens_the_consent_step(site: Site) -> None:
    _, token = await site.store.appointments.create(language="en")
    response = await site.client.get(f"/c/{token}", headers={"Accept-Language": ""})
    assert response.status == 200
    html = await response.text()
    assert '<html lang="en">' in html  # the appointment's language when the browser says none
    assert 'id="consent"' in html and 'id="step-wait"' in html and 'id="dt-meter"' in html
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "media-src 'self' blob:", "img-src 'self' data: blob:"):  # fmt: skip
        assert directive in csp
    _no_inline_code(html)
    german = await site.client.get(f"/c/{token}?lang=de")
    assert '<html lang="de">' in await german.text()
    assert "lang=de" in german.headers["Set-Cookie"]


async def test_expired_not_yet_and_forged_links_get_their_pages(site: Site) -> None:
    _, soon = await site.store.appointments.create(
        starts_at=site.clock.time() + 3 * 86400, duration_min=30
    )
    early = await site.client.get(f"/c/{soon}?lang=en")
    assert early.status == 425
    html = await early.text()
    assert "has not started yet" in html and "<time datetime=" in html
    forged = await site.client.get("/c/" + "A" * 43 + "?lang=en")
    assert forged.status == 404
    assert "not valid" in await forged.text()
    _, token = await site.store.appointments.create(duration_min=5)
    site.clock.advance(3 * 3600)
    expired = await site.client.get(f"/c/{token}")
    assert expired.status == 410
    html = await expired.text()
    assert "has expired" in html and "Traceback" not in html
    _no_inline_code(html)


async def test_test_page_and_language_switch(site: Site) -> None:
    german = await site.client.get("/test")
    html = await german.text()
    assert german.status == 200 and "Gerät testen" in html
    assert 'href="?lang=en"' in html and 'class="skip-link" href="#main"' in html
    english = await site.client.get("/test", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "Test your device" in await english.text()


async def test_branding_colours_and_logo(site: Site, tmp_path: Path) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    site.settings["settings"] = Settings(
        data_dir=tmp_path,
        branding={
            "agency_name": "Stadt Beispielhausen",
            "primary_color": "#1A5E20",
            "logo_file": logo,
            "footer_links": [{"label": "Impressum", "url": "https://example.org/impressum"}],
        },
    )
    css = await site.client.get("/branding/theme.css")
    assert "--primary: #1a5e20;" in await css.text()
    assert css.content_type == "text/css"
    image = await site.client.get("/branding/logo")
    assert image.status == 200 and image.content_type == "image/svg+xml"
    html = await (await site.client.get("/test")).text()
    assert "Stadt Beispielhausen" in html and 'src="/branding/logo"' in html
    assert 'href="https://example.org/impressum"' in html


async def test_unconfigured_logo_is_404(site: Site) -> None:
    assert (await site.client.get("/branding/logo")).status == 404


async def test_static_files_are_served(site: Site) -> None:
    for path in ("/static/js/signaling.js", "/static/js/call.js", "/static/css/main.css"):
        response = await site.client.get(path)
        assert response.status == 200, path
    assert (await site.client.get("/static/../pages.py")).status == 404
