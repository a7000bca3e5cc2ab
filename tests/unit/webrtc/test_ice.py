"""ICE servers from settings, and TURN REST API (coturn use-auth-secret) credentials."""

from __future__ import annotations

import base64

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from gateway.settings import load_settings
from gateway.webrtc import aiortc_internals as internals
from gateway.webrtc.ice import ice_servers, turn_rest_credentials


def test_turn_rest_credentials_match_a_known_vector() -> None:
    # Vector computed independently with:
    #   printf '%s' "1700086400:web-leg1" | openssl dgst -sha1 -hmac "s3cret-shared" -binary | base64
    creds = turn_rest_credentials("s3cret-shared", "web-leg1", now=1700000000.7, ttl=86400)
    assert creds.username == "1700086400:web-leg1"
    assert creds.password == "uZ3bWtc20ChvtEycV2tshXTKpRM="
    assert len(base64.b64decode(creds.password)) == 20  # a SHA-1 digest


def test_turn_rest_credentials_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="ttl"):
        turn_rest_credentials("s", "u", now=0, ttl=0)
    with pytest.raises(ValueError, match=":"):
        turn_rest_credentials("s", "a:b", now=0, ttl=60)


def test_ice_servers_from_settings() -> None:
    settings = load_settings(
        "webrtc:\n"
        "  ice_servers:\n"
        "    - urls: ['stun:stun.agency.example:3478']\n"
        "    - urls: ['turn:turn.agency.example:3478?transport=udp']\n"
        "      username: gw\n"
        "      credential: long-term-pass\n"
        "    - urls: ['turns:turn.agency.example:5349']\n"
        "      turn_secret: s3cret-shared\n"
        "      ttl: 86400\n"
    ).webrtc
    stun, long_term, ephemeral = ice_servers(
        list(settings.ice_servers), user="web-leg1", now=1700000000
    )
    assert stun.urls == ["stun:stun.agency.example:3478"]
    assert stun.username is None and stun.credential is None
    assert (long_term.username, long_term.credential) == ("gw", "long-term-pass")
    assert ephemeral.username == "1700086400:web-leg1"
    assert ephemeral.credential == "uZ3bWtc20ChvtEycV2tshXTKpRM="


def test_settings_refuse_mixed_or_half_credentials() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="exclude"):
        load_settings(
            "webrtc:\n  ice_servers:\n    - urls: ['turn:t.example']\n"
            "      username: a\n      credential: b\n      turn_secret: c\n"
        )
    with pytest.raises(ConfigError, match="go together"):
        load_settings(
            "webrtc:\n  ice_servers:\n    - urls: ['turn:t.example']\n      username: a\n"
        )
    with pytest.raises(ConfigError, match="not a stun"):
        load_settings("webrtc:\n  ice_servers:\n    - urls: ['http://t.example']\n")
    with pytest.raises(ConfigError, match="IP address"):
        load_settings("webrtc:\n  ice_addresses: ['gateway.example']\n")


async def test_no_ice_servers_means_no_stun_or_turn_at_all() -> None:
    """aiortc falls back to a public STUN server only when iceServers is None."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers([], user="x", now=0)))
    pc.addTransceiver("video")
    pc.addTransceiver("audio")
    try:
        assert internals.ice_server_addresses(pc) == [None, None, None, None]
        default = RTCPeerConnection()  # what we never do: aiortc's default
        default.addTransceiver("audio")
        assert internals.ice_server_addresses(default)[0] == ("stun.l.google.com", 19302)
        await default.close()
    finally:
        await pc.close()
