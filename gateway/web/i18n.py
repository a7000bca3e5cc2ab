"""Message catalogues (German first, English) and the choice of a page's language.

Every user-facing string of the pages lives in ``gateway/web/locales/<lang>.json``:
a flat object of dotted keys. Placeholders are ``{name}``. Keys starting with
``js.`` are the strings the page scripts need; each page carries them in a
JSON data block. A unit test keeps the catalogues in step.

The language of a request: ``?lang=`` (and then a ``lang`` cookie remembers
it), else the ``lang`` cookie, else the best match of Accept-Language, else
the fallback given (the appointment's language), else German.
"""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path

from aiohttp import web

LOCALES = Path(__file__).resolve().parent / "locales"
LANGUAGES = ("de", "en")
DEFAULT = "de"
LANG_COOKIE = "lang"
_FORMATTER = string.Formatter()


@cache
def catalogue(lang: str) -> dict[str, str]:
    """The messages of one language (read once)."""
    data = json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{lang}.json must be a flat object of strings")
    return {str(k): str(v) for k, v in data.items()}


def placeholders(message: str) -> set[str]:
    """The ``{name}`` fields of a message."""
    return {field for _, field, _, _ in _FORMATTER.parse(message) if field}


class Translator:
    """The messages of one language, with German as the fallback for a missing key."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT
        self._messages = catalogue(self.lang)

    def __call__(self, key: str, **params: object) -> str:
        message = self._messages.get(key)
        if message is None:
            message = catalogue(DEFAULT).get(key, key)
        return message.format(**params) if params else message

    def script_messages(self) -> dict[str, str]:
        """The ``js.*`` messages, keys without the prefix."""
        return {k[3:]: v for k, v in self._messages.items() if k.startswith("js.")}


def parse_accept_language(header: str) -> list[str]:
    """Primary language tags of an Accept-Language header, best first."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary and quality > 0:
            ranked.append((-quality, index, primary))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(request: web.Request, fallback: str | None = None) -> tuple[str, bool]:
    """The language of this request and whether it was chosen now (``?lang=``)."""
    asked = request.query.get("lang", "")
    if asked in LANGUAGES:
        return asked, True
    remembered = request.cookies.get(LANG_COOKIE, "")
    if remembered in LANGUAGES:
        return remembered, False
    for tag in parse_accept_language(request.headers.get("Accept-Language", "")):
        if tag in LANGUAGES:
            return tag, False
    if fallback in LANGUAGES:
        assert fallback is not None
        return fallback, False
    return DEFAULT, False


def remember_language(response: web.StreamResponse, lang: str, *, secure: bool) -> None:
    """Keep an explicit choice for a year (not personal: just a language)."""
    response.set_cookie(
        LANG_COOKIE,
        lang,
        max_age=365 * 86400,
        path="/",
        samesite="Lax",
        secure=secure,
        httponly=True,
    )
