"""Typed values of the SDP attributes gatewayd reads.

The SDP model (``gateway.media.sdp``) keeps every attribute as the text the
peer wrote, so that re-serialization is faithful; the classes here are the
typed views negotiation reads from that text (rtpmap, fmtp, rtcp-fb, crypto,
rtcp, candidate, fingerprint, group, imageattr) and the way our own values
become attribute text again.

Two kinds of strictness, on purpose:

* attributes that drive negotiation (rtpmap, fmtp, rtcp-fb, ptime, maxptime,
  rtcp, crypto) are validated when an SDP is parsed: a malformed one is
  answered 400, because guessing would negotiate the wrong media;
* informational attributes (candidate, imageattr) are parsed on read and an
  unreadable one is skipped, because peers send legacy variants (Lync's
  ICE draft-6 candidates) that must not fail a call they do not affect.
"""

from __future__ import annotations

import binascii
import enum
import re
from base64 import b64decode
from dataclasses import dataclass

from gateway.errors import BadRequest


class SdpError(BadRequest):
    """The SDP cannot be parsed (SIP 400); the message names the line and why."""


class Direction(enum.StrEnum):
    """The direction attribute of a stream, seen from the side that wrote it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """Whether the writer of the SDP sends media on this stream."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """Whether the writer of the SDP receives media on this stream."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        """The direction with exactly these send and receive flags."""
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other side (sendonly <-> recvonly)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

    def intersect(self, other: Direction) -> Direction:
        """What both directions allow."""
        return Direction.from_flags(
            sends=self.sends and other.sends, receives=self.receives and other.receives
        )


DIRECTION_NAMES = frozenset(d.value for d in Direction)

# RFC 3551 section 6: payload types usable without an rtpmap line.
# G722 says 8000 although it samples at 16 kHz: RFC 3551 froze an error of
# RFC 1890 for compatibility, and every peer writes 8000, so we do too.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_DIGITS = re.compile(r"[0-9]{1,40}")


def parse_int(text: str, what: str, *, maximum: int = 2**32 - 1) -> int:
    """A decimal integer in ``[0, maximum]``; otherwise SdpError naming ``what``."""
    if not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise SdpError(f"{what} must be an integer from 0 to {maximum}, got {text!r}")
    return int(text)


def parse_payload_type(text: str) -> int:
    """An RTP payload type, 0 to 127."""
    return parse_int(text, "RTP payload type", maximum=127)


def parse_fmtp_parameters(text: str | None) -> dict[str, str | None]:
    """``a=fmtp`` parameters as an ordered dict; names lower-cased (they are
    case-insensitive, RFC 6184 section 8.1); a bare value such as the
    telephone-event range ``0-16`` becomes a key with value None."""
    parameters: dict[str, str | None] = {}
    if not text:
        return parameters
    for item in text.split(";"):
        name, sep, value = item.strip().partition("=")
        if not name and not sep:
            continue
        parameters[name.strip().lower()] = value.strip() if sep else None
    return parameters


def format_fmtp_parameters(parameters: dict[str, str | None]) -> str:
    """The inverse of ``parse_fmtp_parameters``."""
    return ";".join(
        name if value is None else f"{name}={value}" for name, value in parameters.items()
    )


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        """Parse the attribute value (the text after ``rtpmap:``)."""
        pt_text, _, rest = value.strip().partition(" ")
        parts = rest.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise SdpError(f"rtpmap {value!r} is not '<pt> <encoding>/<clock rate>[/<channels>]'")
        channels = parse_int(parts[2], "rtpmap channels", maximum=255) if len(parts) == 3 else None
        return cls(
            payload_type=parse_payload_type(pt_text),
            encoding=parts[0],
            clock_rate=parse_int(parts[1], "rtpmap clock rate"),
            channels=channels,
        )

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


@dataclass(frozen=True)
class Fmtp:
    """``a=fmtp:<format> <parameters>``; the format is kept as text because
    non-RTP m-lines may carry fmtp for non-numeric formats."""

    format: str
    parameters: str

    @classmethod
    def parse(cls, value: str) -> Fmtp:
        """Parse the attribute value; the parameters stay as written."""
        fmt, _, parameters = value.strip().partition(" ")
        if not fmt:
            raise SdpError(f"fmtp {value!r} has no format")
        return cls(format=fmt, parameters=parameters.strip())

    def __str__(self) -> str:
        return f"{self.format} {self.parameters}" if self.parameters else self.format


@dataclass(frozen=True)
class RtcpFeedback:
    """``a=rtcp-fb:<pt|*> <type> [<subtype>]``, e.g. ``nack pli``."""

    payload_type: str
    feedback: str

    @classmethod
    def parse(cls, value: str) -> RtcpFeedback:
        """Parse the attribute value; ``*`` applies to every payload type."""
        pt, _, feedback = value.strip().partition(" ")
        feedback = " ".join(feedback.split())
        if pt != "*":
            parse_payload_type(pt)
        if not feedback:
            raise SdpError(f"rtcp-fb {value!r} has no feedback type")
        return cls(payload_type=pt, feedback=feedback)

    def __str__(self) -> str:
        return f"{self.payload_type} {self.feedback}"


@dataclass(frozen=True)
class PayloadFormat:
    """One RTP payload format of an m-line, with its rtpmap (or the static
    default), fmtp and rtcp-fb folded in. ``encoding`` is None for a dynamic
    payload type without rtpmap, which nobody can use."""

    payload_type: int
    encoding: str | None
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None
    rtcp_feedback: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The encoding name, or ``PT<n>`` when unknown; for messages."""
        return self.encoding if self.encoding is not None else f"PT{self.payload_type}"

    @property
    def parameters(self) -> dict[str, str | None]:
        """The fmtp parameters, names lower-cased."""
        return parse_fmtp_parameters(self.fmtp)


@dataclass(frozen=True)
class Rtcp:
    """``a=rtcp:<port> [IN IP4 <address>]`` (RFC 3605)."""

    port: int
    address: str | None = None
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Rtcp:
        """Parse the attribute value."""
        parts = value.split()
        if len(parts) not in (1, 4) or (len(parts) == 4 and parts[1] != "IN"):
            raise SdpError(f"rtcp {value!r} is not '<port> [IN IP4|IP6 <address>]'")
        port = parse_int(parts[0], "rtcp port", maximum=65535)
        if len(parts) == 1:
            return cls(port=port)
        return cls(port=port, address=parts[3], addrtype=parts[2])

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} IN {self.addrtype} {self.address}"


@dataclass(frozen=True)
class CryptoKey:
    """One key-param of ``a=crypto`` (RFC 4568 section 9.2).

    For the ``inline`` method ``key_salt`` is the base64 master key and
    salt, ``lifetime`` is e.g. ``2^31`` and ``mki`` is ``<value>:<length>``;
    for any other method ``key_salt`` holds the key-info verbatim.
    """

    key_salt: str
    lifetime: str | None = None
    mki: str | None = None
    method: str = "inline"

    @classmethod
    def parse(cls, text: str) -> CryptoKey:
        """Parse ``<method>:<key-info>``."""
        method, sep, info = text.partition(":")
        if not sep or not _TOKEN.fullmatch(method) or not info:
            raise SdpError(f"crypto key-params {text!r} is not '<method>:<key-info>'")
        if method != "inline":
            return cls(key_salt=info, method=method)
        key_salt, *rest = info.split("|")
        if not key_salt or len(rest) > 2:
            raise SdpError(
                f"crypto inline key {text!r} is not '<key>[|<lifetime>][|<mki>:<length>]'"
            )
        lifetime = mki = None
        for part in rest:
            if ":" in part:
                value, _, length = part.partition(":")
                parse_int(value, "crypto MKI value", maximum=2**128)
                parse_int(length, "crypto MKI length", maximum=128)
                mki = part
            elif (
                mki is None
                and lifetime is None
                and re.fullmatch(r"2\^[0-9]{1,2}|[0-9]{1,20}", part)
            ):
                lifetime = part
            else:
                raise SdpError(f"crypto inline key {text!r}: cannot read {part!r}")
        return cls(key_salt=key_salt, lifetime=lifetime, mki=mki)

    @property
    def key_bytes(self) -> bytes | None:
        """The decoded master key and salt, or None if not inline base64."""
        if self.method != "inline":
            return None
        try:
            return b64decode(self.key_salt, validate=True)
        except (binascii.Error, ValueError):
            return None

    def __str__(self) -> str:
        if self.method != "inline":
            return f"{self.method}:{self.key_salt}"
        parts = [self.key_salt]
        if self.lifetime is not None:
            parts.append(self.lifetime)
        if self.mki is not None:
            parts.append(self.mki)
        return "inline:" + "|".join(parts)


@dataclass(frozen=True)
class Crypto:
    """``a=crypto:<tag> <suite> <key-params> [<session-params>]`` (RFC 4568)."""

    tag: int
    suite: str
    keys: tuple[CryptoKey, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        """Parse the attribute value; unknown suites are kept, not refused."""
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(
                f"crypto {value!r} is not '<tag> <suite> <key-params> [<session-params>]'"
            )
        tag = parse_int(parts[0], "crypto tag", maximum=999_999_999)
        if not _TOKEN.fullmatch(parts[1]):
            raise SdpError(f"crypto suite {parts[1]!r} is not a token")
        keys = tuple(CryptoKey.parse(k) for k in parts[2].split(";"))
        return cls(tag=tag, suite=parts[1], keys=keys, session_params=tuple(parts[3:]))

    def __str__(self) -> str:
        text = f"{self.tag} {self.suite} " + ";".join(str(k) for k in self.keys)
        return " ".join([text, *self.session_params])


@dataclass(frozen=True)
class Candidate:
    """An RFC 8445/8839 ICE candidate, enough to be read."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    extensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: str) -> Candidate | None:
        """The candidate, or None for other formats (ICE draft-6 of Lync)."""
        parts = value.split()
        if (
            len(parts) < 8
            or parts[6] != "typ"
            or not parts[1].isdigit()
            or not parts[3].isdigit()
            or not parts[5].isdigit()
            or len(parts) % 2 != 0
        ):
            return None
        extensions = tuple(zip(parts[8::2], parts[9::2], strict=True))
        return cls(
            foundation=parts[0],
            component=int(parts[1]),
            transport=parts[2],
            priority=int(parts[3]),
            address=parts[4],
            port=int(parts[5]),
            type=parts[7],
            extensions=extensions,
        )

    def __str__(self) -> str:
        text = (
            f"{self.foundation} {self.component} {self.transport} {self.priority}"
            f" {self.address} {self.port} typ {self.type}"
        )
        return " ".join([text, *(f"{k} {v}" for k, v in self.extensions)])


@dataclass(frozen=True)
class Fingerprint:
    """``a=fingerprint:<hash function> <hex pairs>`` (RFC 8122)."""

    algorithm: str
    value: str

    @classmethod
    def parse(cls, value: str) -> Fingerprint | None:
        """The fingerprint, or None if it is not two words."""
        parts = value.split()
        return cls(parts[0].lower(), parts[1]) if len(parts) == 2 else None

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass(frozen=True)
class Group:
    """``a=group:<semantics> <mid> ...`` (RFC 5888), e.g. BUNDLE."""

    semantics: str
    mids: tuple[str, ...]

    @classmethod
    def parse(cls, value: str) -> Group:
        """Parse the attribute value (never fails: an empty group is kept)."""
        parts = value.split()
        return cls(parts[0] if parts else "", tuple(parts[1:]))

    def __str__(self) -> str:
        return " ".join([self.semantics, *self.mids])


def parse_ptime(value: str, what: str) -> int:
    """``a=ptime`` / ``a=maxptime`` in milliseconds; a fraction (``20.0``,
    sent by some phones) is truncated."""
    match = re.fullmatch(r"([0-9]{1,5})(?:\.[0-9]*)?", value.strip())
    if match is None:
        raise SdpError(f"{what} must be milliseconds, got {value!r}")
    return int(match.group(1))


def imageattr_max_receive(value: str) -> tuple[int, int] | None:
    """The largest resolution a peer says it receives in ``a=imageattr``.

    RFC 6236: ``<pt|*> send <sets>|* recv <sets>|*``, each set like
    ``[x=[320:16:1280],y=[240:16:720],q=0.5]``. Returns ``(width, height)``
    of the largest-area set after ``recv``, or None when there is none or
    the text cannot be read (the attribute is advisory).
    """
    words = value.split(None, 1)
    if len(words) < 2:
        return None
    rest = words[1]
    index = rest.find("recv")
    if index < 0:
        return None
    best: tuple[int, int] | None = None
    for body in _top_level_sets(rest[index + 4 :]):
        width = _max_number(body, "x")
        height = _max_number(body, "y")
        if width is None or height is None:
            continue
        if best is None or width * height > best[0] * best[1]:
            best = (width, height)
    return best


def _top_level_sets(text: str) -> list[str]:
    """The bodies of the outermost ``[...]`` groups up to a ``send`` keyword."""
    sets: list[str] = []
    depth = 0
    start = 0
    for position, char in enumerate(text):
        if char == "[":
            if depth == 0:
                start = position + 1
            depth += 1
        elif char == "]" and depth > 0:
            depth -= 1
            if depth == 0:
                sets.append(text[start:position])
        elif depth == 0 and text.startswith("send", position):
            break
    return sets


def _max_number(body: str, key: str) -> int | None:
    match = re.search(rf"(?:^|,)\s*{key}=(\[[^\]]*\]|[0-9]+)", body)
    if match is None:
        return None
    numbers = [int(n) for n in re.findall(r"[0-9]+", match.group(1))]
    return max(numbers) if numbers else None
