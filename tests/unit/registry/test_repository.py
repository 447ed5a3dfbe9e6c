"""The versions insert: a typed row and an explicit column list matching the schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from headwater.services.registry import repository as repo

MIGRATIONS = Path(repo.__file__).parent / "migrations"


def versions_table_columns() -> list[str]:
    sql = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    body = re.search(r"CREATE TABLE versions \((.*?)\n\);", sql, re.S)
    assert body is not None
    names = [line.split()[0] for line in body.group(1).splitlines() if line.strip()]
    return [n for n in names if n not in ("--", "PRIMARY")]


def test_the_insert_names_every_field_of_version_row_in_order() -> None:
    fields = tuple(f.name for f in dataclasses.fields(repo.VersionRow))
    assert repo.VERSION_INSERT_COLUMNS == fields
    assert f"INSERT INTO versions ({', '.join(fields)})" in repo.INSERT_VERSION_SQL
    assert "$15)" in repo.INSERT_VERSION_SQL and "$16" not in repo.INSERT_VERSION_SQL


def test_every_inserted_column_exists_and_only_defaulted_ones_are_left_out() -> None:
    table = versions_table_columns()
    assert set(repo.VERSION_INSERT_COLUMNS) <= set(table)
    assert set(table) - set(repo.VERSION_INSERT_COLUMNS) == {"created_at"}


def test_version_row_is_frozen() -> None:
    row = repo.VersionRow(
        model="m", version=1, spec_json="{}", parent_version=0, source="spec", offsets=[],
        example_count=0, metrics={}, seed=7, artifact_sha256="s", artifact_signature="g",
        artifact_format="river-pickle/v1", artifact_size_bytes=3, description="", tags={},
    )  # fmt: skip
    assert repo.version_values(row)[:2] == ("m", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.version = 2  # type: ignore[misc]


def test_the_outbox_docs_promise_at_least_once_and_say_how_to_de_duplicate() -> None:
    from headwater.services.registry import outbox

    readme = (MIGRATIONS.parent / "README.md").read_text()
    for text in (" ".join((outbox.__doc__ or "").split()), " ".join(readme.split())):
        assert "exactly once when nothing crashes" not in text
        assert "at least once" in text.replace("**", "")
        assert "sequence" in text and "event_id" in text
