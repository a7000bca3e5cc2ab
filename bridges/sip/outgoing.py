"""Building the requests a user agent sends: new requests, CANCEL, ACK.

Randomness (branches, tags, Call-IDs) comes from an injected ``IdSource`` so
tests are deterministic; the real one uses ``secrets``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from bridges.sip.addressing import parse_via
from bridges.sip.auth import AUTH_HEADERS, DigestClient
from bridges.sip.message import SipMessage, SipRequest, SipResponse

#: RFC 3261 §8.1.1.7: branches starting with this are globally unique.
MAGIC_COOKIE = "z9hG4bK"


class IdSource:
    """Branches, tags and Call-IDs: unguessable, and injectable for tests."""

    def __init__(self, token: Callable[[int], str] | None = None) -> None:
        self._token = token or secrets.token_hex

    def branch(self) -> str:
        """A Via branch with the RFC 3261 magic cookie."""
        return MAGIC_COOKIE + self._token(8)

    def tag(self) -> str:
        """A From/To tag."""
        return self._token(6)

    def call_id(self, host: str) -> str:
        """A globally unique Call-ID (random part @ our host)."""
        return f"{self._token(12)}@{host}"


def via_value(transport: str, host: str, port: int, branch: str) -> str:
    """``SIP/2.0/UDP host:port;branch=...;rport`` (rport: RFC 3581, always asked for)."""
    proto = {"ws": "WS", "wss": "WSS"}.get(transport, transport.upper())
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"SIP/2.0/{proto} {hostport};branch={branch};rport"


def build_request(
    method: str,
    uri: str,
    *,
    via: str,
    from_value: str,
    to_value: str,
    call_id: str,
    cseq: int,
    contact: str | None = None,
    routes: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    max_forwards: int = 70,
) -> SipRequest:
    """A request with the mandatory headers of §8.1.1 in the usual order."""
    items: list[tuple[str, str]] = [
        ("Via", via),
        ("Max-Forwards", str(max_forwards)),
    ]
    items.extend(("Route", r) for r in routes)
    items += [
        ("From", from_value),
        ("To", to_value),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is not None:
        items.append(("Contact", contact))
    items.extend(headers)
    if body:
        items.append(("Content-Type", content_type or "application/sdp"))
    return SipRequest(method, uri, items, body)


def _copy(request: SipMessage, name: str) -> list[tuple[str, str]]:
    return [(name, v) for v in request.headers.getlines(name)]


def build_cancel(invite: SipRequest) -> SipRequest:
    """CANCEL for a pending INVITE (§9.1): same Request-URI, Call-ID, From,
    To, CSeq number and top Via (branch included), and the same Route set."""
    items: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    items += [("Max-Forwards", "70")]
    items += _copy(invite, "Route")
    items += _copy(invite, "From") + _copy(invite, "To") + _copy(invite, "Call-ID")
    items.append(("CSeq", f"{invite.cseq_number} CANCEL"))
    return SipRequest("CANCEL", invite.uri, items)


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """ACK for a non-2xx final response (§17.1.1.3), sent by the INVITE client
    transaction: the INVITE's top Via and Route set, the response's To."""
    items: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    items += [("Max-Forwards", "70")]
    items += _copy(invite, "Route")
    items += _copy(invite, "From") + _copy(response, "To") + _copy(invite, "Call-ID")
    items.append(("CSeq", f"{invite.cseq_number} ACK"))
    return SipRequest("ACK", invite.uri, items)


def authorized_retry(
    request: SipRequest, response: SipResponse, digest: DigestClient, branch: str
) -> SipRequest | None:
    """``request`` again with digest credentials for the 401/407 ``response``,
    a new Via branch and CSeq + 1 (§22.2); None when the client gives up."""
    challenge_header = AUTH_HEADERS[response.status][0]
    answer = digest.respond(
        response.status,
        response.headers.getlines(challenge_header),
        request.method,
        request.uri,
        request.body,
    )
    if answer is None:
        return None
    retry = retry_of(request, branch)
    retry.headers.remove(answer[0])
    retry.headers.add(answer[0], answer[1])
    return retry


def retry_of(request: SipRequest, branch: str) -> SipRequest:
    """A copy of ``request`` for a new client transaction: new Via branch,
    CSeq + 1 (a retry after 401/407/422 is a new request, §8.1.3.5)."""
    retry = SipRequest(request.method, request.uri, request.headers.copy(), request.body)
    retry.replace_top_via(parse_via(str(request.top_via)).with_param("branch", branch))
    retry.headers.set("CSeq", f"{request.cseq_number + 1} {request.method}")
    return retry
