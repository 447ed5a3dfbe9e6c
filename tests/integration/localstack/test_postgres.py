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
from tests.integration.localstack.conftest import assert_dies_with_parent

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


async def test_child_mode_serves_and_leaves_the_data_to_a_detached_restart() -> None:
    root = Path(tempfile.mkdtemp(prefix="hw-pg-test-"))
    child = EmbeddedPostgres(root / "data", die_with_parent=True)
    detached = EmbeddedPostgres(root / "data")
    try:
        child.start()
        child.ensure_database("headwater")
        conn = await asyncpg.connect(child.url(), timeout=10)
        try:
            await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        finally:
            await conn.close()
        child.stop()
        assert not child.is_running()

        detached.start()  # pg_ctl mode on the same data (and log file)
        conn = await asyncpg.connect(detached.url(), timeout=10)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 7
        finally:
            await conn.close()
    finally:
        child.stop()
        detached.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_child_mode_server_dies_with_its_parent() -> None:
    root = Path(tempfile.mkdtemp(prefix="hw-pg-test-"))
    script = f"""
        import time
        from pathlib import Path
        from headwater.cli.localstack import EmbeddedPostgres, wait_until
        pg = EmbeddedPostgres(Path({str(root / "data")!r}), die_with_parent=True)
        pg.start()
        print(pg.pid, flush=True)
        time.sleep(60)
        """
    try:
        assert_dies_with_parent(script, timeout_s=10.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_killed_server_recovers_its_committed_data(server: EmbeddedPostgres) -> None:
    server.start()
    conn = await asyncpg.connect(server.url("postgres"), timeout=10)
    try:
        await conn.execute("CREATE TABLE crash (v int); INSERT INTO crash VALUES (1)")
    finally:
        await conn.close()
    server.kill()
    assert not server.is_running()

    server.start()  # a stale postmaster.pid and crash recovery
    conn = await asyncpg.connect(server.url("postgres"), timeout=10)
    try:
        assert await conn.fetchval("SELECT v FROM crash") == 1
    finally:
        await conn.close()
