"""A very small HTML template language for the pages (no dependency, no logic).

``{{ t:key }}`` is a message of the catalogue, ``{{ name }}`` a value, both
HTML-escaped; ``{{{ name }}}`` inserts HTML built by the caller (itself from
templates). Loops and conditions stay in Python. Templates hold no
user-facing text of their own: a unit test checks that every visible word and
every accessible-name attribute comes from the catalogue.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

from gateway.web.i18n import Translator

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLACEHOLDER = re.compile(r"\{\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}\}|\{\{\s*(t:)?([a-z0-9_.]+)\s*\}\}")


@cache
def source(name: str) -> str:
    """The text of ``templates/<name>.html`` (read once)."""
    return (TEMPLATES / f"{name}.html").read_text(encoding="utf-8")


def escape(value: object) -> str:
    """HTML-escape text for element content and quoted attributes."""
    return html.escape(str(value), quote=True)


def render(name: str, t: Translator, **values: object) -> str:
    """Fill a template; a value it names but was not given is a KeyError (a bug)."""

    def fill(match: re.Match[str]) -> str:
        raw, is_message, key = match.group(1), match.group(2), match.group(3)
        if raw is not None:
            return str(values[raw])
        if is_message:
            return escape(t(key))
        return escape(values[key])

    return PLACEHOLDER.sub(fill, source(name))
