"""Schema migrations: numbered SQL files applied in order, once each.

The files live in ``migrations/`` next to this module (``0001_init.sql``,
``0002_….sql``, …). :func:`apply_migrations` runs every missing one inside a
single transaction that holds an advisory lock, so several registry replicas
starting at once apply each file exactly once; running it again is a no-op.
A file that changed after it was applied is refused: history is append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from headwater.shared.errors import FailedPrecondition

log = logging.getLogger(__name__)

# Arbitrary constant shared by every registry replica: "hw-migr" in ASCII.
MIGRATION_LOCK_KEY = 0x68772D6D696772
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file of the schema history."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the SQL text, recorded when applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def parse_file_name(file_name: str) -> tuple[int, str] | None:
    """Split a migration file name into its number and name.

    >>> parse_file_name("0002_add_experiments.sql")
    (2, 'add_experiments')
    >>> parse_file_name("README.md") is None
    True
    """
    match = _FILE_NAME.match(file_name)
    return (int(match.group(1)), match.group(2)) if match else None


def load_migrations() -> list[Migration]:
    """Read the packaged migration files, ordered by number.

    >>> [m.version for m in load_migrations()][:1]
    [1]
    """
    folder = resources.files("headwater.services.registry") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        parsed = parse_file_name(entry.name)
        if parsed is not None:
            found.append(Migration(parsed[0], parsed[1], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise FailedPrecondition(f"migration numbers must run 1..n without gaps, got {numbers}")
    return found


async def apply_migrations(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply every migration not applied yet; return the numbers applied now."""
    pending = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in pending:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise FailedPrecondition(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        "was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    if applied_now:
        log.info("schema migrations applied", extra={"migrations": applied_now})
    return applied_now
