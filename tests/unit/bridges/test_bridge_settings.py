"""The ``bridges:`` section: what is accepted, and the errors for what is not."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import SipBridgeSettings, load_settings

TRUNK = """
sip:
  trunks:
    - name: agency-b
      registrar: sip:127.0.0.1:5070
      username: gw
      password: ${env:TRUNK_PW}
"""


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(text, environ=environ or {})
    return info.value.problems


def test_a_full_bridge_is_accepted_and_its_password_comes_by_reference() -> None:
    settings = load_settings(
        """
bridges:
  - name: agency-b
    type: sip
    proxy: sip:proxy.agency-b.example;transport=tcp
    domain: agency-b.example
    username: gw
    password: ${env:BRIDGE_PW}
    srtp: require
    codecs: {audio: [pcma, PCMU], video: []}
    dtmf: info
    rewrite:
      - {match: '^0(\\d+)$', replace: 'sip:+49\\1@proxy'}
      - {match: '^(?P<ext>\\d{3})$', replace: '\\g<ext>'}
    reject_unmatched: true
    max_calls: 3
    answer_timeout: 20
""",
        environ={"BRIDGE_PW": "s3cret-bridge"},
    )
    (bridge,) = settings.bridges_of(SipBridgeSettings)
    assert bridge.password is not None
    assert bridge.password.get_secret_value() == "s3cret-bridge"
    assert "s3cret" not in repr(settings)
    assert bridge.codecs.audio == ["PCMA", "PCMU"]  # names are canonical whatever the case
    assert bridge.codecs.video == []
    assert (bridge.srtp, bridge.dtmf, bridge.max_calls) == ("require", "info", 3)


def test_no_bridges_by_default() -> None:
    assert load_settings("").bridges == []


def test_a_bridge_may_refer_to_a_trunk() -> None:
    settings = load_settings(
        TRUNK + "bridges:\n  - {name: b, type: sip, trunk: agency-b}\n", environ={"TRUNK_PW": "x"}
    )
    assert settings.bridges_of(SipBridgeSettings)[0].trunk == "agency-b"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("bridges:\n  - {name: b, type: h323, proxy: p}\n", "bridges[0].type: input should be 'sip'"),
        ("bridges:\n  - {name: b, proxy: p}\n", "bridges[0].type: required key is missing"),
        ("bridges:\n  - {name: B x, type: sip, proxy: p}\n", "bridges[0].name: string should match"),
        ("bridges:\n  - {name: b, type: sip}\n", "bridges[0]: a sip bridge needs a proxy or a trunk"),
        ("bridges:\n  - {name: b, type: sip, proxy: 'sip:a b'}\n", "bridges[0].proxy: must be sip:host"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, transport: ws}\n", "bridges[0].transport: input should be"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, password: x}\n", "bridges[0]: a password needs a username"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, srtp: maybe}\n", "bridges[0].srtp: input should be"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, dtmf: sms}\n", "bridges[0].dtmf: input should be"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, max_calls: 0}\n", "bridges[0].max_calls: input should be greater"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, codecs: {audio: [G729]}}\n",
         "bridges[0].codecs.audio: unknown audio codec 'G729'; known: opus, G722, PCMU, PCMA"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, codecs: {audio: []}}\n",
         "bridges[0].codecs.audio: list should have at least 1 item"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, codecs: {video: [VP8, vp8]}}\n",
         "bridges[0].codecs.video: video codec VP8 is listed twice"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, codecs: {video: [H263]}}\n",
         "bridges[0].codecs.video: unknown video codec 'H263'; known: VP8, H264"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, rewrite: [{match: '(', replace: x}]}\n",
         "bridges[0].rewrite[0]: match '(' is not a regular expression"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, rewrite: [{match: '0(\\d+)', replace: '\\2'}]}\n",
         "bridges[0].rewrite[0]: replace refers to group 2 but match has 1 group"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, rewrite: [{match: 'x', replace: '\\g<n>'}]}\n",
         "bridges[0].rewrite[0]: replace refers to group 'n', which match does not define"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, rewrite: [{replace: x}]}\n",
         "bridges[0].rewrite[0].match: required key is missing"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, from_uri: 'bob'}\n",
         "bridges[0].from_uri: must be a sip: or sips: URI"),
        ("bridges:\n  - {name: b, type: sip, proxy: p, ringtime: 5}\n", "bridges[0].ringtime: unknown key"),
        ("bridges:\n  - {name: b, type: sip, proxy: p}\n  - {name: b, type: sip, proxy: q}\n",
         "bridges: bridge names must be unique: b"),
        ("bridges:\n  - {name: b, type: sip, trunk: nope}\n",
         "bridges: bridge 'b' refers to trunk 'nope', which is not in sip.trunks (none configured)"),
        ("bridges: {name: b}\n", "bridges: must be a list"),
    ],
)  # fmt: skip
def test_bad_bridge_config_names_the_key_and_the_reason(yaml_text: str, expected: str) -> None:
    found = problems(yaml_text)
    assert any(p.startswith(expected) for p in found), found
    assert all("(line " in p for p in found), found


def test_a_bridge_on_a_trunk_does_not_repeat_its_credentials() -> None:
    found = problems(
        TRUNK + "bridges:\n  - {name: b, type: sip, trunk: agency-b, username: u, password: p}\n",
        environ={"TRUNK_PW": "x"},
    )
    assert found == [
        "bridges[0]: username, password: set in the trunk 'agency-b', not again here (line 9)"
    ]


def test_an_unset_secret_reference_is_an_error_without_the_secret() -> None:
    found = problems(
        "bridges:\n  - {name: b, type: sip, proxy: p, username: u, password: '${env:NOPE}'}\n"
    )
    assert any("NOPE" in p for p in found), found
