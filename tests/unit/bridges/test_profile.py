"""Target rewriting and the resolved profile of a SIP bridge (no sockets)."""

from __future__ import annotations

import pytest

from bridges.base import BadTarget
from bridges.sip.profile import build_profile, rewrite_target
from gateway.errors import BadRequest
from gateway.media.capabilities import SrtpPolicy
from gateway.settings import RewriteRule, Settings, SipBridgeSettings, load_settings

RULES = (
    RewriteRule(match=r"^0(\d+)$", replace=r"sip:+49\1@proxy"),
    RewriteRule(match=r"^(?P<ext>\d{3})$", replace=r"\g<ext>"),
    RewriteRule(match=r"^\+(\d+)$", replace=r"tel:+\1"),
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("0301234567", "sip:+49301234567@proxy"),
        ("  0301234567 ", "sip:+49301234567@proxy"),
        ("123", "sip:123@pbx.example:5070"),
        ("+4930123", "sip:+4930123@pbx.example:5070;user=phone"),
        ("bob", "sip:bob@pbx.example:5070"),
        ("sip:carol@other.example", "sip:carol@other.example"),
        ("sips:carol@[2001:db8::1]:5061", "sips:carol@[2001:db8::1]:5061"),
        ("sip:dave@10.0.0.1;transport=tcp", "sip:dave@10.0.0.1;transport=tcp"),
    ],
)
def test_targets_are_rewritten_by_the_first_matching_rule(target: str, expected: str) -> None:
    assert rewrite_target(target, RULES, domain="pbx.example:5070") == expected


def test_a_rule_must_match_the_whole_target() -> None:
    # "^0(\d+)$" does not apply to "x0301" and "123" rule not to "1234".
    assert rewrite_target("1234", RULES, domain="d") == "sip:1234@d"


@pytest.mark.parametrize(
    "target",
    [
        "",
        "x" * 300,
        "bob smith",
        "sip:a@b\r\nVia: evil",
        '"bob"',
        "<sip:bob@x>",
        "bob@host",  # neither a URI nor a user
        "sip:bob@",  # no host
        "sip:bob@x?Subject=hi",  # URI headers are refused in a Request-URI
        "mailto:bob@x",
    ],
)
def test_malformed_targets_are_a_bad_request(target: str) -> None:
    with pytest.raises(BadTarget) as info:
        rewrite_target(target, RULES, domain="d")
    assert isinstance(info.value, BadRequest) and info.value.http_status == 400
    assert target.strip() == "" or target not in info.value.message  # no echo of user input


def test_unmatched_targets_can_be_refused() -> None:
    with pytest.raises(BadTarget, match="no rewrite rule"):
        rewrite_target("bob", RULES, domain="d", reject_unmatched=True)
    assert rewrite_target("0301", RULES, domain="d", reject_unmatched=True) == "sip:+49301@proxy"
    # Without rules there is nothing to refuse with.
    assert rewrite_target("bob", (), domain="d", reject_unmatched=True) == "sip:bob@d"


def test_a_rule_that_yields_garbage_is_refused() -> None:
    rules = (RewriteRule(match=r"(.*)", replace=r"sip:\1@"),)
    with pytest.raises(BadTarget):
        rewrite_target("bob", rules, domain="d")


def _settings(text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(text, environ=environ or {})


def test_profile_of_a_bridge_with_its_own_proxy_and_credentials() -> None:
    settings = _settings(
        """
media: {srtp: 'off', address: 127.0.0.2, rtp_timeout: 0}
bridges:
  - name: b
    type: sip
    proxy: 127.0.0.1:5070
    username: gw
    password: ${env:PW}
    codecs: {audio: [PCMA, opus], video: [H264]}
""",
        {"PW": "secret"},
    )
    profile = build_profile(settings.bridges_of(SipBridgeSettings)[0], settings)
    assert profile.proxy_uri == "sip:127.0.0.1:5070"
    assert (profile.transport, profile.domain) == ("udp", "127.0.0.1:5070")
    assert profile.credentials == ("gw", "secret")
    assert profile.from_uri == "sip:gw@127.0.0.1:5070"
    assert profile.srtp is SrtpPolicy.OFF  # media.srtp is the default
    assert (profile.media_address, profile.rtp_timeout) == ("127.0.0.2", None)
    names = [(c.name, c.clock_rate) for c in profile.audio_codecs]
    # Preference order kept; telephone-event at each audio clock rate (rfc4733 is the default).
    assert names == [("PCMA", 8000), ("opus", 48000), ("telephone-event", 48000),
                     ("telephone-event", 8000)]  # fmt: skip
    assert {c.name for c in profile.video_codecs} == {"H264"}
    assert len(profile.video_codecs) == 4  # both profiles, both packetization modes
    assert profile.routes_for("sip:bob@127.0.0.1:5070") == []
    assert profile.routes_for("sip:bob@elsewhere.example") == ["<sip:127.0.0.1:5070;lr>"]


def test_profile_without_telephone_event_when_dtmf_is_not_rfc4733() -> None:
    settings = _settings(
        "bridges:\n  - {name: b, type: sip, proxy: p.example, dtmf: info, srtp: require,"
        " codecs: {audio: [PCMU], video: []}}\n"
    )
    profile = build_profile(settings.bridges_of(SipBridgeSettings)[0], settings)
    assert [c.name for c in profile.audio_codecs] == ["PCMU"]
    assert profile.video_codecs == ()
    assert profile.srtp is SrtpPolicy.REQUIRE
    assert profile.credentials is None
    assert profile.from_uri == "sip:gatewayd@p.example"


def test_profile_takes_the_trunks_registrar_credentials_and_aor() -> None:
    settings = _settings(
        """
sip:
  trunks:
    - {name: t, registrar: 'sips:reg.agency.example', username: gw, password: '${env:PW}',
       aor: 'sip:gateway-a@agency.example'}
bridges:
  - {name: b, type: sip, trunk: t}
  - {name: c, type: sip, trunk: t, proxy: 'sip:edge.agency.example;transport=tcp'}
""",
        {"PW": "pw"},
    )
    profile = build_profile(settings.bridges_of(SipBridgeSettings)[0], settings)
    assert profile.proxy_uri == "sips:reg.agency.example"
    assert profile.transport == "tls" and profile.server_name == "reg.agency.example"
    assert profile.credentials == ("gw", "pw")
    assert profile.from_uri == "sip:gateway-a@agency.example"
    other = build_profile(settings.bridges_of(SipBridgeSettings)[1], settings)
    # A proxy of its own; the trunk's transport still applies (the trunk is the source of truth).
    assert other.proxy_uri == "sip:edge.agency.example;transport=tcp"
    assert other.transport == "tls"


def test_transport_from_the_proxy_uri_without_trunk() -> None:
    settings = _settings(
        "bridges:\n  - {name: b, type: sip, proxy: 'sip:p.example;transport=tcp'}\n"
    )
    assert build_profile(settings.bridges_of(SipBridgeSettings)[0], settings).transport == "tcp"
    settings = _settings("bridges:\n  - {name: b, type: sip, proxy: p.example, transport: tls}\n")
    assert build_profile(settings.bridges_of(SipBridgeSettings)[0], settings).transport == "tls"
