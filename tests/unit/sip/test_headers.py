"""Header storage, value lexing, URIs/addresses/Via/CSeq and bodies."""

from __future__ import annotations

import pytest

from bridges.sip.addressing import (
    is_valid_host,
    parse_address,
    parse_cseq,
    parse_uri,
    parse_via,
    split_address,
)
from bridges.sip.body import extract_sdp, parse_content_type, split_multipart
from bridges.sip.headers import SipHeaders, parse_params, split_header_list, unquote
from bridges.sip.status import reason_phrase

# --- SipHeaders ------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_expand_compact_forms() -> None:
    h = SipHeaders([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Thing", "1")])
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert "Via" in h and "v" in h and "x-thing" in h
    assert list(h) == [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Thing", "1")]
    assert h.get("Missing") is None
    assert h.get("Missing", "dflt") == "dflt"


def test_set_replaces_in_place_and_add_first_prepends() -> None:
    h = SipHeaders([("Via", "v1"), ("To", "t"), ("Via", "v2"), ("From", "f")])
    h.add("Via", "v0", first=True)
    assert h.getlines("Via") == ["v0", "v1", "v2"]
    h.set("Via", "only")
    assert list(h) == [("Via", "only"), ("To", "t"), ("From", "f")]
    h.remove("via")
    assert "Via" not in h
    h.set("Via", "new")
    assert list(h)[-1] == ("Via", "new")
    assert len(h) == 3


def test_replace_first_splits_a_comma_folded_line() -> None:
    h = SipHeaders([("Via", "a, b, c"), ("Via", "d")])
    h.replace_first("Via", "A")
    assert h.getlines("Via") == ["A", "b, c", "d"]
    assert h.getlist("Via") == ["A", "b", "c", "d"]


def test_headers_refuse_injection() -> None:
    h = SipHeaders()
    with pytest.raises(ValueError, match="CR, LF, NUL"):
        h.add("Subject", "a\r\nVia: x")
    with pytest.raises(ValueError, match="invalid header name"):
        h.set("Bad Name", "x")
    with pytest.raises(ValueError, match="invalid header name"):
        h.add("X:Y", "x")


def test_copy_is_independent() -> None:
    h = SipHeaders([("To", "t")])
    c = h.copy()
    c.add("From", "f")
    assert "From" not in h


def test_unsplittable_list_value_is_returned_whole() -> None:
    h = SipHeaders([("Contact", '"unterminated <sip:a@b>, <sip:c@d>')])
    assert h.getlist("Contact") == ['"unterminated <sip:a@b>, <sip:c@d>']


# --- lexing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a, b,c", ["a", "b", "c"]),
        ("a,, ,b,", ["a", "b"]),
        ('"x, y" <sip:a@b>, <sip:c,d@e>;p="1,2"', ['"x, y" <sip:a@b>', '<sip:c,d@e>;p="1,2"']),
        ('"esc \\" , still" <sip:a@b>', ['"esc \\" , still" <sip:a@b>']),
        ("", []),
    ],
)
def test_split_header_list(value: str, items: list[str]) -> None:
    assert split_header_list(value) == items


@pytest.mark.parametrize("value", ['"open, b', "<sip:a@b, c", 'a, "b'])
def test_split_header_list_refuses_unbalanced_values(value: str) -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        split_header_list(value)


def test_parse_params_keeps_values_as_written() -> None:
    assert parse_params(' ; a = 1;B;c="x;y" ;d=2001:db8::1') == [
        ("a", "1"),
        ("B", None),
        ("c", '"x;y"'),
        ("d", "2001:db8::1"),
    ]
    with pytest.raises(ValueError, match="bad parameter"):
        parse_params(";a=1 junk")
    assert unquote('"a \\"b\\" \\\\"') == 'a "b" \\'


# --- URIs, addresses, Via, CSeq --------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "user", "host", "port"),
    [
        ("sip:alice@pbx1", "alice", "pbx1", None),
        ("SIPS:alice@Example.COM:5061", "alice", "Example.COM", 5061),
        ("sip:[2001:db8::1]:5070;transport=tcp", None, "[2001:db8::1]", 5070),
        ("sip:%61%00b@h.example", "a\x00b", "h.example", None),
        ("sip:user;par=u%40x@h.example", "user;par=u@x", "h.example", None),
        ("sip:192.0.2.1", None, "192.0.2.1", None),
        ("tel:+1-201-555-0123", "+1-201-555-0123", "", None),
    ],
)
def test_parse_uri(uri: str, user: str | None, host: str, port: int | None) -> None:
    parsed = parse_uri(uri)
    assert (parsed.user, parsed.host, parsed.port) == (user, host, port)


@pytest.mark.parametrize(
    "uri",
    ["http://x", "sip:", "sip:a@", "sip:a@h:70000", "sip:a@h?x=y", "sip:a@h;self=1",
     "sip:a b@h", "sip:a@1.2.3", "sip:a@[2001:db8::1", "sip:a@h;p=%zz"],
)  # fmt: skip
def test_parse_uri_refuses(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(uri)


def test_hosts() -> None:
    assert is_valid_host("a-1.example.com.")
    assert is_valid_host("[::ffff:192.0.2.1]")
    assert not is_valid_host("-a.example")
    assert not is_valid_host("example.123")
    assert not is_valid_host("a" * 2000 + "!")


def test_address_forms() -> None:
    assert split_address("<sip:a@b>;tag=1").param("TAG") == "1"
    assert split_address("sip:a@b;tag=2").uri == "sip:a@b"
    assert split_address('  "N" <sip:a@b>').display_name == "N"
    assert split_address("Bob  Smith <sip:a@b>").display_name == "Bob Smith"
    contact = parse_address('"A" <sip:a@b>;+sip.instance="<urn:uuid:1>";expires=60')
    assert contact.parameters["+sip.instance"] == '"<urn:uuid:1>"'
    assert contact.parameters["expires"] == "60"


@pytest.mark.parametrize(
    "value", ['"open <sip:a@b>', "<sip:a@b", "Bad@Name <sip:a@b>", '"n" sip:a@b', "<>", ""]
)
def test_address_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        split_address(value)


def test_via() -> None:
    via = parse_via("SIP / 2.0 / tcp host_1.example : 5061 ; BRANCH = z9hG4bKq ; rport=9")
    assert (via.transport, via.host, via.port) == ("TCP", "host_1.example", 5061)
    assert (via.branch, via.rport, via.received) == ("z9hG4bKq", 9, None)
    assert str(via) == "SIP/2.0/TCP host_1.example:5061;BRANCH=z9hG4bKq;rport=9"
    for bad in ("SIP/2.0/UDP", "SIP/2.0/UDP h:99999", "SIP/2.0 UDP h", "SIP/2.0/UDP h junk"):
        with pytest.raises(ValueError):
            parse_via(bad)


def test_cseq() -> None:
    assert parse_cseq(" 0042   INVITE ").sequence == 42
    assert parse_cseq("2147483647 X").sequence == 2**31 - 1
    for bad in ("2147483648 INVITE", "-1 INVITE", "1", "1 INV ITE", "1 INV@", "\u0661 INVITE"):
        with pytest.raises(ValueError):
            parse_cseq(bad)


# --- bodies and status ----------------------------------------------------------------


def test_content_type() -> None:
    assert parse_content_type('Multipart/Mixed ; Boundary="a b"') == (
        "multipart/mixed",
        {"boundary": "a b"},
    )
    with pytest.raises(ValueError, match="invalid media type"):
        parse_content_type("sdp")


def test_multipart_parts_and_defaults() -> None:
    body = (
        b"preamble\r\n--x\r\n\r\nplain\r\n--x \r\nContent-Type: a/b\r\n\r\nab\r\n--x--\r\nepilogue"
    )
    parts = split_multipart(body, "x")
    assert [(p.content_type, p.body) for p in parts] == [("text/plain", b"plain"), ("a/b", b"ab")]
    with pytest.raises(ValueError, match="without a delimiter"):
        split_multipart(b"no parts", "x")
    with pytest.raises(ValueError, match="close delimiter"):
        split_multipart(b"--x\r\n\r\nopen", "x")
    assert extract_sdp(None, b"v=0") is None
    assert extract_sdp("application/sdp", b"") is None


def test_reason_phrase_defaults() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(299) == "OK"
    assert reason_phrase(699) == "Global Failure"
    with pytest.raises(ValueError, match="outside"):
        reason_phrase(99)
