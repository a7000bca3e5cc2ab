"""Salvage what an error response needs from a request that failed strict parsing.

A request with a bad version, an unknown URI scheme or a broken header still
deserves an answer (505, 416, 400) when its Via, Call-ID and CSeq can be read:
the client then stops retransmitting. This reader is deliberately forgiving
(any line break, any encoding, garbage lines skipped) and has a scan cap so
that the error path cannot cost more than the happy path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from bridges.sip.addressing import parse_cseq, parse_via, split_address
from bridges.sip.headers import header_key, split_header_list

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_METHOD = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) ")
_SCAN_CAP = 64 * 1024
_WANTED = frozenset({"via", "from", "to", "call-id", "cseq"})


@dataclass(frozen=True, slots=True)
class SalvagedRequest:
    """The fields of a broken request that an error response copies."""

    method: str
    vias: list[str]
    call_id: str
    cseq: str
    from_: str | None
    to: str | None

    def answer_headers(self, to_tag: str | None = None) -> list[tuple[str, str]]:
        """Via, From, To (tagged), Call-ID and CSeq for an error response.

        Without ``to_tag`` the tag is derived from the request, so that a
        retransmission gets the same answer (stateless UAS, RFC 3261 §8.2.7).
        """
        headers = [("Via", v) for v in self.vias]
        if self.from_ is not None:
            headers.append(("From", self.from_))
        if self.to is not None:
            to = self.to
            try:
                has_tag = split_address(to).param("tag") is not None
            except ValueError:
                has_tag = ";tag=" in to.lower()
            if not has_tag:
                seed = f"{self.call_id}|{self.cseq}|{self.vias[0]}"
                tag = to_tag or hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()
                to = f"{to};tag={tag}"
            headers.append(("To", to))
        return [*headers, ("Call-ID", self.call_id), ("CSeq", self.cseq)]


def salvage_request(data: bytes) -> SalvagedRequest | None:
    """The answerable parts of ``data``, or None if it cannot be answered.

    None for responses and ACKs (never answered) and for requests without a
    parseable top Via, a Call-ID or a parseable CSeq (nothing to match on).
    """
    raw = data.lstrip(b"\r\n")[:_SCAN_CAP]
    end = raw.find(b"\r\n\r\n")
    # NULs cannot go into a header we send back; dropping them is best effort.
    text = (raw if end < 0 else raw[:end]).decode("utf-8", "replace").replace("\x00", "")
    lines = _LINE_BREAK.split(text)
    m = _METHOD.match(lines[0])
    if m is None or lines[0][:4].upper() == "SIP/" or m.group(1) == "ACK":
        return None
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if last:  # folded continuation of a header we keep
                last[-1] = last[-1] + " " + line.strip(" \t")
            continue
        name, colon, value = line.partition(":")
        key = header_key(name.strip(" \t"))[0]
        if not colon or key not in _WANTED:
            last = None
            continue
        last = fields.setdefault(key, [])
        last.append(value.strip(" \t"))
    try:
        vias = [v for line in fields.get("via", ()) for v in split_header_list(line)]
        parse_via(vias[0])
        cseq = fields["cseq"][0]
        parse_cseq(cseq)
        call_id = fields["call-id"][0]
    except (ValueError, IndexError, KeyError):
        return None
    if not call_id or any(c.isspace() for c in call_id):
        return None
    return SalvagedRequest(
        method=m.group(1),
        vias=vias,
        call_id=call_id,
        cseq=cseq,
        from_=fields["from"][0] if "from" in fields else None,
        to=fields["to"][0] if "to" in fields else None,
    )
