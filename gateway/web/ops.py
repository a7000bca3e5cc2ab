"""Ops endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway import metrics
from gateway.web.keys import LIFECYCLE, SETTINGS

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Never depends on other services."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only while this node takes new calls (load balancers watch this)."""
    lifecycle = request.app[LIFECYCLE]
    state = lifecycle.state_name
    if lifecycle.ready:
        return web.json_response({"status": "ready", "state": state})
    return web.json_response(
        {"status": "unavailable", "state": state},
        status=503,
        headers={"Retry-After": str(lifecycle.retry_after)},
    )


@routes.get("/metrics")
async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; behind a bearer token when ``web.metrics_token`` is set."""
    token = request.app[SETTINGS]().web.metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "")
        expected = "Bearer " + token.get_secret_value()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    body, content_type = metrics.render(request.headers.get("Accept", ""))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
