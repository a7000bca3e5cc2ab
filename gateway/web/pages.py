"""The pages gatewayd serves itself: the citizen's link, the device test, branding.

Plain HTML from ``templates/``, styles and ES modules from ``static/``, no
inline script or style (the CSP forbids both). Every page is in the
language ``i18n.choose_language`` picks and links to the other languages.
A citizen link that is unknown, expired or not open yet gets its own page
(404, 410, 425), never a stack trace. The agent console is in
``agent_pages``; ``setup`` adds both.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway import metrics
from gateway.errors import GatewayError, NotFound
from gateway.log import get_logger
from gateway.settings import BrandingSettings
from gateway.store.appointments import LinkExpired, LinkNotYet, iso
from gateway.web.i18n import LANGUAGES, Translator, choose_language, remember_language
from gateway.web.keys import SETTINGS, STORE
from gateway.web.templates import escape, render

log = get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
routes = web.RouteTableDef()
LANG_CHOSEN = web.RequestKey("lang_chosen", str)
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LOGO_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def translator(request: web.Request, fallback: str | None = None) -> Translator:
    """The request's language (``?lang=``, cookie, Accept-Language, fallback, German)."""
    lang, chosen = choose_language(request, fallback)
    t = Translator(lang)
    if chosen:
        request[LANG_CHOSEN] = lang
    return t


def time_text(timestamp: float, lang: str) -> str:
    """A moment as text, in UTC (the server does not know the visitor's zone)."""
    moment = dt.datetime.fromtimestamp(round(timestamp), dt.UTC)
    return moment.strftime("%d.%m.%Y, %H:%M UTC" if lang == "de" else "%Y-%m-%d %H:%M UTC")


def format_time(timestamp: float, lang: str) -> str:
    """A ``<time>`` element: UTC on the server, the browser's zone once the script runs."""
    text = time_text(timestamp, lang)
    return f'<time datetime="{escape(iso(timestamp))}" data-local>{escape(text)}</time>'


def _language_links(t: Translator) -> str:
    links = []
    for lang in LANGUAGES:
        name = escape(Translator(lang)(f"lang.{lang}"))
        current = ' aria-current="true"' if lang == t.lang else ""
        links.append(
            f'<li><a href="?lang={lang}" lang="{lang}" hreflang="{lang}"{current}>{name}</a></li>'
        )
    return "".join(links)


def _footer_links(branding: BrandingSettings, t: Translator) -> str:
    items = [f'<li><a href="/test">{escape(t("common.device_test"))}</a></li>']
    for link in branding.footer_links:
        items.append(f'<li><a href="{escape(link.url)}">{escape(link.label)}</a></li>')
    return "".join(items)


def page(
    request: web.Request,
    t: Translator,
    *,
    title: str,
    content: str,
    scripts: tuple[str, ...] = ("common.js",),
    page_class: str = "",
    status: int = 200,
) -> web.Response:
    """A whole HTML page around ``content``; never cached (links and tokens inside)."""
    branding = request.app[SETTINGS]().branding
    logo = ""
    if branding.logo_file is not None:
        logo = '<img class="logo" src="/branding/logo" alt="">'
    messages = json.dumps(t.script_messages(), ensure_ascii=False).replace("<", "\\u003c")
    body = render(
        "layout",
        t,
        lang=t.lang,
        title=title,
        agency=branding.agency_name,
        messages_json=messages,
        scripts="".join(
            f'<script type="module" src="/static/js/{escape(name)}"></script>' for name in scripts
        ),
        page_class=page_class,
        logo=logo,
        language_links=_language_links(t),
        content=content,
        footer_links=_footer_links(branding, t),
    )
    response = web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Language": t.lang},
    )
    chosen = request.get(LANG_CHOSEN)
    if chosen is not None:
        remember_language(response, chosen, secure=request.app[SETTINGS]().web.tls is not None)
    return response


def error_page(
    request: web.Request, t: Translator, status: int, key: str, extra: str = ""
) -> web.Response:
    """A page for a link or page that cannot be opened (``error.<key>.heading/text``)."""
    heading = t(f"error.{key}.heading")
    content = render("error", t, heading=heading, text=t(f"error.{key}.text"), extra=extra)
    return page(request, t, title=heading, content=content, status=status, page_class="error")


def html_errors(handler: PageHandler) -> PageHandler:
    """Errors of a page handler become an HTML page in the visitor's language."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except NotFound:
            return error_page(request, translator(request), 404, "not_found")
        except GatewayError as exc:
            key = "unavailable" if exc.http_status == 503 else "generic"
            return error_page(request, translator(request), exc.http_status, key)
        except Exception:
            metrics.ERRORS.labels(component="web").inc()
            log.exception("unhandled error in a page")
            return error_page(request, translator(request), 500, "generic")

    wrapped.__doc__ = handler.__doc__
    return wrapped


def device_test(t: Translator) -> str:
    """The device test component (camera, microphone, speaker, compatibility)."""
    return render("device_test", t)


def call_ui(t: Translator) -> str:
    """Videos, controls and chat of a call page."""
    return render("call", t)


@routes.get("/c/{token}")
@html_errors
async def citizen(request: web.Request) -> web.StreamResponse:
    """The citizen's link: consent, device test, waiting room, call."""
    token = request.match_info["token"]
    try:
        appointment = await request.app[STORE].appointments.by_token(token)
    except NotFound:
        return error_page(request, translator(request), 404, "not_found")
    except LinkExpired:
        return error_page(request, translator(request), 410, "expired")
    except LinkNotYet as exc:
        t = translator(request)
        extra = (
            f"<p>{escape(t('error.not_yet.starts'))} {format_time(exc.starts_at, t.lang)}</p>"
            f"<p>{escape(t('error.not_yet.opens'))} {format_time(exc.opens_at, t.lang)}</p>"
        )
        return error_page(request, t, 425, "not_yet", extra)
    t = translator(request, appointment.language)
    content = render(
        "citizen",
        t,
        token=token,
        start_time=format_time(appointment.starts_at, t.lang),
        device_test=device_test(t),
        call_ui=call_ui(t),
    )
    return page(
        request,
        t,
        title=t("consent.title"),
        content=content,
        scripts=("common.js", "citizen.js"),
        page_class="citizen-page",
    )


@routes.get("/test")
@html_errors
async def test_page(request: web.Request) -> web.StreamResponse:
    """The public device test."""
    t = translator(request)
    content = render("test_page", t, device_test=device_test(t))
    return page(
        request,
        t,
        title=t("test.page_heading"),
        content=content,
        scripts=("common.js", "devicetest-page.js"),
        page_class="test-page",
    )


def _darker(colour: str, factor: float = 0.75) -> str:
    channels = [round(int(colour[i : i + 2], 16) * factor) for i in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in channels)


@routes.get("/branding/theme.css")
async def theme(request: web.Request) -> web.Response:
    """The agency's colours as CSS custom properties (validated #rrggbb only)."""
    colour = request.app[SETTINGS]().branding.primary_color
    css = f":root {{\n  --primary: {colour};\n  --primary-dark: {_darker(colour)};\n}}\n"
    return web.Response(text=css, content_type="text/css", headers={"Cache-Control": "no-cache"})


@routes.get("/branding/logo")
async def logo(request: web.Request) -> web.StreamResponse:
    """The agency's logo file, if one is configured."""
    path = request.app[SETTINGS]().branding.logo_file
    if path is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(
        path,
        headers={
            "Content-Type": _LOGO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
            "Cache-Control": "no-cache",
        },
    )


def setup(app: web.Application) -> None:
    """Add the pages, the console and the static files to the web app."""
    from gateway.web import agent_pages

    app.add_routes(routes)
    agent_pages.setup(app)
    app.router.add_static("/static", STATIC, follow_symlinks=False, append_version=False)
