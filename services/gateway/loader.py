"""Loading deployments from the registry into the model cache.

A deployment is loaded by fetching its model (schema, task) and the artifact
of every routed version, verifying and decoding each one off the event loop,
then installing the whole entry at once: every routed version, whatever its
role, is loaded before the new routes answer, so a switch never waits for a
load. Versions already loaded are kept (with their live state, unless the new
deployment is pinned), and so are versions retired within their unload grace,
so a weight change or a rollback right after a switch costs no artifact fetch.

:meth:`ModelLoader.submit` is what the registry-event consumer calls: it never
blocks the consumer, keeps only the newest revision wanted per model, and
retries a failed load with capped backoff until it succeeds or a newer
revision replaces it. A load that fails for good (an artifact that does not
verify) is logged and not retried; the model keeps serving what it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from headwater.services.gateway import metrics
from headwater.services.gateway.live_updates import LiveUpdater
from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion, is_live
from headwater.services.gateway.routing import Route, RouteTable
from headwater.shared.artifacts import FORMAT, ArtifactCodec
from headwater.shared.errors import ArtifactIntegrityError, InvalidInput, NotFound
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

# Failures a retry cannot fix: the artifact or the schema itself is bad.
_PERMANENT = (ArtifactIntegrityError, InvalidInput)


class ModelLoader:
    """Loads deployments from the registry into a :class:`ModelCache`.

    Args:
        registry: The registry client (deadlines and read retries are its own).
        codec: Verifies and decodes artifacts.
        cache: Where loaded models go.
        updater: Applies live updates that arrived before their deployment.
        retry_max_s: Cap of the backoff between retries of a failed load.
        on_change: Awaited with the model name after it is installed or removed.

    """

    def __init__(
        self,
        registry: RegistryClient,
        codec: ArtifactCodec,
        cache: ModelCache,
        updater: LiveUpdater,
        retry_max_s: float = 30.0,
        on_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.codec = codec
        self.cache = cache
        self.updater = updater
        self.retry_backoff = Backoff(initial_s=0.2, max_s=retry_max_s, jitter=0.5)
        self.on_change = on_change
        self._locks: dict[str, asyncio.Lock] = {}
        self._wanted: dict[str, registry_pb2.Deployment] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def load_all(self) -> int:
        """Load every deployment the registry has; returns how many models are served.

        Raises:
            Unavailable: The registry did not answer (the caller retries).

        """
        models = await self.registry.list_models()
        self.cache.know(*(m.name for m in models))
        deployments = await self.registry.list_deployments()
        await asyncio.gather(*(self._load_logged(d) for d in deployments))
        return len(self.cache.entries())

    async def _load_logged(self, deployment: registry_pb2.Deployment) -> None:
        try:
            await self.apply(deployment)
        except _PERMANENT as error:
            log.error(
                "deployment cannot be loaded",
                extra={"model": deployment.model, "reason": str(error)},
            )

    def submit(self, deployment: registry_pb2.Deployment) -> None:
        """Load ``deployment`` in the background, retrying until it is served or superseded."""
        name = deployment.model
        wanted = self._wanted.get(name)
        if wanted is not None and wanted.revision >= deployment.revision:
            return
        self._wanted[name] = deployment
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.create_task(self._converge(name), name=f"load-{name}")

    async def wait_idle(self) -> None:
        """Wait until every submitted load has finished (for tests and shutdown)."""
        while tasks := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the background loads."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _converge(self, name: str) -> None:
        attempt = 0
        while (deployment := self._wanted.get(name)) is not None:
            try:
                await self.apply(deployment)
            except _PERMANENT as error:
                log.error(
                    "deployment cannot be loaded", extra={"model": name, "reason": str(error)}
                )
            except Exception as error:
                metrics.RELOAD_FAILURES.labels(model=name).inc()
                delay = self.retry_backoff.delay_s(attempt)
                attempt += 1
                log.warning(
                    "deployment load failed; retrying",
                    extra={"model": name, "error": repr(error), "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                continue
            if self._wanted.get(name) is deployment:
                del self._wanted[name]
            attempt = 0

    async def apply(self, deployment: registry_pb2.Deployment) -> bool:
        """Load and install one deployment now; False when a newer revision is served.

        Raises:
            Unavailable: The registry did not answer.
            ArtifactIntegrityError: An artifact does not verify.
            InvalidInput: The model's feature schema is invalid.

        """
        name = deployment.model
        async with self._locks.setdefault(name, asyncio.Lock()):
            if deployment.revision <= self.cache.revision(name):
                return False
            table = RouteTable.of(Route.from_proto(r) for r in deployment.routes)
            if not table.versions:
                changed = self.cache.remove(name, deployment.revision)
            else:
                changed = await self._install(deployment, table)
        if changed:
            metrics.MODELS_SERVED.set(len(self.cache.entries()))
            log.info(
                "deployment applied",
                extra={"model": name, "revision": deployment.revision, "versions": table.versions},
            )
            if self.on_change is not None:
                await self.on_change(name)
        return changed

    async def _install(self, deployment: registry_pb2.Deployment, table: RouteTable) -> bool:
        name = deployment.model
        try:
            model = await self.registry.get_model(name)
        except NotFound:
            log.warning("deployed model no longer exists", extra={"model": name})
            return False
        live = is_live(deployment)
        versions: dict[int, ServedVersion] = {}
        for version in table.versions:  # every role: a challenger is warm before its switch
            kept = self.cache.reusable(name, version, live)
            versions[version] = kept if kept is not None else await self._fetch(name, version)
        if not self.cache.install(ModelEntry.build(model, deployment, versions)):
            return False
        if live:
            await self.updater.apply_pending(name)
        return True

    async def _fetch(self, name: str, version: int) -> ServedVersion:
        response = await self.registry.get_artifact(name, version)
        artifact = response.version.artifact
        if artifact.format and artifact.format != FORMAT:
            raise ArtifactIntegrityError(
                f"version {version} of '{name}' has artifact format {artifact.format!r}; "
                f"this gateway reads {FORMAT!r}"
            )
        estimator = await asyncio.to_thread(
            self.codec.decode, response.content, artifact.signature, artifact.sha256 or None
        )
        return ServedVersion(version, estimator)
