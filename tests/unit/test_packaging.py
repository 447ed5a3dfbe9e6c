"""The distribution ships every package under the one ``headwater`` namespace."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    return found


def test_every_package_on_disk_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert _packages_on_disk() - listed == set()


def test_every_listed_package_exists() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert listed - _packages_on_disk() == set()


def test_no_generic_top_level_import_names() -> None:
    listed = _pyproject()["tool"]["setuptools"]["packages"]
    assert all(name.startswith("headwater.") for name in listed)
