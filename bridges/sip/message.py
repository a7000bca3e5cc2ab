"""SIP messages: parse, typed accessors, serialize and answer (RFC 3261 §7, §8.2, §18.3).

Sans-IO: bytes in, objects out, bytes back. ``parse_message`` does the work a
transaction layer needs on every message and no more: it splits the header
lines once, checks the start line, Content-Length, and the headers that match
transactions and dialogs (top Via, CSeq, Call-ID, From/To tags, Max-Forwards);
everything else (Contact, Route, the URIs inside From/To, the body) is parsed
only when an accessor asks. A message keeps its header lines as received, so
``bytes(msg)`` is what the peer sent (unfolded, compact forms expanded,
Content-Length recomputed) and a response copies Via/From/To as strings.

Why not ``sipmessage.Message.parse``: it has no header unfolding, ignores
Content-Length (RFC 3261 §18.3), cannot tell 505 from 400 from 416, fails on
a start line without reason phrase, and costs ~13 µs before any header is
even parsed; its typed getters re-parse on every access. We keep its value
types (``URI``, ``Address``, ``CSeq``) — see ``addressing.py``.

Every problem with received bytes raises ``SipParseError``, whose
``sip_status`` is what to answer, ``reason`` a metric label and
``can_answer`` whether an answer can be addressed at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar, cast, get_args

from sipmessage import URI, Address, CSeq

from bridges.sip.addressing import (
    SUPPORTED_URI_SCHEMES,
    AddressParts,
    SipVia,
    check_uri,
    parse_address,
    parse_cseq,
    parse_max_forwards,
    parse_uri,
    parse_via,
    split_address,
    uri_scheme,
)
from bridges.sip.body import extract_sdp, parse_content_type
from bridges.sip.headers import KNOWN_HEADERS, TOKEN_RE, SipHeaders
from bridges.sip.salvage import salvage_request
from bridges.sip.status import reason_phrase as default_reason_phrase
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "PARSE_REASONS",
    "ParseReason",
    "RequestRejection",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "build_error_response",
    "build_response",
    "parse_message",
    "validate_request",
]

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024

ParseReason = Literal[
    "bad_start_line", "bad_version", "bad_status", "bad_uri", "bad_uri_scheme", "bad_header",
    "bad_encoding", "duplicate_header", "missing_header", "incomplete", "content_length",
    "too_large", "headers_too_large", "bad_cseq", "bad_via", "bad_max_forwards",
    "bad_address", "bad_call_id", "bad_body",
]  # fmt: skip
#: Every value ``SipParseError.reason`` can take (the metric label set).
PARSE_REASONS: frozenset[str] = frozenset(get_args(ParseReason))

T = TypeVar("T")


class SipParseError(GatewayError):
    """Received bytes are not a SIP message we can process.

    ``sip_status``: the answer a server owes (400, 413, 416, 505).
    ``reason``: short tag from ``PARSE_REASONS`` for the parse-error metric.
    ``can_answer``: False when the bytes were a response, an ACK, or lack a
    usable Via/Call-ID/CSeq; the transport then drops them silently.
    ``raw``: the header bytes the error was found in, when the raiser is not
    the caller's own ``parse_message`` (the stream framer sets it).
    """

    http_status = 400
    sip_status = 400

    def __init__(
        self,
        message: str,
        *,
        reason: ParseReason,
        status: int = 400,
        can_answer: bool = True,
        raw: bytes = b"",
    ) -> None:
        super().__init__(message, sip_status=status, reason=reason)
        self.can_answer = can_answer
        self.raw = raw


def _fail(
    reason: ParseReason, message: str, status: int = 400, *, can_answer: bool = True
) -> SipParseError:
    return SipParseError(message, reason=reason, status=status, can_answer=can_answer)


class SipMessage:
    """What requests and responses share: headers, body, typed header accessors.

    Accessors parse on first use and remember the result for as long as the
    header keeps the same raw value; a malformed header raises
    ``SipParseError`` (status 400). Mutate through ``headers``.
    """

    __slots__ = ("_memo", "body", "headers")

    def __init__(
        self, headers: SipHeaders | Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        self.headers = headers if isinstance(headers, SipHeaders) else SipHeaders(headers)
        self.body = body
        self._memo: dict[str, tuple[str, object]] = {}

    def _memoized(self, slot: str, raw: str, parse: Callable[[str], T], reason: ParseReason) -> T:
        hit = self._memo.get(slot)
        if hit is not None and hit[0] == raw:
            return cast(T, hit[1])
        try:
            value = parse(raw)
        except ValueError as exc:
            raise _fail(reason, f"{slot}: {exc}") from exc
        self._memo[slot] = (raw, value)
        return value

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise _fail("missing_header", f"no {name} header", can_answer=False)
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The CSeq (sequence number below 2**31 and method)."""
        return self._memoized("cseq", self._required("CSeq"), parse_cseq, "bad_cseq")

    @property
    def cseq_number(self) -> int:
        """The CSeq sequence number."""
        return self.cseq.sequence

    @property
    def cseq_method(self) -> str:
        """The CSeq method (the request method, also in responses)."""
        return self.cseq.method

    @property
    def top_via(self) -> SipVia:
        """The first Via value: where a response goes, and the transaction branch."""
        return self._memoized("via", self._required("Via"), parse_via, "bad_via")

    @property
    def vias(self) -> list[SipVia]:
        """Every Via value, top first."""
        try:
            return [parse_via(v) for v in self.headers.getlist("Via")]
        except ValueError as exc:
            raise _fail("bad_via", f"Via: {exc}") from exc

    @property
    def branch(self) -> str | None:
        """The top Via branch parameter."""
        return self.top_via.branch

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """The top Via sent-by ``(host, port)``."""
        return self.top_via.sent_by

    def replace_top_via(self, via: SipVia) -> None:
        """Put ``via`` in place of the top Via (e.g. with received/rport stamped)."""
        self.headers.replace_first("Via", str(via))

    def _address(self, name: str) -> AddressParts:
        return self._memoized(name, self._required(name), split_address, "bad_address")

    @property
    def from_tag(self) -> str | None:
        """The From tag (None if the From has none)."""
        return self._address("From").param("tag")

    @property
    def to_tag(self) -> str | None:
        """The To tag (None outside a dialog)."""
        return self._address("To").param("tag")

    @property
    def from_address(self) -> Address:
        """The From header as a ``sipmessage.Address``."""
        return self._memoized("From:a", self._required("From"), parse_address, "bad_address")

    @property
    def to_address(self) -> Address:
        """The To header as a ``sipmessage.Address``."""
        return self._memoized("To:a", self._required("To"), parse_address, "bad_address")

    @property
    def contacts(self) -> list[Address]:
        """Every Contact address (empty for none; ``Contact: *`` raises: check raw)."""
        try:
            return [parse_address(v) for v in self.headers.getlist("Contact")]
        except ValueError as exc:
            raise _fail("bad_address", f"Contact: {exc}") from exc

    @property
    def max_forwards(self) -> int | None:
        """The Max-Forwards value, None if absent."""
        raw = self.headers.get("Max-Forwards")
        if raw is None:
            return None
        return self._memoized("mf", raw, parse_max_forwards, "bad_max_forwards")

    @property
    def content_type(self) -> str | None:
        """The lower-case media type of the body (``application/sdp``), None if absent."""
        raw = self.headers.get("Content-Type")
        if raw is None:
            return None
        return self._memoized("ctype", raw, parse_content_type, "bad_header")[0]

    @property
    def require(self) -> list[str]:
        """The option tags of Require."""
        return self.headers.getlist("Require")

    @property
    def supported(self) -> list[str]:
        """The option tags of Supported."""
        return self.headers.getlist("Supported")

    def sdp(self) -> bytes | None:
        """The SDP of the body: the body itself or the SDP part of a multipart."""
        try:
            return extract_sdp(self.headers.get("Content-Type"), self.body)
        except ValueError as exc:
            raise _fail("bad_body", f"body: {exc}") from exc

    def start_line(self) -> str:
        """The first line, without CRLF."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        # Content-Length is always recomputed: the body is the truth.
        lines = [self.start_line()]
        lines.extend(f"{n}: {v}" for k, n, v in self.headers.entries if k != "content-length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def __eq__(self, other: object) -> bool:
        # Semantic equality: header order across names, compact forms, folding
        # and comma-folding do not matter; Content-Length follows the body.
        if type(other) is not type(self) or not isinstance(other, SipMessage):
            return NotImplemented
        return (self.start_line(), self.body, self._semantic_headers()) == (
            other.start_line(),
            other.body,
            other._semantic_headers(),
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _semantic_headers(self) -> dict[str, list[str]]:
        keys = {k for k, _, _ in self.headers.entries if k != "content-length"}
        return {k: self.headers.getlist(k) for k in keys}


_METHOD_OR_URI_BAD = re.compile(r"[\s\x00-\x1f\x7f]")
_PHRASE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # Reason-Phrase allows SP and HTAB


class SipRequest(SipMessage):
    """A SIP request: method, Request-URI (kept as text), headers, body."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: SipHeaders | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not TOKEN_RE.fullmatch(method) or not uri or _METHOD_OR_URI_BAD.search(uri):
            raise ValueError(f"invalid request line {method!r} {uri!r}")
        check_uri(uri)  # what we send must parse back (sip/sips/tel, no URI headers)
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    @property
    def parsed_uri(self) -> URI:
        """The Request-URI as a ``sipmessage.URI``."""
        return self._memoized("uri", self.uri, parse_uri, "bad_uri")

    def start_line(self) -> str:
        """``METHOD uri SIP/2.0``."""
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} headers={len(self.headers)}>"


class SipResponse(SipMessage):
    """A SIP response: status code, reason phrase, headers, body."""

    __slots__ = ("reason_phrase", "status")

    def __init__(
        self,
        status: int,
        reason_phrase: str | None = None,
        headers: SipHeaders | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"invalid status line: {status} is outside 100-699")
        phrase = reason_phrase if reason_phrase is not None else default_reason_phrase(status)
        if _PHRASE_BAD.search(phrase):
            raise ValueError(f"invalid status line {status} {phrase!r}")
        super().__init__(headers, body)
        self.status = status
        self.reason_phrase = phrase

    def start_line(self) -> str:
        """``SIP/2.0 status reason``."""
        return f"SIP/2.0 {self.status} {self.reason_phrase}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason_phrase} headers={len(self.headers)}>"


# --- parsing -----------------------------------------------------------------------------

_FOLD = re.compile(r"\r\n[ \t]+")  # anchored on CR: linear even on long runs of spaces
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_SINGLETONS = frozenset(
    {"call-id", "content-length", "content-type", "cseq", "from", "max-forwards", "to"}
)
_MANDATORY = ("via", "from", "to", "call-id", "cseq")


def parse_message(
    data: bytes,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> SipRequest | SipResponse:
    """Parse one SIP message from a datagram or from a frame cut by ``SipStreamFramer``.

    Content-Length follows RFC 3261 §18.3: optional here, bytes beyond it are
    discarded, fewer bytes than it announces is a 400. Raises ``SipParseError``
    and nothing else for any input.
    """
    try:
        return _parse(data, max_header_bytes, max_body_bytes)
    except SipParseError as err:
        if err.can_answer:
            err.can_answer = salvage_request(data) is not None
        raise


def _parse(data: bytes, max_header: int, max_body: int) -> SipRequest | SipResponse:
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before a start line are ignored
    end = data.find(b"\r\n\r\n", 0, max_header + 4)
    if end < 0 or end > max_header:
        if len(data) > max_header:
            raise _fail("headers_too_large", "header block over the cap", 413)
        raise _fail("incomplete", "no empty line after the headers")
    try:
        head = data[:end].decode()
    except UnicodeDecodeError as exc:
        raise _fail("bad_encoding", "header block is not UTF-8") from exc
    crlf = head.count("\r\n")  # counting is much cheaper than a regex with lookbehind
    if head.count("\r") != crlf or head.count("\n") != crlf or "\x00" in head:
        raise _fail("bad_header", "bare CR, LF or NUL in the header block")
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD.sub(" ", head)  # RFC 3261 §7.3.1: folding is one space
    lines = head.split("\r\n")
    msg = _start_line(lines[0])
    entries, first = _header_entries(lines)
    msg.headers = SipHeaders.from_entries(entries)
    msg.body = _body(data, end + 4, first.get("content-length"), max_body)
    _check_headers(msg, first)
    return msg


def _start_line(line: str) -> SipRequest | SipResponse:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        if version.upper() != "SIP/2.0":
            if _VERSION.fullmatch(version):
                raise _fail("bad_version", f"unsupported {version}", 505, can_answer=False)
            raise _fail("bad_start_line", "bad status line", can_answer=False)
        code, _, phrase = rest.partition(" ")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
            raise _fail("bad_status", f"bad status code {code[:8]!r}", can_answer=False)
        response = SipResponse.__new__(SipResponse)
        response.status, response.reason_phrase, response._memo = int(code), phrase, {}
        return response
    parts = line.split(" ")
    if len(parts) != 3 or not TOKEN_RE.fullmatch(parts[0]):
        raise _fail("bad_start_line", "request line is not 'METHOD URI SIP/2.0'")
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        if _VERSION.fullmatch(version):
            raise _fail("bad_version", f"unsupported {version[:16]}", 505)
        raise _fail("bad_start_line", "bad SIP version in request line")
    scheme = uri_scheme(uri)
    if scheme is None:
        raise _fail("bad_uri", "Request-URI has no scheme")
    if scheme not in SUPPORTED_URI_SCHEMES:
        raise _fail("bad_uri_scheme", f"unsupported URI scheme {scheme[:16]}", 416)
    try:
        check_uri(uri)  # the URI object is only built if someone asks for it
    except ValueError as exc:
        raise _fail("bad_uri", f"Request-URI: {exc}") from exc
    request = SipRequest.__new__(SipRequest)
    request.method, request.uri, request._memo = method, uri, {}
    return request


def _header_entries(lines: list[str]) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    entries: list[tuple[str, str, str]] = []
    first: dict[str, str] = {}
    known = KNOWN_HEADERS.get  # hot loop: one dict lookup per line
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise _fail("bad_header", f"header line without colon: {line[:20]!r}")
        hit = known(name.lower())
        if hit is None:
            name = name.rstrip(" \t")  # HCOLON allows whitespace before the colon
            hit = known(name.lower())
        if hit is None:
            if not TOKEN_RE.fullmatch(name):
                raise _fail("bad_header", f"invalid header name {name[:20]!r}")
            hit = (name.lower(), name)
        key = hit[0]
        value = value.strip(" \t")
        if key in first:
            if key in _SINGLETONS:
                raise _fail("duplicate_header", f"{hit[1]} appears twice")
        else:
            first[key] = value
        entries.append((key, hit[1], value))
    return entries, first


def _body(data: bytes, start: int, length: str | None, max_body: int) -> bytes:
    if length is None:
        if len(data) - start > max_body:
            raise _fail("too_large", "body over the cap", 413)
        return data[start:]
    if not (length.isascii() and length.isdigit()):
        raise _fail("content_length", "Content-Length is not a non-negative integer")
    digits = length.lstrip("0") or "0"
    if len(digits) > 9 or int(digits) > max_body:
        raise _fail("too_large", "Content-Length over the body cap", 413)
    if int(digits) > len(data) - start:
        raise _fail("content_length", "Content-Length beyond the end of the datagram")
    return data[start : start + int(digits)]  # RFC 3261 §18.3: extra bytes are discarded


def _check_headers(msg: SipRequest | SipResponse, first: dict[str, str]) -> None:
    for key in _MANDATORY:
        if key not in first:
            raise _fail("missing_header", f"no {key} header")
    call_id = first["call-id"]
    if not call_id or " " in call_id or "\t" in call_id:
        raise _fail("bad_call_id", "empty or spaced Call-ID", can_answer=False)
    # Parse straight from the first values into the accessors' memo, so the
    # transaction layer's first top_via/cseq/tag access costs nothing.
    via = first["via"]
    if "," in via:
        via = msg.headers.getlist("Via")[0]
    msg._memoized("via", via, parse_via, "bad_via")
    msg._memoized("cseq", first["cseq"], parse_cseq, "bad_cseq")
    msg._memoized("From", first["from"], split_address, "bad_address")
    msg._memoized("To", first["to"], split_address, "bad_address")
    if "max-forwards" in first and isinstance(msg, SipRequest):
        msg._memoized("mf", first["max-forwards"], parse_max_forwards, "bad_max_forwards")


# --- answering -------------------------------------------------------------------------

_COPIED = frozenset({"via", "from", "call-id", "cseq"})


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """Build the response to ``request`` (RFC 3261 §8.2.6).

    Copies every Via in order, From, To, Call-ID and CSeq verbatim; adds
    ``;tag=to_tag`` to To when given and To has no tag yet (never on 100,
    which instead copies Timestamp, §8.2.6.1). ``headers`` are appended (e.g.
    Contact, Unsupported, Retry-After, Content-Type, and Record-Route for a
    dialog-creating response, §12.1.1); Content-Length is written when the
    response is serialized.
    """
    if to_tag is not None and not TOKEN_RE.fullmatch(to_tag):
        raise ValueError(f"invalid To tag {to_tag!r}")
    add_tag = to_tag is not None and status != 100 and request.to_tag is None
    entries: list[tuple[str, str, str]] = []
    for entry in request.headers.entries:
        key = entry[0]
        if key in _COPIED:
            entries.append(entry)
        elif key == "to":
            if add_tag:
                entries.append((key, entry[1], f"{entry[2]};tag={to_tag}"))
                add_tag = False
            else:
                entries.append(entry)
        elif key == "timestamp" and status == 100:
            entries.append(entry)
    response = SipResponse(status, reason, SipHeaders.from_entries(entries), body)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def build_error_response(
    data: bytes, err: SipParseError, *, to_tag: str | None = None
) -> SipResponse | None:
    """Best-effort answer with ``err.sip_status`` to bytes that failed ``parse_message``.

    Returns None when nothing can be answered (``err.can_answer`` False): the
    transport drops the bytes. Without ``to_tag`` the tag is derived from the
    request, so a retransmission gets the same tag (stateless UAS, §8.2.7).
    """
    if not err.can_answer:
        return None
    request = salvage_request(data)
    if request is None:
        return None
    return SipResponse(err.sip_status, None, request.answer_headers(to_tag))


@dataclass(frozen=True, slots=True)
class RequestRejection:
    """Why ``validate_request`` refuses a request.

    Answer with ``build_response(request, r.status, headers=r.headers)``;
    ``reason`` is a low-cardinality tag for the rejected-requests metric.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


_REQUIRED_IN_REQUESTS = ("To", "From", "CSeq", "Call-ID", "Via", "Max-Forwards")


def validate_request(
    request: SipRequest, *, supported_extensions: Collection[str]
) -> RequestRejection | None:
    """The UAS checks of RFC 3261 §8.2 that come after parsing; None means go on.

    400 for a missing mandatory header or a CSeq method that is not the
    request method; 483 when Max-Forwards is 0, except for OPTIONS (the
    gateway is a user agent, so an OPTIONS that reached it is for it, §11);
    420 with ``Unsupported`` listing unknown Require option tags (not for
    ACK or CANCEL, §8.2.2.3). An ACK is never answered: drop it instead.
    """
    for name in _REQUIRED_IN_REQUESTS:
        if name not in request.headers:
            return RequestRejection(400, "missing_header")
    try:
        cseq_method = request.cseq_method
        max_forwards = request.max_forwards
    except SipParseError as exc:
        return RequestRejection(400, exc.reason)
    if cseq_method != request.method:
        return RequestRejection(400, "cseq_mismatch")
    if max_forwards == 0 and request.method != "OPTIONS":
        return RequestRejection(483, "too_many_hops")
    if request.method in ("ACK", "CANCEL"):
        return None
    supported = {tag.lower() for tag in supported_extensions}
    unknown = [tag for tag in request.require if tag.lower() not in supported]
    if unknown:
        return RequestRejection(420, "bad_extension", (("Unsupported", ", ".join(unknown)),))
    return None
