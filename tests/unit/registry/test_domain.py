"""The registry's pure rules: names, schemas, lineage and routes."""

from __future__ import annotations

import math

import pytest

from headwater.services.registry import domain
from headwater.services.registry.domain import (
    Feature,
    Lineage,
    NewModel,
    NewVersion,
    OffsetRange,
)
from headwater.shared.errors import InvalidInput, ModelNotFound


@pytest.mark.parametrize("name", ["a", "churn", "churn-v2", "eu.churn_2", "0abc", "a" * 63])
def test_valid_model_names(name: str) -> None:
    assert domain.validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "Churn", "-a", ".a", "_a", "a b", "a/b", "a" * 64, "é"])
def test_invalid_model_names_name_the_problem(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        domain.validate_model_name(name)


@pytest.mark.parametrize("alias", ["champion", "challenger", "blue-2", "a.b_c"])
def test_valid_aliases(alias: str) -> None:
    assert domain.validate_alias_name(alias) == alias


@pytest.mark.parametrize("alias", ["", "1", "2b", "Champion", "has space", "a" * 64])
def test_invalid_aliases(alias: str) -> None:
    with pytest.raises(InvalidInput, match="invalid alias"):
        domain.validate_alias_name(alias)


def test_feature_schema_keeps_order_and_rejects_problems() -> None:
    schema = [Feature("b", "float"), Feature("a", "str", required=False), Feature("c", "bool")]
    assert [f.name for f in domain.validate_features(schema)] == ["b", "a", "c"]
    with pytest.raises(InvalidInput, match="at least one feature"):
        domain.validate_features([])
    with pytest.raises(InvalidInput, match="invalid feature name ''"):
        domain.validate_features([Feature("", "int")])
    with pytest.raises(InvalidInput, match="invalid feature name 'a b'"):
        domain.validate_features([Feature("a b", "int")])
    with pytest.raises(InvalidInput, match="feature 'x': type is required"):
        domain.validate_features([Feature("x", "")])


def test_new_model_checks_task_tags_and_description() -> None:
    features = (Feature("x", "float"),)
    with pytest.raises(InvalidInput, match="unknown task 'ranking'"):
        domain.validate_new_model(NewModel("m", "ranking", features))
    with pytest.raises(InvalidInput, match="tag keys"):
        domain.validate_new_model(NewModel("m", "binary", features, tags={"k" * 64: "v"}))
    with pytest.raises(InvalidInput, match="description is longer"):
        domain.validate_new_model(NewModel("m", "binary", features, description="x" * 5000))
    assert domain.validate_new_model(NewModel("m", "regression", features)).task == "regression"


def test_lineage_rules() -> None:
    assert domain.validate_lineage(Lineage(source="batch", seed=3)).seed == 3
    with pytest.raises(InvalidInput, match="parent_version must be >= 0"):
        domain.validate_lineage(Lineage(parent_version=-1))
    with pytest.raises(InvalidInput, match="unknown source 'replay'"):
        domain.validate_lineage(Lineage(source="replay"))
    with pytest.raises(InvalidInput, match="metric 'auc' must be finite"):
        domain.validate_lineage(Lineage(metrics={"auc": math.nan}))
    with pytest.raises(InvalidInput, match="topic is required"):
        domain.validate_lineage(Lineage(offsets=(OffsetRange("", 0, 0, 1),)))
    with pytest.raises(InvalidInput, match="partition and offsets must be >= 0"):
        domain.validate_offsets([OffsetRange("examples", -1, 0, 1)])


def test_new_version_needs_a_spec_and_a_signature_with_bytes() -> None:
    with pytest.raises(InvalidInput, match="spec_json is required"):
        domain.validate_new_version(NewVersion("m", "  ", Lineage()))
    with pytest.raises(InvalidInput, match="artifact_signature is required"):
        domain.validate_new_version(NewVersion("m", "{}", Lineage(), artifact=b"x"))


def test_parent_must_exist() -> None:
    domain.check_parent("m", 2, range(1, 3))
    with pytest.raises(ModelNotFound, match="parent version 3"):
        domain.check_parent("m", 3, range(1, 3))


def test_pick_seed_keeps_a_given_seed_and_never_returns_zero() -> None:
    assert domain.pick_seed(9, 12345) == 9
    assert all(0 < domain.pick_seed(0, e) < 2**31 for e in (0, 1, 2**31 - 2, 2**31 - 1, 2**62))
