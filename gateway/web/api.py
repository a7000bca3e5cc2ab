"""The REST API under /api/v1: appointments booked by other systems.

Bearer tokens come from ``api.tokens``; without any the API answers 404
(it is off, and start-up logged why). Bodies are JSON objects with known
keys only; anything else gets a 4xx that says what is wrong. The OpenAPI
document at /api/v1/openapi.json describes exactly what is served.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, GatewayError
from gateway.settings import Settings
from gateway.settings_dialin import room_uri
from gateway.store.appointments import Appointment, parse_time
from gateway.web.keys import SETTINGS, STORE

routes = web.RouteTableDef()

_FIELDS = {"starts_at", "duration_min", "language"}


class Unauthenticated(GatewayError):
    """No or a wrong bearer token."""

    http_status = 401
    reason = "Unauthorized"


def base_url(settings: Settings, request: web.Request) -> str:
    """Where links point: ``appointments.public_url``, else this listener's own address."""
    if settings.appointments.public_url is not None:
        return str(settings.appointments.public_url).rstrip("/")
    scheme = "https" if settings.web.tls else "http"
    return f"{scheme}://{request.host}"


def citizen_url(base: str, token: str) -> str:
    """The citizen's link."""
    return f"{base}/c/{token}"


def agent_url(base: str, appointment: Appointment) -> str:
    """The agent's page of an appointment (behind the console login)."""
    return f"{base}/agent/appointments/{appointment.id}"


def dial_in(settings: Settings, appointment: Appointment) -> dict[str, str | None]:
    """``sip_uri`` and ``pin`` of an appointment (both None while dial-in is off)."""
    uri = room_uri(settings, appointment.sip_alias)
    return {"sip_uri": uri, "pin": appointment.pin if uri is not None else None}


def authorize(request: web.Request) -> None:
    """A bearer token from ``api.tokens``, or 401 (404 while the REST API is off)."""
    tokens = request.app[SETTINGS]().api.tokens
    if not tokens:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "the REST API is off (no api.tokens)"}),
            content_type="application/json",
        )
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    matched = False
    for token in tokens:  # compare with every token: timing reveals nothing
        matched |= hmac.compare_digest(value.encode(), token.get_secret_value().encode())
    if scheme.lower() != "bearer" or not matched:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "unauthorized"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="gatewayd-api"'},
        )


async def json_object(
    request: web.Request, fields: Collection[str], *, empty_ok: bool = True
) -> dict[str, Any]:
    """The request's JSON object body with only ``fields`` in it (``{}`` for an empty
    body when ``empty_ok``): 415 for another content type, 400 for anything else wrong."""
    body = await request.read()
    if empty_ok and not body.strip():
        return {}
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": "send application/json"}), content_type="application/json"
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    return data


@routes.post("/api/v1/appointments")
async def create_appointment(request: web.Request) -> web.Response:
    """Book an appointment; 201 with its links."""
    authorize(request)
    data = await json_object(request, _FIELDS)
    settings = request.app[SETTINGS]()
    starts_at = parse_time(data["starts_at"]) if data.get("starts_at") is not None else None
    language = data.get("language")
    if language is not None and not isinstance(language, str):
        raise BadRequest("language must be a string")
    appointment, token = await request.app[STORE].appointments.create(
        starts_at=starts_at,
        duration_min=data.get("duration_min", settings.appointments.default_duration_min),
        language=language,
    )
    base = base_url(settings, request)
    body = {
        "id": appointment.id,
        "citizen_url": citizen_url(base, token),
        "agent_url": agent_url(base, appointment),
        "starts_at": appointment.as_json()["starts_at"],
        "expires_at": appointment.as_json()["expires_at"],
        "language": appointment.language,
        **dial_in(settings, appointment),
    }
    return web.json_response(
        body, status=201, headers={"Location": f"/api/v1/appointments/{appointment.id}"}
    )


@routes.get("/api/v1/appointments/{id}")
async def get_appointment(request: web.Request) -> web.Response:
    """One appointment (never its citizen link: only the creation answer has it)."""
    authorize(request)
    appointment = await request.app[STORE].appointments.get(request.match_info["id"][:64])
    settings = request.app[SETTINGS]()
    return web.json_response({**appointment.as_json(), **dial_in(settings, appointment)})


@routes.get("/api/v1/openapi.json")
async def openapi(_request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return web.json_response(OPENAPI)


_DIAL_IN: dict[str, Any] = {
    "sip_uri": {
        "type": ["string", "null"],
        "description": "The room's SIP address (dial-in lands in the waiting room unless"
        " sip.dial_in.admit is direct); null while dial-in is off",
        "examples": ["sip:k3v7qz2mxa@video.agency.example"],
    },
    "pin": {
        "type": ["string", "null"],
        "pattern": "^[0-9]{6}$",
        "description": "6-digit PIN for the lobby address (sip:lobby@<domain>), entered by"
        " DTMF and ended by #; works inside the appointment's window only",
    },
}
_APPOINTMENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "starts_at": {"type": "string", "format": "date-time"},
        "ends_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "language": {"type": "string"},
        "state": {"enum": ["scheduled", "waiting", "in_call", "ended", "cancelled"]},
        **_DIAL_IN,
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
_ERRORS = {
    str(status): {
        "description": text,
        "content": {"application/json": {"schema": _ERROR}},
    }
    for status, text in (
        (400, "invalid request"),
        (401, "missing or wrong bearer token"),
        (404, "no such appointment, or the API is off"),
        (415, "body is not JSON"),
    )
}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gatewayd API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/appointments": {
            "post": {
                "summary": "Book an appointment (empty body: now, default duration, German)",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "starts_at": {"type": "string", "format": "date-time"},
                                    "duration_min": {
                                        "type": "integer",
                                        "minimum": 5,
                                        "maximum": 480,
                                    },
                                    "language": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "booked",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id", "citizen_url", "agent_url", "expires_at"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "citizen_url": {"type": "string", "format": "uri"},
                                        "agent_url": {"type": "string", "format": "uri"},
                                        "starts_at": {"type": "string", "format": "date-time"},
                                        "expires_at": {"type": "string", "format": "date-time"},
                                        "language": {"type": "string"},
                                        **_DIAL_IN,
                                    },
                                }
                            }
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/api/v1/appointments/{id}": {
            "get": {
                "summary": "One appointment",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the appointment",
                        "content": {"application/json": {"schema": _APPOINTMENT}},
                    },
                    **_ERRORS,
                },
            }
        },
    },
}
