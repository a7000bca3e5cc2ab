"""sip_uri and pin in the REST API of the real daemon (and in its OpenAPI document)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.integration.test_api import TOKEN, request
from tests.support.daemon import Daemon

pytestmark = pytest.mark.integration


def _daemon(gatewayd: Callable[..., Daemon], dial_in: dict[str, object]) -> Daemon:
    config = {"api": {"tokens": ["${env:API_TOKEN}"]}, "sip": {"dial_in": dial_in}}
    return gatewayd(config, env={"API_TOKEN": TOKEN})


def test_created_and_fetched_appointments_carry_the_room_address_and_pin(
    gatewayd: Callable[..., Daemon],
) -> None:
    daemon = _daemon(gatewayd, {"domain": "video.agency.example"})
    status, _, created = request(daemon, "POST", "/api/v1/appointments")
    assert status == 201, created
    assert re.fullmatch(r"sip:[a-z2-7]{10}@video\.agency\.example", created["sip_uri"])
    assert re.fullmatch(r"[0-9]{6}", created["pin"])
    status, _, got = request(daemon, "GET", f"/api/v1/appointments/{created['id']}")
    assert status == 200 and (got["sip_uri"], got["pin"]) == (created["sip_uri"], created["pin"])
    _, _, other = request(daemon, "POST", "/api/v1/appointments")
    assert other["pin"] != created["pin"] and other["sip_uri"] != created["sip_uri"]
    _, _, doc = request(daemon, "GET", "/api/v1/openapi.json", token=None)
    schema = doc["paths"]["/api/v1/appointments/{id}"]["get"]["responses"]["200"]["content"]
    assert {"sip_uri", "pin"} <= set(schema["application/json"]["schema"]["properties"])


def test_with_dial_in_off_both_are_null(gatewayd: Callable[..., Daemon]) -> None:
    daemon = _daemon(gatewayd, {"enabled": False})
    status, _, created = request(daemon, "POST", "/api/v1/appointments")
    assert status == 201 and created["sip_uri"] is None and created["pin"] is None
