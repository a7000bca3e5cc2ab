"""Parsing SDP text into the model of ``gateway.media.sdp``.

Lenient where real peers are sloppy (CRLF or LF, trailing whitespace, blank
lines, lines of a section in any order, a missing ``s=`` or ``t=``), strict
where a guess would negotiate the wrong thing: every error is an
``SdpError`` (SIP 400) that names the line and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.media.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from gateway.media.sdp_attributes import (
    DIRECTION_NAMES,
    Crypto,
    Fmtp,
    Rtcp,
    RtcpFeedback,
    RtpMap,
    SdpError,
    parse_int,
    parse_payload_type,
    parse_ptime,
)

# Larger than any real offer (Chrome with simulcast is ~12 KiB); a hard cap
# keeps a hostile body from costing more than a bounded parse.
MAX_SDP_SIZE = 128 * 1024

_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")

# The attributes that drive negotiation are validated while parsing (see
# ``gateway.media.sdp_attributes`` for why the others are not).
_ATTRIBUTE_CHECKS: dict[str, Callable[[str], object]] = {
    "rtpmap": RtpMap.parse,
    "fmtp": Fmtp.parse,
    "rtcp-fb": RtcpFeedback.parse,
    "rtcp": Rtcp.parse,
    "crypto": Crypto.parse,
    "ptime": lambda v: parse_ptime(v, "ptime"),
    "maxptime": lambda v: parse_ptime(v, "maxptime"),
}


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raises ``SdpError`` (SIP 400) naming the bad line.

    Bytes that are not UTF-8 (Latin-1 session names exist) are kept with
    ``surrogateescape`` so that ``bytes(description)`` gives them back.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if len(text) > MAX_SDP_SIZE:
        raise SdpError(f"SDP of {len(text)} characters exceeds the limit of {MAX_SDP_SIZE}")
    parser = _Parser()
    first = True
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        if not line:
            continue
        try:
            parser.line(line, first=first)
        except SdpError as error:
            raise SdpError(f"SDP line {number} ({line[:60]!r}): {error.message}") from None
        first = False
    if first:
        raise SdpError("SDP is empty")
    return parser.result()


class _Section:
    """The fields of one section (session or media) while lines are read."""

    def __init__(self, media: MediaDescription | None = None) -> None:
        self.media = media
        self.texts: dict[str, str] = {}  # s, i, u, z, k: at most once each
        self.connections: list[Connection] = []
        self.bandwidths: list[Bandwidth] = []
        self.attributes: list[Attribute] = []

    def finish_media(self) -> MediaDescription:
        assert self.media is not None
        return MediaDescription(
            kind=self.media.kind,
            port=self.media.port,
            proto=self.media.proto,
            fmt=self.media.fmt,
            port_count=self.media.port_count,
            information=self.texts.get("i"),
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            encryption_key=self.texts.get("k"),
            attributes=tuple(self.attributes),
        )


class _Parser:
    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.session = _Section()
        self.media: list[_Section] = []
        self.timings: list[Timing] = []
        self.emails: list[str] = []
        self.phones: list[str] = []

    def result(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("SDP has no o= line")
        session = self.session
        return SessionDescription(
            origin=self.origin,
            session_name=session.texts.get("s", "-"),
            information=session.texts.get("i"),
            uri=session.texts.get("u"),
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            connection=session.connections[0] if session.connections else None,
            bandwidths=tuple(session.bandwidths),
            timings=tuple(self.timings),
            time_zones=session.texts.get("z"),
            encryption_key=session.texts.get("k"),
            attributes=tuple(session.attributes),
            media=tuple(m.finish_media() for m in self.media),
        )

    def line(self, line: str, *, first: bool) -> None:
        if "\r" in line or "\x00" in line:
            raise SdpError("contains a CR or NUL character")
        if len(line) < 2 or line[1] != "=":
            raise SdpError("is not '<type>=<value>'")
        letter, value = line[0], line[2:]
        if first != (letter == "v"):
            raise SdpError("v= must be the first line, and only that")
        if letter == "v":
            if value != "0":
                raise SdpError(f"unsupported SDP version {value!r}")
            return
        if letter == "m":
            self.media.append(_Section(_parse_media_line(value)))
            return
        section = self.media[-1] if self.media else self.session
        if letter not in (_MEDIA_TYPES if self.media else _SESSION_TYPES):
            where = "inside an m= section" if letter in _SESSION_TYPES else "in SDP"
            raise SdpError(f"'{letter}=' is not allowed {where}")
        if letter == "a":
            section.attributes.append(_parse_attribute(value))
        elif letter == "c":
            if section.connections and not self.media:
                raise SdpError("c= appears twice at session level")
            section.connections.append(_parse_connection(value))
        elif letter == "b":
            section.bandwidths.append(_parse_bandwidth(value))
        else:
            self._session_line(section, letter, value)

    def _session_line(self, section: _Section, letter: str, value: str) -> None:
        if letter == "t":
            self.timings.append(_parse_timing(value))
        elif letter == "r":
            if not self.timings:
                raise SdpError("r= before any t=")
            last = self.timings[-1]
            self.timings[-1] = Timing(last.start, last.stop, (*last.repeats, value))
        elif letter == "e":
            self.emails.append(value)
        elif letter == "p":
            self.phones.append(value)
        elif letter == "o":
            if self.origin is not None:
                raise SdpError("o= appears twice")
            self.origin = _parse_origin(value)
        else:
            if letter in section.texts:
                raise SdpError(f"{letter}= appears twice in one section")
            section.texts[letter] = value


def _parse_attribute(text: str) -> Attribute:
    name, sep, value = text.partition(":")
    if not name or name != name.strip():
        raise SdpError(f"attribute {text!r} has no name")
    check = _ATTRIBUTE_CHECKS.get(name)
    if check is not None:
        if not sep:
            raise SdpError(f"a={name} needs a value")
        check(value)
    elif name in DIRECTION_NAMES and sep:
        # "a=sendonly:x" would silently stop being a direction.
        raise SdpError(f"a={name} takes no value")
    return Attribute(name, value if sep else None)


def _parse_origin(text: str) -> Origin:
    parts = text.split(" ")
    if len(parts) != 6 or not all(parts):
        raise SdpError(
            f"o={text!r} is not"
            " '<username> <sess-id> <sess-version> <nettype> <addrtype> <address>'"
        )
    version = parse_int(parts[2], "o= session version", maximum=2**64 - 1)
    return Origin(parts[0], parts[1], version, parts[5], parts[4], parts[3])


def _parse_connection(text: str) -> Connection:
    parts = text.split()
    if len(parts) != 3:
        raise SdpError(f"c={text!r} is not '<nettype> <addrtype> <address>'")
    address, sep, multicast = parts[2].partition("/")
    if not address:
        raise SdpError(f"c={text!r} has no address")
    return Connection(address, parts[1], parts[0], multicast if sep else None)


def _parse_bandwidth(text: str) -> Bandwidth:
    bwtype, sep, value = text.partition(":")
    if not sep or not bwtype or bwtype != bwtype.strip():
        raise SdpError(f"b={text!r} is not '<bwtype>:<bandwidth>'")
    return Bandwidth(bwtype, parse_int(value, f"b={bwtype} bandwidth", maximum=2**63))


def _parse_timing(text: str) -> Timing:
    parts = text.split()
    if len(parts) != 2:
        raise SdpError(f"t={text!r} is not '<start> <stop>'")
    start = parse_int(parts[0], "t= start", maximum=2**64)
    return Timing(start, parse_int(parts[1], "t= stop", maximum=2**64))


def _parse_media_line(text: str) -> MediaDescription:
    parts = text.split()
    if len(parts) < 3:
        raise SdpError(f"m={text!r} is not '<media> <port> <proto> <fmt> ...'")
    port_text, sep, count_text = parts[1].partition("/")
    port = parse_int(port_text, "m= port", maximum=65535)
    count = parse_int(count_text, "m= port count", maximum=65535) if sep else None
    media = MediaDescription(parts[0], port, parts[2], tuple(parts[3:]), port_count=count)
    if media.is_rtp:
        for fmt in media.fmt:
            parse_payload_type(fmt)
    return media
