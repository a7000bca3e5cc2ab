"""WHIP/WHEP without a network: offers' directions, trickle fragments, push
targets, and the ``whip`` bridge entry of the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.errors import BadRequest, ConfigError
from gateway.settings import SipBridgeSettings, WhipBridgeSettings, load_settings
from gateway.web.whip import parse_sdpfrag, restrict_directions
from gateway.webrtc.whip_client import target_url

REPO = Path(__file__).resolve().parents[3]
OFFER = "v=0\r\nm=audio 9 X 0\r\na=sendrecv\r\nm=video 9 X 0\r\na=recvonly\r\nm=video 9 X 0\r\na=sendonly\r\n"


def test_a_publisher_only_sends_and_a_viewer_only_receives() -> None:
    assert re.findall(r"a=(\w+)\r", restrict_directions(OFFER, "whip")) == [
        "sendonly", "inactive", "sendonly"]  # fmt: skip
    assert re.findall(r"a=(\w+)\r", restrict_directions(OFFER, "whep")) == [
        "recvonly", "recvonly", "inactive"]  # fmt: skip


def test_a_trickle_fragment_gives_candidates_per_media_section() -> None:
    fragment = parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "m=video 9 RTP/AVP 0\r\na=candidate:2 1 udp 1 192.0.2.1 61765 typ host\r\na=mid:1\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (fragment.ufrag, fragment.pwd) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert [(mid, index) for _c, mid, index in fragment.candidates] == [("0", 0), ("1", 1)]
    assert fragment.candidates[0][0].startswith("candidate:1387637174 ")
    assert fragment.end
    with pytest.raises(BadRequest):
        parse_sdpfrag("garbage\r\n")


def test_a_push_target_stays_on_the_bridges_origin() -> None:
    base = "https://media.example/whip/"
    assert target_url(base, None) == base
    assert target_url(base, "room-1") == "https://media.example/whip/room-1"
    for bad in ("https://evil.example/whip/x", "//evil.example/x", "http://media.example/whip/x"):
        with pytest.raises(BadRequest):
            target_url(base, bad)


def test_whip_bridges_in_the_settings() -> None:
    settings = load_settings(
        "bridges:\n  - {name: studio, type: whip, url: 'https://m.example/whip/', token: abc}\n"
        "  - {name: agency-b, type: sip, proxy: 'sip:p.example'}\n"
    )
    (whip,) = settings.bridges_of(WhipBridgeSettings)
    assert whip.token is not None and whip.token.get_secret_value() == "abc"
    assert [b.name for b in settings.bridges_of(SipBridgeSettings)] == ["agency-b"]
    for text, expected in [
        ("bridges:\n  - {name: s, type: whip}\n", "bridges[0].url: required key is missing"),
        ("bridges:\n  - {name: s, type: whip, url: 'ftp://x'}\n", "bridges[0].url: "),
        ("bridges:\n  - {name: s, type: whip, url: 'http://x', proxy: p}\n", "bridges[0].proxy: unknown key"),
        ("bridges:\n  - {name: s, type: rtmp}\n", "bridges[0].type: input should be 'sip' or 'whip'"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError) as info:
            load_settings(text)
        assert any(p.startswith(expected) and "(line " in p for p in info.value.problems), (
            info.value.problems
        )


@pytest.mark.parametrize("model", [SipBridgeSettings, WhipBridgeSettings])
def test_the_example_file_documents_every_bridge_key(model: type[BaseModel]) -> None:
    text = (REPO / "config" / "gatewayd.example.yaml").read_text()
    missing = [k for k in model.model_fields if not re.search(rf"^#\s+(?:-\s*)?{k}:", text, re.M)]
    assert not missing, missing
