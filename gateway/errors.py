"""The gateway's error tree.

Every error knows the HTTP status and the SIP status with which an edge
(the web app, the SIP transport) answers when it escapes to that edge, so
that no handler has to map exceptions by hand and no error becomes a 500
by accident.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    ``http_status`` and ``sip_status`` are class defaults; an instance may
    carry a more precise status (a SIP parser error knows whether the
    message deserves 400, 416 or 505).
    """

    http_status: int = 500
    sip_status: int = 500
    reason: str = "Server Internal Error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        sip_status: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status
        if sip_status is not None:
            self.sip_status = sip_status
        if reason is not None:
            self.reason = reason


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(problems))
        self.problems = problems


class BadRequest(GatewayError):
    """The peer sent something malformed."""

    http_status = 400
    sip_status = 400
    reason = "Bad Request"


class NotFound(GatewayError):
    """The addressed resource (room, appointment, dialog) does not exist."""

    http_status = 404
    sip_status = 404
    reason = "Not Found"


class Unauthorized(GatewayError):
    """Credentials are missing or wrong."""

    http_status = 401
    sip_status = 401
    reason = "Unauthorized"


class Forbidden(GatewayError):
    """The peer is known but not allowed to do this."""

    http_status = 403
    sip_status = 403
    reason = "Forbidden"


class NotAcceptable(GatewayError):
    """No common media (SDP offer/answer failed)."""

    http_status = 406
    sip_status = 488
    reason = "Not Acceptable Here"


class Busy(GatewayError):
    """The room or the callee is full."""

    http_status = 409
    sip_status = 486
    reason = "Busy Here"


class Unavailable(GatewayError):
    """The node cannot take the request now (draining, over capacity).

    ``retry_after`` (seconds) becomes the Retry-After header on both edges.
    """

    http_status = 503
    sip_status = 503
    reason = "Service Unavailable"

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Draining(Unavailable):
    """The node is draining for shutdown or upgrade; new calls go elsewhere."""
