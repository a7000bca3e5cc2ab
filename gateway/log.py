"""Structured JSON logs that carry no personal data.

Every log line, ours and the libraries' (asyncio, aiohttp, aiortc through
the standard ``logging`` module), passes through ``redact`` before it is
written: e-mail addresses, phone numbers, SIP/tel user parts, display names
and fields whose *name* says they hold personal data are masked, and IP
addresses are truncated. Redaction works on the rendered values, so a
careless ``log.info("call from %s", from_header)`` is caught too.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "[redacted]"

#: Field names whose values are personal data whatever they look like.
PERSONAL_KEYS = frozenset(
    {
        "name",
        "display_name",
        "first_name",
        "last_name",
        "full_name",
        "given_name",
        "family_name",
        "citizen_name",
        "agent_name",
        "username",
        "user",
        "email",
        "e_mail",
        "phone",
        "phone_number",
        "msisdn",
        "password",
        "secret",
        "token",
        "authorization",
        "cookie",
        "from_header",
        "to_header",
        "contact",
        "address",
        "birthdate",
    }
)

#: Fields written by the logging machinery or holding random identifiers; left alone.
SAFE_KEYS = frozenset({"timestamp", "level", "logger", "node", "call_id", "room_id", "leg_id"})

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# sip:/sips:/tel: URIs: keep scheme and host (useful for operators), mask the user part.
_SIP_USER = re.compile(r"\b(sips?:)([^@\s;>\"]+)@", re.IGNORECASE)
_TEL_URI = re.compile(r"\b(tel:)[^\s;>\"]+", re.IGNORECASE)
# A display name in a SIP name-addr: "Erika Mustermann" <sip:...> or Erika <sip:...>.
_QUOTED_DISPLAY = re.compile(r"\"(?:[^\"\\]|\\.)*\"(\s*<)")
_BARE_DISPLAY = re.compile(r"((?:^|[:,]\s*))[^\s\"<>,:;=][^\"<>,:;=]*?(\s*<(?:sips?|tel):)", re.I)
# Phone numbers: an optional +, then 7 or more digits with common separators.
_PHONE = re.compile(r"(?<![\w.:/-])(?:\+|00)?\d(?:[\s\-/().]?\d){6,}(?![\w.:/-])")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


def _truncate_ipv4(match: re.Match[str]) -> str:
    parts = match.groups()
    if not all(0 <= int(p) <= 255 for p in parts):
        return match.group(0)
    if parts[0] == "127":
        return match.group(0)  # loopback says nothing about a person
    return f"{parts[0]}.{parts[1]}.{parts[2]}.0"


def _truncate_ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return text
    if addr.is_loopback or addr.is_unspecified:
        return text
    net = ipaddress.IPv6Network(f"{addr}/48", strict=False)
    return str(net.network_address)


def redact_text(text: str, *, redact_ip: bool = True) -> str:
    """Mask personal data inside one string."""
    text = _QUOTED_DISPLAY.sub(lambda m: f'"{MASK}"{m.group(1)}', text)
    text = _BARE_DISPLAY.sub(lambda m: f"{m.group(1)}{MASK}{m.group(2)}", text)
    text = _SIP_USER.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _TEL_URI.sub(lambda m: f"{m.group(1)}{MASK}", text)
    text = _EMAIL.sub(MASK, text)
    if redact_ip:
        text = _IPV4.sub(_truncate_ipv4, text)
        text = _IPV6.sub(_truncate_ipv6, text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    # A dotted quad is an address (handled above), not a phone number.
    if _IPV4.fullmatch(match.group(0)):
        return match.group(0)
    return MASK


def _redact_value(value: Any, redact_ip: bool) -> Any:
    if isinstance(value, str):
        return redact_text(value, redact_ip=redact_ip)
    if isinstance(value, dict):
        return {
            k: (MASK if str(k).lower() in PERSONAL_KEYS else _redact_value(v, redact_ip))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, redact_ip) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value), redact_ip=redact_ip)


def make_redactor(
    redact_ip: bool = True,
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """A structlog processor that masks personal data in every field."""

    def redact(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.lower() in PERSONAL_KEYS:
                event_dict[key] = MASK
            elif key not in SAFE_KEYS:
                event_dict[key] = _redact_value(event_dict[key], redact_ip)
        return event_dict

    return redact


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    redact_ip: bool = True,
    stream: TextIO | None = None,
    node_id: str | None = None,
) -> None:
    """Route structlog and the standard library through one redacting JSON renderer.

    Safe to call again on reload: it replaces the handlers it installed.
    """
    out = stream if stream is not None else sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if node_id:
        shared.insert(0, _add_node(node_id))
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            make_redactor(redact_ip),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("gatewayd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "gatewayd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would write raw paths (which carry link tokens);
    # the web layer logs requests itself, without them.
    logging.getLogger("aiohttp.access").disabled = True


def _add_node(
    node_id: str,
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    def add(_l: Any, _m: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("node", node_id)
        return event_dict

    return add


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; names follow the module, e.g. ``gateway.app``."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
