"""The sip.dial_in section: defaults, precise errors, and the addresses it yields."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.settings_dialin import dial_in_domain, lobby_uri, room_uri


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(text)
    return caught.value.problems


def test_defaults() -> None:
    dial_in = load_settings("").sip.dial_in
    assert dial_in.enabled and dial_in.lobby_user == "lobby" and dial_in.admit == "wait"
    assert dial_in.role == "guest" and dial_in.pin_attempts == 3 and dial_in.max_calls == 50


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("admit: later", "sip.dial_in.admit: "),
        ("role: agent", "sip.dial_in.role: "),
        ("pin_attempts: 0", "sip.dial_in.pin_attempts: "),
        ("pin_timeout: 1", "sip.dial_in.pin_timeout: "),
        ("max_calls: 0", "sip.dial_in.max_calls: "),
        ("lobby_user: 'Lobby Desk'", "sip.dial_in.lobby_user: "),
        ("domain: 'sip:gw@x'", "sip.dial_in.domain: must be a host name"),
        ("domain: 'gw.example:'", "sip.dial_in.domain: must be a host name"),
        ("lobyy_user: x", "sip.dial_in.lobyy_user: unknown key"),
    ],
)
def test_errors_name_the_key(yaml: str, expected: str) -> None:
    problems = _problems(f"sip:\n  dial_in:\n    {yaml}\n")
    assert any(p.startswith(expected) for p in problems), problems


def test_addresses_follow_the_sip_listener_unless_a_domain_is_set() -> None:
    settings = load_settings("sip:\n  host: 192.0.2.7\n  port: 5080\n")
    assert dial_in_domain(settings) == "192.0.2.7:5080"
    assert room_uri(settings, "abcdefgh23") == "sip:abcdefgh23@192.0.2.7:5080"
    assert lobby_uri(settings) == "sip:lobby@192.0.2.7:5080"
    public = load_settings("sip:\n  host: '::1'\n  public_host: 'gw.example'\n")
    assert dial_in_domain(public) == "gw.example"
    v6 = load_settings("sip:\n  host: '::1'\n  port: 5070\n")
    assert dial_in_domain(v6) == "[::1]:5070"
    named = load_settings("sip:\n  dial_in:\n    domain: video.agency.example\n")
    assert room_uri(named, "abcdefgh23") == "sip:abcdefgh23@video.agency.example"


def test_off_means_no_addresses() -> None:
    off = load_settings("sip:\n  dial_in:\n    enabled: false\n")
    assert room_uri(off, "abcdefgh23") is None and lobby_uri(off) is None
    no_lobby = load_settings("sip:\n  dial_in:\n    lobby_user: ''\n")
    assert lobby_uri(no_lobby) is None and room_uri(no_lobby, "abcdefgh23") is not None
    assert room_uri(no_lobby, None) is None  # an appointment from before dial-in
