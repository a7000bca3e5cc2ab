"""RFC 3264 offer/answer against golden peer SDPs and hand-made edge cases."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from gateway.errors import NotAcceptable
from gateway.media.capabilities import LocalCapabilities, SrtpPolicy
from gateway.media.codec_params import CodecCapability
from gateway.media.negotiation import NegotiatedStream, answer_result, process_answer
from gateway.media.offer_answer import answer, create_offer
from gateway.media.sdp import Connection, SessionDescription, stream_direction
from gateway.media.sdp_attributes import Direction, SdpError
from gateway.media.sdp_parser import parse
from tests.unit.media.conftest import GOLDEN_FILES, GOLDEN_SDP, make_local, seeded_random

# Which m-lines our default capabilities accept, per golden offer; None: 488.
EXPECTED_ACCEPTED: dict[str, list[bool] | None] = {
    "asterisk_chan_sip_offer.sdp": [True],
    "asterisk_offer.sdp": [True, True],
    "baresip_offer.sdp": [True, True],
    "baresip_srtp_offer.sdp": [True, True],
    "chrome_offer.sdp": [True, True, False],  # data channel
    "cisco_room_offer.sdp": [True, True, False, False, False],  # slides, BFCP, H.224
    "firefox_offer.sdp": [True, True],
    "freeswitch_savp_offer.sdp": [True],
    "hold_c0_cisco.sdp": [True],
    "hold_sendonly_yealink.sdp": [True],
    "ipv6_offer.sdp": [True, True],
    "polycom_group_offer.sdp": [True, True, False, False, False],  # slides, BFCP, H.224
    "safari_offer.sdp": [True, True],
    "skype_for_business_offer.sdp": [True, False],  # X-H264UC / RTVideo only
    "t38_reinvite.sdp": None,
    "t38_reinvite_with_audio.sdp": [True, False],
}


def golden(name: str) -> SessionDescription:
    return parse((GOLDEN_SDP / name).read_bytes())


def offer_of(media: str, session: str = "", connection: str = "203.0.113.50") -> SessionDescription:
    """A minimal peer offer around the given m-sections (LF, as tests read best)."""
    return parse(
        f"v=0\no=peer 100 200 IN IP4 {connection}\ns=-\nc=IN IP4 {connection}\nt=0 0\n"
        f"{session}{media}"
    )


def stream(offer: SessionDescription, local: LocalCapabilities, index: int = 0) -> NegotiatedStream:
    return answer_result(offer, answer(offer, local))[index]


def test_every_golden_offer_has_an_expectation() -> None:
    assert sorted(EXPECTED_ACCEPTED) == [p.name for p in GOLDEN_FILES]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_answering_golden_offers(path: Path, local: LocalCapabilities) -> None:
    offer = parse(path.read_bytes())
    expected = EXPECTED_ACCEPTED[path.name]
    if expected is None:
        with pytest.raises(NotAcceptable) as caught:
            answer(offer, local)
        assert caught.value.sip_status == 488
        return
    ours = answer(offer, local)
    text = str(ours)
    reparsed = parse(text)
    assert reparsed == ours
    assert [m.kind for m in ours.media] == [m.kind for m in offer.media]
    assert [m.port != 0 for m in ours.media] == expected
    for offered, answered in zip(offer.media, ours.media, strict=True):
        assert answered.proto == offered.proto
        if answered.port == 0:
            assert answered.fmt == offered.fmt
        else:
            assert set(answered.fmt) <= set(offered.fmt)  # the offerer's payload types
    result = answer_result(offer, ours)
    assert [s.accepted for s in result] == expected
    for negotiated in result:
        if negotiated.accepted:
            assert negotiated.codecs
            assert negotiated.remote_port == offer.media[negotiated.index].port


def test_answer_is_stable_for_a_seeded_random_source() -> None:
    offer = golden("baresip_srtp_offer.sdp")
    first = answer(offer, make_local(random_bytes=seeded_random(7)))
    second = answer(offer, make_local(random_bytes=seeded_random(7)))
    assert str(first) == str(second)
    assert str(first) != str(answer(offer, make_local(random_bytes=seeded_random(8))))


def test_t38_only_reinvite_is_refused_with_a_readable_reason(local: LocalCapabilities) -> None:
    with pytest.raises(NotAcceptable, match=r"^image udptl t38 not supported$"):
        answer(golden("t38_reinvite.sdp"), local)


def test_no_common_codec_reason_fits_a_warning_header(local: LocalCapabilities) -> None:
    offer = offer_of("m=audio 5004 RTP/AVP 18\na=rtpmap:18 G729/8000\n")
    with pytest.raises(NotAcceptable) as caught:
        answer(offer, local)
    assert caught.value.message == (
        "no common audio codec: offered G729, we support opus G722 PCMU PCMA"
    )
    assert caught.value.sip_status == 488


def test_reasons_are_sanitised_for_the_warning_header(local: LocalCapabilities) -> None:
    offer = offer_of('m=audio 5004 RTP/AVP 96\na=rtpmap:96 Bad"Codec\\\xe9/8000\n')
    with pytest.raises(NotAcceptable, match=r"offered Bad\?Codec\?\?,"):
        answer(offer, local)


def test_refused_streams_keep_media_proto_and_formats(local: LocalCapabilities) -> None:
    ours = answer(golden("polycom_group_offer.sdp"), local)
    assert [str(m.lines()[0]) for m in ours.media[2:]] == [
        "m=video 0 RTP/AVP 109 110 96 34",
        "m=application 0 UDP/BFCP *",
        "m=application 0 RTP/AVP 100",
    ]


def test_polycom_h264_is_answered_at_the_offered_lower_level(local: LocalCapabilities) -> None:
    video = stream(golden("polycom_group_offer.sdp"), local, 1)
    assert [(c.payload_type, c.parameters.get("packetization-mode")) for c in video.codecs] == [
        (110, "1"),
        (111, None),
    ]
    ours = answer(golden("polycom_group_offer.sdp"), local)
    fmtp = ours.media[1].fmtps
    assert "profile-level-id=428016" in fmtp["110"]  # no level-asymmetry-allowed offered
    assert video.codecs[0].rtcp_feedback == ("ccm fir", "nack pli")
    assert video.remote_bandwidth == 1_920_000


def test_cisco_telephone_event_and_rtcp_ports(local: LocalCapabilities) -> None:
    audio = stream(golden("cisco_room_offer.sdp"), local)
    assert audio.telephone_event is not None
    assert audio.telephone_event.payload_type == 105
    assert [c.name for c in audio.codecs] == ["G722", "PCMA", "PCMU"]
    assert not audio.rtcp_mux
    assert (audio.remote_rtcp_address, audio.remote_rtcp_port) == ("192.0.2.77", 2327)
    assert audio.remote_bandwidth == 128_000


def test_rtcp_defaults_to_the_next_port_without_mux(local: LocalCapabilities) -> None:
    audio = stream(golden("asterisk_offer.sdp"), local)
    assert (audio.remote_address, audio.remote_port) == ("203.0.113.5", 18722)
    assert audio.remote_rtcp_port == 18723
    assert audio.ptime == 20 and audio.maxptime == 150


def test_opus_parameters_are_carried_to_the_result(local: LocalCapabilities) -> None:
    audio = stream(golden("baresip_offer.sdp"), local)
    first = audio.codecs[0]
    assert (first.name, first.payload_type, first.channels) == ("opus", 96, 2)
    assert first.parameters["maxaveragebitrate"] == "64000"
    assert first.parameters["stereo"] == "1"
    assert audio.codecs[1].parameters["useinbandfec"] == "1"
    assert audio.telephone_event is not None and audio.telephone_event.fmtp == "0-15"


def test_g722_static_payload_type_is_answered_with_its_8000_rtpmap(
    local: LocalCapabilities,
) -> None:
    offer = offer_of("m=audio 5004 RTP/AVP 9\n")
    ours = answer(offer, local)
    assert ours.media[0].values("rtpmap") == ["9 G722/8000"]
    assert stream(offer, local).codecs[0].clock_rate == 8000


@pytest.mark.parametrize(
    ("offered", "connection", "ours"),
    [
        ("a=sendrecv\n", "203.0.113.50", Direction.SENDRECV),
        ("a=sendonly\n", "203.0.113.50", Direction.RECVONLY),
        ("a=recvonly\n", "203.0.113.50", Direction.SENDONLY),
        ("a=inactive\n", "203.0.113.50", Direction.INACTIVE),
        ("", "0.0.0.0", Direction.RECVONLY),  # RFC 2543 hold
        ("a=sendonly\n", "0.0.0.0", Direction.RECVONLY),
        ("a=inactive\n", "0.0.0.0", Direction.INACTIVE),
    ],
)
def test_answer_direction_mirrors_the_offer(
    offered: str, connection: str, ours: Direction, local: LocalCapabilities
) -> None:
    offer = offer_of(f"m=audio 5004 RTP/AVP 0\n{offered}", connection=connection)
    answered = answer(offer, local)
    assert answered.media[0].direction is ours
    assert answered.connection == Connection("192.0.2.10")  # never our hold address
    assert stream(offer, local).direction is ours


def test_session_level_direction_is_the_default(local: LocalCapabilities) -> None:
    offer = offer_of(
        "m=audio 5004 RTP/AVP 0\nm=video 5006 RTP/AVP 96\na=rtpmap:96 VP8/90000\na=sendrecv\n",
        session="a=sendonly\n",
    )
    ours = answer(offer, local)
    assert [m.direction for m in ours.media] == [Direction.RECVONLY, Direction.SENDRECV]


def test_golden_holds(local: LocalCapabilities) -> None:
    for name in ("hold_sendonly_yealink.sdp", "hold_c0_cisco.sdp"):
        assert stream(golden(name), local).direction is Direction.RECVONLY, name


def test_our_hold_intersects_with_the_offer(local: LocalCapabilities) -> None:
    held = dataclasses.replace(local, direction=Direction.SENDONLY)
    assert answer(offer_of("m=audio 5004 RTP/AVP 0\n"), held).media[0].direction is (
        Direction.SENDONLY
    )
    offer = offer_of("m=audio 5004 RTP/AVP 0\na=sendonly\n")
    assert answer(offer, held).media[0].direction is Direction.INACTIVE


def test_browser_trickle_placeholder_is_not_hold(local: LocalCapabilities) -> None:
    chrome = golden("chrome_offer.sdp")
    assert stream_direction(chrome, chrome.media[0]) is Direction.SENDRECV
    assert stream(chrome, local).direction is Direction.SENDRECV


def test_webrtc_offer_is_answered_with_dtls_bundle_and_mids(local: LocalCapabilities) -> None:
    chrome = golden("chrome_offer.sdp")
    ours = answer(chrome, local)
    assert ours.bundle_mids == ("0", "1")
    audio, video, data = ours.media
    assert audio.port == video.port == 40000  # one transport for the bundle
    assert (audio.mid, video.mid, data.mid) == ("0", "1", "2")
    assert audio.setup == "active" and audio.rtcp_mux
    assert audio.fingerprints[0].value == ":".join(["5A"] * 32)
    assert audio.ice_ufrag == "gwUfrag1"
    assert not audio.crypto
    result = answer_result(chrome, ours)
    assert result[0].dtls_setup == "active"
    assert result[0].remote_fingerprints[0].value.startswith("E8:05")
    assert result[0].telephone_event is not None
    assert result[0].telephone_event.payload_type == 110  # at opus' 48 kHz clock
    # RTCP feedback both listed, for PLI/FIR when a new receiver joins
    assert result[1].codecs[0].rtcp_feedback == ("goog-remb", "ccm fir", "nack", "nack pli")


def test_webrtc_offer_without_dtls_identity_is_refused(local: LocalCapabilities) -> None:
    with pytest.raises(NotAcceptable, match="needs DTLS-SRTP"):
        answer(golden("firefox_offer.sdp"), dataclasses.replace(local, webrtc=None))


def test_rtx_is_answered_only_for_a_taken_codec(local: LocalCapabilities) -> None:
    with_rtx = dataclasses.replace(
        local, video_codecs=(*local.video_codecs, CodecCapability("rtx", 90000, 120))
    )
    ours = answer(golden("chrome_offer.sdp"), with_rtx)
    video = ours.media[1]
    assert video.fmt == ("96", "97", "102", "103", "104", "105", "106", "107", "108", "109")
    assert video.fmtps["97"] == "apt=96"
    auxiliary = answer_result(golden("chrome_offer.sdp"), ours)[1].auxiliary
    assert [c.payload_type for c in auxiliary] == [97, 103, 105, 107, 109]


def test_ipv6_offer_is_answered_from_our_ipv6_address(local: LocalCapabilities) -> None:
    ours = answer(golden("ipv6_offer.sdp"), local)
    assert ours.connection == Connection("2001:db8::10", "IP6")
    assert ours.origin.addrtype == "IP6"
    audio = answer_result(golden("ipv6_offer.sdp"), ours)[0]
    assert audio.remote_address == "2001:db8:4::17"
    assert (audio.remote_rtcp_address, audio.remote_rtcp_port) == ("2001:db8:4::17", 7079)
    ipv4_only = dataclasses.replace(local, address6=None)
    assert answer(golden("ipv6_offer.sdp"), ipv4_only).connection == Connection("192.0.2.10")


def test_only_one_stream_per_kind(local: LocalCapabilities) -> None:
    offer = offer_of("m=audio 5004 RTP/AVP 0\nm=audio 5006 RTP/AVP 0\n")
    assert [m.port for m in answer(offer, local).media] == [40000, 0]


def test_kinds_without_a_port_are_refused(local: LocalCapabilities) -> None:
    offer = golden("baresip_offer.sdp")
    audio_only = dataclasses.replace(local, video_port=None)
    assert [m.port for m in answer(offer, audio_only).media] == [40000, 0]


def test_stream_disabled_by_the_offer_stays_disabled(local: LocalCapabilities) -> None:
    offer = offer_of("m=audio 5004 RTP/AVP 0\nm=video 0 RTP/AVP 96\na=rtpmap:96 VP8/90000\n")
    assert [m.port for m in answer(offer, local).media] == [40000, 0]
    # a re-INVITE may disable every stream and keep the dialog: not a 488
    assert [m.port for m in answer(offer_of("m=audio 0 RTP/AVP 0\n"), local).media] == [0]


def test_offer_without_streams_gets_an_answer_without_streams(local: LocalCapabilities) -> None:
    assert answer(offer_of(""), local).media == ()


# --- SRTP ---------------------------------------------------------------


def test_freeswitch_suites_pick_the_first_we_support(local: LocalCapabilities) -> None:
    offer = golden("freeswitch_savp_offer.sdp")
    ours = answer(offer, local)
    (crypto,) = ours.media[0].crypto
    assert (crypto.tag, crypto.suite) == (5, "AES_CM_128_HMAC_SHA1_80")
    key = crypto.keys[0].key_bytes
    assert key is not None and len(key) == 30
    keys = answer_result(offer, ours)[0].srtp
    assert keys is not None
    assert keys.local_key == key
    assert keys.remote_key == base64.b64decode("1r2jQBvpyMvMyTX2zR9hImrhUziuGjQATTO6DSRq")
    assert "key" not in repr(keys).lower().replace("srtpkeys", "")


def test_our_key_comes_from_the_injected_random_source() -> None:
    offer = golden("freeswitch_savp_offer.sdp")
    seeded = seeded_random(3)
    drawn: list[bytes] = []

    def source(size: int) -> bytes:
        drawn.append(seeded(size))
        return drawn[-1]

    ours = answer(offer, make_local(random_bytes=source))
    # the 30 bytes of key and salt, then 8 for the o= session id
    assert [len(d) for d in drawn] == [30, 8]
    assert ours.media[0].crypto[0].keys[0].key_bytes == drawn[0]
    assert ours.origin.session_id == str(int.from_bytes(drawn[1], "big") >> 2)


def test_lync_keys_with_mki_are_skipped(local: LocalCapabilities) -> None:
    offer = golden("skype_for_business_offer.sdp")
    (crypto,) = answer(offer, local).media[0].crypto
    assert crypto.tag == 3  # tag 2 carries an MKI, which pylibsrtp cannot do


def test_baresip_first_offered_supported_suite_wins(local: LocalCapabilities) -> None:
    ours = answer(golden("baresip_srtp_offer.sdp"), local)
    assert [(c.tag, c.suite) for m in ours.media for c in m.crypto] == [
        (1, "AES_CM_128_HMAC_SHA1_32"),
        (1, "AES_CM_128_HMAC_SHA1_32"),
    ]
    gcm_first = dataclasses.replace(local, crypto_suites=("AEAD_AES_256_GCM",))
    (crypto,) = answer(golden("baresip_srtp_offer.sdp"), gcm_first).media[0].crypto
    assert (crypto.tag, crypto.suite) == (3, "AEAD_AES_256_GCM")
    assert crypto.keys[0].key_bytes is not None and len(crypto.keys[0].key_bytes) == 44


def test_srtp_require_refuses_plain_rtp(local: LocalCapabilities) -> None:
    strict = dataclasses.replace(local, srtp=SrtpPolicy.REQUIRE)
    with pytest.raises(NotAcceptable, match="SRTP is required here"):
        answer(golden("asterisk_chan_sip_offer.sdp"), strict)
    assert answer(golden("freeswitch_savp_offer.sdp"), strict).media[0].port == 40000


def test_srtp_off_refuses_savp(local: LocalCapabilities) -> None:
    off = dataclasses.replace(local, srtp=SrtpPolicy.OFF)
    with pytest.raises(NotAcceptable, match="SRTP is disabled"):
        answer(golden("freeswitch_savp_offer.sdp"), off)
    plain = answer(golden("asterisk_chan_sip_offer.sdp"), off)
    assert not plain.media[0].crypto


def test_no_common_suite_names_the_suites(local: LocalCapabilities) -> None:
    offer = offer_of(
        "m=audio 5004 RTP/SAVP 0\n"
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:"
        "yu3NK1FXQQ5N7krys09DCgc0R95jbA6AbJV7poTWQx+16tdCTQnhXQJMWEjyPQ==\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        " UNENCRYPTED_SRTP\n"
    )
    with pytest.raises(NotAcceptable) as caught:
        answer(offer, local)
    assert caught.value.message == (
        "no common audio SRTP suite: offered AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80,"
        " we support AES_CM_128_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_32"
        " (keys with MKI or session parameters are not supported)"
    )


def test_best_effort_srtp_in_rtp_avp_is_answered_with_keys(local: LocalCapabilities) -> None:
    offer = offer_of(
        "m=audio 5004 RTP/AVP 0\n"
        "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
    )
    ours = answer(offer, local)
    assert ours.media[0].proto == "RTP/AVP"
    assert [c.tag for c in ours.media[0].crypto] == [7]
    garbled = offer_of("m=audio 5004 RTP/AVP 0\na=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:short\n")
    assert not answer(garbled, local).media[0].crypto  # plain RTP is fine here


# --- our offers, late offer, re-offers ------------------------------------


def peer(**changes: object) -> LocalCapabilities:
    """The other side, for offers we make."""
    fields: dict[str, object] = {
        "address": "198.51.100.99",
        "random_bytes": seeded_random(99),
        "audio_port": 30000,
        "video_port": 30002,
        "webrtc": None,
        "bundle": False,
    }
    fields.update(changes)
    return make_local(**fields)


def test_our_offer_lists_our_codecs_and_srtp_policy(local: LocalCapabilities) -> None:
    sip = dataclasses.replace(local, webrtc=None, bundle=False)
    offer = create_offer(sip)
    assert parse(str(offer)) == offer
    audio, video = offer.media
    assert (audio.proto, audio.port, audio.fmt) == (
        "RTP/AVP",
        40000,
        ("111", "9", "0", "8", "110", "101"),
    )
    assert [c.suite for c in audio.crypto] == ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
    assert audio.ptime == 20 and audio.rtcp_mux and audio.direction is Direction.SENDRECV
    assert video.fmt == ("96", "97", "98", "99", "100")
    assert audio.mid is None and not offer.groups
    required = create_offer(dataclasses.replace(sip, srtp=SrtpPolicy.REQUIRE, avpf=True))
    assert [m.proto for m in required.media] == ["RTP/SAVPF", "RTP/SAVPF"]
    off = create_offer(dataclasses.replace(sip, srtp=SrtpPolicy.OFF))
    assert not any(m.crypto for m in off.media)


def test_bundled_offer_has_mids_and_a_group(local: LocalCapabilities) -> None:
    offer = create_offer(dataclasses.replace(local, webrtc=None))
    assert [m.mid for m in offer.media] == ["0", "1"]
    assert offer.bundle_mids == ("0", "1")


def test_late_offer_round_trip() -> None:
    """INVITE without SDP: we offer in the 200 OK, the peer answers in the ACK."""
    ours = make_local(webrtc=None, bundle=False)
    offer = create_offer(ours)
    theirs = peer(
        audio_codecs=(
            CodecCapability("PCMA", 8000, 8),
            CodecCapability("telephone-event", 8000, 101, fmtp="0-15"),
        )
    )
    peer_answer = answer(offer, theirs)
    ours_view = process_answer(offer, peer_answer)
    their_view = answer_result(offer, peer_answer)
    audio = ours_view[0]
    assert audio.accepted
    assert [(c.name, c.payload_type) for c in audio.codecs] == [("PCMA", 8)]
    assert audio.telephone_event is not None and audio.telephone_event.payload_type == 101
    assert (audio.remote_address, audio.remote_port, audio.local_port) == (
        "198.51.100.99",
        30000,
        40000,
    )
    assert audio.rtcp_mux and audio.direction is Direction.SENDRECV
    assert audio.srtp is not None and their_view[0].srtp is not None
    assert audio.srtp.local_key == their_view[0].srtp.remote_key
    assert audio.srtp.remote_key == their_view[0].srtp.local_key
    assert audio.ptime == 20
    video = ours_view[1]
    assert video.accepted and video.codecs[0].name == "VP8"


def test_answer_that_renumbers_payload_types_is_followed_when_sending() -> None:
    offer = create_offer(make_local(webrtc=None, bundle=False, video_port=None))
    renumbered = parse(
        "v=0\no=peer 1 1 IN IP4 198.51.100.9\ns=-\nc=IN IP4 198.51.100.9\nt=0 0\n"
        "m=audio 6000 RTP/AVP 0 96\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15\n"
    )
    audio = process_answer(offer, renumbered)[0]
    assert audio.telephone_event is not None
    assert audio.telephone_event.payload_type == 101  # what we receive
    assert audio.telephone_event.sending_payload_type == 96  # what we send
    assert not audio.rtcp_mux and audio.srtp is None
    assert audio.remote_rtcp_port == 6001


def test_answer_must_line_up_with_the_offer() -> None:
    offer = create_offer(make_local(webrtc=None, bundle=False))
    one_line = parse("v=0\no=p 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\nm=audio 6000 RTP/AVP 0\n")
    with pytest.raises(SdpError, match="answer has 1 m-lines, the offer had 2"):
        process_answer(offer, one_line)
    swapped = parse(
        "v=0\no=p 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\n"
        "m=video 6000 RTP/AVP 96\nm=audio 6002 RTP/AVP 0\n"
    )
    with pytest.raises(SdpError, match="m-line 0 is video"):
        process_answer(offer, swapped)


def test_answer_refusing_everything_is_not_acceptable() -> None:
    offer = create_offer(make_local(webrtc=None, bundle=False, video_port=None))
    refused = parse("v=0\no=p 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\nm=audio 0 RTP/AVP 0\n")
    with pytest.raises(NotAcceptable, match="audio stream refused by the peer"):
        process_answer(offer, refused)
    unknown_codec = parse("v=0\no=p 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\nm=audio 6000 RTP/AVP 18\n")
    with pytest.raises(NotAcceptable, match="no codec the offer listed"):
        process_answer(offer, unknown_codec)


def test_answer_with_a_crypto_tag_we_did_not_offer_fails_the_stream() -> None:
    offer = create_offer(make_local(webrtc=None, bundle=False, video_port=None))
    bad = parse(
        "v=0\no=p 1 1 IN IP4 198.51.100.9\ns=-\nt=0 0\nm=audio 6000 RTP/AVP 0\n"
        "a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
    )
    with pytest.raises(NotAcceptable, match="tag 9"):
        process_answer(offer, bad)


def test_re_offer_keeps_session_id_and_bumps_the_version_only_on_change() -> None:
    local = make_local(webrtc=None, bundle=False)
    first = create_offer(local)
    same = create_offer(local, previous=first)
    assert same == first  # unchanged body, unchanged version (RFC 3264 section 8)
    held = create_offer(dataclasses.replace(local, direction=Direction.SENDONLY), previous=first)
    assert held.origin.session_id == first.origin.session_id
    assert held.origin.session_version == first.origin.session_version + 1
    assert [m.direction for m in held.media] == [Direction.SENDONLY, Direction.SENDONLY]
    assert [m.crypto for m in held.media] == [m.crypto for m in first.media]  # no re-keying


def test_re_offer_after_answering_keeps_m_lines_and_payload_types(local: LocalCapabilities) -> None:
    polycom = golden("polycom_group_offer.sdp")
    sip = dataclasses.replace(local, webrtc=None, bundle=False)
    our_answer = answer(polycom, sip)
    re_offer = create_offer(sip, previous=our_answer, remote=polycom)
    assert [(m.kind, m.port != 0) for m in re_offer.media] == [
        ("audio", True),
        ("video", True),
        ("video", False),
        ("application", False),
        ("application", False),
    ]
    assert re_offer.media[3].lines()[0] == "m=application 0 UDP/BFCP *"
    assert re_offer.origin.session_id == our_answer.origin.session_id
    assert re_offer.origin.session_version == our_answer.origin.session_version + 1
    video_pts = {f.payload_type: f for f in re_offer.media[1].payload_formats}
    # the H.264 the call uses keeps its numbers, and VP8 takes no number
    # that either side already gave another codec (Polycom's 96 is H.263)
    assert video_pts[110].encoding == "H264" and video_pts[111].encoding == "H264"
    assert video_pts[110].parameters["packetization-mode"] == "1"
    (vp8,) = [pt for pt, f in video_pts.items() if f.encoding == "VP8"]
    assert vp8 not in (109, 110, 111, 96, 34, 31)
    assert len(video_pts) == len(sip.video_codecs)


def test_re_offer_revives_a_refused_slot_of_a_missing_kind() -> None:
    local = make_local(webrtc=None, bundle=False, video_port=None)
    first = create_offer(local)
    with_slot = dataclasses.replace(
        first, media=(*first.media, dataclasses.replace(first.media[0], kind="video", port=0))
    )
    revived = create_offer(make_local(webrtc=None, bundle=False), previous=with_slot)
    assert [(m.kind, m.port) for m in revived.media] == [("audio", 40000), ("video", 40002)]


def test_re_answer_keeps_keys_and_version_when_nothing_changed(local: LocalCapabilities) -> None:
    offer = golden("freeswitch_savp_offer.sdp")
    first = answer(offer, local)
    again = answer(
        offer, dataclasses.replace(local, random_bytes=seeded_random(42)), previous=first
    )
    assert again == first
    held = answer(golden("hold_sendonly_yealink.sdp"), local, previous=first)
    assert held.origin.session_id == first.origin.session_id
    assert held.origin.session_version == first.origin.session_version + 1


def test_imageattr_and_bandwidth_reach_the_result(local: LocalCapabilities) -> None:
    offer = offer_of(
        "m=video 5006 RTP/AVPF 96\nb=AS:512\na=rtpmap:96 VP8/90000\n"
        "a=imageattr:96 send [x=1280,y=720] recv [x=[320:16:640],y=[240:16:480]]\n"
    )
    video = stream(offer, local)
    assert video.remote_max_resolution == (640, 480)
    assert video.remote_bandwidth == 512_000


def test_local_capabilities_are_validated() -> None:
    with pytest.raises(ValueError, match=r"not a valid IP address|does not appear"):
        make_local(address="gateway.example")
    with pytest.raises(ValueError, match="reuse a payload type"):
        make_local(
            audio_codecs=(CodecCapability("PCMU", 8000, 0), CodecCapability("PCMA", 8000, 0))
        )
    with pytest.raises(ValueError, match="unsupported SRTP suites"):
        make_local(crypto_suites=("NULL",))
