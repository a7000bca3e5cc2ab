"""SIP session timers (RFC 4028), sans-IO: negotiation and deadlines.

A dialog whose peer vanished without BYE (crashed phone, cut link) would
stay up for ever; session timers make one side refresh the session with a
re-INVITE or UPDATE every ``interval / 2`` seconds and the other side end it
when no refresh came within ``interval - min(32, interval / 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridges.sip.message import SipRequest, SipResponse

DEFAULT_SESSION_EXPIRES = 1800
DEFAULT_MIN_SE = 90
#: RFC 4028 §4: never below 90 s.
ABSOLUTE_MIN_SE = 90


@dataclass(frozen=True)
class SessionTimer:
    """What was agreed: the interval and who refreshes."""

    interval: int
    we_refresh: bool

    def next_deadline(self, now: float) -> float:
        """When we must refresh (refresher) or give up (the other side)."""
        if self.we_refresh:
            return now + self.interval / 2
        return now + self.interval - min(32.0, self.interval / 3)


def _parse(value: str | None) -> tuple[int | None, str | None]:
    """``Session-Expires: 1800;refresher=uac`` -> (1800, "uac")."""
    if not value:
        return None, None
    head, *params = [p.strip() for p in value.split(";")]
    try:
        seconds = int(head)
    except ValueError:
        return None, None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return seconds, refresher


def _min_se(message: SipRequest | SipResponse) -> int:
    try:
        return int((message.headers.get("Min-SE") or "0").split(";")[0])
    except ValueError:
        return 0


@dataclass(frozen=True)
class UasDecision:
    """How a UAS answers an INVITE/UPDATE as far as session timers go."""

    #: 422 when the offered interval is too brief, else None.
    reject_status: int | None
    #: Headers to add to the response (Min-SE with 422; Session-Expires/Require with 2xx).
    headers: tuple[tuple[str, str], ...]
    timer: SessionTimer | None


def negotiate_as_uas(
    request: SipRequest,
    *,
    default: int = DEFAULT_SESSION_EXPIRES,
    min_se: int = DEFAULT_MIN_SE,
) -> UasDecision:
    """RFC 4028 §9: check the request's Session-Expires and pick the refresher."""
    offered, refresher = _parse(request.headers.get("Session-Expires"))
    supports_timer = "timer" in {t.lower() for t in request.supported}
    if offered is not None and offered < min_se:
        return UasDecision(422, (("Min-SE", str(min_se)),), None)
    if offered is None:
        if not supports_timer:
            return UasDecision(None, (), None)
        offered = max(default, _min_se(request), min_se)
    if refresher is None:
        refresher = "uac" if supports_timer else "uas"
    headers: list[tuple[str, str]] = [("Session-Expires", f"{offered};refresher={refresher}")]
    if supports_timer:
        headers.append(("Require", "timer"))
    return UasDecision(None, tuple(headers), SessionTimer(offered, refresher == "uas"))


def request_headers(
    interval: int = DEFAULT_SESSION_EXPIRES, min_se: int = DEFAULT_MIN_SE
) -> list[tuple[str, str]]:
    """What a UAC puts in an INVITE to ask for session timers."""
    return [("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def after_422(response: SipResponse, current: int) -> int | None:
    """The interval to retry with after 422 (its Min-SE), None if not larger."""
    wanted = _min_se(response)
    return wanted if wanted > current else None


def negotiate_as_uac(response: SipResponse) -> SessionTimer | None:
    """RFC 4028 §7.2: the 2xx says the interval and the refresher (default: us)."""
    seconds, refresher = _parse(response.headers.get("Session-Expires"))
    if seconds is None:
        return None
    return SessionTimer(max(seconds, ABSOLUTE_MIN_SE), refresher != "uas")
