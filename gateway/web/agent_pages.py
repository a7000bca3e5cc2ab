"""The agent console: login, logout, the list of appointments, the call page.

Forms POST with the session's CSRF token (the login form with a
double-submit token); the session cookie is set by ``auth``. Logins are
rate-limited per client address, and a wrong user name or password gets the
same message.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, NotFound
from gateway.settings_dialin import lobby_uri, room_uri
from gateway.store.agents import Session
from gateway.web import auth
from gateway.web.api import agent_url, base_url, citizen_url
from gateway.web.i18n import Translator
from gateway.web.keys import SETTINGS, STORE
from gateway.web.pages import (
    error_page,
    format_time,
    html_errors,
    page,
    time_text,
    translator,
)
from gateway.web.templates import escape, render

routes = web.RouteTableDef()


def _notice(text: str, kind: str = "error") -> str:
    role = "alert" if kind == "error" else "status"
    return f'<p class="notice {kind}" role="{role}">{escape(text)}</p>'


def _login_page(
    request: web.Request, t: Translator, *, message: str = "", username: str = "", status: int = 200
) -> web.Response:
    token = auth.login_token(request)
    content = render("agent_login", t, csrf=token, message=message, username=username)
    response = page(request, t, title=t("login.heading"), content=content, status=status)
    auth.set_login_cookie(response, request, token)
    return response


def redirect(location: str) -> web.Response:
    """303 See Other (after a POST, or to the login)."""
    return web.Response(status=303, headers={"Location": location})


@routes.get("/agent/login")
@html_errors
async def login_form(request: web.Request) -> web.StreamResponse:
    """The login form (a logged-in agent goes straight to the console)."""
    if await auth.current_session(request) is not None:
        raise web.HTTPSeeOther("/agent/")
    return _login_page(request, translator(request))


@routes.post("/agent/login")
@html_errors
async def login(request: web.Request) -> web.StreamResponse:
    """Check the form token, the rate limit, then the password."""
    t = translator(request)
    form = await request.post()
    if not auth.same_origin(request) or not auth.tokens_match(
        form.get("csrf"), request.cookies.get(auth.LOGIN_COOKIE, "")
    ):
        return _login_page(request, t, message=_notice(t("login.expired_form")), status=403)
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:256]
    client = auth.client_key(request.remote)
    limiter = request.app[auth.LIMITER]
    wait = limiter.hit(client)
    if wait:
        minutes = max(1, round(wait / 60))
        response = _login_page(
            request,
            t,
            message=_notice(t("login.too_many", minutes=minutes)),
            username=username,
            status=429,
        )
        response.headers["Retry-After"] = str(round(wait))
        return response
    agents = request.app[STORE].agents
    agent = await agents.login(username, password) if username and password else None
    if agent is None:
        return _login_page(
            request, t, message=_notice(t("login.failed")), username=username, status=401
        )
    limiter.reset(client)
    token, session = await agents.start_session(agent)
    response = redirect("/agent/")
    max_age = max(60, int(session.expires_at - agents.clock.time()))
    auth.set_session_cookie(response, request, token, max_age)
    response.del_cookie(auth.LOGIN_COOKIE, path="/agent/login")
    return response


async def _require_session(request: web.Request) -> Session:
    session = await auth.current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/agent/login")
    return session


async def _checked_form(request: web.Request, session: Session) -> Any:
    """The POSTed form, after the CSRF and origin checks (403 page otherwise)."""
    form = await request.post()
    if not auth.same_origin(request) or not auth.tokens_match(form.get("csrf"), session.csrf_token):
        raise _Forbidden()
    return form


class _Forbidden(Exception):
    """A console POST without the right CSRF token."""


def _forbidden(request: web.Request) -> web.Response:
    return error_page(request, translator(request), 403, "csrf")


@routes.post("/agent/logout")
@html_errors
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (POST with its CSRF token)."""
    session = await auth.current_session(request)
    if session is not None:
        try:
            await _checked_form(request, session)
        except _Forbidden:
            return _forbidden(request)
        await request.app[STORE].agents.end_session(request.cookies.get(auth.SESSION_COOKIE, ""))
    response = redirect("/agent/login")
    auth.clear_session_cookie(response, request)
    return response


def _bar(t: Translator, session: Session) -> str:
    signed_in = t("console.signed_in", name=session.agent.display_name or session.agent.username)
    return render("agent_bar", t, signed_in=signed_in, csrf=session.csrf_token)


async def _console(
    request: web.Request,
    t: Translator,
    session: Session,
    *,
    created: str = "",
    error: str = "",
    status: int = 200,
) -> web.Response:
    settings = request.app[SETTINGS]()
    upcoming = await request.app[STORE].appointments.upcoming()
    if upcoming:
        rows = "".join(
            render(
                "agent_row",
                t,
                start=format_time(a.starts_at, t.lang),
                duration=t("console.minutes", minutes=round((a.ends_at - a.starts_at) / 60)),
                language=t(f"lang.{a.language}") if a.language in ("de", "en") else a.language,
                state=t(f"state.{a.state}"),
                id=a.id,
                open_label=t("console.open_label", id=a.id),
            )
            for a in upcoming
        )
        table = render("agent_upcoming", t, rows=rows)
    else:
        table = f"<p>{escape(t('console.none'))}</p>"
    options = "".join(
        f'<option value="{escape(lang)}">{escape(t(f"lang.{lang}"))}</option>'
        for lang in settings.appointments.languages
    )
    content = render(
        "agent_console",
        t,
        bar=_bar(t, session),
        status=t("console.count", count=len(upcoming)),
        created=created,
        error=error,
        csrf=session.csrf_token,
        duration=settings.appointments.default_duration_min,
        language_options=options,
        upcoming=table,
    )
    return page(
        request,
        t,
        title=t("console.heading"),
        content=content,
        scripts=("common.js", "console.js"),
        page_class="console-page",
        status=status,
    )


@routes.get("/agent/")
@html_errors
async def console(request: web.Request) -> web.StreamResponse:
    """Upcoming appointments and the form to create one."""
    session = await _require_session(request)
    return await _console(request, translator(request), session)


@routes.get("/agent")
async def console_slash(_request: web.Request) -> web.StreamResponse:
    """``/agent`` -> ``/agent/``."""
    raise web.HTTPSeeOther("/agent/")


def parse_start(text: str, tz_offset: str, now: float) -> float | None:
    """A ``datetime-local`` value and the browser's ``getTimezoneOffset()`` as a
    timestamp; empty means now. ValueError for anything malformed."""
    text = text.strip()
    if not text:
        return None
    local = dt.datetime.strptime(text[:16], "%Y-%m-%dT%H:%M")
    offset = int(tz_offset) if tz_offset.strip() else 0
    if not -18 * 60 <= offset <= 18 * 60:
        raise ValueError("time zone offset out of range")
    moment = local.replace(tzinfo=dt.UTC) + dt.timedelta(minutes=offset)
    return max(moment.timestamp(), now)


@routes.post("/agent/")
@html_errors
async def create(request: web.Request) -> web.StreamResponse:
    """Create an appointment; the page shows the citizen's link (once)."""
    session = await _require_session(request)
    t = translator(request)
    try:
        form = await _checked_form(request, session)
    except _Forbidden:
        return _forbidden(request)
    settings = request.app[SETTINGS]()
    appointments = request.app[STORE].appointments
    try:
        now = appointments.clock.time()
        starts_at = parse_start(str(form.get("starts_at", "")), str(form.get("tz_offset", "")), now)
        duration = int(str(form.get("duration_min", settings.appointments.default_duration_min)))
    except ValueError:
        return await _console(
            request, t, session, error=_notice(t("console.bad_input")), status=400
        )
    language = str(form.get("language", "")) or None
    try:
        appointment, token = await appointments.create(
            starts_at=starts_at,
            duration_min=duration,
            language=language,
            created_by=session.agent.id,
        )
    except BadRequest:
        return await _console(
            request, t, session, error=_notice(t("console.bad_input")), status=400
        )
    base = base_url(settings, request)
    sip_uri, lobby = room_uri(settings, appointment.sip_alias), lobby_uri(settings)
    dial_in = "" if sip_uri is None else render(
        "agent_created_dial_in", t, sip_uri=sip_uri,
        pin_text=t("console.dial_in_pin", lobby=lobby, pin=appointment.pin) if lobby else "",
    )  # fmt: skip
    created = render(
        "agent_created",
        t,
        citizen_url=citizen_url(base, token),
        agent_url=agent_url(base, appointment),
        dial_in=dial_in,
    )
    return await _console(request, t, session, created=created, status=201)


@routes.get("/agent/appointments/{id}")
@html_errors
async def call_page(request: web.Request) -> web.StreamResponse:
    """The agent's call page: lobby, admit/reject, the call and its controls."""
    session = await _require_session(request)
    t = translator(request)
    try:
        appointment = await request.app[STORE].appointments.get(request.match_info["id"][:64])
    except NotFound:
        return error_page(request, t, 404, "no_appointment")
    from gateway.web.pages import call_ui

    content = render(
        "agent_call",
        t,
        bar=_bar(t, session),
        appointment_id=appointment.id,
        csrf=session.csrf_token,
        heading=t("agent_call.heading", start=time_text(appointment.starts_at, t.lang)),
        call_ui=call_ui(t),
    )
    return page(
        request,
        t,
        title=t("agent_call.title"),
        content=content,
        scripts=("common.js", "agent-call.js"),
        page_class="agent-call-page",
    )


def setup(app: web.Application) -> None:
    """Add the console routes and the login rate limiter."""
    app[auth.LIMITER] = auth.LoginLimiter()
    app.add_routes(routes)
