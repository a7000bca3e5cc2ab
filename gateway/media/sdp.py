"""The SDP model (RFC 8866): parse, serialize, and typed views for negotiation.

Why not aiortc's ``aiortc.sdp``: it models what a browser sends and nothing
else. It drops every attribute it does not know and re-orders the rest (so a
re-serialized SDP is not what the peer wrote), has no ``a=crypto`` (SDES),
no ``b=``, ``k=``, ``r=``, ``z=``, ``i=``, ``u=``, ``e=``, ``p=``, no
session-level direction, assumes every audio/video m-line has an rtpmap for
each payload type (static payload types of SIP phones are implied, RFC 3551),
and reports malformed input with ``assert``. SIP peers need all of that.

The model here keeps each attribute as the text the peer wrote, in order,
and reads typed values from it on demand (``gateway.media.sdp_attributes``),
so ``parse(str(parse(text))) == parse(text)`` by construction and
negotiation still sees rtpmap, fmtp, crypto, direction and the rest.
Serialization writes fields in the RFC 8866 order with CRLF; parsing is in
``gateway.media.sdp_parser`` (``SessionDescription.parse``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.media.sdp_attributes import (
    DIRECTION_NAMES,
    STATIC_PAYLOAD_TYPES,
    Candidate,
    Crypto,
    Direction,
    Fingerprint,
    Fmtp,
    Group,
    PayloadFormat,
    Rtcp,
    RtcpFeedback,
    RtpMap,
    SdpError,
    parse_payload_type,
    parse_ptime,
)

__all__ = [
    "Attribute",
    "Bandwidth",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "Timing",
    "stream_address",
    "stream_direction",
]


@dataclass(frozen=True)
class Attribute:
    """``a=<name>[:<value>]`` as written; ``value`` None is a property
    attribute (``a=rtcp-mux``), ``""`` is ``a=name:`` with an empty value."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``.

    The session id stays text (peers write 64-bit and wider numbers, some
    with leading zeros); the version is an int because re-offers increment it.
    """

    username: str
    session_id: str
    session_version: int
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return (
            f"o={self.username} {self.session_id} {self.session_version}"
            f" {self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/<ttl>[/<count>]]``; the multicast
    suffix is kept as text because gatewayd never joins groups."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"
    multicast: str | None = None

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """The connection line for one of our IPv4 or IPv6 addresses."""
        version = ipaddress.ip_address(address).version
        return cls(address=address, addrtype=f"IP{version}")

    @property
    def is_unspecified(self) -> bool:
        """True for 0.0.0.0 or ``::``: RFC 2543 hold, nobody to send to."""
        try:
            return ipaddress.ip_address(self.address).is_unspecified
        except ValueError:
            return False

    def __str__(self) -> str:
        suffix = "" if self.multicast is None else f"/{self.multicast}"
        return f"c={self.nettype} {self.addrtype} {self.address}{suffix}"


@dataclass(frozen=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>``: AS in kbit/s, TIAS in bit/s (RFC 3890)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"b={self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True)
class Timing:
    """``t=<start> <stop>`` with its ``r=`` lines kept as text."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


def _values(attributes: Iterable[Attribute], name: str) -> list[str]:
    return [a.value or "" for a in attributes if a.name == name]


def _first(attributes: Iterable[Attribute], name: str) -> str | None:
    return next((a.value or "" for a in attributes if a.name == name), None)


def _has(attributes: Iterable[Attribute], name: str) -> bool:
    return any(a.name == name for a in attributes)


def _direction(attributes: Iterable[Attribute]) -> Direction | None:
    # The last one wins if a peer writes two: that is what most stacks do.
    found = None
    for attribute in attributes:
        if attribute.name in DIRECTION_NAMES and attribute.value is None:
            found = Direction(attribute.name)
    return found


@dataclass(frozen=True)
class MediaDescription:
    """One m-section: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and
    its i/c/b/k/a lines. Typed views read the attributes on demand."""

    kind: str
    port: int
    proto: str
    fmt: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    encryption_key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    @property
    def connection(self) -> Connection | None:
        """The media-level ``c=``, if any (the first of a layered set)."""
        return self.connections[0] if self.connections else None

    @property
    def is_rtp(self) -> bool:
        """Whether the formats are RTP payload types (RTP/AVP and friends)."""
        return "RTP/" in self.proto.upper()

    @property
    def is_dtls(self) -> bool:
        """Whether keys come from DTLS (UDP/TLS/RTP/SAVPF, RFC 5764)."""
        return self.proto.upper().startswith(("UDP/TLS/", "TCP/DTLS/", "TCP/TLS/"))

    @property
    def is_avpf(self) -> bool:
        """Whether the profile has RTCP feedback (RFC 4585)."""
        return self.proto.upper().endswith("AVPF")

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if written."""
        return _direction(self.attributes)

    def values(self, name: str) -> list[str]:
        """The values of every attribute with this name, in order."""
        return _values(self.attributes, name)

    def has(self, name: str) -> bool:
        """Whether an attribute with this name is present."""
        return _has(self.attributes, name)

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` by payload type."""
        maps = (RtpMap.parse(v) for v in self.values("rtpmap"))
        return {m.payload_type: m for m in maps}

    @property
    def fmtps(self) -> dict[str, str]:
        """``a=fmtp`` parameters by format (text)."""
        parsed = (Fmtp.parse(v) for v in self.values("fmtp"))
        return {f.format: f.parameters for f in parsed}

    @property
    def rtcp_feedback(self) -> tuple[RtcpFeedback, ...]:
        """Every ``a=rtcp-fb``, in order."""
        return tuple(RtcpFeedback.parse(v) for v in self.values("rtcp-fb"))

    @property
    def payload_formats(self) -> tuple[PayloadFormat, ...]:
        """The RTP formats of the m-line, in its order, with rtpmap or the
        RFC 3551 static default, fmtp and rtcp-fb folded in; empty for
        non-RTP m-lines."""
        if not self.is_rtp:
            return ()
        rtpmaps = self.rtpmaps
        fmtps = self.fmtps
        feedback = self.rtcp_feedback
        formats = []
        for text in self.fmt:
            pt = parse_payload_type(text)
            rtpmap = rtpmaps.get(pt)
            static = STATIC_PAYLOAD_TYPES.get(pt)
            if rtpmap is not None:
                encoding, rate, channels = rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels or 1
            elif static is not None:
                encoding, rate, channels = static
            else:
                encoding, rate, channels = None, 0, 1
            fb = tuple(f.feedback for f in feedback if f.payload_type in ("*", text))
            formats.append(PayloadFormat(pt, encoding, rate, channels, fmtps.get(text), fb))
        return tuple(formats)

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds."""
        value = _first(self.attributes, "ptime")
        return None if value is None else parse_ptime(value, "ptime")

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in milliseconds."""
        value = _first(self.attributes, "maxptime")
        return None if value is None else parse_ptime(value, "maxptime")

    @property
    def rtcp(self) -> Rtcp | None:
        """``a=rtcp`` (RFC 3605)."""
        value = _first(self.attributes, "rtcp")
        return None if value is None else Rtcp.parse(value)

    @property
    def rtcp_mux(self) -> bool:
        """Whether ``a=rtcp-mux`` is present."""
        return self.has("rtcp-mux")

    @property
    def crypto(self) -> tuple[Crypto, ...]:
        """Every ``a=crypto`` (RFC 4568), in preference order."""
        return tuple(Crypto.parse(v) for v in self.values("crypto"))

    @property
    def mid(self) -> str | None:
        """``a=mid`` (RFC 5888)."""
        return _first(self.attributes, "mid")

    @property
    def ice_ufrag(self) -> str | None:
        """Media-level ``a=ice-ufrag``."""
        return _first(self.attributes, "ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        """Media-level ``a=ice-pwd``."""
        return _first(self.attributes, "ice-pwd")

    @property
    def fingerprints(self) -> tuple[Fingerprint, ...]:
        """Media-level ``a=fingerprint`` lines that can be read."""
        return _fingerprints(self.attributes)

    @property
    def setup(self) -> str | None:
        """Media-level ``a=setup`` (actpass, active, passive, holdconn)."""
        return _first(self.attributes, "setup")

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """The RFC 8839 candidates; other formats stay only in ``attributes``."""
        parsed = (Candidate.parse(v) for v in self.values("candidate"))
        return tuple(c for c in parsed if c is not None)

    @property
    def imageattrs(self) -> tuple[str, ...]:
        """``a=imageattr`` values as text (see ``imageattr_max_receive``)."""
        return tuple(self.values("imageattr"))

    def bandwidth(self, bwtype: str) -> int | None:
        """The ``b=`` value of this type (AS, TIAS, CT, RS, RR), if any."""
        return _bandwidth(self.bandwidths, bwtype)

    def lines(self) -> list[str]:
        """The m-section as lines, in RFC 8866 order."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [" ".join([f"m={self.kind}", port, self.proto, *self.fmt])]
        if self.information is not None:
            lines.append(f"i={self.information}")
        lines.extend(str(c) for c in self.connections)
        lines.extend(str(b) for b in self.bandwidths)
        if self.encryption_key is not None:
            lines.append(f"k={self.encryption_key}")
        lines.extend(str(a) for a in self.attributes)
        return lines


def _fingerprints(attributes: Iterable[Attribute]) -> tuple[Fingerprint, ...]:
    parsed = (Fingerprint.parse(v) for v in _values(attributes, "fingerprint"))
    return tuple(f for f in parsed if f is not None)


def _bandwidth(bandwidths: Iterable[Bandwidth], bwtype: str) -> int | None:
    return next((b.bandwidth for b in bandwidths if b.bwtype.upper() == bwtype.upper()), None)


@dataclass(frozen=True)
class SessionDescription:
    """A whole SDP: the session-level fields and the m-sections in order."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    time_zones: str | None = None
    encryption_key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse an SDP body (see ``gateway.media.sdp_parser.parse``)."""
        # The parser lives in its own module to keep both under ~600 lines;
        # imported here because it imports this module.
        from gateway.media.sdp_parser import parse

        return parse(text)

    @property
    def direction(self) -> Direction | None:
        """The session-level direction (the default for every stream)."""
        return _direction(self.attributes)

    def values(self, name: str) -> list[str]:
        """The values of every session-level attribute with this name."""
        return _values(self.attributes, name)

    @property
    def groups(self) -> tuple[Group, ...]:
        """``a=group`` lines (RFC 5888)."""
        return tuple(Group.parse(v) for v in self.values("group"))

    @property
    def bundle_mids(self) -> tuple[str, ...]:
        """The mids of the first BUNDLE group, empty without one."""
        return next((g.mids for g in self.groups if g.semantics == "BUNDLE"), ())

    @property
    def ice_ufrag(self) -> str | None:
        """Session-level ``a=ice-ufrag``."""
        return _first(self.attributes, "ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        """Session-level ``a=ice-pwd``."""
        return _first(self.attributes, "ice-pwd")

    @property
    def fingerprints(self) -> tuple[Fingerprint, ...]:
        """Session-level ``a=fingerprint`` lines that can be read."""
        return _fingerprints(self.attributes)

    @property
    def setup(self) -> str | None:
        """Session-level ``a=setup``."""
        return _first(self.attributes, "setup")

    def bandwidth(self, bwtype: str) -> int | None:
        """The session-level ``b=`` value of this type, if any."""
        return _bandwidth(self.bandwidths, bwtype)

    def lines(self) -> list[str]:
        """The SDP as lines, in RFC 8866 order."""
        lines = [f"v={self.version}", str(self.origin), f"s={self.session_name or ' '}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines.extend(f"e={e}" for e in self.emails)
        lines.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            lines.append(str(self.connection))
        lines.extend(str(b) for b in self.bandwidths)
        for timing in self.timings:
            lines.append(f"t={timing.start} {timing.stop}")
            lines.extend(f"r={r}" for r in timing.repeats)
        if self.time_zones is not None:
            lines.append(f"z={self.time_zones}")
        if self.encryption_key is not None:
            lines.append(f"k={self.encryption_key}")
        lines.extend(str(a) for a in self.attributes)
        for media in self.media:
            lines.extend(media.lines())
        return lines

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"

    def __bytes__(self) -> bytes:
        # surrogateescape gives back the exact bytes of a non-UTF-8 peer
        # (Latin-1 session names exist), see ``parse``.
        return str(self).encode("utf-8", "surrogateescape")


def stream_direction(session: SessionDescription, media: MediaDescription) -> Direction:
    """The direction of one stream as its writer means it.

    The media-level attribute overrides the session-level one, sendrecv is
    the default (RFC 8866 section 6.7), and a ``c=`` of 0.0.0.0 is the
    RFC 2543 way of saying "hold, do not send to me": the writer may still
    send, so sendrecv reads as sendonly and recvonly as inactive. With ICE
    (``a=ice-ufrag``) 0.0.0.0 is instead the trickle placeholder of RFC 8840
    that browsers send before they have candidates, and means nothing.
    """
    direction = media.direction or session.direction or Direction.SENDRECV
    connection = media.connection or session.connection
    uses_ice = media.ice_ufrag is not None or session.ice_ufrag is not None
    if connection is not None and connection.is_unspecified and not uses_ice:
        return Direction.from_flags(sends=direction.sends, receives=False)
    return direction


def stream_address(session: SessionDescription, media: MediaDescription) -> str | None:
    """Where the stream's RTP goes: media-level ``c=`` or else session-level."""
    connection = media.connection or session.connection
    return None if connection is None else connection.address
