"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1).

On a stream, Content-Length is the only thing that says where a message
ends, so it is mandatory; the header block and the body have hard caps so a
peer cannot make us buffer without bound. Between messages a lone CRLF is
skipped (§7.5) and a double CRLF is a keep-alive ping that the transport
answers with ``PONG``.

After ``feed`` raises, the stream is unusable: message boundaries are lost,
so the transport answers if it can (``build_error_response(err.raw, err)``)
and closes the connection. Further ``feed`` calls raise the same error.
"""

from __future__ import annotations

from bridges.sip.message import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    ParseReason,
    SipParseError,
)
from bridges.sip.salvage import salvage_request

#: What the transport writes back for a keep-alive ping.
PONG = b"\r\n"
_CRLF = b"\r\n"
_CRLF2 = b"\r\n\r\n"


def is_keepalive(datagram: bytes) -> bool:
    """Whether a datagram is only CRLFs (a keep-alive some UAs send over UDP too)."""
    return bool(datagram) and not datagram.strip(b"\r\n")


class SipStreamFramer:
    """Turns stream bytes into whole SIP messages (sans-IO).

    ``feed`` returns, in order, each complete message as ``bytes`` (ready for
    ``parse_message``) and ``None`` for each keep-alive ping.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._scan_from = 0  # where to resume looking for the end of the headers
        self._frame_len: int | None = None  # total length once the headers are known
        self._error: SipParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True after a framing error: the stream must be closed."""
        return self._error is not None

    def feed(self, data: bytes) -> list[bytes | None]:
        """Add received bytes; return the messages (and pings, as None) now complete.

        Raises ``SipParseError``: 400 ``content_length`` (missing, malformed
        or conflicting Content-Length), 413 ``headers_too_large`` /
        ``too_large`` (over the caps).
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        events: list[bytes | None] = []
        try:
            while self._next(events):
                pass
        except SipParseError as err:
            self._error = err
            self._buf.clear()
            raise
        return events

    def _next(self, events: list[bytes | None]) -> bool:
        """Take one event off the buffer if there is one; False when more bytes are needed."""
        buf = self._buf
        if self._frame_len is None:
            if buf[:1] == b"\r":
                return self._between_messages(events)
            end = buf.find(_CRLF2, self._scan_from)
            if end < 0:
                if len(buf) > self.max_header_bytes + 3:
                    raise SipParseError(
                        "header block over the cap",
                        reason="headers_too_large",
                        status=413,
                        can_answer=False,
                    )
                self._scan_from = max(0, len(buf) - 3)
                return False
            head = bytes(buf[:end])
            if end > self.max_header_bytes:
                raise SipParseError(
                    "header block over the cap",
                    reason="headers_too_large",
                    status=413,
                    can_answer=False,
                    raw=head,
                )
            self._frame_len = end + 4 + self._content_length(head)
        if len(buf) < self._frame_len:
            return False
        events.append(bytes(buf[: self._frame_len]))
        del buf[: self._frame_len]
        self._frame_len = None
        self._scan_from = 0
        return True

    def _between_messages(self, events: list[bytes | None]) -> bool:
        buf = self._buf
        if buf[:4] == _CRLF2:
            events.append(None)
            del buf[:4]
            return True
        if len(buf) < 4 and _CRLF2.startswith(bytes(buf)):
            return False  # "\r", "\r\n" or "\r\n\r": may still become a ping
        if buf[:2] == _CRLF:
            del buf[:2]
            return True
        raise SipParseError("bare CR between messages", reason="bad_start_line", can_answer=False)

    def _content_length(self, head: bytes) -> int:
        """Content-Length from a raw header block; mandatory on streams."""
        values: set[str] = set()
        # latin-1 never fails and keeps byte offsets; names are ASCII anyway.
        lines = head.decode("latin-1").split("\r\n")
        for i, line in enumerate(lines[1:], start=1):
            name, colon, value = line.partition(":")
            if colon and name.rstrip(" \t").lower() in ("content-length", "l"):
                # Folded continuation lines belong to this value.
                for more in lines[i + 1 :]:
                    if more[:1] not in (" ", "\t"):
                        break
                    value += more
                values.add(value.strip(" \t"))
        if not values:
            raise self._framing_error("no Content-Length on a stream", "content_length", head)
        if len(values) > 1:
            raise self._framing_error("conflicting Content-Length", "content_length", head)
        value = values.pop()
        if not (value.isascii() and value.isdigit()):
            raise self._framing_error("Content-Length is not a number", "content_length", head)
        digits = value.lstrip("0") or "0"
        if len(digits) > 9 or int(digits) > self.max_body_bytes:
            raise self._framing_error("body over the cap", "too_large", head, status=413)
        return int(digits)

    @staticmethod
    def _framing_error(
        message: str, reason: ParseReason, head: bytes, *, status: int = 400
    ) -> SipParseError:
        # The header block is complete, so the peer can be told why before
        # the connection is closed.
        return SipParseError(
            message,
            reason=reason,
            status=status,
            can_answer=salvage_request(head) is not None,
            raw=head + _CRLF2,
        )
