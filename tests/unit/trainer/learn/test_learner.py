"""The online learner: test-then-train as River does it, dedupe, offsets, save/restore."""

from __future__ import annotations

import itertools
import pickle

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, utils

from headwater.services.trainer.learn.learner import (
    Example,
    Learner,
    OffsetSpan,
    Position,
    Progress,
    StepKind,
    id_digest,
)
from headwater.services.trainer.learn.updates import (
    encode_update,
    progress_from_update,
    progress_to_update,
)
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import decode_event, protobuf_header
from headwater.shared.errors import ArtifactIntegrityError, InvalidInput
from headwater.shared.model_updates import verify_update
from headwater.shared.pb import events_pb2

TOPIC = "hw.examples"


def classifier():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def regressor():
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


def sea(n: int, seed: int = 7) -> list[tuple[dict, bool]]:
    return list(itertools.islice(datasets.synth.SEA(variant=1, seed=seed), n))


def friedman(n: int, seed: int = 3) -> list[tuple[dict, float]]:
    return list(itertools.islice(datasets.synth.Friedman(seed=seed), n))


def feed(learner: Learner, stream, start: int = 0, partition: int = 0) -> list[StepKind]:
    return [
        learner.process(Example(f"e{start + i}", x, y), Position(TOPIC, partition, start + i))
        for i, (x, y) in enumerate(stream)
    ]


@pytest.mark.parametrize(
    ("kind", "build", "stream", "metric"),
    [
        ("classifier", classifier, sea(400), metrics.Accuracy),
        ("regressor", regressor, friedman(400), metrics.MAE),
    ],
)
def test_test_then_train_matches_river_progressive_validation(kind, build, stream, metric):
    learner = Learner("m", kind, base_version=1, model=build())
    assert set(feed(learner, stream)) == {StepKind.LEARNED}

    reference_model = build()
    reference = evaluate.progressive_val_score(stream, reference_model, metric())
    name = "accuracy" if kind == "classifier" else "mae"
    assert learner.metrics()[name] == pytest.approx(reference.get(), rel=1e-12)
    assert learner.metrics()["examples"] == 400.0
    probe = sea(20, seed=99) if kind == "classifier" else friedman(20, seed=99)
    assert [learner.model.predict_one(x) for x, _ in probe] == [
        reference_model.predict_one(x) for x, _ in probe
    ]


def test_rolling_metric_covers_the_window_only():
    learner = Learner("m", "classifier", base_version=1, model=classifier(), metric_window=50)
    feed(learner, sea(300))
    reference = utils.Rolling(metrics.Accuracy, window_size=50)
    model = classifier()
    for x, y in sea(300):
        y_pred = model.predict_one(x)
        model.learn_one(x, y)
        reference.update(y, y_pred)
    assert learner.metrics()["rolling_accuracy"] == pytest.approx(reference.get())
    assert len(learner.progress().window) == 50


def test_duplicate_ids_are_learned_once_and_counted():
    learner = Learner("m", "classifier", base_version=1, model=classifier())
    stream = sea(10)
    steps = [
        learner.process(Example(f"id{i % 5}", x, y), Position(TOPIC, 0, i))
        for i, (x, y) in enumerate(stream)
    ]
    assert steps == [StepKind.LEARNED] * 5 + [StepKind.DUPLICATE] * 5
    assert learner.examples_learned == 5
    assert learner.progress().duplicates == 5
    # duplicates are consumed: their offsets are in the lineage
    assert learner.offsets() == (OffsetSpan(TOPIC, 0, 0, 9),)


def test_dedupe_memory_is_bounded():
    learner = Learner("m", "classifier", base_version=1, model=classifier(), dedupe_ids=3)
    x, y = sea(1)[0]
    for i, example_id in enumerate(["a", "b", "c", "d"]):
        learner.process(Example(example_id, x, y), Position(TOPIC, 0, i))
    assert len(learner.progress().recent_ids) == 3
    # "a" fell out of the window, "d" did not
    assert learner.process(Example("d", x, y), Position(TOPIC, 0, 4)) is StepKind.DUPLICATE
    assert learner.process(Example("a", x, y), Position(TOPIC, 0, 5)) is StepKind.LEARNED


def test_offset_ranges_per_partition_are_inclusive_and_redelivery_is_skipped():
    learner = Learner("m", "classifier", base_version=1, model=classifier())
    data = sea(12)
    feed(learner, data[:4], start=10, partition=1)
    feed(learner, data[4:8], start=3, partition=0)
    feed(learner, data[8:], start=14, partition=1)
    assert learner.offsets() == (
        OffsetSpan(TOPIC, 0, 3, 6),
        OffsetSpan(TOPIC, 1, 10, 17),
    )
    assert learner.next_offset(TOPIC, 1) == 18
    assert learner.next_offset(TOPIC, 5) is None
    # a redelivered record (offset already consumed) is not learned again
    x, y = data[0]
    step = learner.process(Example("new-id", x, y), Position(TOPIC, 1, 12))
    assert step is StepKind.ALREADY_CONSUMED
    assert learner.examples_learned == 12


def test_skip_marks_a_position_consumed_without_learning():
    learner = Learner("m", "classifier", base_version=1, model=classifier())
    learner.skip(Position(TOPIC, 0, 4))
    assert learner.examples_learned == 0
    assert learner.next_offset(TOPIC, 0) == 5


def test_save_and_restore_continues_exactly_like_an_uninterrupted_learner():
    stream = sea(300)
    whole = Learner("m", "classifier", base_version=3, model=classifier())
    feed(whole, stream)

    first = Learner("m", "classifier", base_version=3, model=classifier())
    feed(first, stream[:170])
    saved_model = pickle.dumps(first.model)
    saved_progress = progress_to_update(first.progress()).SerializeToString()

    restored = Learner(
        "m",
        "classifier",
        base_version=3,
        model=pickle.loads(saved_model),
        progress=progress_from_update(events_pb2.ModelUpdate.FromString(saved_progress)),
    )
    probe = sea(30, seed=5)
    assert [restored.model.predict_one(x) for x, _ in probe] == [
        first.model.predict_one(x) for x, _ in probe
    ]
    # the restarted consumer re-reads from an earlier offset: those are skipped
    steps = feed(restored, stream[150:], start=150)
    assert steps[:20] == [StepKind.ALREADY_CONSUMED] * 20
    assert restored.progress() == whole.progress()
    assert restored.metrics() == whole.metrics()
    assert [restored.model.predict_one(x) for x, _ in probe] == [
        whole.model.predict_one(x) for x, _ in probe
    ]


def test_deterministic_for_the_same_stream():
    runs = []
    for _ in range(2):
        learner = Learner("m", "classifier", base_version=1, model=classifier())
        feed(learner, sea(200))
        runs.append((learner.progress(), pickle.dumps(learner.model)))
    assert runs[0] == runs[1]


def test_failing_example_leaves_bookkeeping_unchanged():
    learner = Learner("m", "regressor", base_version=1, model=regressor())
    feed(learner, friedman(5))
    before = learner.progress()
    with pytest.raises((TypeError, ValueError)):
        learner.process(Example("bad", {"x": 1.0}, "not-a-number"), Position(TOPIC, 0, 5))
    assert learner.progress().examples_learned == before.examples_learned
    assert learner.next_offset(TOPIC, 0) == 5


def test_progress_must_match_the_base_version():
    with pytest.raises(InvalidInput, match="base version 2"):
        Learner("m", "classifier", base_version=3, model=classifier(), progress=Progress(2))


def test_progress_round_trips_and_rejects_garbage():
    learner = Learner("m", "regressor", base_version=1, model=regressor())
    feed(learner, friedman(50))
    progress = learner.progress()
    saved = progress_to_update(progress).SerializeToString()
    assert progress_from_update(events_pb2.ModelUpdate.FromString(saved)) == progress
    assert id_digest("e0") in progress.recent_ids
    with pytest.raises(InvalidInput):
        decode_event(events_pb2.ModelUpdate, b"not json", [protobuf_header()])
    codec = ArtifactCodec("unit-key")
    broken = encode_update("m", codec.encode(learner.model), progress, 1, codec, now=0.0)
    broken.progress.window[0] = 1e9  # saved progress changed after signing
    with pytest.raises(ArtifactIntegrityError):
        verify_update(codec, broken)


def test_rebase_onto_a_checkpoint_keeps_the_model_and_restarts_the_lineage():
    stream = sea(150)
    learner = Learner("m", "classifier", base_version=1, model=classifier())
    feed(learner, stream[:100], start=1000)
    mark = learner.progress()
    at_mark = pickle.dumps(learner.model)
    feed(learner, stream[100:], start=1100)

    learner.rebase(7, mark)

    assert learner.base_version == 7
    assert learner.examples_learned == 50
    assert learner.offsets() == (OffsetSpan(TOPIC, 0, 1100, 1149),)
    assert learner.next_offset(TOPIC, 0) == 1150
    x, y = stream[0]
    assert learner.process(Example("e-new", x, y), Position(TOPIC, 0, 1099)) is (
        StepKind.ALREADY_CONSUMED
    )
    # the same as starting from the checkpoint's artifact and learning what came after it
    from_checkpoint = Learner(
        "m",
        "classifier",
        base_version=7,
        model=pickle.loads(at_mark),
        progress=Progress(
            7, window=mark.window, recent_ids=mark.recent_ids, positions=mark.positions
        ),
    )
    feed(from_checkpoint, stream[100:], start=1100)
    assert from_checkpoint.progress() == learner.progress()
    assert from_checkpoint.metrics() == pytest.approx(learner.metrics())


def test_rebase_needs_a_checkpoint_of_the_same_base():
    learner = Learner("m", "classifier", base_version=2, model=classifier())
    with pytest.raises(InvalidInput, match="base version 1"):
        learner.rebase(3, Progress(1))
