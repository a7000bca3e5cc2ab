"""SIP header storage and the lexing that every header value needs.

``SipHeaders`` is an ordered multi-map that keeps each header line as the
peer sent it (after unfolding), so that a parsed message serializes back to
what was received and a proxy-like copy (Via, From, To into a response) is a
string copy, not a parse and re-print. Names are case-insensitive and compact
forms (``v``, ``i``, ``m``...) are expanded to their full names on the way in.

Why not ``sipmessage.Headers``: it merges every value of a name into the
position of the first one, lower-cases keys on every comparison, and does not
know which headers are comma-separated lists, so ``Contact: "Doe, J" <...>``
cannot be split safely with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# RFC 3261 and the extensions a gateway meets, written as they are usually
# printed; any other name is kept as received.
_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Security-Client",
    "Security-Server", "Security-Verify", "Server", "Service-Route", "Session-Expires",
    "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp",
    "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip

#: IANA compact forms (RFC 3261 §7.3.3 and later RFCs).
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "o": "Event", "r": "Refer-To", "s": "Subject",
    "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip

#: Lower-case name or compact form as seen on the wire -> (lookup key, printed name).
KNOWN_HEADERS: dict[str, tuple[str, str]] = {n.lower(): (n.lower(), n) for n in _KNOWN_NAMES}
KNOWN_HEADERS.update({c: (full.lower(), full) for c, full in COMPACT_FORMS.items()})

#: Headers whose grammar is a comma-separated list (``#element``), by lookup key.
#: Others (Date, WWW-Authenticate, Subject...) may contain commas that do not
#: separate values, so they are never split.
LIST_HEADERS = frozenset(
    {
        "accept", "accept-contact", "accept-encoding", "accept-language", "alert-info", "allow",
        "allow-events", "call-info", "contact", "content-encoding", "content-language",
        "error-info", "in-reply-to", "p-asserted-identity", "p-preferred-identity", "path",
        "proxy-require", "reason", "record-route", "reject-contact", "request-disposition",
        "require", "route", "security-client", "security-server", "security-verify",
        "service-route", "supported", "unsupported", "via", "warning",
    }
)  # fmt: skip

TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
# CR/LF would inject lines; NUL and lone surrogates cannot be sent as UTF-8 text.
_BAD_VALUE_CHARS = re.compile("[\r\n\x00\ud800-\udfff]")
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)

# One element of a comma list: quoted strings and <...> may contain commas.
# Possessive quantifiers keep hostile input linear.
_LIST_ITEM = re.compile(r'[ \t]*((?:"(?:[^"\\]|\\.)*+"|<[^>]*+>|[^",<]++)*+)[ \t]*(?:,|\Z)', re.S)

# One ";name[=value]" parameter; value is a quoted string or a run of non-space
# characters (a bare IPv6 address in Via received= is legal, RFC 5118).
_PARAM = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9.!%*_+`\'~-]++)"
    r'(?:[ \t]*=[ \t]*("(?:[^"\\]|\\.)*+"|[^\s;,"<>]++))?[ \t]*'
)


def header_key(name: str) -> tuple[str, str]:
    """Return ``(lookup key, printed name)`` for a header name or compact form."""
    hit = KNOWN_HEADERS.get(name.lower())
    if hit is not None:
        return hit
    return name.lower(), name


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and <>.

    Empty elements (``a, , b``) are dropped, as the RFC 2616 list rule allows.
    Raises ``ValueError`` on an unterminated quoted string or ``<``.
    """
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip(" \t") for s in value.split(",")) if p]
    items: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        m = _LIST_ITEM.match(value, pos)
        if m is None:
            raise ValueError("unbalanced quote or angle bracket in list")
        if m.group(1):
            items.append(m.group(1).rstrip(" \t"))
        pos = m.end()
    return items


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """Parse ``;a=1;b;c="x y"`` into ``[(name, value or None), ...]``.

    Values are returned as written (quoted strings keep their quotes, so they
    print back unchanged). Raises ``ValueError`` if anything is left over.
    """
    params: list[tuple[str, str | None]] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _PARAM.match(text, pos)
        if m is None:
            if text[pos:].strip(" \t"):
                raise ValueError(f"bad parameter near {text[pos : pos + 20]!r}")
            break
        params.append((m.group(1), m.group(2)))
        pos = m.end()
    return params


def find_param(params: Iterable[tuple[str, str | None]], name: str) -> tuple[bool, str | None]:
    """Look up parameter ``name`` (given in lower case): ``(present, value)``."""
    for key, value in params:
        if key.lower() == name:
            return True, value
    return False, None


def unquote(value: str) -> str:
    """Remove the quotes and backslash escapes of a quoted-string."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value


def quote(value: str) -> str:
    """Make a quoted-string of ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _first_of(key: str, value: str) -> str:
    if key in LIST_HEADERS and "," in value:
        items = _lenient_split(value)
        return items[0] if items else ""
    return value


def _lenient_split(value: str) -> list[str]:
    # The raw-header API never raises on what a peer wrote: an unsplittable
    # value is returned whole and the typed accessor that parses it complains.
    try:
        return split_header_list(value)
    except ValueError:
        return [value]


class SipHeaders:
    """Ordered, case-insensitive multi-map of SIP header lines.

    ``get`` returns the first *value* (for list headers such as Via or Contact
    the first comma-separated element), ``getlist`` every value in order across
    lines and commas. Mutators validate names and values so that no caller can
    inject a line break into a message, and strip surrounding SP/HTAB as the
    parser does, so a built message equals its parsed serialization.
    """

    __slots__ = ("_entries",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lookup key, printed name, value)
        self._entries: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def from_entries(cls, entries: list[tuple[str, str, str]]) -> SipHeaders:
        """Adopt pre-validated ``(key, name, value)`` entries (parser fast path)."""
        headers = cls.__new__(cls)
        headers._entries = entries
        return headers

    @property
    def entries(self) -> list[tuple[str, str, str]]:
        """The ``(key, name, value)`` entries; treat as read-only."""
        return self._entries

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (first list element for list headers)."""
        key = header_key(name)[0]
        for k, _, value in self._entries:
            if k == key:
                return _first_of(key, value)
        return default

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name`` in order, list headers split on commas."""
        key = header_key(name)[0]
        values = [v for k, _, v in self._entries if k == key]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for value in values:
            out.extend(_lenient_split(value))
        return out

    def getlines(self, name: str) -> list[str]:
        """Raw line values of ``name``, unsplit (for copying headers verbatim)."""
        key = header_key(name)[0]
        return [v for k, _, v in self._entries if k == key]

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a line, or with ``first`` put it above existing lines of that name."""
        key, printed = _checked(name, value)
        entry = (key, printed, value.strip(" \t"))
        if first:
            for i, (k, _, _) in enumerate(self._entries):
                if k == key:
                    self._entries.insert(i, entry)
                    return
        self._entries.append(entry)

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line, where the first one was."""
        key, printed = _checked(name, value)
        value = value.strip(" \t")
        out: list[tuple[str, str, str]] = []
        placed = False
        for entry in self._entries:
            if entry[0] != key:
                out.append(entry)
            elif not placed:
                out.append((key, printed, value))
                placed = True
        if not placed:
            out.append((key, printed, value))
        self._entries = out

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of ``name`` (first list element); add it if absent.

        Used to rewrite the top Via (received/rport) without touching the rest.
        """
        key, printed = _checked(name, value)
        value = value.strip(" \t")
        for i, (k, p, v) in enumerate(self._entries):
            if k == key:
                rest = _lenient_split(v)[1:] if key in LIST_HEADERS else []
                new = [(key, p, value)]
                if rest:
                    new.append((key, p, ", ".join(rest)))
                self._entries[i : i + 1] = new
                return
        self._entries.append((key, printed, value))

    def remove(self, name: str) -> None:
        """Remove every line of ``name`` (no error if absent)."""
        key = header_key(name)[0]
        self._entries = [e for e in self._entries if e[0] != key]

    def copy(self) -> SipHeaders:
        """A shallow copy (entries are immutable tuples)."""
        return SipHeaders.from_entries(list(self._entries))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)[0]
        return any(k == key for k, _, _ in self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((printed, value) for _, printed, value in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"SipHeaders({[(n, v) for _, n, v in self._entries]!r})"


def _checked(name: str, value: str) -> tuple[str, str]:
    if not TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if _BAD_VALUE_CHARS.search(value):
        raise ValueError(f"header {name} value contains CR, LF, NUL or a surrogate")
    return header_key(name)
