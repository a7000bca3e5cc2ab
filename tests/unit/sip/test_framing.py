"""Stream framing: Content-Length, caps, keep-alive pings, byte-at-a-time input."""

from __future__ import annotations

import pytest

from bridges.sip.framing import PONG, SipStreamFramer, is_keepalive
from bridges.sip.message import SipParseError, build_error_response, parse_message


def message(body: bytes = b"", *, cseq: int = 1, length: str | None = "auto") -> bytes:
    lines = [
        "MESSAGE sip:desk@gw.example.net SIP/2.0",
        "Via: SIP/2.0/TCP ua.example.org;branch=z9hG4bKstream" + str(cseq),
        "Max-Forwards: 70",
        "From: <sip:ana@example.org>;tag=s1",
        "To: <sip:desk@gw.example.net>",
        "Call-ID: stream-1@ua.example.org",
        f"CSeq: {cseq} MESSAGE",
        "Content-Type: text/plain",
    ]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == 'auto' else length}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def feed_bytewise(framer: SipStreamFramer, data: bytes) -> list[bytes | None]:
    out: list[bytes | None] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    return out


def test_one_message_in_one_chunk() -> None:
    data = message(b"hello")
    framer = SipStreamFramer()
    assert framer.feed(data) == [data]
    assert framer.buffered == 0
    assert parse_message(data).body == b"hello"


def test_byte_at_a_time_gives_the_same_messages() -> None:
    # A body containing CRLFCRLF must not end the frame early.
    stream = message(b"a\r\n\r\nb", cseq=1) + message(b"", cseq=2) + message(b"x" * 300, cseq=3)
    framer = SipStreamFramer()
    frames = feed_bytewise(framer, stream)
    assert frames == [
        message(b"a\r\n\r\nb", cseq=1),
        message(b"", cseq=2),
        message(b"x" * 300, cseq=3),
    ]
    assert framer.buffered == 0


def test_a_message_is_not_returned_before_its_last_byte() -> None:
    data = message(b"0123456789")
    framer = SipStreamFramer()
    assert framer.feed(data[:-1]) == []
    assert framer.buffered == len(data) - 1
    assert framer.feed(data[-1:]) == [data]


def test_double_crlf_is_a_ping_and_single_crlfs_are_skipped() -> None:
    stream = b"\r\n\r\n" + message(cseq=1) + b"\r\n" + message(cseq=2) + b"\r\n\r\n\r\n\r\n"
    framer = SipStreamFramer()
    assert framer.feed(stream) == [None, message(cseq=1), message(cseq=2), None, None]
    assert PONG == b"\r\n"


def test_ping_is_reported_only_when_complete_and_bytewise() -> None:
    framer = SipStreamFramer()
    assert framer.feed(b"\r\n") == []  # may be a lone CRLF or half a ping
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == [None]
    assert feed_bytewise(framer, b"\r\n" + message()) == [message()]
    assert feed_bytewise(framer, b"\r\n\r\n\r\n" + message()) == [None, message()]


def test_compact_and_folded_content_length() -> None:
    data = message(b"abc", length=None) + b""
    compact = data.replace(b"\r\n\r\nabc", b"\r\nl:\r\n  3\r\n\r\nabc")
    assert SipStreamFramer().feed(compact) == [compact]


@pytest.mark.parametrize(
    ("length", "status", "reason"),
    [(None, 400, "content_length"), ("-1", 400, "content_length"),
     ("ten", 400, "content_length"), ("70000", 413, "too_large")],
)  # fmt: skip
def test_content_length_is_mandatory_and_sane(length: str | None, status: int, reason: str) -> None:
    framer = SipStreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(message(b"", length=length))
    err = info.value
    assert (err.sip_status, err.reason, err.can_answer) == (status, reason, True)
    answer = build_error_response(err.raw, err)
    assert answer is not None and answer.status == status


def test_conflicting_content_lengths() -> None:
    data = message(b"ab").replace(b"Content-Length: 2", b"Content-Length: 2\r\nl: 3")
    with pytest.raises(SipParseError, match="conflicting"):
        SipStreamFramer().feed(data)


def test_header_cap_with_and_without_a_complete_header_block() -> None:
    framer = SipStreamFramer(max_header_bytes=1024)
    with pytest.raises(SipParseError) as info:
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"x" * 1100)
    assert (info.value.sip_status, info.value.reason) == (413, "headers_too_large")
    big = message(b"").replace(b"Max-Forwards", b"X-Pad: " + b"p" * 1100 + b"\r\nMax-Forwards")
    with pytest.raises(SipParseError) as info:
        SipStreamFramer(max_header_bytes=1024).feed(big)
    assert info.value.reason == "headers_too_large"
    assert SipStreamFramer(max_header_bytes=2048).feed(big) == [big]


def test_header_cap_holds_when_fed_bytewise() -> None:
    framer = SipStreamFramer(max_header_bytes=1024)
    with pytest.raises(SipParseError):
        feed_bytewise(framer, b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"x" * 2000)
    assert framer.buffered == 0


def test_body_cap_is_configurable() -> None:
    data = message(b"b" * 2000)
    with pytest.raises(SipParseError) as info:
        SipStreamFramer(max_body_bytes=1999).feed(data)
    assert (info.value.sip_status, info.value.reason) == (413, "too_large")
    assert SipStreamFramer(max_body_bytes=2000).feed(data) == [data]


def test_after_an_error_the_stream_stays_failed() -> None:
    framer = SipStreamFramer()
    with pytest.raises(SipParseError) as first:
        framer.feed(message(length=None))
    assert framer.failed
    with pytest.raises(SipParseError) as again:
        framer.feed(message())
    assert again.value is first.value


def test_bare_cr_between_messages_breaks_the_stream() -> None:
    framer = SipStreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(b"\rINVITE")
    assert (info.value.reason, info.value.can_answer) == ("bad_start_line", False)


def test_unparseable_frame_is_still_framed() -> None:
    # Framing only needs Content-Length; parse errors come later, per message.
    bad = message(b"x").replace(b"SIP/2.0\r\n", b"SIP/9.0\r\n", 1)
    framer = SipStreamFramer()
    assert framer.feed(bad + message(b"y", cseq=2)) == [bad, message(b"y", cseq=2)]
    with pytest.raises(SipParseError) as info:
        parse_message(bad)
    assert info.value.sip_status == 505


def test_is_keepalive() -> None:
    assert is_keepalive(b"\r\n\r\n")
    assert is_keepalive(b"\r\n")
    assert not is_keepalive(b"")
    assert not is_keepalive(message())
