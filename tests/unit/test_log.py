"""Log redaction: no personal data reaches a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.log import MASK, configure_logging, get_logger, redact_text


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream, node_id="n1")
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


PERSONAL = [
    "erika.mustermann@arbeitsagentur.example",
    "+49 30 1234567",
    "0049 (30) 123-4567",
    "015112345678",
    "Erika Mustermann",
    "sip:erika.m@agency.example",
    "sips:4930123456@10.20.30.40",
    "tel:+4930123456",
]


def test_structlog_fields_and_message_are_redacted(captured: io.StringIO) -> None:
    log = get_logger("test")
    log.info(
        'INVITE from "Erika Mustermann" <sip:erika.m@agency.example>;tag=9 for erika.mustermann@arbeitsagentur.example',
        display_name="Erika Mustermann",
        contact="<sips:4930123456@10.20.30.40>",
        note="call back on +49 30 1234567 or 0049 (30) 123-4567 or 015112345678, tel:+4930123456",
        nested={"email": "x@y.example", "ok": 5, "list": ["mail a.b@c.example"]},
        duration_ms=1234,
    )
    text = captured.getvalue()
    for item in PERSONAL:
        assert item not in text, item
    record = _lines(captured)[-1]
    assert record["display_name"] == MASK
    assert record["duration_ms"] == 1234
    assert record["node"] == "n1"
    assert record["nested"] == {"email": MASK, "ok": 5, "list": [f"mail {MASK}"]}
    assert "agency.example" in str(record["event"])  # the host stays: operators need it


def test_standard_library_logging_is_redacted_too(captured: io.StringIO) -> None:
    logging.getLogger("aiortc.some.module").warning("peer %s said hi", "max@example.org")
    record = _lines(captured)[-1]
    assert "max@example.org" not in json.dumps(record)
    assert record["logger"] == "aiortc.some.module"


def test_exceptions_are_redacted(captured: io.StringIO) -> None:
    log = get_logger("test")
    try:
        raise ValueError("bad user erika@example.org")
    except ValueError:
        log.exception("failed")
    assert "erika@example.org" not in captured.getvalue()
    assert "ValueError" in captured.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("peer 192.168.10.77:5060", "peer 192.168.10.0:5060"),
        ("peer 2001:db8:1:2::77", "peer 2001:db8:1::"),
        ("loopback 127.0.0.1:5060 and ::1", "loopback 127.0.0.1:5060 and ::1"),
        ("took 1234 ms, 200 OK, version 2.4.6", "took 1234 ms, 200 OK, version 2.4.6"),
        ("at 2026-11-23T12:17:00.123Z", "at 2026-11-23T12:17:00.123Z"),
        ("From: Max Mustermann <sip:max@h>", f"From: {MASK} <sip:{MASK}@h>"),
    ],
)
def test_redact_text_cases(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_ip_truncation_can_be_turned_off() -> None:
    assert redact_text("peer 192.168.10.77", redact_ip=False) == "peer 192.168.10.77"
