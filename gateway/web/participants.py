"""REST: dial a participant into an appointment's room through a bridge (issue #7 item 3).

``POST /api/v1/appointments/{id}/participants`` with ``{"bridge", "uri",
"role"}`` starts a dial-out and answers 202 with ``{"id", "state"}`` and a
``Location``; ``GET`` on it tells where the call is (trying, ringing,
answered, busy, no_answer, cancelled, failed, ended, with the steps so
far); ``DELETE`` cancels a ringing call or hangs up an answered one. The
agents in the room see every step live on their console. Bearer tokens as
for the rest of /api/v1.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import BadRequest
from gateway.rooms.room import Role
from gateway.web.api import authorize, json_object
from gateway.web.keys import DIALER

routes = web.RouteTableDef()

_FIELDS = frozenset({"bridge", "uri", "role"})
_PATH = "/api/v1/appointments/{id}/participants"


def parse_dial(data: dict[str, Any]) -> tuple[str, str, Role]:
    """``bridge``, ``uri`` and ``role`` of a dial request, checked."""
    bridge, uri = data.get("bridge"), data.get("uri")
    if not isinstance(bridge, str) or not bridge or len(bridge) > 64:
        raise BadRequest("bridge: the name of a configured bridge")
    if not isinstance(uri, str) or not uri.strip() or len(uri) > 256:
        raise BadRequest("uri: a SIP URI or a number, at most 256 characters")
    role_name = data.get("role", Role.GUEST.value)
    try:
        role = Role(role_name)
    except ValueError:
        roles = ", ".join(r.value for r in Role if r is not Role.AGENT)
        raise BadRequest(f"role: one of {roles}") from None
    if role is Role.AGENT:
        raise BadRequest("role: agents join from the console, not by dial-out")
    return bridge, uri.strip(), role


@routes.post(_PATH)
async def dial(request: web.Request) -> web.Response:
    """Dial a participant in; 202 while it rings."""
    authorize(request)
    bridge, uri, role = parse_dial(await json_object(request, _FIELDS, empty_ok=False))
    appointment_id = request.match_info["id"][:64]
    dial_id = await request.app[DIALER].dial(appointment_id, bridge, uri, role)
    state = request.app[DIALER].state(appointment_id, dial_id)
    return web.json_response(
        state, status=202, headers={"Location": f"{_PATH.format(id=appointment_id)}/{dial_id}"}
    )


@routes.get(_PATH + "/{dial}")
async def dial_state(request: web.Request) -> web.Response:
    """Where a dial-out is."""
    authorize(request)
    appointment_id, dial_id = request.match_info["id"][:64], request.match_info["dial"][:64]
    return web.json_response(request.app[DIALER].state(appointment_id, dial_id))


@routes.delete(_PATH + "/{dial}")
async def hang_up(request: web.Request) -> web.Response:
    """Cancel or hang up a dial-out; 204."""
    authorize(request)
    appointment_id, dial_id = request.match_info["id"][:64], request.match_info["dial"][:64]
    await request.app[DIALER].cancel(appointment_id, dial_id)
    return web.Response(status=204)
