"""SIP message parsing, accessors, serialization, responses and request validation."""

from __future__ import annotations

import pytest

from bridges.sip.addressing import SipVia
from bridges.sip.message import (
    PARSE_REASONS,
    RequestRejection,
    SipParseError,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    validate_request,
)
from bridges.sip.status import REASON_PHRASES
from gateway.errors import GatewayError

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(
    *extra: str,
    body: bytes = SDP,
    first: str = "INVITE sip:bob@example.com SIP/2.0",
    ctype: str = "application/sdp",
) -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP pc33.example.org:5062;branch=z9hG4bK776asdhds;rport",
        "Via: SIP/2.0/TCP proxy.example.net;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@example.com>",
        'From: "Alice" <sip:alice@example.org>;tag=1928301774',
        "Call-ID: a84b4c76e66710@pc33.example.org",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@pc33.example.org>",
        f"Content-Type: {ctype}",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def parsed_request(data: bytes) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def parse_error(data: bytes, **kwargs: int) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    return info.value


# --- parsing and accessors -----------------------------------------------------------


def test_a_typical_invite_exposes_what_transactions_need() -> None:
    req = parsed_request(invite())
    assert (req.method, req.uri) == ("INVITE", "sip:bob@example.com")
    assert req.parsed_uri.user == "bob"
    assert req.branch == "z9hG4bK776asdhds"
    assert req.sent_by == ("pc33.example.org", 5062)
    assert req.top_via.has_param("rport") and req.top_via.rport is None
    assert req.vias[1].received == "192.0.2.3"
    assert req.vias[1].transport == "TCP"
    assert req.call_id == "a84b4c76e66710@pc33.example.org"
    assert (req.cseq_number, req.cseq_method) == (314159, "INVITE")
    assert (req.from_tag, req.to_tag) == ("1928301774", None)
    assert req.from_address.name == "Alice"
    assert req.to_address.uri.host == "example.com"
    assert req.max_forwards == 70
    assert req.content_type == "application/sdp"
    assert req.body == SDP
    assert req.sdp() == SDP
    assert req.contacts[0].uri.user == "alice"


def test_compact_forms_are_expanded_and_names_canonical() -> None:
    data = (
        b"OPTIONS sip:a@b.example SIP/2.0\r\nv: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n"
        b"f: <sip:x@y.example>;tag=1\r\nt: <sip:a@b.example>\r\ni: cid\r\ncseq: 1 OPTIONS\r\n"
        b"k: timer\r\nMAX-FORWARDS: 70\r\nl: 0\r\n\r\n"
    )
    req = parsed_request(data)
    assert req.call_id == "cid"
    assert req.supported == ["timer"]
    names = [name for name, _ in req.headers]
    assert names[:6] == ["Via", "From", "To", "Call-ID", "CSeq", "Supported"]
    assert b"\r\nCall-ID: cid\r\n" in bytes(req)
    assert b"Max-Forwards: 70" in bytes(req)


def test_folded_header_lines_are_unfolded_to_one_space() -> None:
    req = parsed_request(invite("Subject: I know you're there,\r\n  pick up\r\n\tthe phone"))
    assert req.headers.get("Subject") == "I know you're there, pick up the phone"


def test_comma_lists_split_outside_quotes_and_angle_brackets() -> None:
    req = parsed_request(
        invite(
            'Route: <sip:p1.example;lr>, "Doe, J" <sip:j,d@p2.example;lr>',
            "Route: <sip:p3.example;lr>",
        )
    )
    assert req.headers.getlist("Route") == [
        "<sip:p1.example;lr>",
        '"Doe, J" <sip:j,d@p2.example;lr>',
        "<sip:p3.example;lr>",
    ]
    assert req.headers.get("Route") == "<sip:p1.example;lr>"
    # Date is not a list header: its comma stays.
    req.headers.set("Date", "Sat, 13 Nov 2010 23:29:00 GMT")
    assert req.headers.getlist("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_comma_folded_via_gives_the_top_via() -> None:
    data = invite().replace(
        b"Via: SIP/2.0/UDP pc33",
        b"Via: SIP/2.0/UDP first.example;branch=z9hG4bKtop, SIP/2.0/UDP pc33",
    )
    req = parsed_request(data)
    assert req.branch == "z9hG4bKtop"
    assert [v.host for v in req.vias] == ["first.example", "pc33.example.org", "proxy.example.net"]


def test_ipv6_in_request_uri_and_via() -> None:
    data = invite(first="INVITE sip:bob@[2001:db8::1]:5070 SIP/2.0").replace(
        b"pc33.example.org:5062;branch=z9hG4bK776asdhds;rport",
        b"[2001:db8::9]:5060;branch=z9hG4bKv6;received=2001:db8::99;rport=5999",
    )
    req = parsed_request(data)
    assert (req.parsed_uri.host, req.parsed_uri.port) == ("[2001:db8::1]", 5070)
    assert req.sent_by == ("[2001:db8::9]", 5060)
    assert (req.top_via.received, req.top_via.rport) == ("2001:db8::99", 5999)


def test_escaped_uri_and_escaped_nul_are_legal() -> None:
    req = parsed_request(invite(first="INVITE sip:null-%00-%61@example.com SIP/2.0"))
    assert req.parsed_uri.user == "null-\x00-a"
    assert req.uri == "sip:null-%00-%61@example.com"  # printed back as received
    assert parse_message(bytes(req)) == req


def test_name_addr_and_addr_spec_forms() -> None:
    req = parsed_request(
        invite().replace(b"To: Bob <sip:bob@example.com>", b"To: sip:bob@example.com;tag=xy")
    )
    assert req.to_tag == "xy"
    assert req.to_address.uri.user == "bob"
    assert req.to_address.name == ""


def test_quoted_display_name_with_escapes() -> None:
    req = parsed_request(invite().replace(b'"Alice"', b'"A \\"quoted\\" name, with <odd> chars;x"'))
    assert req.from_address.name == 'A "quoted" name, with <odd> chars;x'
    assert req.from_tag == "1928301774"


def test_round_trip_is_semantic_equality() -> None:
    req = parsed_request(invite())
    again = parse_message(bytes(req))
    assert again == req
    again.headers.set("Subject", "changed")
    assert again != req
    other = parsed_request(invite(body=b"v=0\r\n"))
    assert other != req


def test_content_length_is_recomputed_on_serialization() -> None:
    req = parsed_request(invite())
    req.body = b"hello"
    data = bytes(req)
    assert b"Content-Length: 5\r\n\r\nhello" in data
    assert data.count(b"Content-Length") == 1
    assert parse_message(data).body == b"hello"


def test_extra_bytes_after_content_length_are_discarded() -> None:
    req = parsed_request(invite(body=b"") + b"garbage after the message")
    assert req.body == b""


def test_missing_content_length_on_a_datagram_takes_the_rest() -> None:
    data = invite(body=b"").replace(b"Content-Length: 0\r\n", b"") + SDP
    assert parsed_request(data).body == SDP


@pytest.mark.parametrize(
    ("length", "reason"),
    [("-1", "content_length"), ("abc", "content_length"), ("1e3", "content_length"),
     ("9999", "content_length"), ("99999999999999999999", "too_large")],
)  # fmt: skip
def test_bad_content_length(length: str, reason: str) -> None:
    data = invite(body=b"").replace(b"Content-Length: 0", f"Content-Length: {length}".encode())
    err = parse_error(data)
    assert err.reason == reason
    assert err.sip_status == (413 if reason == "too_large" else 400)


def test_caps_on_header_block_and_body_are_configurable() -> None:
    assert parse_error(invite(), max_body_bytes=100).sip_status == 413
    assert parse_error(invite(), max_body_bytes=100).reason == "too_large"
    err = parse_error(invite("X-Pad: " + "p" * 3000), max_header_bytes=2048)
    assert (err.sip_status, err.reason) == (413, "headers_too_large")
    assert parse_message(invite(), max_body_bytes=len(SDP)).body == SDP


@pytest.mark.parametrize(
    ("first_line", "status", "reason"),
    [
        ("INVITE sip:bob@example.com SIP/3.0", 505, "bad_version"),
        ("INVITE mailto:bob@example.com SIP/2.0", 416, "bad_uri_scheme"),
        ("INVITE urn:service:sos SIP/2.0", 416, "bad_uri_scheme"),
        ("INVITE <sip:bob@example.com> SIP/2.0", 400, "bad_uri"),
        ("INVITE sip:bob@exa mple.com SIP/2.0", 400, "bad_start_line"),
        ("INVITE  sip:bob@example.com SIP/2.0", 400, "bad_start_line"),
        ("INVITE sip:bob@example.com HTTP/1.1", 400, "bad_start_line"),
        ("INVITE sip:bob@-bad-.example SIP/2.0", 400, "bad_uri"),
    ],
)
def test_request_line_errors_map_to_statuses(first_line: str, status: int, reason: str) -> None:
    err = parse_error(invite(first=first_line))
    assert (err.sip_status, err.reason, err.can_answer) == (status, reason, True)


def test_parse_errors_are_gateway_errors_with_low_cardinality_reasons() -> None:
    err = parse_error(invite(first="INVITE sip:bob@example.com SIP/3.0"))
    assert isinstance(err, GatewayError)
    assert err.reason in PARSE_REASONS
    assert err.http_status == 400
    assert len(PARSE_REASONS) < 30


def test_unknown_method_parses() -> None:
    data = invite(first="FROBNICATE sip:bob@example.com SIP/2.0").replace(
        b"314159 INVITE", b"314159 FROBNICATE"
    )
    assert parsed_request(data).method == "FROBNICATE"


@pytest.mark.parametrize(
    ("data", "can_answer"),
    [
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", False),
        (invite(first="ACK sip:bob@example.com SIP/7.0"), False),
        (invite().replace(b"Call-ID", b"X-Call-ID"), False),
        (invite().replace(b"CSeq: 314159", b"CSeq: x314159"), False),
        (invite().replace(b"SIP/2.0/UDP pc33", b"SIP/2.0/UDP pc 33"), False),
        (invite().replace(b"To: Bob", b"X-To: Bob"), True),
        (invite().replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), True),
    ],
)
def test_can_answer_says_whether_an_answer_can_be_addressed(data: bytes, can_answer: bool) -> None:
    assert parse_error(data).can_answer is can_answer


def test_lazy_accessors_raise_parse_errors_for_bad_headers() -> None:
    req = parsed_request(invite("Contact: <sip:bad@>", "Via: garbage"))
    with pytest.raises(SipParseError) as info:
        _ = req.contacts
    assert info.value.reason == "bad_address"
    with pytest.raises(SipParseError) as info:
        _ = req.vias
    assert info.value.reason == "bad_via"
    assert req.branch == "z9hG4bK776asdhds"  # only the top Via matters to transactions


def test_accessors_follow_header_changes() -> None:
    req = parsed_request(invite())
    assert req.cseq_number == 314159
    req.headers.set("CSeq", "2 INVITE")
    assert req.cseq_number == 2
    req.headers.remove("Max-Forwards")
    assert req.max_forwards is None


def test_replace_top_via_stamps_received_and_rport() -> None:
    req = parsed_request(invite())
    req.replace_top_via(
        req.top_via.with_param("received", "2001:db8::7").with_param("rport", "5070")
    )
    assert req.top_via.received == "2001:db8::7"
    assert req.top_via.rport == 5070
    assert b";rport=5070;received=2001:db8::7\r\n" in bytes(req)
    assert len(req.vias) == 2


def test_sip_via_prints_what_it_parsed() -> None:
    via = SipVia("UDP", "[2001:db8::1]", 5060, (("branch", "z9hG4bKx"), ("rport", None)))
    assert str(via) == "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx;rport"
    with pytest.raises(ValueError, match="invalid Via parameter"):
        via.with_param("received", "a;b")


def test_constructed_messages_validate_their_start_line() -> None:
    with pytest.raises(ValueError, match="invalid request line"):
        SipRequest("INVITE", "sip:a@b c")
    with pytest.raises(ValueError, match="invalid request line"):
        SipRequest("IN VITE", "sip:a@b")
    with pytest.raises(ValueError, match="invalid status line"):
        SipResponse(99)
    with pytest.raises(ValueError, match="invalid status line"):
        SipResponse(200, "OK\r\nX: injected")
    with pytest.raises(ValueError, match="CR, LF, NUL"):
        SipRequest("OPTIONS", "sip:a@b", [("Subject", "x\r\nVia: evil")])


def test_multipart_body_yields_the_sdp_part() -> None:
    body = (
        b"--b1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\n\x01\x02\r\n"
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n--b1--\r\n"
    )
    data = invite(body=body, ctype='multipart/mixed;boundary="b1"')
    assert parsed_request(data).sdp() == SDP


def test_multipart_without_sdp_or_with_bad_structure() -> None:
    body = b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n"
    base = invite(body=body, ctype="multipart/mixed;boundary=b1")
    assert parsed_request(base).sdp() is None
    broken = parsed_request(base.replace(b"boundary=b1", b"boundary=zz"))
    with pytest.raises(SipParseError) as info:
        broken.sdp()
    assert info.value.reason == "bad_body"
    assert parsed_request(invite(ctype="text/plain")).sdp() is None


# --- responses -----------------------------------------------------------------------


def test_build_response_copies_the_rfc3261_headers() -> None:
    req = parsed_request(invite("Timestamp: 54"))
    resp = build_response(req, 486, to_tag="gw1", headers=[("Retry-After", "30")])
    data = bytes(resp)
    assert data.startswith(b"SIP/2.0 486 Busy Here\r\n")
    assert resp.headers.getlines("Via") == req.headers.getlines("Via")
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("To") == "Bob <sip:bob@example.com>;tag=gw1"
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    assert resp.headers.get("Retry-After") == "30"
    for absent in ("Contact", "Content-Type", "Max-Forwards", "Timestamp"):
        assert absent not in resp.headers
    assert data.endswith(b"Content-Length: 0\r\n\r\n")
    assert parse_message(data) == resp


def test_100_trying_has_no_to_tag_but_copies_timestamp() -> None:
    resp = build_response(parsed_request(invite("Timestamp: 54")), 100, to_tag="gw1")
    assert resp.to_tag is None
    assert resp.headers.get("Timestamp") == "54"


def test_an_existing_to_tag_is_kept() -> None:
    req = parsed_request(
        invite().replace(b"<sip:bob@example.com>", b"<sip:bob@example.com>;tag=a1")
    )
    assert build_response(req, 200, to_tag="other").to_tag == "a1"


def test_response_with_body_and_custom_reason() -> None:
    req = parsed_request(invite())
    resp = build_response(
        req, 200, "Fine", to_tag="t", headers=[("Content-Type", "application/sdp")], body=SDP
    )
    again = parse_message(bytes(resp))
    assert isinstance(again, SipResponse)
    assert (again.reason_phrase, again.body, again.sdp()) == ("Fine", SDP, SDP)


@pytest.mark.parametrize("status", sorted(REASON_PHRASES))
def test_every_standard_code_has_a_default_reason(status: int) -> None:
    resp = build_response(parsed_request(invite()), status, to_tag="t")
    assert resp.reason_phrase == REASON_PHRASES[status]
    assert resp.reason_phrase


def test_reason_phrases_of_note() -> None:
    req = parsed_request(invite())
    assert build_response(req, 483).reason_phrase == "Too Many Hops"
    assert build_response(req, 420).reason_phrase == "Bad Extension"
    assert build_response(req, 416).reason_phrase == "Unsupported URI Scheme"
    assert build_response(req, 499).reason_phrase == "Client Error"  # unknown -> its class
    with pytest.raises(ValueError, match="outside 100-699"):
        build_response(req, 700, "Nope")
    with pytest.raises(ValueError, match="invalid To tag"):
        build_response(req, 200, to_tag="a b")


def test_build_error_response_answers_a_bad_version() -> None:
    data = invite(first="INVITE sip:bob@example.com SIP/3.0")
    err = parse_error(data)
    resp = build_error_response(data, err)
    assert resp is not None
    assert resp.status == 505
    assert resp.reason_phrase == "Version Not Supported"
    assert resp.headers.getlist("Via") == parsed_request(invite()).headers.getlist("Via")
    assert resp.call_id == "a84b4c76e66710@pc33.example.org"
    assert resp.cseq_number == 314159
    # Stateless: the same request always gets the same tag (§8.2.7).
    again = build_error_response(data, err)
    assert again is not None
    assert again.to_tag == resp.to_tag is not None
    explicit = build_error_response(data, err, to_tag="mine")
    assert explicit is not None and explicit.to_tag == "mine"


def test_build_error_response_refuses_what_cannot_be_answered() -> None:
    data = b"SIP/3.0 200 OK\r\n\r\n"
    assert build_error_response(data, parse_error(data)) is None


def test_build_error_response_for_an_unsupported_scheme() -> None:
    data = invite(first="INVITE tel-ish:123 SIP/2.0")
    resp = build_error_response(data, parse_error(data))
    assert resp is not None and resp.status == 416


# --- validation ----------------------------------------------------------------------


def validate(data: bytes, *extensions: str) -> RequestRejection | None:
    return validate_request(parsed_request(data), supported_extensions=extensions)


def test_a_good_request_passes_validation() -> None:
    assert validate(invite("Require: timer"), "timer") is None


def test_max_forwards_zero_is_too_many_hops_except_for_options() -> None:
    rejection = validate(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert rejection == RequestRejection(483, "too_many_hops")
    options = invite(first="OPTIONS sip:bob@example.com SIP/2.0").replace(b"INVITE", b"OPTIONS")
    assert validate(options.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")) is None


def test_unknown_require_tags_get_420_with_unsupported() -> None:
    rejection = validate(invite("Require: Timer, foo", "Require: bar"), "timer", "100rel")
    assert rejection == RequestRejection(420, "bad_extension", (("Unsupported", "foo, bar"),))
    req = parsed_request(invite("Require: foo"))
    resp = build_response(req, rejection.status, headers=rejection.headers, to_tag="t")
    assert resp.headers.getlist("Unsupported") == ["foo", "bar"]
    assert resp.reason_phrase == "Bad Extension"


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_require_is_not_checked_on_ack_and_cancel(method: str) -> None:
    data = invite("Require: foo", first=f"{method} sip:bob@example.com SIP/2.0")
    assert validate(data.replace(b"314159 INVITE", f"314159 {method}".encode())) is None


@pytest.mark.parametrize("header", ["To", "From", "CSeq", "Call-ID", "Via", "Max-Forwards"])
def test_missing_mandatory_headers_are_400(header: str) -> None:
    req = parsed_request(invite())
    req.headers.remove(header)
    rejection = validate_request(req, supported_extensions=())
    assert rejection == RequestRejection(400, "missing_header")


def test_cseq_method_must_match_the_request_method() -> None:
    rejection = validate(invite().replace(b"314159 INVITE", b"314159 BYE"))
    assert rejection == RequestRejection(400, "cseq_mismatch")
