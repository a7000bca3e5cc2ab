"""The SDP model: parsing, serialization and the typed attribute views."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import BadRequest
from gateway.media.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
    stream_address,
    stream_direction,
)
from gateway.media.sdp_attributes import (
    Candidate,
    Crypto,
    CryptoKey,
    Direction,
    Fingerprint,
    Group,
    Rtcp,
    SdpError,
    imageattr_max_receive,
)
from gateway.media.sdp_parser import MAX_SDP_SIZE, parse
from tests.unit.media.conftest import GOLDEN_FILES

FULL = (
    "v=0\r\n"
    "o=jdoe 2890844526 2890842807 IN IP4 198.51.100.1\r\n"
    "s=SDP Seminar\r\n"
    "i=A Seminar on the session description protocol\r\n"
    "u=https://www.example.com/seminars/sdp.pdf\r\n"
    "e=j.doe@example.com (Jane Doe)\r\n"
    "p=+1 617 555-6011\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "b=AS:256\r\n"
    "b=TIAS:256000\r\n"
    "t=2873397496 2873404696\r\n"
    "r=7d 1h 0 25h\r\n"
    "z=2882844526 -1h 2898848070 0\r\n"
    "k=prompt\r\n"
    "a=recvonly\r\n"
    "a=x-vendor-thing:keep me;exactly  as is\r\n"
    "m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    "i=main audio\r\n"
    "c=IN IP4 203.0.113.7\r\n"
    "b=AS:64\r\n"
    "k=prompt\r\n"
    "a=rtpmap:97 iLBC/8000\r\n"
    "a=fmtp:97 mode=30\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=x-unknown\r\n"
    "a=ptime:20\r\n"
    "a=maxptime:40\r\n"
    "a=sendrecv\r\n"
    "a=rtcp:49171 IN IP4 203.0.113.8\r\n"
    "a=empty-value:\r\n"
    "m=video 51372/2 RTP/AVPF 99\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
    "a=rtcp-fb:* nack\r\n"
    "a=rtcp-fb:99 ccm  fir\r\n"
    "a=rtcp-mux\r\n"
)


def test_every_field_is_parsed() -> None:
    sdp = parse(FULL)
    assert sdp.origin == Origin("jdoe", "2890844526", 2890842807, "198.51.100.1", "IP4", "IN")
    assert sdp.session_name == "SDP Seminar"
    assert sdp.information == "A Seminar on the session description protocol"
    assert sdp.uri == "https://www.example.com/seminars/sdp.pdf"
    assert sdp.emails == ("j.doe@example.com (Jane Doe)",)
    assert sdp.phones == ("+1 617 555-6011",)
    assert sdp.connection == Connection("198.51.100.1")
    assert sdp.bandwidths == (Bandwidth("AS", 256), Bandwidth("TIAS", 256000))
    assert sdp.bandwidth("tias") == 256000
    assert sdp.timings == (Timing(2873397496, 2873404696, ("7d 1h 0 25h",)),)
    assert sdp.time_zones == "2882844526 -1h 2898848070 0"
    assert sdp.encryption_key == "prompt"
    assert sdp.direction is Direction.RECVONLY
    assert sdp.values("x-vendor-thing") == ["keep me;exactly  as is"]
    audio, video = sdp.media
    assert (audio.kind, audio.port, audio.proto, audio.fmt) == (
        "audio",
        49170,
        "RTP/AVP",
        ("0", "8", "97", "101"),
    )
    assert audio.information == "main audio"
    assert audio.connection == Connection("203.0.113.7")
    assert audio.bandwidth("AS") == 64
    assert audio.encryption_key == "prompt"
    assert (audio.ptime, audio.maxptime) == (20, 40)
    assert audio.direction is Direction.SENDRECV
    assert audio.rtcp == Rtcp(49171, "203.0.113.8")
    assert not audio.rtcp_mux
    assert Attribute("empty-value", "") in audio.attributes
    assert Attribute("x-unknown") in audio.attributes
    assert (video.port, video.port_count, video.direction) == (51372, 2, None)
    assert video.rtcp_mux
    assert video.is_avpf and not audio.is_avpf


def test_serialization_is_byte_exact_and_keeps_unknown_attributes_in_order() -> None:
    assert str(parse(FULL)) == FULL
    assert bytes(parse(FULL.encode())) == FULL.encode()


def test_lf_crlf_trailing_whitespace_and_blank_lines_are_tolerated() -> None:
    lf = FULL.replace("\r\n", "\n")
    sloppy = FULL.replace("\r\n", "  \t\r\n").replace("m=video", "\r\nm=video") + "\r\n\r\n"
    assert parse(lf) == parse(FULL) == parse(sloppy)


def test_static_payload_types_are_implied_and_rtpmap_fmtp_rtcp_fb_folded_in() -> None:
    sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0 8 9 18 3 13 96\r\n"
        "a=fmtp:18 annexb=no\r\n"
        "m=video 4002 RTP/AVPF 97 98\r\n"
        "a=rtpmap:97 H264/90000\r\n"
        "a=fmtp:97 profile-level-id=42e01f; Packetization-Mode=1\r\n"
        "a=rtpmap:98 VP8/90000\r\n"
        "a=rtcp-fb:* nack\r\n"
        "a=rtcp-fb:97 ccm fir\r\n"
    )
    audio = {f.payload_type: f for f in sdp.media[0].payload_formats}
    assert [(f.encoding, f.clock_rate) for f in audio.values()] == [
        ("PCMU", 8000),
        ("PCMA", 8000),
        ("G722", 8000),  # RFC 3551 keeps 8000 although G.722 samples at 16 kHz
        ("G729", 8000),
        ("GSM", 8000),
        ("CN", 8000),
        (None, 0),  # dynamic without rtpmap: unusable, but kept in place
    ]
    assert audio[18].parameters == {"annexb": "no"}
    assert audio[96].name == "PT96"
    h264, vp8 = sdp.media[1].payload_formats
    assert h264.parameters == {"profile-level-id": "42e01f", "packetization-mode": "1"}
    assert h264.rtcp_feedback == ("nack", "ccm fir")
    assert vp8.rtcp_feedback == ("nack",)


def test_audio_channels_default_to_one_and_are_read_from_rtpmap() -> None:
    sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 1 RTP/AVP 111 117\n"
        "a=rtpmap:111 opus/48000/2\na=rtpmap:117 G722/8000/2\n"
    )
    assert [f.channels for f in sdp.media[0].payload_formats] == [2, 2]


def test_ipv6_connection_at_both_levels() -> None:
    sdp = parse(Path(GOLDEN_FILES[0].parent / "ipv6_offer.sdp").read_text())
    assert sdp.connection == Connection("2001:db8:4::17", "IP6")
    assert sdp.origin.addrtype == "IP6"
    assert stream_address(sdp, sdp.media[0]) == "2001:db8:4::17"
    assert sdp.media[0].rtcp == Rtcp(7079, "2001:db8:4::17", "IP6")
    assert Connection.for_address("2001:db8::1") == Connection("2001:db8::1", "IP6")
    assert Connection.for_address("192.0.2.1") == Connection("192.0.2.1", "IP4")


def test_media_level_connection_overrides_session_level() -> None:
    sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=audio 1 RTP/AVP 0\nc=IN IP4 192.0.2.2\nm=video 2 RTP/AVP 31\n"
    )
    assert [stream_address(sdp, m) for m in sdp.media] == ["192.0.2.2", "192.0.2.1"]


def _with_direction(session: str, media: str, connection: str = "192.0.2.1") -> Direction:
    sdp = parse(
        f"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 {connection}\nt=0 0\n{session}"
        f"m=audio 1 RTP/AVP 0\n{media}"
    )
    return stream_direction(sdp, sdp.media[0])


def test_direction_default_session_level_and_media_override() -> None:
    assert _with_direction("", "") is Direction.SENDRECV
    assert _with_direction("a=sendonly\n", "") is Direction.SENDONLY
    assert _with_direction("a=sendonly\n", "a=inactive\n") is Direction.INACTIVE
    assert _with_direction("", "a=recvonly\n") is Direction.RECVONLY


def test_zero_address_is_hold_unless_it_is_the_ice_placeholder() -> None:
    assert _with_direction("", "", "0.0.0.0") is Direction.SENDONLY
    assert _with_direction("", "a=recvonly\n", "0.0.0.0") is Direction.INACTIVE
    assert _with_direction("", "a=ice-ufrag:abcd\n", "0.0.0.0") is Direction.SENDRECV


def test_direction_algebra() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.SENDRECV.intersect(Direction.SENDONLY) is Direction.SENDONLY
    assert Direction.RECVONLY.intersect(Direction.SENDONLY) is Direction.INACTIVE


def test_crypto_lines_are_parsed_and_written_back() -> None:
    text = (
        "1 AES_CM_128_HMAC_SHA1_80 "
        "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;"
        "inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 "
        "KDR=1 UNENCRYPTED_SRTCP"
    )
    crypto = Crypto.parse(text)
    assert crypto.tag == 1
    assert crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    assert crypto.keys[0] == CryptoKey(
        "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", lifetime="2^20", mki="1:4"
    )
    assert crypto.keys[0].key_bytes is not None and len(crypto.keys[0].key_bytes) == 30
    assert crypto.keys[1].mki == "2:4"
    assert crypto.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert str(crypto) == text
    assert Crypto.parse("3 AES_CM_128_HMAC_SHA1_80 inline:abc|1:1").keys[0].mki == "1:1"
    assert Crypto.parse("3 AES_CM_128_HMAC_SHA1_80 inline:abc|2^31").keys[0].lifetime == "2^31"
    assert Crypto.parse("3 X inline:not*base64").keys[0].key_bytes is None


@pytest.mark.parametrize(
    "value",
    [
        "AES_CM_128_HMAC_SHA1_80 inline:abc",
        "1 AES_CM_128_HMAC_SHA1_80",
        "x AES_CM_128_HMAC_SHA1_80 inline:abc",
        "1 AES_CM_128_HMAC_SHA1_80 inline",
        "1 AES_CM_128_HMAC_SHA1_80 inline:abc|2^31|1:1|extra",
        "1 AES_CM_128_HMAC_SHA1_80 inline:abc|later",
    ],
)
def test_malformed_crypto_is_an_sdp_error(value: str) -> None:
    with pytest.raises(SdpError):
        Crypto.parse(value)
    with pytest.raises(SdpError, match="line 5"):
        parse(f"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nm=audio 1 RTP/SAVP 0\na=crypto:{value}\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("97 send [x=800,y=640,sar=1.1,q=0.6] [x=480,y=320] recv [x=330,y=250]", (330, 250)),
        ("97 recv [x=[480:16:800],y=[320:16:640],par=[1.2-1.3],q=0.6] send *", (800, 640)),
        ("* recv [x=320,y=240] [x=[640,1280],y=[360,720]]", (1280, 720)),
        ("97 send [x=800,y=640] recv *", None),
        ("97 send [x=800,y=640]", None),
        ("garbage", None),
        ("97 recv [x=oops]", None),
    ],
)
def test_imageattr_max_receive(value: str, expected: tuple[int, int] | None) -> None:
    assert imageattr_max_receive(value) == expected


def test_webrtc_attributes_can_be_read() -> None:
    chrome = parse((GOLDEN_FILES[0].parent / "chrome_offer.sdp").read_bytes())
    assert chrome.groups == (Group("BUNDLE", ("0", "1", "2")),)
    assert chrome.bundle_mids == ("0", "1", "2")
    audio = chrome.media[0]
    assert (audio.mid, audio.ice_ufrag, audio.ice_pwd, audio.setup) == (
        "0",
        "x9Qn",
        "Jq4Kk2rO0v0bO6zLw3T8pX1y",
        "actpass",
    )
    assert audio.fingerprints[0].algorithm == "sha-256"
    assert audio.is_dtls and audio.rtcp_mux
    firefox = parse((GOLDEN_FILES[0].parent / "firefox_offer.sdp").read_bytes())
    assert firefox.fingerprints and firefox.fingerprints[0].value.startswith("DD:FD")
    srflx = firefox.media[0].candidates[2]
    assert srflx == Candidate(
        "1",
        1,
        "UDP",
        1686052863,
        "198.51.100.23",
        54609,
        "srflx",
        (("raddr", "192.168.1.34"), ("rport", "54609")),
    )
    assert str(srflx) == firefox.media[0].values("candidate")[2]


def test_legacy_ice_candidates_are_kept_but_not_read() -> None:
    lync = parse((GOLDEN_FILES[0].parent / "skype_for_business_offer.sdp").read_bytes())
    audio = lync.media[0]
    assert len(audio.values("candidate")) == 7
    assert len(audio.candidates) == 6  # the ICE draft-6 line is skipped
    assert "a=candidate:Mb1fOC6hZ5cb4nBtXq3dJm9y0KpQ2s7u" in str(lync)


def test_fingerprint_and_group_helpers() -> None:
    assert Fingerprint.parse("SHA-256 AB:CD") == Fingerprint("sha-256", "AB:CD")
    assert Fingerprint.parse("sha-256") is None
    assert str(Group.parse("BUNDLE a b")) == "BUNDLE a b"


def test_constructed_model_serializes_in_rfc_order() -> None:
    sdp = SessionDescription(
        origin=Origin("-", "7", 3, "2001:db8::1", "IP6"),
        connection=Connection("2001:db8::1", "IP6"),
        attributes=(Attribute("group", "BUNDLE a"),),
        media=(
            MediaDescription(
                "audio",
                5004,
                "RTP/AVP",
                ("0",),
                bandwidths=(Bandwidth("TIAS", 64000),),
                attributes=(Attribute("mid", "a"), Attribute("sendonly")),
            ),
        ),
    )
    assert str(sdp) == (
        "v=0\r\no=- 7 3 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
        "a=group:BUNDLE a\r\nm=audio 5004 RTP/AVP 0\r\nb=TIAS:64000\r\na=mid:a\r\na=sendonly\r\n"
    )
    assert parse(str(sdp)) == sdp
    assert SessionDescription.parse(str(sdp)) == sdp


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Sitzung M\xfcller\r\nt=0 0\r\n".encode("latin-1")
    sdp = parse(body)
    assert bytes(sdp) == body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        ("o=- 1 1 IN IP4 a\n", "v= must be the first line"),
        ("v=1\n", "unsupported SDP version"),
        ("v=0\nv=0\n", "v= must be the first line"),
        ("v=0\ns=-\n", "no o= line"),
        ("v=0\no=- 1 1 IN IP4\n", "o="),
        ("v=0\no=- 1 x IN IP4 a\n", "session version"),
        ("v=0\no=- 1 1 IN IP4 a\no=- 1 1 IN IP4 a\n", "twice"),
        ("v=0\no=- 1 1 IN IP4 a\ns=a\ns=b\n", "twice"),
        ("v=0\no=- 1 1 IN IP4 a\nhello\n", "<type>=<value>"),
        ("v=0\no=- 1 1 IN IP4 a\nx=1\n", "'x=' is not allowed"),
        ("v=0\no=- 1 1 IN IP4 a\nv =0\n", "<type>=<value>"),
        ("v=0\no=- 1 1 IN IP4 a\nc=IN IP4\n", "c="),
        ("v=0\no=- 1 1 IN IP4 a\nc=IN IP4 a\nc=IN IP4 b\n", "twice"),
        ("v=0\no=- 1 1 IN IP4 a\nb=AS\n", "b="),
        ("v=0\no=- 1 1 IN IP4 a\nb=AS:lots\n", "bandwidth"),
        ("v=0\no=- 1 1 IN IP4 a\nt=0\n", "t="),
        ("v=0\no=- 1 1 IN IP4 a\nr=7d 1h\n", "r= before"),
        ("v=0\no=- 1 1 IN IP4 a\na=\n", "no name"),
        ("v=0\no=- 1 1 IN IP4 a\na=:x\n", "no name"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\ne=x@y\n", "inside an m= section"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio\n", "m="),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 70000 RTP/AVP 0\n", "port"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1/x RTP/AVP 0\n", "port count"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0 PCMU\n", "payload type"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 128\n", "payload type"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtpmap:96 opus\n", "rtpmap"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtpmap:x opus/48000\n", "payload"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtpmap:96 a/b\n", "clock rate"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtpmap\n", "needs a value"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=fmtp:\n", "fmtp"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtcp-fb:96\n", "rtcp-fb"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=ptime:twenty\n", "ptime"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtcp:x\n", "rtcp port"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=rtcp:1 IN IP4\n", "rtcp"),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 96\na=sendonly:x\n", "takes no value"),
        ("v=0\no=- 1 1 IN IP4 a\ns=a\rb\n", "CR or NUL"),
        ("v=0\no=- 1 1 IN IP4 a\ns=a\x00b\n", "CR or NUL"),
    ],
)
def test_garbage_raises_sdp_error_400_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message) as caught:
        parse(text)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.sip_status == 400


def test_errors_name_the_line_number() -> None:
    with pytest.raises(SdpError, match=r"^SDP line 4 \('m=audio x RTP/AVP 0'\): m= port"):
        parse("v=0\no=- 1 1 IN IP4 a\n\nm=audio x RTP/AVP 0\n")


def test_size_limit() -> None:
    body = "v=0\no=- 1 1 IN IP4 a\n" + "a=x\n" * (MAX_SDP_SIZE // 4)
    with pytest.raises(SdpError, match="exceeds the limit"):
        parse(body)


def test_missing_session_name_and_timing_are_tolerated() -> None:
    sdp = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\n")
    assert sdp.session_name == "-"
    assert sdp.timings == ()
    assert parse(str(sdp)) == sdp


def test_empty_session_name_round_trips() -> None:
    sdp = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns= \nt=0 0\n")
    assert sdp.session_name == ""
    assert parse(str(sdp)) == sdp


def test_non_rtp_m_lines_keep_their_formats() -> None:
    sdp = parse(
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=application 5070 UDP/BFCP *\n"
        "a=floorctrl:c-s\nm=image 4000 udptl t38\na=T38FaxVersion:0\n"
    )
    assert [m.fmt for m in sdp.media] == [("*",), ("t38",)]
    assert [m.payload_formats for m in sdp.media] == [(), ()]
    assert not any(m.is_rtp for m in sdp.media)


def _canonical(raw: bytes) -> str:
    """The golden text as we write it: CRLF, no trailing whitespace."""
    lines = [line.rstrip() for line in raw.decode().split("\n")]
    return "".join(f"{line}\r\n" for line in lines if line)


def test_there_are_enough_golden_sdps() -> None:
    assert len(GOLDEN_FILES) >= 12


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_sdp_round_trips(path: Path) -> None:
    raw = path.read_bytes()
    sdp = parse(raw)
    assert parse(str(sdp)) == sdp
    # Goldens are written in RFC order, so re-serialization is the same text.
    assert str(sdp) == _canonical(raw)
    for media in sdp.media:  # every typed view can be read
        assert media.payload_formats is not None
        assert media.crypto is not None
        assert media.rtcp is None or media.rtcp.port > 0
