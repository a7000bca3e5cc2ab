"""SIP dialogs (RFC 3261 §12), sans-IO.

A ``Dialog`` holds what both ends agreed when the INVITE was answered:
Call-ID, tags, CSeq counters, the remote target and the route set. It
builds in-dialog requests (BYE, re-INVITE, UPDATE, INFO, ACK) with the
right Request-URI and Route headers (loose and strict routing, §12.2.1.1),
and checks in-dialog requests from the peer (CSeq order, §12.2.2).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from bridges.sip.addressing import split_address
from bridges.sip.message import SipRequest, SipResponse
from bridges.sip.outgoing import IdSource, build_request, via_value


class DialogState(enum.Enum):
    """Early (after a 1xx with a To tag) or confirmed (after a 2xx)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


DialogId = tuple[str, str, str]


@dataclass
class Dialog:
    """One dialog, from our side."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    #: The peer's Contact URI: where in-dialog requests go.
    remote_target: str
    #: Route set, in the order our requests must carry it.
    route_set: list[str]
    local_seq: int
    #: Highest CSeq seen from the peer (None until the first request).
    remote_seq: int | None
    #: True when we sent the INVITE.
    is_uac: bool
    #: Our Contact header value.
    local_contact: str
    secure: bool = False
    state: DialogState = DialogState.CONFIRMED
    #: Session-timer (RFC 4028) values agreed, if any.
    session_expires: int | None = None
    refresher_is_us: bool = False
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> DialogId:
        """(Call-ID, local tag, remote tag): the dialog's key (§12)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # --- creation -----------------------------------------------------------------------
    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """The dialog a UAS creates when it answers ``request`` (§12.1.1)."""
        contacts = request.headers.getlist("Contact")
        target = split_address(contacts[0]).uri if contacts else request.uri
        routes = request.headers.getlist("Record-Route")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_uri=split_address(request.headers.get("To") or "").uri,
            remote_uri=split_address(request.headers.get("From") or "").uri,
            remote_target=target,
            route_set=list(routes),
            local_seq=0,
            remote_seq=request.cseq_number,
            is_uac=False,
            local_contact=local_contact,
            secure=request.uri.lower().startswith("sips:"),
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The dialog a UAC creates from a 1xx/2xx with a To tag (§12.1.2)."""
        contacts = response.headers.getlist("Contact")
        target = split_address(contacts[0]).uri if contacts else request.uri
        routes = list(reversed(response.headers.getlist("Record-Route")))
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=response.to_tag or "",
            local_uri=split_address(request.headers.get("From") or "").uri,
            remote_uri=split_address(request.headers.get("To") or "").uri,
            remote_target=target,
            route_set=routes,
            local_seq=request.cseq_number,
            remote_seq=None,
            is_uac=True,
            local_contact=request.headers.get("Contact") or "",
            secure=request.uri.lower().startswith("sips:"),
            state=state,
        )

    def update_target(self, message: SipRequest | SipResponse) -> None:
        """A re-INVITE/UPDATE (or its 2xx) may change the remote target (§12.2)."""
        contacts = message.headers.getlist("Contact")
        if contacts:
            self.remote_target = split_address(contacts[0]).uri

    def confirm(self, response: SipResponse) -> None:
        """The 2xx arrived: an early dialog becomes confirmed; route set is fixed now."""
        if self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.headers.getlist("Record-Route")))
            self.update_target(response)
            self.state = DialogState.CONFIRMED

    # --- requests from us -------------------------------------------------------------------
    def _addressing(self) -> tuple[str, list[str]]:
        """Request-URI and Route headers per §12.2.1.1 (loose vs strict routing)."""
        if not self.route_set:
            return self.remote_target, []
        first = split_address(self.route_set[0])
        if ";lr" in first.uri.lower():
            return self.remote_target, list(self.route_set)
        # Strict router: it goes in the Request-URI, the target at the end.
        return first.uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> str:
        """The URI the transport should resolve: first route, else the target."""
        if self.route_set:
            return split_address(self.route_set[0]).uri
        return self.remote_target

    def create_request(
        self,
        method: str,
        ids: IdSource,
        *,
        transport: str,
        host: str,
        port: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        """An in-dialog request. ACK and CANCEL reuse the INVITE's CSeq (pass ``cseq``)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._addressing()
        return build_request(
            method,
            uri,
            via=via_value(transport, host, port, ids.branch()),
            from_value=f"<{self.local_uri}>;tag={self.local_tag}",
            to_value=f"<{self.remote_uri}>;tag={self.remote_tag}",
            call_id=self.call_id,
            cseq=cseq,
            contact=self.local_contact if method in ("INVITE", "UPDATE") else None,
            routes=routes,
            headers=headers,
            body=body,
            content_type=content_type,
        )

    # --- requests from the peer --------------------------------------------------------------
    def check_remote_cseq(self, request: SipRequest) -> int | None:
        """§12.2.2: a CSeq lower than the last one is answered 500; returns the
        status to answer with, or None when the request is in order."""
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq_number
        if self.remote_seq is not None and number < self.remote_seq:
            return 500
        self.remote_seq = number
        return None


def dialog_id_of_request(request: SipRequest) -> DialogId:
    """The id under which *we* filed a dialog a peer's in-dialog request belongs to."""
    return (request.call_id, request.to_tag or "", request.from_tag or "")


def dialog_id_of_response(response: SipResponse) -> DialogId:
    """The id of our dialog a response to our in-dialog request belongs to."""
    return (response.call_id, response.from_tag or "", response.to_tag or "")
