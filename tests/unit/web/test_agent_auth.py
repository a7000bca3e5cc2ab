"""Console login: CSRF checks, cookie flags, rate limit, generic failure message."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.clock import FakeClock
from gateway.settings import Settings, TlsSettings
from gateway.web.auth import LoginLimiter, client_key
from tests.unit.web.conftest import Site

PASSWORD = "correct horse battery"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no csrf field"
    return match.group(1)


async def _login_form(site: Site) -> str:
    response = await site.client.get("/agent/login")
    assert response.status == 200
    return _csrf(await response.text())


async def _login(site: Site, username: str = "erika", password: str = PASSWORD) -> int:
    token = await _login_form(site)
    response = await site.client.post(
        "/agent/login",
        data={"csrf": token, "username": username, "password": password},
        allow_redirects=False,
    )
    return response.status


def test_limiter_counts_per_client_within_a_window_and_forgets_the_oldest() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(attempts=3, window=60, max_clients=2, clock=clock)
    assert [limiter.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("a") == 60.0
    clock.advance(30)
    assert limiter.hit("a") == 30.0
    assert limiter.hit("b") == 0.0
    clock.advance(31)
    assert limiter.hit("a") == 0.0  # a new window
    limiter.hit("c")
    limiter.hit("d")
    assert len(limiter) == 2  # bounded
    limiter.reset("d")
    assert len(limiter) == 1


def test_client_key_groups_ipv6_by_64_and_unwraps_mapped_ipv4() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "unknown"


async def test_login_sets_a_strict_httponly_session_cookie(site: Site) -> None:
    await site.store.agents.create("erika", "Erika Mustermann", PASSWORD)
    response = await site.client.get("/agent/login")
    login_cookie = response.headers.getone("Set-Cookie")
    assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie
    token = _csrf(await response.text())
    response = await site.client.post(
        "/agent/login",
        data={"csrf": token, "username": "erika", "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/agent/"
    cookies = [c for c in response.headers.getall("Set-Cookie") if c.startswith("gw_session=")]
    assert len(cookies) == 1
    flags = cookies[0]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/;" in flags + ";"
    assert "Secure" not in flags  # no web.tls
    console = await site.client.get("/agent/")
    assert console.status == 200
    assert "Erika Mustermann" in await console.text()


async def test_session_cookie_is_secure_with_tls(site: Site, tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    tls = TlsSettings(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem")
    base = site.settings["settings"]
    site.settings["settings"] = Settings(data_dir=base.data_dir, web={"tls": tls})
    await site.store.agents.create("erika", "Erika", PASSWORD)
    form = await site.client.get("/agent/login")
    assert "Secure" in form.headers["Set-Cookie"]
    token = _csrf(await form.text())
    response = await site.client.post(  # the client's jar keeps Secure cookies off plain HTTP
        "/agent/login",
        data={"csrf": token, "username": "erika", "password": PASSWORD},
        headers={"Cookie": f"gw_login={token}"},
        allow_redirects=False,
    )
    assert response.status == 303
    session = next(c for c in response.headers.getall("Set-Cookie") if "gw_session=" in c)
    assert "Secure" in session


async def test_wrong_password_and_unknown_user_get_the_same_answer(site: Site) -> None:
    await site.store.agents.create("erika", "Erika", PASSWORD)
    answers = []
    for username, password in (("erika", "wrong password!"), ("nobody", PASSWORD)):
        token = await _login_form(site)
        response = await site.client.post(
            "/agent/login", data={"csrf": token, "username": username, "password": password}
        )
        assert response.status == 401
        text = await response.text()
        answers.append(re.search(r'<p class="notice error" role="alert">([^<]*)</p>', text))
    assert answers[0] and answers[1]
    assert answers[0].group(1) == answers[1].group(1)
    assert "gw_session" not in str(
        site.client.session.cookie_jar.filter_cookies(site.client.make_url("/"))
    )


async def test_login_without_the_form_token_is_refused(site: Site) -> None:
    await site.store.agents.create("erika", "Erika", PASSWORD)
    await site.client.get("/agent/login")
    response = await site.client.post(
        "/agent/login",
        data={"csrf": "forged-token-0123456789", "username": "erika", "password": PASSWORD},
    )
    assert response.status == 403
    token = await _login_form(site)
    response = await site.client.post(
        "/agent/login",
        data={"csrf": token, "username": "erika", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status == 403
    token = await _login_form(site)
    response = await site.client.post(
        "/agent/login",
        data={"csrf": token, "username": "erika", "password": PASSWORD},
        headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    )
    assert response.status == 403


async def test_logins_are_rate_limited_per_client(site: Site) -> None:
    await site.store.agents.create("erika", "Erika", PASSWORD)
    statuses = [await _login(site, password="wrong password!") for _ in range(10)]
    assert statuses == [401] * 10
    token = await _login_form(site)
    response = await site.client.post(
        "/agent/login", data={"csrf": token, "username": "erika", "password": PASSWORD}
    )
    assert response.status == 429  # even the right password waits
    assert int(response.headers["Retry-After"]) > 0


async def test_console_posts_need_the_session_csrf_token(site: Site) -> None:
    await site.store.agents.create("erika", "Erika", PASSWORD)
    assert await _login(site) == 303
    console = await site.client.get("/agent/")
    token = _csrf(await console.text())
    forged = await site.client.post("/agent/", data={"csrf": "nope", "duration_min": "30"})
    assert forged.status == 403
    assert await site.store.appointments.upcoming() == []
    created = await site.client.post(
        "/agent/", data={"csrf": token, "duration_min": "30", "language": "en", "starts_at": ""}
    )
    assert created.status == 201
    text = await created.text()
    link = re.search(r'id="citizen-link" readonly value="([^"]+)"', text)
    assert link and "/c/" in link.group(1)
    [appointment] = await site.store.appointments.upcoming()
    assert appointment.language == "en"
    bad = await site.client.post("/agent/", data={"csrf": token, "duration_min": "1"})
    assert bad.status == 400
    logout = await site.client.post("/agent/logout", data={"csrf": "nope"}, allow_redirects=False)
    assert logout.status == 403
    logout = await site.client.post("/agent/logout", data={"csrf": token}, allow_redirects=False)
    assert logout.status == 303
    assert any(
        c.startswith("gw_session=") and "Max-Age=0" in c
        for c in logout.headers.getall("Set-Cookie")
    )
    after = await site.client.get("/agent/", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/agent/login"


async def test_console_pages_need_a_session(site: Site) -> None:
    for path in ("/agent/", "/agent/appointments/a0123"):
        response = await site.client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"] == "/agent/login"
    response = await site.client.post("/agent/", data={"csrf": "x"}, allow_redirects=False)
    assert response.status == 303
