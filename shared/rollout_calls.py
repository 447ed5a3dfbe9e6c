"""The registry client's calls about rollouts and gateway replicas.

:class:`RolloutCalls` holds them; :class:`~headwater.shared.registry_client.RegistryClient`
inherits them, so callers use one client::

    async with RegistryClient("127.0.0.1:50051", actor="ops") as registry:
        rollout = await registry.start_rollout("churn", 2, "rolling")
        await registry.transition_rollout("churn", "advance", expected_revision=rollout.revision)
        for replica in await registry.list_replicas("churn"):
            print(replica.id, [a.version for a in replica.assignments])

>>> rollout_policy(step_percents=[10, 100], max_drop=0.0).HasField("max_drop")
True
>>> replica_version("churn", 2, ready=True, warmup_latency_ms=0.3).warmup_latency_ms
0.3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from headwater.shared import enums
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_calls import RegistryCalls, enum_value

_STRATEGIES = {name: value for value, name in enums.STRATEGIES.items()}
_ACTIONS = {name: value for value, name in enums.ROLLOUT_ACTIONS.items()}


def rollout_policy(
    step_percents: Iterable[float] = (),
    *,
    interval_s: float | None = None,
    min_samples: int | None = None,
    max_drop: float | None = None,
    alpha: float | None = None,
    shadow_percent: float | None = None,
    bandit_floor_weight: float | None = None,
    max_latency_ratio: float | None = None,
) -> registry_pb2.RolloutPolicy:
    """A RolloutPolicy message; what is left out (None, no steps) takes the registry's default."""
    given: dict[str, Any] = {
        "interval_s": interval_s, "min_samples": min_samples, "max_drop": max_drop,
        "alpha": alpha, "shadow_percent": shadow_percent,
        "bandit_floor_weight": bandit_floor_weight, "max_latency_ratio": max_latency_ratio,
    }  # fmt: skip
    return registry_pb2.RolloutPolicy(
        step_percents=list(step_percents),
        **{name: value for name, value in given.items() if value is not None},
    )


def replica_version(
    model: str, version: int, *, ready: bool, warmup_latency_ms: float = 0.0
) -> registry_pb2.ReplicaVersion:
    """A ReplicaVersion message: one version a gateway replica has in memory."""
    return registry_pb2.ReplicaVersion(
        model=model, version=version, ready=ready, warmup_latency_ms=warmup_latency_ms
    )


class RolloutCalls(RegistryCalls):
    """Rollouts (start, read, list, move) and gateway replicas (heartbeat, list)."""

    # --- rollouts -----------------------------------------------------------------

    async def start_rollout(
        self,
        model: str,
        candidate_version: int,
        strategy: str | int = "canary",
        policy: registry_pb2.RolloutPolicy | None = None,
        *,
        reason: str = "",
    ) -> registry_pb2.Rollout:
        """Start rolling a version out over the deployed primary.

        ``strategy`` is blue-green, canary, rolling, shadow or bandit (or the
        enum value); ``policy`` from :func:`rollout_policy` (None: the defaults).
        """
        request = registry_pb2.StartRolloutRequest(
            model=model,
            candidate_version=candidate_version,
            strategy=enum_value("rollout strategy", strategy, _STRATEGIES),
            policy=policy,
            reason=reason,
        )
        return await self._write(self._stub.StartRollout, request)

    async def get_rollout(self, model: str) -> registry_pb2.Rollout:
        """The model's active rollout, else its latest (ModelNotFound when it never had one)."""
        request = registry_pb2.GetRolloutRequest(model=model)
        return await self._read(self._stub.GetRollout, request)

    async def list_rollouts(self, model: str, limit: int = 20) -> list[registry_pb2.RolloutHistory]:
        """The model's rollouts, newest first, each with its transitions (oldest first)."""
        request = registry_pb2.ListRolloutsRequest(model=model, limit=limit)
        return list((await self._read(self._stub.ListRollouts, request)).rollouts)

    async def transition_rollout(
        self,
        model: str,
        action: str | int,
        *,
        reason: str = "",
        evidence: Mapping[str, float] | None = None,
        expected_revision: int = 0,
        rollout_id: str = "",
    ) -> registry_pb2.Rollout:
        """Move the model's active rollout: pause, resume, advance, promote, rollback or abort.

        A controller passes the ``expected_revision`` (and ``rollout_id``) it decided
        on: when the rollout moved meanwhile, the call fails with FailedPrecondition
        and changes nothing. Never retried (a write). A rolling rollout's advance
        switches one gateway replica (FailedPrecondition while none left to switch
        reports the candidate ready).
        """
        request = registry_pb2.TransitionRolloutRequest(
            model=model,
            action=enum_value("rollout action", action, _ACTIONS),
            reason=reason,
            evidence=dict(evidence or {}),
            expected_revision=expected_revision,
            rollout_id=rollout_id,
        )
        return await self._write(self._stub.TransitionRollout, request)

    # --- gateway replicas -------------------------------------------------------------

    async def heartbeat(
        self, replica_id: str, address: str, versions: Iterable[registry_pb2.ReplicaVersion]
    ) -> registry_pb2.HeartbeatResponse:
        """Say this gateway replica is alive and what it has loaded; what it must answer with.

        One attempt (the next heartbeat is the retry).
        """
        request = registry_pb2.HeartbeatRequest(
            replica_id=replica_id, address=address, versions=list(versions)
        )
        return await self._write(self._stub.Heartbeat, request)

    async def list_replicas(self, model: str = "") -> list[registry_pb2.Replica]:
        """The live gateway replicas by id (with ``model``'s versions and assignments only)."""
        request = registry_pb2.ListReplicasRequest(model=model)
        return list((await self._read(self._stub.ListReplicas, request)).replicas)
