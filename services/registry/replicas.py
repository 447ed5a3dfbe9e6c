"""Gateway replicas and the rolling strategy's one-replica-at-a-time switch (pure, no I/O).

Every gateway replica heartbeats: its id, its address and the versions it has
in memory, each ``ready`` (routed and warmed up) or not. A replica whose last
heartbeat is older than the replica timeout is no longer live: it is dropped
from every answer (the registry deletes it lazily).

A rolling rollout starts like blue/green (the candidate a challenger on every
replica). Each ADVANCE switches one replica: the first live one, in id order,
that is not switched yet and reports the candidate ready. A switched replica
answers with the candidate, the others with the baseline; each is told so in
its heartbeat answer (an :class:`Assignment`, which holds for one deployment
revision only). The ADVANCE that leaves no live replica unswitched also
switches the deployment's routes (candidate primary, baseline challenger), as
blue/green does at once. So a replica is switched only once it reports the
candidate ready, and never more than one per ADVANCE: a rolling update never
leaves every replica unready.

>>> now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
>>> ready = (ReplicaVersion("m", 1), ReplicaVersion("m", 2))
>>> gateways = [Replica("gw-b", "b:8001", now, ready), Replica("gw-a", "a:8001", now, ready)]
>>> rollout = rollouts.start("m", "rolling", 1, 2, rollouts.RolloutPolicy()).rollout
>>> first = advance_rolling(rollout, gateways)
>>> first.replica_id, first.move.rollout.state, first.move.routes
('gw-a', 'progressing', None)
>>> last = advance_rolling(first.move.rollout, gateways)
>>> last.replica_id, last.move.rollout.switched_replicas, last.move.routes[0]
('gw-b', ('gw-a', 'gw-b'), Route(version=2, weight=1.0, role='primary'))
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from headwater.services.registry import rollouts
from headwater.services.registry.domain import validate_model_name
from headwater.shared.errors import FailedPrecondition, InvalidInput

MAX_REPLICA_ID_CHARS = 128
MAX_ADDRESS_CHARS = 256
#: Most versions one heartbeat may report (every model's, all replicas alike).
MAX_REPORTED_VERSIONS = 10_000
_REPLICA_ID = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_REPLICA_ID_CHARS}}}")


@dataclass(frozen=True)
class ReplicaVersion:
    """One version a replica has in memory.

    Attributes:
        model: The model's name.
        version: The version number.
        ready: Routed and warmed up: it answers as soon as it is asked to.
        warmup_latency_ms: Median latency of its warm-up predictions (0: none measured).

    """

    model: str
    version: int
    ready: bool = True
    warmup_latency_ms: float = 0.0


@dataclass(frozen=True)
class Heartbeat:
    """What a replica reports: who and where it is, what it has loaded."""

    replica_id: str
    address: str
    versions: tuple[ReplicaVersion, ...] = ()


@dataclass(frozen=True)
class Replica:
    """A replica as the registry last heard from it."""

    id: str
    address: str
    last_heartbeat_at: dt.datetime
    versions: tuple[ReplicaVersion, ...] = ()
    first_heartbeat_at: dt.datetime | None = None

    def reports_ready(self, model: str, version: int) -> bool:
        """Whether the replica reports ``version`` of ``model`` loaded and ready.

        >>> at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        >>> replica = Replica("gw", "h:1", at, (ReplicaVersion("m", 2, ready=False),))
        >>> replica.reports_ready("m", 2), replica.reports_ready("m", 3)
        (False, False)
        """
        return any(v.model == model and v.version == version and v.ready for v in self.versions)


@dataclass(frozen=True)
class RollingRollout:
    """An active rolling rollout, as its replicas' assignments need it.

    Attributes:
        id: The rollout's id.
        model: The model rolled out.
        baseline_version: What an unswitched replica answers with.
        candidate_version: What a switched replica answers with.
        step: 0 while replicas are switched one by one; 1 once the routes switched too.
        switched: The replicas switched so far, in switch order.
        deployment_revision: The deployment revision the assignments hold for.

    """

    id: str
    model: str
    baseline_version: int
    candidate_version: int
    step: int
    switched: tuple[str, ...]
    deployment_revision: int


@dataclass(frozen=True)
class Assignment:
    """The version one replica answers with for one model, while the revision stands."""

    model: str
    version: int
    deployment_revision: int
    rollout_id: str
    switched: bool


@dataclass(frozen=True)
class Switch:
    """The outcome of a rolling ADVANCE.

    Attributes:
        move: The rollout after it (with every replica switched so far), and the
            routes (None while live replicas remain unswitched).
        replica_id: The replica switched ('' when only the routes switched).
        evidence: Replica counts (live, switched, ready) and the replica's warm-up latency.

    """

    move: rollouts.Move
    replica_id: str
    evidence: Mapping[str, float] = field(default_factory=dict)


def validate_heartbeat(beat: Heartbeat) -> Heartbeat:
    """Check a heartbeat; return it.

    >>> validate_heartbeat(Heartbeat("gw-1", "10.0.0.7:8001")).replica_id
    'gw-1'
    >>> validate_heartbeat(Heartbeat("gw 1", "h:1"))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: invalid replica id 'gw 1': 1-128 characters, no \
whitespace or control ones
    >>> validate_heartbeat(Heartbeat("gw", "h:1", (ReplicaVersion("m", 0),)))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: replica gw reports version 0 of 'm': versions are >= 1
    """
    if not _REPLICA_ID.fullmatch(beat.replica_id):
        raise InvalidInput(
            f"invalid replica id {beat.replica_id!r}: 1-{MAX_REPLICA_ID_CHARS} characters, "
            "no whitespace or control ones"
        )
    if len(beat.address) > MAX_ADDRESS_CHARS:
        raise InvalidInput(f"replica address is longer than {MAX_ADDRESS_CHARS} characters")
    if len(beat.versions) > MAX_REPORTED_VERSIONS:
        raise InvalidInput(f"a heartbeat reports at most {MAX_REPORTED_VERSIONS} versions")
    for reported in beat.versions:
        validate_model_name(reported.model)
        what = f"replica {beat.replica_id} reports version {reported.version} of {reported.model!r}"
        if reported.version < 1:
            raise InvalidInput(f"{what}: versions are >= 1")
        latency = reported.warmup_latency_ms
        if not (math.isfinite(latency) and latency >= 0):
            raise InvalidInput(f"{what} with warm-up latency {latency}: finite and >= 0")
    return beat


def new_warmups(
    beat: Heartbeat, previous: Iterable[ReplicaVersion] | None
) -> tuple[ReplicaVersion, ...]:
    """The versions whose warm-up latency this heartbeat reports anew.

    A latency is new when it was measured (> 0) and differs from the one the
    replica's previous heartbeat (``previous``; None: there was none) reported
    for that version: only those are recorded as evaluations, so a steady
    replica's heartbeats write nothing more than their own row.

    >>> before = (ReplicaVersion("m", 1, warmup_latency_ms=0.4), ReplicaVersion("m", 2, False))
    >>> beat = Heartbeat("gw", "h:1", (ReplicaVersion("m", 1, warmup_latency_ms=0.4),
    ...                                ReplicaVersion("m", 2, warmup_latency_ms=0.9)))
    >>> [v.version for v in new_warmups(beat, before)], len(new_warmups(beat, None))
    ([2], 2)
    """
    known = {(v.model, v.version): v.warmup_latency_ms for v in previous or ()}
    reported = {(v.model, v.version): v for v in beat.versions}  # a version named twice: once
    return tuple(
        v
        for key, v in reported.items()
        if v.warmup_latency_ms > 0 and known.get(key) != v.warmup_latency_ms
    )


def is_live(replica: Replica, now: dt.datetime, timeout_s: float) -> bool:
    """Whether the replica heartbeat within the last ``timeout_s`` seconds.

    >>> at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    >>> replica = Replica("gw", "h:1", at)
    >>> is_live(replica, at + dt.timedelta(seconds=15), 15.0)
    True
    >>> is_live(replica, at + dt.timedelta(seconds=15.5), 15.0)
    False
    """
    return (now - replica.last_heartbeat_at).total_seconds() <= timeout_s


def split_live(
    replicas: Iterable[Replica], now: dt.datetime, timeout_s: float
) -> tuple[tuple[Replica, ...], tuple[Replica, ...]]:
    """The live replicas and the expired ones, each by id."""
    ordered = sorted(replicas, key=lambda r: r.id)
    live = tuple(r for r in ordered if is_live(r, now, timeout_s))
    expired = tuple(r for r in ordered if not is_live(r, now, timeout_s))
    return live, expired


def assignments_for(replica_id: str, rolling: Iterable[RollingRollout]) -> tuple[Assignment, ...]:
    """What ``replica_id`` answers with for each model a rolling rollout is switching.

    Once the routes switched too (step 1) the deployment says it for every
    replica, so no assignment is needed.

    >>> r = RollingRollout("r1", "m", 1, 2, step=0, switched=("gw-a",), deployment_revision=7)
    >>> [(a.version, a.switched) for a in assignments_for("gw-a", [r])]
    [(2, True)]
    >>> [(a.version, a.switched) for a in assignments_for("gw-b", [r])]
    [(1, False)]
    >>> assignments_for("gw-a", [replace(r, step=1)])
    ()
    """
    return tuple(
        Assignment(
            model=r.model,
            version=r.candidate_version if replica_id in r.switched else r.baseline_version,
            deployment_revision=r.deployment_revision,
            rollout_id=r.id,
            switched=replica_id in r.switched,
        )
        for r in rolling
        if r.step == 0
    )


def next_to_switch(
    live: Sequence[Replica], switched: Iterable[str], model: str, candidate: int
) -> Replica | None:
    """The first live replica, in id order, not switched yet and reporting the candidate ready.

    >>> at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    >>> loading = Replica("gw-a", "a:1", at, (ReplicaVersion("m", 2, ready=False),))
    >>> warm = Replica("gw-b", "b:1", at, (ReplicaVersion("m", 2),))
    >>> next_to_switch([warm, loading], (), "m", 2).id
    'gw-b'
    >>> next_to_switch([warm, loading], ("gw-b",), "m", 2) is None
    True
    """
    done = set(switched)
    waiting = sorted((r for r in live if r.id not in done), key=lambda r: r.id)
    return next((r for r in waiting if r.reports_ready(model, candidate)), None)


def advance_rolling(rollout: rollouts.Rollout, live: Sequence[Replica]) -> Switch:
    """Switch the next replica of a rolling rollout (see the module docstring).

    ``live`` are the live replicas; ``rollout.switched_replicas`` the ones switched so far.

    Raises:
        FailedPrecondition: the rollout's state does not allow an advance, there
            is no live replica, or none left to switch reports the candidate ready;
            the message names what to do.

    """
    final = rollouts.apply(rollout, "advance")  # refuses what any advance from here would
    model, candidate, switched = rollout.model, rollout.candidate_version, rollout.switched_replicas
    if not live:
        raise FailedPrecondition(
            f"no live gateway replica to switch to v{candidate} of {model!r}: start a gateway, "
            f"or promote the rollout (headwater rollout promote {model})"
        )
    waiting = [r for r in live if r.id not in switched]
    chosen = next_to_switch(live, switched, model, candidate)
    if waiting and chosen is None:
        names = ", ".join(r.id for r in waiting)
        raise FailedPrecondition(
            f"no gateway replica of {model!r} left to switch reports v{candidate} ready "
            f"(waiting for {names}): advance again once one does "
            f"(headwater rollout status {model})"
        )
    if chosen is None:  # every live replica is switched already: only the routes are left
        return Switch(final, "", _evidence(rollout, live, switched, None))
    now_switched = (*switched, chosen.id)
    state = final.rollout.state
    if [r for r in waiting if r is not chosen]:  # others left: the routes stay as they are
        move = rollouts.Move(replace(rollout, state=state, switched_replicas=now_switched), None)
    else:
        move = rollouts.Move(replace(final.rollout, switched_replicas=now_switched), final.routes)
    return Switch(move, chosen.id, _evidence(rollout, live, now_switched, chosen))


def check_switch_ready(rollout: rollouts.Rollout, live: Sequence[Replica]) -> dict[str, float]:
    """The evidence of a blue/green switch; refused while a live replica is not ready.

    Every live replica must report the candidate loaded and ready before the one
    atomic switch, so no replica answers with a version it is still loading. With no
    live replica (gateways that do not heartbeat) there is nothing to wait for.

    >>> at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    >>> r = rollouts.Rollout("m", "blue-green", 1, 2)
    >>> check_switch_ready(r, [Replica("gw-a", "a:1", at, (ReplicaVersion("m", 2),))])
    {'replicas.live': 1.0, 'replicas.switched': 0.0, 'replicas.ready': 1.0}
    >>> check_switch_ready(r, [Replica("gw-b", "b:1", at, (ReplicaVersion("m", 2, ready=False),))])
    Traceback (most recent call last):
    ...
    headwater.shared.errors.FailedPrecondition: gateway replicas gw-b do not report v2 of 'm' ...

    Raises:
        FailedPrecondition: A live replica does not report the candidate ready.

    """
    model, candidate = rollout.model, rollout.candidate_version
    waiting = sorted(r.id for r in live if not r.reports_ready(model, candidate))
    if waiting:
        raise FailedPrecondition(
            f"gateway replicas {', '.join(waiting)} do not report v{candidate} of {model!r} "
            f"ready yet: switch once every replica does (headwater rollout status {model})"
        )
    return _evidence(rollout, live, (), None)


def _evidence(
    rollout: rollouts.Rollout,
    live: Sequence[Replica],
    switched: Sequence[str],
    chosen: Replica | None,
) -> dict[str, float]:
    model, candidate = rollout.model, rollout.candidate_version
    evidence = {
        "replicas.live": float(len(live)),
        "replicas.switched": float(sum(r.id in switched for r in live)),
        "replicas.ready": float(sum(r.reports_ready(model, candidate) for r in live)),
    }
    if chosen is not None:
        latencies = [
            v.warmup_latency_ms
            for v in chosen.versions
            if v.model == model and v.version == candidate and v.warmup_latency_ms > 0
        ]
        if latencies:
            evidence["switched.warmup_latency_ms"] = latencies[0]
    return evidence
