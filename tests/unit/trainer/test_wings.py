"""The trainer's two wings share nothing but ``headwater.shared`` and the trainer's root.

Every module of ``join/`` and of ``learn/`` is parsed (not imported), and an
import of the other wing fails the test, naming the module and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINER = Path(__file__).resolve().parents[3] / "services" / "trainer"
PACKAGE = "headwater.services.trainer"
WINGS = ("join", "learn")


def imported_names(source: str, package: str) -> list[tuple[int, str]]:
    """Every module or name ``source`` (a module of ``package``) imports, absolute, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def crossings(source: str, package: str, other_wing: str) -> list[tuple[int, str]]:
    """The imports of ``source`` that reach into ``other_wing``."""
    forbidden = f"{PACKAGE}.{other_wing}"
    return [
        (line, name)
        for line, name in imported_names(source, package)
        if name == forbidden or name.startswith(forbidden + ".")
    ]


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_never_imports_the_other(wing: str) -> None:
    other = next(w for w in WINGS if w != wing)
    modules = sorted((TRAINER / wing).rglob("*.py"))
    assert len(modules) > 1  # the wing is there
    found = [
        f"{path.relative_to(TRAINER)}:{line} imports {name}"
        for path in modules
        for line, name in crossings(path.read_text(), f"{PACKAGE}.{wing}", other)
    ]
    assert found == []


def test_crossings_are_seen_absolute_relative_and_by_name() -> None:
    source = (
        "from headwater.services.trainer.learn.pool import LearnerPool\n"
        "from ..learn import loading\n"
        "from .. import learn\n"
        "import headwater.services.trainer.learn.updates\n"
        "from headwater.services.trainer import metrics, settings\n"
        "from .slots import Join\n"
        "from headwater.services.trainer.learning_rate import x\n"
    )
    assert [line for line, _ in crossings(source, f"{PACKAGE}.join", "learn")] == [1, 1, 2, 2, 3, 4]
