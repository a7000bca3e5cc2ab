"""Catalogues in step, templates and scripts without untranslated text, language choice."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import make_mocked_request

from gateway.web import i18n
from gateway.web.i18n import LANGUAGES, Translator, catalogue, choose_language, placeholders
from gateway.web.templates import PLACEHOLDER, TEMPLATES

WEB = Path(i18n.__file__).resolve().parent
LETTERS = re.compile(r"[A-Za-zÄÖÜäöüß]")
NAMING_ATTRIBUTES = re.compile(r'\b(aria-label|title|placeholder|alt)="([^"]*)"')


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    keys = {lang: set(catalogue(lang)) for lang in LANGUAGES}
    every = set().union(*keys.values())
    for lang in LANGUAGES:
        assert not every - keys[lang], f"{lang}.json misses {sorted(every - keys[lang])}"
    for key in every:
        fields = {lang: placeholders(catalogue(lang)[key]) for lang in LANGUAGES}
        assert len({frozenset(f) for f in fields.values()}) == 1, (key, fields)
        for lang in LANGUAGES:
            assert catalogue(lang)[key].strip(), f"{lang}: {key} is empty"


def test_templates_name_only_existing_keys_and_hold_no_text_of_their_own() -> None:
    known = set(catalogue("de"))
    for path in sorted(TEMPLATES.glob("*.html")):
        text = path.read_text(encoding="utf-8")
        for match in PLACEHOLDER.finditer(text):
            if match.group(2):
                assert match.group(3) in known, f"{path.name}: unknown key {match.group(3)}"
        for attribute, value in NAMING_ATTRIBUTES.findall(text):
            assert PLACEHOLDER.fullmatch(value), f"{path.name}: literal {attribute}={value!r}"
        bare = PLACEHOLDER.sub("", text)
        bare = re.sub(r"<!DOCTYPE html>", "", bare)
        visible = re.sub(r"<[^>]*>", " ", bare)
        leftover = LETTERS.findall(visible)
        assert not leftover, f"{path.name} has untranslated text: {visible.split()}"


def test_scripts_name_only_existing_keys() -> None:
    known = {k[3:] for k in catalogue("de") if k.startswith("js.")}
    source = "".join(p.read_text(encoding="utf-8") for p in (WEB / "static" / "js").glob("*.js"))
    direct = set(re.findall(r"\bt\('([a-z_]+)'", source))
    # keys chosen at run time: t(a ? 'x' : 'y'), t(labels[state]), t(fallbackKey, ...)
    indirect = set(re.findall(r"'([a-z]+_[a-z_]+)'", source)) - {"have_local_offer"}
    missing = sorted(direct - known)
    assert not missing, f"scripts use keys missing from the catalogues: {missing}"
    assert {"camera_n", "microphone_n", "state_connected", "chat_agent"} <= indirect & known
    unused = sorted(known - direct - indirect)
    assert not unused, f"catalogue keys no script uses: {unused}"


def test_python_pages_name_only_existing_keys() -> None:
    known = set(catalogue("de"))
    for name in ("pages.py", "agent_pages.py"):
        source = (WEB / name).read_text(encoding="utf-8")
        for key in re.findall(r'\bt\("([a-z_.]+)"', source) + re.findall(
            r"\bt\('([a-z_.]+)'", source
        ):
            assert key in known, f"{name}: unknown key {key}"


def test_scripts_and_styles_are_files_only() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert " style=" not in text and "<style" not in text, path.name
        assert not re.search(r"\son[a-z]+=", text), f"{path.name}: inline event handler"
        for tag in re.findall(r"<script[^>]*>", text):
            assert 'type="application/json"' in tag or "src=" in tag, (path.name, tag)


def _request(path: str, headers: dict[str, str] | None = None) -> object:
    return make_mocked_request("GET", path, headers=headers or {})


def test_language_choice_order() -> None:
    assert choose_language(_request("/test")) == ("de", False)  # type: ignore[arg-type]
    english = _request("/test", {"Accept-Language": "fr-FR, en-GB;q=0.8, de;q=0.5"})
    assert choose_language(english) == ("en", False)  # type: ignore[arg-type]
    assert choose_language(_request("/test", {"Accept-Language": "fr"}), "en") == (  # type: ignore[arg-type]
        "en",
        False,
    )
    cookie = _request("/test", {"Cookie": "lang=en", "Accept-Language": "de"})
    assert choose_language(cookie) == ("en", False)  # type: ignore[arg-type]
    asked = _request("/test?lang=de", {"Cookie": "lang=en"})
    assert choose_language(asked) == ("de", True)  # type: ignore[arg-type]
    bogus = _request("/test?lang=xx", {"Cookie": "lang=<script>", "Accept-Language": "q=;;,"})
    assert choose_language(bogus) == ("de", False)  # type: ignore[arg-type]


def test_translator_formats_and_falls_back_to_german() -> None:
    en = Translator("en")
    assert en("console.signed_in", name="Erika") == "Signed in as Erika"
    assert Translator("xx").lang == "de"
    assert en("no.such.key") == "no.such.key"
    assert "admit" in en.script_messages()
