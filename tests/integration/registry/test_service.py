"""RegistryService used in-process, against a real PostgreSQL."""

from __future__ import annotations

import threading

import asyncpg
import pytest

from headwater.services.registry import repository as repo
from headwater.services.registry.service import RegistryService
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import ArtifactSettings
from tests.integration.registry.conftest import FEATURES, SPEC

pytestmark = pytest.mark.integration


class ThreadNotingCodec(ArtifactCodec):
    """The real codec, noting which thread verified."""

    verified_on: list[int]

    def verify(self, content: bytes, signature: str, sha256: str | None = None) -> None:
        self.verified_on.append(threading.get_ident())
        super().verify(content, signature, sha256)


async def test_get_artifact_verifies_off_the_event_loop(
    client: RegistryClient, database_url: str
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    created = await client.create_version("churn", SPEC)
    codec = ThreadNotingCodec.from_settings(ArtifactSettings())
    codec.verified_on = []
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, init=repo.init_connection
    )
    try:
        version, content = await RegistryService(pool, codec).get_artifact("churn", 1)
    finally:
        await pool.close()

    assert version.artifact.sha256 == created.artifact.sha256 and content
    assert len(codec.verified_on) == 1
    assert codec.verified_on[0] != threading.get_ident()  # a worker thread, not the loop's
