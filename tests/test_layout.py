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
