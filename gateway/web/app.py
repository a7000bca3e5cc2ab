"""Builds the aiohttp application and its middlewares."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import metrics
from gateway.calls import CallRegistry
from gateway.errors import GatewayError, Unavailable
from gateway.log import get_logger
from gateway.settings import Settings
from gateway.web import ops
from gateway.web.keys import CALLS, LIFECYCLE, SETTINGS, Lifecycle

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": (
        "geolocation=(), payment=(), usb=(), camera=(self), microphone=(self),"
        " display-capture=(self)"
    ),
    # Pages load scripts and styles from files only (no inline code); the
    # signaling WebSocket is same-origin; media elements play local streams.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " media-src 'self' blob:; img-src 'self' data: blob:; object-src 'none';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _route_group(request: web.Request) -> str:
    """A low-cardinality label: the route's pattern, never the raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GatewayErrors become their HTTP status; anything else a logged, counted 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except GatewayError as exc:
        headers = {}
        if isinstance(exc, Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        return web.json_response(
            {"error": exc.reason, "detail": exc.message}, status=exc.http_status, headers=headers
        )
    except Exception:
        metrics.ERRORS.labels(component="web").inc()
        log.exception("unhandled error in web handler", route=_route_group(request))
        return web.json_response({"error": "internal error"}, status=500)


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer, one counter and one log line per request."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        exc.headers.update(SECURITY_HEADERS)
        raise
    finally:
        route = _route_group(request)
        metrics.HTTP_REQUESTS.labels(route=route, code_class=metrics.code_class(status)).inc()
        if route not in ("/healthz", "/readyz", "/metrics"):
            log.info(
                "http request",
                method=request.method,
                route=route,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def build_web_app(
    lifecycle: Lifecycle, settings: Callable[[], Settings], calls: CallRegistry
) -> web.Application:
    """The application served on ``web.host:web.port``."""
    app = web.Application(
        middlewares=[observe_middleware, error_middleware],
        client_max_size=settings().web.max_body_bytes,
    )
    app[LIFECYCLE] = lifecycle
    app[SETTINGS] = settings
    app[CALLS] = calls
    app.add_routes(ops.routes)
    return app
