"""EmbeddedPostgres: TCP on 127.0.0.1, databases on demand, data that survives a restart."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from headwater.cli.localstack import EmbeddedPostgres
from headwater.cli.localstack.ports import pid_alive
from headwater.shared.errors import InvalidInput

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="hw-pg-test-"))
    pg = EmbeddedPostgres(root / "a" / "deeply" / "nested" / ("data-" + "x" * 60))
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_start_connect_restart_keeps_data(server: EmbeddedPostgres) -> None:
    server.start()
    assert server.is_running() and pid_alive(server.pid)
    server.ensure_database("headwater")
    server.ensure_database("headwater")  # idempotent
    assert server.url() == f"postgresql://postgres@127.0.0.1:{server.port}/headwater"

    conn = await asyncpg.connect(server.url(), timeout=10)
    try:
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
    finally:
        await conn.close()

    first_pid = server.pid
    server.stop()
    assert not server.is_running() and server.pid is None
    assert first_pid is not None and not pid_alive(first_pid)

    server.start()  # no initdb this time: the data directory is reused
    conn = await asyncpg.connect(server.url(), timeout=10)
    try:
        assert await conn.fetchval("SELECT v FROM kept") == "survives"
    finally:
        await conn.close()


def test_ensure_database_rejects_non_identifiers(server: EmbeddedPostgres) -> None:
    with pytest.raises(InvalidInput, match="plain identifier"):
        server.ensure_database('x"; DROP DATABASE postgres; --')


def test_stop_when_never_started_is_a_no_op(server: EmbeddedPostgres) -> None:
    server.stop()
    assert not server.is_running()
