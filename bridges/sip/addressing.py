"""Typed values of the headers that route SIP: URIs, name-addr/addr-spec, Via, CSeq.

URIs, addresses and CSeq come out as ``sipmessage`` dataclasses (``URI``,
``Address``, ``CSeq``) so the rest of the gateway shares one set of types with
the auth code that uses ``sipmessage.AuthChallenge``. The parsing in front of
them is ours because sipmessage 0.7.1 gets these wrong:

- its hostname rule rejects a last label that ends in a digit (``sip:a@pbx1``);
- its quoted-string pattern is greedy, so ``"A" <sip:a@b>;p="<x>"`` and a list
  of quoted display names split at the wrong place;
- ``Parameters(**kwargs)`` raises ``TypeError`` (not ``ValueError``) on a
  parameter named ``self``;
- its Via rejects ``received=2001:db8::1`` (bare IPv6, RFC 5118) and its
  ``Parameters.__str__`` percent-encodes ``"``/``:``/``+``, so Via is our own
  ``SipVia`` with a printer that writes parameters back as they were.

Every parser here raises ``ValueError``; ``message.py`` turns that into a
``SipParseError`` with a status.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from sipmessage import URI, Address, CSeq, Parameters
from sipmessage import grammar as _g

from bridges.sip.headers import TOKEN_RE, find_param, parse_params, unquote

SUPPORTED_URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")

# Labels cannot contain ".", so the split into labels is unique and matching
# stays linear; the last label (toplabel) starts with a letter.
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?"
)
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV6_REF = re.compile(_g.IPV6REFERENCE)
_USER = re.compile(rf"(?:{_g.cset(_g.C_USER_SAFE)}|{_g.ESCAPED})+")
_PASSWORD = re.compile(rf"(?:{_g.cset(_g.C_PASSWORD_SAFE)}|{_g.ESCAPED})*")
_URI_PARAM = re.compile(rf"(?:;{_g.URI_PARAM})*")
_PORT = re.compile(r"[0-9]{1,5}")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*+"', re.S)
_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9.!%*_+`'~ \t-]*")
_VIA_HEAD = re.compile(
    r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9.!%*_+`'~-]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?",
    re.I,
)
_MAX_CSEQ = 2**31  # RFC 3261 §8.1.1.5: the sequence number MUST be below 2**31


def is_valid_host(host: str) -> bool:
    """Hostname, IPv4 address or bracketed IPv6 reference (RFC 3261 ``host``)."""
    if host.startswith("["):
        return len(host) <= 47 and _IPV6_REF.fullmatch(host) is not None
    return _HOSTNAME.fullmatch(host) is not None or _IPV4.fullmatch(host) is not None


def uri_scheme(uri: str) -> str | None:
    """Lower-case scheme of ``uri``, or None if it has no syntactically valid one."""
    scheme, sep, _ = uri.partition(":")
    if not sep or not SCHEME_RE.fullmatch(scheme):
        return None
    return scheme.lower()


def parse_uri(value: str) -> URI:
    """Parse a sip:, sips: or tel: URI into a ``sipmessage.URI``.

    The scheme is case-insensitive (lower-cased here). URI headers (``?...``)
    are refused: they are not allowed in a Request-URI and ``URI`` has no field
    for them. User and password are unescaped as sipmessage does (``%00``
    becomes a NUL character, which is legal).
    """
    fields = _uri_fields(value)
    if isinstance(fields, URI):
        return fields
    scheme, user, password, host, port, pairs = fields
    return URI(
        scheme=scheme,
        host=host,
        user=None if user is None else urllib.parse.unquote(user),
        password=None if password is None else urllib.parse.unquote(password),
        port=port,
        parameters=_parameters(pairs),
    )


def check_uri(value: str) -> None:
    """Raise ``ValueError`` where ``parse_uri`` would, without building the URI."""
    _uri_fields(value)


_UriFields = tuple[str, str | None, str | None, str, int | None, list[tuple[str, str | None]]]


def _uri_fields(value: str) -> URI | _UriFields:
    scheme = uri_scheme(value)
    if scheme is None or scheme not in SUPPORTED_URI_SCHEMES:
        raise ValueError("unsupported URI scheme")
    rest = value[len(scheme) + 1 :]
    if scheme == "tel":
        return URI.parse("tel:" + rest)  # sipmessage's tel grammar is fine
    userinfo, at, hostpart = rest.partition("@")
    user: str | None = None
    password: str | None = None
    if not at:
        hostpart = rest
    else:
        user, colon, password = userinfo.partition(":")
        if not _USER.fullmatch(user) or not _PASSWORD.fullmatch(password):
            raise ValueError("invalid URI user part")
        password = password if colon else None
    if "?" in hostpart:
        raise ValueError("URI headers are not supported here")
    semi = hostpart.find(";")
    hostport, params = (hostpart, "") if semi < 0 else (hostpart[:semi], hostpart[semi:])
    host, port = _split_hostport(hostport)
    if not _URI_PARAM.fullmatch(params):
        raise ValueError("invalid URI parameters")
    pairs = _uri_param_pairs(params)
    if any(name.lower() == "self" for name, _ in pairs):
        raise ValueError("parameter name 'self' is not supported")
    return scheme, user, password, host, port, pairs


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        host, tail = hostport[: close + 1], hostport[close + 1 :]
    else:
        host, colon, port_raw = hostport.partition(":")
        tail = colon + port_raw
    if not is_valid_host(host):
        raise ValueError("invalid host")
    if not tail:
        return host, None
    if tail[0] != ":" or not _PORT.fullmatch(tail[1:]) or int(tail[1:]) > 65535:
        raise ValueError("invalid port")
    return host, int(tail[1:])


def _uri_param_pairs(params: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for item in params.split(";")[1:]:
        name, eq, val = item.partition("=")
        pairs.append((urllib.parse.unquote(name), urllib.parse.unquote(val) if eq else None))
    return pairs


def _parameters(pairs: list[tuple[str, str | None]]) -> Parameters:
    # Parameter names are case-insensitive (RFC 3261 §19.1.4, §7.3.1), so we
    # lower-case them; Parameters' constructor takes **kwargs, which breaks on
    # a parameter literally named "self".
    data = {name.lower(): value for name, value in pairs}
    if "self" in data:
        raise ValueError("parameter name 'self' is not supported")
    return Parameters(**data)


@dataclass(frozen=True, slots=True)
class AddressParts:
    """A name-addr or addr-spec split into its three raw parts."""

    display_name: str
    uri: str
    params: list[tuple[str, str | None]]

    def param(self, name: str) -> str | None:
        """Value of header parameter ``name`` (case-insensitive), None if absent."""
        return find_param(self.params, name.lower())[1]


def split_address(value: str) -> AddressParts:
    """Split ``"Name" <uri>;params`` / ``Name <uri>;params`` / ``uri;params``.

    Cheap (no URI parsing), used on every From/To to find the tag. In the
    addr-spec form the first ``;`` ends the URI (RFC 3261 §20: URIs with ``;``,
    ``,`` or ``?`` must be in angle brackets).
    """
    text = value.strip(" \t")
    if text.startswith('"'):
        m = _QUOTED.match(text)
        if m is None:
            raise ValueError("unterminated quoted display name")
        name = unquote(m.group(0))
        rest = text[m.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ValueError("quoted display name without <uri>")
        return _angle(name, rest)
    lt = text.find("<")
    if lt >= 0:
        name = text[:lt].strip(" \t")
        if not _DISPLAY_TOKENS.fullmatch(name):
            raise ValueError("invalid display name")
        return _angle(" ".join(name.split()), text[lt:])
    semi = text.find(";")
    uri = text if semi < 0 else text[:semi].rstrip(" \t")
    if not uri or any(c in uri for c in ' \t,?>"'):
        raise ValueError("invalid addr-spec")
    return AddressParts("", uri, parse_params("" if semi < 0 else text[semi:]))


def _angle(name: str, rest: str) -> AddressParts:
    gt = rest.find(">")
    if gt < 0:
        raise ValueError("unterminated <uri>")
    uri = rest[1:gt].strip(" \t")
    if not uri or "<" in uri:
        raise ValueError("invalid <uri>")
    return AddressParts(name, uri, parse_params(rest[gt + 1 :]))


def parse_address(value: str) -> Address:
    """Parse a From/To/Contact/Route value into a ``sipmessage.Address``.

    Only sip/sips/tel URIs can be represented; anything else raises
    ``ValueError`` (the raw header stays available through ``SipHeaders``).
    """
    parts = split_address(value)
    return Address(
        uri=parse_uri(parts.uri), name=parts.display_name, parameters=_parameters(parts.params)
    )


def parse_cseq(value: str) -> CSeq:
    """Parse ``CSeq: <number> <method>``; the number must be below 2**31."""
    fields = value.split()
    if len(fields) != 2:
        raise ValueError("CSeq must be '<number> <method>'")
    number, method = fields
    if not (number.isascii() and number.isdigit()) or not TOKEN_RE.fullmatch(method):
        raise ValueError("invalid CSeq")
    number = number.lstrip("0") or "0"
    if len(number) > 10 or int(number) >= _MAX_CSEQ:
        raise ValueError("CSeq number out of range")
    return CSeq(sequence=int(number), method=method)


def parse_max_forwards(value: str) -> int:
    """Parse Max-Forwards: 0-255 (RFC 3261 §20.22 via HTTP), leading zeros allowed."""
    digits = value.lstrip("0") or "0"
    if not (value.isascii() and value.isdigit()) or len(digits) > 3 or int(digits) > 255:
        raise ValueError("Max-Forwards must be 0-255")
    return int(digits)


@dataclass(frozen=True, slots=True)
class SipVia:
    """One Via value: ``SIP/2.0/<transport> <host>[:<port>];params``.

    Parameters keep their original spelling and order so ``str()`` gives back
    what was received (bare IPv6 in ``received`` included); lookups are
    case-insensitive.
    """

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """Value of parameter ``name``; None if absent or given without value."""
        return find_param(self.params, name.lower())[1]

    def has_param(self, name: str) -> bool:
        """Whether parameter ``name`` is present, with or without a value."""
        return find_param(self.params, name.lower())[0]

    @property
    def branch(self) -> str | None:
        """The transaction id (RFC 3261 magic cookie ``z9hG4bK`` when compliant)."""
        return self.param("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` where responses go; port None means the transport default."""
        return self.host, self.port

    @property
    def received(self) -> str | None:
        """Source address stamped by the receiver (RFC 3261 §18.2.1)."""
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """Source port stamped by the receiver (RFC 3581); None if absent or empty."""
        value = self.param("rport")
        if value is None or not value.isascii() or not value.isdigit() or len(value) > 5:
            return None
        return int(value)

    def with_param(self, name: str, value: str | None) -> SipVia:
        """A copy with parameter ``name`` set (replaced in place or appended)."""
        if not TOKEN_RE.fullmatch(name) or (value is not None and not _via_value_ok(value)):
            raise ValueError(f"invalid Via parameter {name}={value!r}")
        lname = name.lower()
        params = list(self.params)
        for i, (key, _) in enumerate(params):
            if key.lower() == lname:
                params[i] = (key, value)
                break
        else:
            params.append((name, value))
        return SipVia(self.transport, self.host, self.port, tuple(params))

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        for key, value in self.params:
            out += f";{key}" if value is None else f";{key}={value}"
        return out


def _via_value_ok(value: str) -> bool:
    return bool(value) and not any(c in value for c in ' \t;,"<>\r\n')


def parse_via(value: str) -> SipVia:
    """Parse one Via value (not a comma list: split it with ``split_header_list``)."""
    value = value.strip(" \t")
    m = _VIA_HEAD.match(value)
    if m is None:
        raise ValueError("invalid Via sent-protocol or sent-by")
    host = m.group(2)
    # Underscores are not legal in hostnames but container and VM names carry
    # them; responses go to the source address anyway, so tolerate them here.
    if not is_valid_host(host.replace("_", "a")):
        raise ValueError("invalid Via host")
    port = m.group(3)
    if port is not None and int(port) > 65535:
        raise ValueError("invalid Via port")
    params = parse_params(value[m.end() :])
    return SipVia(
        transport=m.group(1).upper(),
        host=host,
        port=int(port) if port is not None else None,
        params=tuple(params),
    )
