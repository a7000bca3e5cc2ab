"""The repository layout: no top-level package may shadow the standard library."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _top_level_importables() -> set[str]:
    names = set()
    for entry in REPO.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
    return names


def test_no_top_level_name_shadows_the_standard_library() -> None:
    clashes = _top_level_importables() & set(sys.stdlib_module_names)
    assert not clashes, f"these shadow standard-library modules: {sorted(clashes)}"


def test_the_layout_of_the_design_exists() -> None:
    for name in ("gatewayd.py", "gateway", "mediacodecs", "bridges", "config", "tests", "bench"):
        assert (REPO / name).exists(), name
    assert "codecs" in sys.stdlib_module_names  # why the codec package is named mediacodecs
    assert not (REPO / "codecs").exists()


def test_modules_stay_small() -> None:
    too_long = []
    for path in [
        *REPO.glob("gateway/**/*.py"),
        *REPO.glob("bridges/**/*.py"),
        *REPO.glob("mediacodecs/**/*.py"),
        REPO / "gatewayd.py",
    ]:
        lines = path.read_text().count("\n")
        if lines > 700:
            too_long.append(f"{path.relative_to(REPO)}: {lines}")
    assert not too_long, f"modules over ~600 lines (split them): {too_long}"


def _imports(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layering_rules_of_the_architecture() -> None:
    """Bridges never import the browser leg; the web layer never imports SIP;
    only mediacodecs talks to PyAV; sans-IO cores import no sockets."""
    broken = []
    for path in REPO.glob("bridges/**/*.py"):
        if any(n.startswith("gateway.webrtc") for n in _imports(path)):
            broken.append(f"{path.relative_to(REPO)} imports gateway.webrtc")
    for path in REPO.glob("gateway/web/**/*.py"):
        if any(n.startswith("bridges") for n in _imports(path)):
            broken.append(f"{path.relative_to(REPO)} imports bridges")
    for path in [*REPO.glob("gateway/**/*.py"), *REPO.glob("bridges/**/*.py")]:
        if "webrtc" in path.parts:
            continue  # aiortc brings av frames with it; the browser leg may see them
        if any(n == "av" or n.startswith("av.") for n in _imports(path)):
            broken.append(f"{path.relative_to(REPO)} imports av (only mediacodecs may)")
    sans_io = ["message", "framing", "transaction", "dialog", "auth", "session_timer",
               "outgoing", "registration", "ratelimit", "headers", "addressing"]  # fmt: skip
    for name in sans_io:
        path = REPO / "bridges" / "sip" / f"{name}.py"
        bad = {"socket", "asyncio", "selectors"} & _imports(path)
        if bad:
            broken.append(f"{path.relative_to(REPO)} is a sans-IO core but imports {bad}")
    assert not broken, broken
