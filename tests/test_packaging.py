"""A wheel holds only the packages pyproject lists (an editable install hides a missing one):
every package directory on disk must be in that list."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def unlisted_packages(project: dict[str, Any], root: Path) -> list[str]:
    """Package directories under each listed top-level package that the list lacks."""
    setuptools = project["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    where = setuptools.get("package-dir", {})
    missing = []
    for top in sorted(p for p in listed if "." not in p):
        base = root / where.get(top, top)
        for init in sorted(base.rglob("__init__.py")):
            parts = init.parent.relative_to(base).parts
            name = ".".join((top, *parts))
            if name not in listed and "__pycache__" not in parts:
                missing.append(name)
    return missing


def test_every_package_on_disk_is_in_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert unlisted_packages(project, ROOT) == []


def test_a_package_left_out_of_the_list_is_named() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project["tool"]["setuptools"]["packages"].remove("spinebench.engine.tracking")
    assert unlisted_packages(project, ROOT) == ["spinebench.engine.tracking"]
