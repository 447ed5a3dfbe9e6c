"""The registry's use cases: one method per operation, one transaction per change.

Every change writes, in one transaction, the change itself, an audit entry
and an outbox row holding the serialized RegistryEvent; the relay
(:mod:`.outbox`) publishes the row after commit. A change is therefore never
published without being committed, nor committed without being published.
Reads take no locks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from headwater.services.registry import convert, deployments, domain, metrics, rollouts
from headwater.services.registry import repository as repo
from headwater.services.registry import rollout_repository as rollout_repo
from headwater.shared.artifacts import FORMAT, ArtifactCodec, SignedArtifact
from headwater.shared.bus.tracing import inject_trace_headers
from headwater.shared.errors import ArtifactIntegrityError, InvalidInput, NotFound
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.specs import ModelSpec, build_model, parse_spec, supports_task

Kind = events_pb2.RegistryEventKind
#: The event each alias change publishes, by its audit action.
_ALIAS_EVENTS = {
    "alias.set": Kind.REGISTRY_EVENT_KIND_ALIAS_SET,
    "alias.delete": Kind.REGISTRY_EVENT_KIND_ALIAS_DELETED,
}


class RegistryService:
    """Models, versions, artifacts, aliases and deployments over PostgreSQL.

    Args:
        pool: asyncpg pool whose connections ran :func:`repository.init_connection`.
        codec: Signs and verifies artifacts.
        on_commit: Called after every committed change (wakes the outbox relay).
        audit_max_entries: Most audit entries one listing returns.

    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        codec: ArtifactCodec,
        on_commit: Callable[[], None] = lambda: None,
        audit_max_entries: int = 1_000,
    ) -> None:
        self._pool = pool
        self._codec = codec
        self._on_commit = on_commit
        self._audit_max_entries = audit_max_entries

    # --- models -------------------------------------------------------------------

    async def create_model(self, model: domain.NewModel, actor: str) -> registry_pb2.Model:
        """Create a model; AlreadyExists when the name is taken."""
        domain.validate_new_model(model)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await repo.insert_model(
                conn,
                model.name,
                model.task,
                convert.features_json(model.features),
                model.description,
                domain.validate_tags(model.tags),
            )
            if row is None:
                raise domain.model_exists_error(model.name)
            detail = {"task": model.task, "features": [f.name for f in model.features]}
            event = events_pb2.RegistryEvent(kind=Kind.REGISTRY_EVENT_KIND_MODEL_CREATED)
            await record_change(conn, actor, "model.create", model.name, detail, event)
        self._committed("model.create")
        return convert.model_message(row, {})

    async def get_model(self, name: str) -> registry_pb2.Model:
        """One model with its aliases; ModelNotFound when absent."""
        async with self._pool.acquire() as conn:
            return await self._model(conn, name)

    async def list_models(self) -> list[registry_pb2.Model]:
        """Every model, by name."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            rows = await repo.fetch_models(conn)
            aliases = await repo.fetch_all_aliases(conn)
        return [convert.model_message(row, aliases.get(row["name"], {})) for row in rows]

    # --- versions -------------------------------------------------------------------

    async def create_version(
        self, draft: domain.NewVersion, actor: str
    ) -> registry_pb2.ModelVersion:
        """Register a version: build (or verify) its artifact, then store it with its lineage."""
        domain.validate_new_version(draft)
        model = await self.get_model(draft.model)
        spec = parse_spec(draft.spec_json)
        task = convert.task_from_proto(model.task)
        seed = draft.lineage.seed
        if not draft.artifact:  # a model built here: record the seed it was built with
            seed = domain.pick_seed(seed, secrets.randbits(62))
        artifact = await asyncio.to_thread(self._prepare_artifact, draft, spec, seed, task)
        async with self._pool.acquire() as conn, conn.transaction():
            bumped = await repo.next_version_number(conn, draft.model)
            if bumped is None:
                raise domain.no_model_error(draft.model)
            number = bumped["latest_version"]
            domain.check_parent(draft.model, draft.lineage.parent_version, range(1, number))
            await repo.insert_artifact(conn, artifact.sha256, artifact.content)
            row = await repo.insert_version(conn, _version_row(draft, number, spec, seed, artifact))
            detail = {
                "version": number,
                "source": draft.lineage.source,
                "parent_version": draft.lineage.parent_version,
                "sha256": artifact.sha256,
            }
            event = events_pb2.RegistryEvent(
                kind=Kind.REGISTRY_EVENT_KIND_VERSION_CREATED, version=number
            )
            await record_change(conn, actor, "version.create", draft.model, detail, event)
        self._committed("version.create")
        return convert.version_message(row)

    def _prepare_artifact(
        self, draft: domain.NewVersion, spec: ModelSpec, seed: int, task: str
    ) -> SignedArtifact:
        """Build and sign the spec's model, or verify and decode the caller's bytes."""
        if draft.artifact:
            model = self._codec.decode(draft.artifact, draft.artifact_signature)
            artifact = SignedArtifact(
                content=draft.artifact,
                sha256=hashlib.sha256(draft.artifact).hexdigest(),
                signature=draft.artifact_signature,
                format=FORMAT,
            )
        else:
            model = build_model(spec, seed)
            artifact = self._codec.encode(model)
        if not supports_task(model, task):  # type: ignore[arg-type]
            what = "artifact" if draft.artifact else "spec"
            raise InvalidInput(f"the {what} does not build a model for task {task!r}")
        return artifact

    async def get_version(self, model: str, ref: int | str) -> registry_pb2.ModelVersion:
        """One version by number or alias; ModelNotFound when absent."""
        async with self._pool.acquire() as conn:
            return convert.version_message(await self._version_row(conn, model, ref))

    async def list_versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        """Every version of a model, oldest first."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            await self._model(conn, model)
            rows = await repo.fetch_versions(conn, model)
        return [convert.version_message(row) for row in rows]

    async def get_artifact(
        self, model: str, ref: int | str
    ) -> tuple[registry_pb2.ModelVersion, bytes]:
        """A version and its artifact bytes, verified (in a thread) against digest and signature."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            row = await self._version_row(conn, model, ref)
            content = await repo.fetch_artifact_content(conn, row["artifact_sha256"])
        if content is None:
            raise ArtifactIntegrityError(f"artifact {row['artifact_sha256']} is missing")
        # Hashing up to max_bytes (64 MiB by default) takes a while: not on the event loop.
        await asyncio.to_thread(
            self._codec.verify, content, row["artifact_signature"], row["artifact_sha256"]
        )
        return convert.version_message(row), content

    # --- aliases ------------------------------------------------------------------------

    async def set_alias(
        self, model: str, alias: str, version: int, actor: str
    ) -> registry_pb2.Model:
        """Point an alias at an existing version."""
        domain.validate_model_name(model)
        domain.validate_alias_name(alias)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._model(conn, model)
            if await repo.fetch_version(conn, model, version) is None:
                raise domain.no_version_error(model, version)
            await repo.upsert_alias(conn, model, alias, version)
            result = await self._alias_changed(conn, actor, "alias.set", model, alias, version)
        self._committed("alias.set")
        return result

    async def delete_alias(self, model: str, alias: str, actor: str) -> registry_pb2.Model:
        """Delete an alias; ModelNotFound when the model or alias does not exist."""
        domain.validate_model_name(model)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._model(conn, model)
            version = await repo.delete_alias(conn, model, alias)
            if version is None:
                raise domain.no_version_error(model, alias)
            result = await self._alias_changed(conn, actor, "alias.delete", model, alias, version)
        self._committed("alias.delete")
        return result

    # --- deployments -------------------------------------------------------------------

    async def set_deployment(
        self, draft: deployments.NewDeployment, actor: str
    ) -> registry_pb2.Deployment:
        """Set a model's routes, mode and strategy; the revision grows by one.

        Refused (FailedPrecondition) while a rollout owns the model's routes.
        """
        domain.validate_model_name(draft.model)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._model(conn, draft.model)
            await repo.lock_deployment(conn, draft.model)
            active = await rollout_repo.fetch_active_rollout(conn, draft.model)
            if active is not None:
                raise rollouts.deployment_locked_error(convert.rollout_of_row(active))
            existing = await repo.version_numbers(conn, draft.model)
            deployments.validate_new_deployment(draft, existing)
            row = await repo.upsert_deployment(
                conn, draft.model, convert.routes_json(draft.routes), draft.mode, draft.strategy
            )
            deployment = convert.deployment_message(row)
            event = events_pb2.RegistryEvent(
                kind=Kind.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED, deployment=deployment
            )
            detail = {
                "revision": row["revision"],
                "routes": row["routes"],
                "mode": draft.mode,
                "strategy": draft.strategy,
            }
            await record_change(conn, actor, "deployment.set", draft.model, detail, event)
        self._committed("deployment.set")
        return deployment

    async def get_deployment(self, model: str) -> registry_pb2.Deployment:
        """A model's deployment; NotFound when the model has none."""
        async with self._pool.acquire() as conn:
            row = await repo.fetch_deployment(conn, model)
            if row is None:
                await self._model(conn, model)
                raise NotFound(f"model {model!r} has no deployment")
        return convert.deployment_message(row)

    async def list_deployments(self) -> list[registry_pb2.Deployment]:
        """Every deployment, by model."""
        async with self._pool.acquire() as conn:
            rows = await repo.fetch_deployments(conn)
        return [convert.deployment_message(row) for row in rows]

    # --- audit --------------------------------------------------------------------------

    async def list_audit(self, model: str, limit: int) -> list[registry_pb2.AuditEntry]:
        """The newest audit entries (of one model, or of all when ``model`` is empty)."""
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        limit = min(limit or 100, self._audit_max_entries)
        async with self._pool.acquire() as conn:
            rows = await repo.fetch_audit(conn, model, limit)
        return [convert.audit_message(row) for row in rows]

    # --- helpers ------------------------------------------------------------------------

    async def _model(self, conn: asyncpg.Connection, name: str) -> registry_pb2.Model:
        row = await repo.fetch_model(conn, name)
        if row is None:
            raise domain.no_model_error(name)
        return convert.model_message(row, await repo.fetch_aliases(conn, name))

    async def _version_row(self, conn: asyncpg.Connection, model: str, ref: int | str) -> repo.Row:
        if ref == 0 or ref == "":
            raise InvalidInput("a version reference needs a version number or an alias")
        number = ref if isinstance(ref, int) else await repo.resolve_alias(conn, model, ref)
        row = None if number is None else await repo.fetch_version(conn, model, number)
        if row is None:
            if await repo.fetch_model(conn, model) is None:
                raise domain.no_model_error(model)
            raise domain.no_version_error(model, ref)
        return row

    async def _alias_changed(
        self,
        conn: asyncpg.Connection,
        actor: str,
        action: str,
        model: str,
        alias: str,
        version: int,
    ) -> registry_pb2.Model:
        """Record an alias change (audit entry, outbox event); the model with its aliases now."""
        event = events_pb2.RegistryEvent(kind=_ALIAS_EVENTS[action], version=version, alias=alias)
        detail = {"alias": alias, "version": version}
        await record_change(conn, actor, action, model, detail, event)
        return await self._model(conn, model)

    def _committed(self, action: str) -> None:
        metrics.CHANGES.labels(action).inc()
        self._on_commit()


async def record_change(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    model: str,
    detail: dict[str, Any],
    *events: events_pb2.RegistryEvent,
) -> None:
    """Write the audit entry and the outbox rows of a change (inside its transaction).

    Each event gets its own outbox row and sequence number, in the order given.
    """
    await repo.insert_audit(conn, actor, action, model, detail)
    headers = [(name, value.decode("ascii")) for name, value in inject_trace_headers()]
    for event in events:
        sequence = await repo.next_outbox_sequence(conn)
        event.event_id = str(uuid.uuid4())
        event.sequence = sequence
        event.model = model
        event.actor = actor
        event.occurred_at.FromDatetime(dt.datetime.now(dt.UTC))
        await repo.insert_outbox(conn, sequence, model, event.SerializeToString(), headers)


def _version_row(
    draft: domain.NewVersion,
    number: int,
    spec: ModelSpec,
    seed: int,
    artifact: SignedArtifact,
) -> repo.VersionRow:
    lineage = draft.lineage
    return repo.VersionRow(
        model=draft.model,
        version=number,
        spec_json=spec.to_json(),
        parent_version=lineage.parent_version,
        source=lineage.source,
        offsets=convert.offsets_json(lineage.offsets),
        example_count=lineage.example_count,
        metrics=dict(lineage.metrics),
        seed=seed,
        artifact_sha256=artifact.sha256,
        artifact_signature=artifact.signature,
        artifact_format=artifact.format,
        artifact_size_bytes=len(artifact.content),
        description=draft.description,
        tags=domain.validate_tags(draft.tags),
    )
