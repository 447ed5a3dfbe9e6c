"""Gateway replicas' pure rules: liveness, assignments, and the rolling switch one at a time."""

from __future__ import annotations

import datetime as dt

import pytest

from headwater.services.registry import rollouts
from headwater.services.registry.replicas import (
    Heartbeat,
    Replica,
    ReplicaVersion,
    RollingRollout,
    advance_rolling,
    assignments_for,
    next_to_switch,
    split_live,
    validate_heartbeat,
)
from headwater.services.registry.rollout_policy import RolloutPolicy
from headwater.shared.errors import FailedPrecondition, InvalidInput

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
BOTH_READY = (ReplicaVersion("m", 1), ReplicaVersion("m", 2, warmup_latency_ms=0.4))
ONLY_BASELINE = (ReplicaVersion("m", 1), ReplicaVersion("m", 2, ready=False))


def replica(replica_id: str, versions=BOTH_READY, age_s: float = 0.0) -> Replica:
    return Replica(replica_id, f"{replica_id}:8001", NOW - dt.timedelta(seconds=age_s), versions)


def rolling(
    state: str = "pending", step: int = 0, switched: tuple[str, ...] = ()
) -> rollouts.Rollout:
    return rollouts.Rollout("m", "rolling", 1, 2, RolloutPolicy(), state, step, switched)


# --- heartbeats and liveness ------------------------------------------------------------


def test_a_replica_is_live_up_to_the_timeout_and_expired_after() -> None:
    fresh, edge, silent = replica("gw-c"), replica("gw-a", age_s=15.0), replica("gw-b", age_s=15.1)
    live, expired = split_live([fresh, silent, edge], NOW, timeout_s=15.0)
    assert [r.id for r in live] == ["gw-a", "gw-c"]  # by id
    assert [r.id for r in expired] == ["gw-b"]
    assert split_live([silent], NOW, timeout_s=30.0) == ((silent,), ())


def test_heartbeats_are_checked() -> None:
    assert validate_heartbeat(Heartbeat("host-1234", "10.0.0.1:8001", BOTH_READY))
    with pytest.raises(InvalidInput, match="invalid replica id ''"):
        validate_heartbeat(Heartbeat("", "h:1"))
    with pytest.raises(InvalidInput, match="invalid replica id"):
        validate_heartbeat(Heartbeat("x" * 129, "h:1"))
    with pytest.raises(InvalidInput, match="address is longer than 256"):
        validate_heartbeat(Heartbeat("gw", "h" * 257))
    with pytest.raises(InvalidInput, match="invalid model name"):
        validate_heartbeat(Heartbeat("gw", "h:1", (ReplicaVersion("Not A Model", 1),)))
    with pytest.raises(InvalidInput, match="warm-up latency nan: finite and >= 0"):
        validate_heartbeat(Heartbeat("gw", "h:1", (ReplicaVersion("m", 1, True, float("nan")),)))


def test_ready_means_reported_loaded_and_ready() -> None:
    assert replica("gw", BOTH_READY).reports_ready("m", 2)
    assert not replica("gw", ONLY_BASELINE).reports_ready("m", 2)
    assert not replica("gw", BOTH_READY).reports_ready("other", 2)


# --- assignments --------------------------------------------------------------------------


def test_switched_replicas_answer_with_the_candidate_the_others_with_the_baseline() -> None:
    r = RollingRollout("r1", "m", 1, 2, step=0, switched=("gw-b",), deployment_revision=4)
    (b,) = assignments_for("gw-b", [r])
    (a,) = assignments_for("gw-a", [r])
    assert (b.version, b.switched, b.deployment_revision, b.rollout_id) == (2, True, 4, "r1")
    assert (a.version, a.switched) == (1, False)
    other = RollingRollout("r2", "n", 5, 6, step=0, switched=(), deployment_revision=1)
    assert [x.model for x in assignments_for("gw-b", [r, other])] == ["m", "n"]


def test_once_the_routes_switched_no_replica_needs_an_assignment() -> None:
    done = RollingRollout("r1", "m", 1, 2, step=1, switched=("gw-a", "gw-b"), deployment_revision=5)
    assert assignments_for("gw-a", [done]) == ()


# --- the next replica to switch ----------------------------------------------------------------


def test_the_next_replica_is_the_first_ready_one_in_id_order() -> None:
    live = [replica("gw-c"), replica("gw-a", ONLY_BASELINE), replica("gw-b")]
    assert next_to_switch(live, (), "m", 2).id == "gw-b"  # gw-a has not loaded v2 yet
    assert next_to_switch(live, ("gw-b",), "m", 2).id == "gw-c"
    assert next_to_switch(live, ("gw-b", "gw-c"), "m", 2) is None


def test_an_advance_switches_one_replica_and_keeps_the_routes() -> None:
    live = [replica("gw-b"), replica("gw-a"), replica("gw-c")]
    first = advance_rolling(rolling(), live)
    assert (first.replica_id, first.move.rollout.switched_replicas) == ("gw-a", ("gw-a",))
    assert first.move.routes is None
    assert (first.move.rollout.state, first.move.rollout.step) == ("progressing", 0)
    assert first.evidence == {
        "replicas.live": 3.0, "replicas.switched": 1.0, "replicas.ready": 3.0,
        "switched.warmup_latency_ms": 0.4,
    }  # fmt: skip
    second = advance_rolling(first.move.rollout, live)
    assert (second.replica_id, second.move.rollout.switched_replicas, second.move.routes) == (
        "gw-b", ("gw-a", "gw-b"), None)  # fmt: skip


def test_the_advance_switching_the_last_replica_switches_the_routes() -> None:
    live = [replica("gw-a"), replica("gw-b")]
    last = advance_rolling(rolling("progressing", switched=("gw-a",)), live)
    assert last.replica_id == "gw-b" and last.move.rollout.step == 1
    assert last.move.rollout.switched_replicas == ("gw-a", "gw-b")
    assert last.move.routes == rollouts.routes_at(rolling("progressing", step=1))
    with pytest.raises(FailedPrecondition, match=r"v2 already: promote it \(drops v1\)"):
        advance_rolling(last.move.rollout, live)


def test_a_replica_that_has_not_reported_the_candidate_ready_is_never_switched() -> None:
    live = [replica("gw-a"), replica("gw-b", ONLY_BASELINE)]
    first = advance_rolling(rolling(), live)
    assert first.replica_id == "gw-a" and first.move.routes is None
    with pytest.raises(FailedPrecondition, match=r"reports v2 ready \(waiting for gw-b\)"):
        advance_rolling(first.move.rollout, live)
    nobody = [replica("gw-a", ONLY_BASELINE), replica("gw-b", ONLY_BASELINE)]
    with pytest.raises(FailedPrecondition, match="waiting for gw-a, gw-b"):
        advance_rolling(rolling(), nobody)


def test_without_live_replicas_nothing_is_switched() -> None:
    with pytest.raises(FailedPrecondition, match="no live gateway replica to switch to v2 of 'm'"):
        advance_rolling(rolling(), [])


def test_when_every_live_replica_is_switched_only_the_routes_are_left() -> None:
    # gw-c was switched, then went silent: the two live ones are switched already
    live = [replica("gw-a"), replica("gw-b")]
    routes_only = advance_rolling(rolling("progressing", switched=("gw-a", "gw-c", "gw-b")), live)
    assert routes_only.replica_id == "" and routes_only.move.rollout.step == 1
    assert routes_only.evidence["replicas.switched"] == 2.0


def test_a_rollout_paused_after_a_switch_resumes_progressing() -> None:
    switched = advance_rolling(rolling(), [replica("gw-a"), replica("gw-b")]).move.rollout
    paused = rollouts.apply(switched, "pause").rollout
    assert rollouts.apply(paused, "resume").rollout.state == "progressing"
    assert rollouts.apply(rollouts.apply(rolling(), "pause").rollout, "resume").rollout.state == (
        "pending")  # fmt: skip


def test_a_paused_rolling_rollout_switches_nothing() -> None:
    with pytest.raises(FailedPrecondition, match="is paused: resume it or roll it back"):
        advance_rolling(rolling("paused"), [replica("gw-a")])
