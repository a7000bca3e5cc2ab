"""The REST API against the real daemon: booking, bearer tokens, bad requests."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-the-tests-0123456789"


def request(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = TOKEN,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(daemon.base_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


@pytest.fixture
def daemon(gatewayd: Callable[..., Daemon]) -> Daemon:
    return gatewayd({"api": {"tokens": ["${env:API_TOKEN}"]}}, env={"API_TOKEN": TOKEN})


def test_empty_body_books_now_for_an_hour_in_german(daemon: Daemon) -> None:
    before = dt.datetime.now(dt.UTC)
    status, headers, body = request(daemon, "POST", "/api/v1/appointments")
    assert status == 201, body
    assert set(body) >= {"id", "citizen_url", "agent_url", "expires_at"}
    assert body["language"] == "de"
    assert body["citizen_url"].startswith(daemon.base_url + "/c/")
    assert len(body["citizen_url"].rsplit("/", 1)[1]) >= 40
    assert body["agent_url"] == f"{daemon.base_url}/agent/appointments/{body['id']}"
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert dt.timedelta(minutes=60) < expires - before < dt.timedelta(minutes=60 + 31)
    assert headers["Location"] == f"/api/v1/appointments/{body['id']}"
    status, _, got = request(daemon, "GET", headers["Location"])
    assert status == 200 and got["id"] == body["id"] and got["state"] == "scheduled"
    assert "citizen_url" not in got  # the link is shown once, never again


def test_booking_with_fields(daemon: Daemon) -> None:
    starts = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    payload = {"starts_at": starts.isoformat(), "duration_min": 30, "language": "en"}
    status, _, body = request(daemon, "POST", "/api/v1/appointments", json.dumps(payload).encode())
    assert status == 201, body
    assert dt.datetime.fromisoformat(body["starts_at"]) == starts
    assert body["language"] == "en"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"{", "application/json", 400, "not valid JSON"),
        (b"[]", "application/json", 400, "JSON object"),
        (b'{"room": 1}', "application/json", 400, "unknown field"),
        (b'{"language": "xx"}', "application/json", 400, "language"),
        (b'{"duration_min": 2}', "application/json", 400, "duration_min"),
        (b'{"starts_at": "tomorrow"}', "application/json", 400, "ISO 8601"),
        (b"a=b", "application/x-www-form-urlencoded", 415, "application/json"),
    ],
)
def test_bad_bookings_get_a_clear_answer(
    daemon: Daemon, body: bytes, content_type: str, status: int, needle: str
) -> None:
    got, _, answer = request(
        daemon, "POST", "/api/v1/appointments", body, content_type=content_type
    )
    assert got == status
    assert needle in json.dumps(answer)


def test_wrong_or_missing_token_is_401(daemon: Daemon) -> None:
    for token in (None, "wrong-token-of-the-right-length", TOKEN + "x"):
        status, headers, _ = request(daemon, "POST", "/api/v1/appointments", token=token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = request(daemon, "GET", "/api/v1/appointments/nope")
    assert status == 404


def test_openapi_document_lists_what_is_served(daemon: Daemon) -> None:
    status, _, doc = request(daemon, "GET", "/api/v1/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/v1/appointments", "/api/v1/appointments/{id}"}


def test_without_tokens_the_api_is_off_and_says_so(gatewayd: Callable[..., Daemon]) -> None:
    daemon = gatewayd()
    status, _, body = request(daemon, "POST", "/api/v1/appointments")
    assert status == 404 and "off" in body["error"]
    assert any("REST API off" in str(r.get("event")) for r in daemon.log_records())
