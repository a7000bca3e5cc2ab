"""Message bodies: Content-Type parsing and MIME multipart (RFC 2046, RFC 5621).

A SIP peer may wrap its SDP offer in ``multipart/mixed`` next to ISUP, a
location object or a resource list; the media code only wants the SDP, so
``extract_sdp`` digs it out. Everything here raises ``ValueError`` on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridges.sip.headers import TOKEN_RE, header_key, parse_params, unquote

SDP_TYPE = "application/sdp"
_MAX_NESTING = 3  # multipart inside multipart: enough for real peers, bounded for hostile ones


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One part of a multipart body: its media type, headers and content."""

    content_type: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype;params`` into the lower-case media type and its parameters.

    Parameter names are lower-cased and values unquoted (``boundary="a b"``).
    """
    semi = value.find(";")
    media, rest = (value, "") if semi < 0 else (value[:semi], value[semi:])
    media = media.strip(" \t").lower()
    kind, slash, sub = media.partition("/")
    if not slash or not TOKEN_RE.fullmatch(kind) or not TOKEN_RE.fullmatch(sub):
        raise ValueError(f"invalid media type {media!r}")
    params = {name.lower(): unquote(val or "") for name, val in parse_params(rest)}
    return media, params


def split_multipart(body: bytes, boundary: str) -> list[BodyPart]:
    """Split a multipart body on ``boundary`` into its parts (preamble/epilogue dropped)."""
    if not boundary or len(boundary) > 70:
        raise ValueError("invalid multipart boundary")
    # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1);
    # prefixing one lets the first delimiter match even with no preamble.
    delimiter = b"\r\n--" + boundary.encode("utf-8", "surrogateescape")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 2:
        raise ValueError("multipart body without a delimiter")
    parts: list[BodyPart] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts  # close delimiter: the rest is epilogue
        line_end = chunk.find(b"\r\n")
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            raise ValueError("garbage after multipart delimiter")
        parts.append(_part(chunk[line_end + 2 :]))
    raise ValueError("multipart body without a close delimiter")


def _part(chunk: bytes) -> BodyPart:
    if chunk.startswith(b"\r\n"):
        head, content = b"", chunk[2:]
    else:
        end = chunk.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("multipart part without a header/body separator")
        head, content = chunk[:end], chunk[end + 4 :]
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "replace").split("\r\n") if head else ():
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("bad header line in multipart part")
        headers.append((header_key(name.strip())[1], value.strip(" \t")))
    # RFC 2046 §5.1: a part without Content-Type is text/plain.
    ctype = next((v for n, v in headers if n.lower() == "content-type"), "text/plain")
    return BodyPart(parse_content_type(ctype)[0], tuple(headers), content)


def extract_sdp(content_type: str | None, body: bytes, *, _depth: int = 0) -> bytes | None:
    """The SDP in a body: the body itself, or the first application/sdp part of a multipart.

    Returns None when there is no SDP (no body, another type, no SDP part).
    """
    if content_type is None or not body:
        return None
    media, params = parse_content_type(content_type)
    if media == SDP_TYPE:
        return body
    if not media.startswith("multipart/") or _depth >= _MAX_NESTING:
        return None
    for part in split_multipart(body, params.get("boundary", "")):
        if part.content_type == SDP_TYPE:
            return part.body
        if part.content_type.startswith("multipart/"):
            ctype = next(v for n, v in part.headers if n.lower() == "content-type")
            found = extract_sdp(ctype, part.body, _depth=_depth + 1)
            if found is not None:
                return found
    return None
