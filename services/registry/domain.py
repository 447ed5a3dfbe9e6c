"""The registry's pure core: its values and the rules they obey.

No I/O happens here. Every check raises one of headwater's errors with a
message that names the problem, so the gRPC layer can pass it on verbatim.
Enumerations are plain strings (``"binary"``, ``"float"``…); :mod:`.convert`
maps them to and from the protobuf enums. The rules of deployments (routes,
weights, serving mode) are in :mod:`.deployments`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from headwater.shared import enums
from headwater.shared.errors import AlreadyExists, InvalidInput, ModelNotFound

TASKS = enums.names(enums.TASKS)
FEATURE_TYPES = enums.names(enums.FEATURE_TYPES)
SOURCES = enums.names(enums.SOURCES)
MAX_DESCRIPTION_CHARS = 4096
MAX_TAG_KEY_CHARS = 63
MAX_TAG_VALUE_CHARS = 256
MAX_FEATURE_NAME_CHARS = 128
MAX_FEATURES = 10_000

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
# Aliases start with a letter so that an alias is never mistaken for a version.
_ALIAS_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
_FEATURE_NAME = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_FEATURE_NAME_CHARS}}}")


@dataclass(frozen=True)
class Feature:
    """One input column of a model."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class NewModel:
    """A model as a caller asks to create it."""

    name: str
    task: str
    features: tuple[Feature, ...]
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OffsetRange:
    """Inclusive offsets of one topic-partition a version learned from."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class Lineage:
    """Where a version comes from: enough to rebuild it by replaying the log."""

    parent_version: int = 0
    source: str = "spec"
    offsets: tuple[OffsetRange, ...] = ()
    example_count: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True)
class NewVersion:
    """A version as a caller asks to register it (artifact empty: build from the spec)."""

    model: str
    spec_json: str
    lineage: Lineage
    artifact: bytes = b""
    artifact_signature: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    >>> validate_model_name("churn-v2.eu")
    'churn-v2.eu'
    >>> validate_model_name("Churn")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: invalid model name 'Churn': use 1-63 of a-z 0-9 _ . - \
starting with a letter or digit
    """
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name!r}: "
            "use 1-63 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


def validate_alias_name(alias: str) -> str:
    """Return ``alias`` if it is a valid alias name (it must start with a letter).

    >>> validate_alias_name("champion")
    'champion'
    >>> validate_alias_name("3")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: invalid alias '3': use 1-63 of a-z 0-9 _ . - \
starting with a letter
    """
    if not _ALIAS_NAME.fullmatch(alias):
        raise InvalidInput(
            f"invalid alias {alias!r}: use 1-63 of a-z 0-9 _ . - starting with a letter"
        )
    return alias


def validate_choice(kind: str, value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``.

    >>> validate_choice("task", "binary", TASKS)
    'binary'
    >>> validate_choice("task", "", TASKS)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: task is required: one of binary, multiclass, regression
    """
    options = tuple(allowed)
    if value in options:
        return value
    what = f"{kind} is required" if not value else f"unknown {kind} {value!r}"
    raise InvalidInput(f"{what}: one of {', '.join(options)}")


def validate_features(features: Iterable[Feature]) -> tuple[Feature, ...]:
    """Check a feature schema: non-empty, unique names, known types.

    >>> [f.name for f in validate_features([Feature("age", "int"), Feature("plan", "str")])]
    ['age', 'plan']
    >>> validate_features([Feature("age", "int"), Feature("age", "float")])
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: feature 'age' is declared twice
    >>> validate_features([Feature("age", "decimal")])
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: feature 'age': unknown type 'decimal': one of float, \
int, str, bool
    """
    schema = tuple(features)
    if not schema:
        raise InvalidInput("a model needs at least one feature")
    if len(schema) > MAX_FEATURES:
        raise InvalidInput(f"a model has at most {MAX_FEATURES} features, got {len(schema)}")
    seen: set[str] = set()
    for feature in schema:
        if not _FEATURE_NAME.fullmatch(feature.name):
            raise InvalidInput(
                f"invalid feature name {feature.name!r}: 1-{MAX_FEATURE_NAME_CHARS} characters, "
                "no whitespace or control characters"
            )
        if feature.name in seen:
            raise InvalidInput(f"feature {feature.name!r} is declared twice")
        seen.add(feature.name)
        try:
            validate_choice("type", feature.type, FEATURE_TYPES)
        except InvalidInput as error:
            raise InvalidInput(f"feature {feature.name!r}: {error}") from None
    return schema


def validate_text(kind: str, text: str, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """Return ``text`` if it is at most ``max_chars`` long.

    >>> validate_text("description", "x" * 5, max_chars=4)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: description is longer than 4 characters
    """
    if len(text) > max_chars:
        raise InvalidInput(f"{kind} is longer than {max_chars} characters")
    return text


def validate_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Check tag keys and values and return them as a plain dict.

    >>> validate_tags({"team": "growth"})
    {'team': 'growth'}
    >>> validate_tags({"": "x"})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: tag keys must be 1-63 characters, got ''
    """
    for key, value in tags.items():
        if not 0 < len(key) <= MAX_TAG_KEY_CHARS:
            raise InvalidInput(f"tag keys must be 1-{MAX_TAG_KEY_CHARS} characters, got {key!r}")
        validate_text(f"tag {key!r}", value, MAX_TAG_VALUE_CHARS)
    return dict(tags)


def validate_new_model(model: NewModel) -> NewModel:
    """Check every field of a model to create.

    >>> validate_new_model(NewModel("churn", "binary", (Feature("age", "int"),))).name
    'churn'
    """
    validate_model_name(model.name)
    validate_choice("task", model.task, TASKS)
    validate_features(model.features)
    validate_text("description", model.description)
    validate_tags(model.tags)
    return model


def validate_offsets(offsets: Iterable[OffsetRange]) -> tuple[OffsetRange, ...]:
    """Check lineage offset ranges: named topic, partition >= 0, 0 <= first <= last.

    >>> validate_offsets([OffsetRange("examples", 0, 10, 19)])[0].last_offset
    19
    >>> validate_offsets([OffsetRange("examples", 0, 20, 19)])
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: offset range examples[0]: first_offset 20 > last_offset 19
    """
    ranges = tuple(offsets)
    for r in ranges:
        where = f"offset range {r.topic}[{r.partition}]"
        if not r.topic:
            raise InvalidInput("offset range: topic is required")
        if r.partition < 0 or r.first_offset < 0:
            raise InvalidInput(f"{where}: partition and offsets must be >= 0")
        if r.first_offset > r.last_offset:
            raise InvalidInput(
                f"{where}: first_offset {r.first_offset} > last_offset {r.last_offset}"
            )
    return ranges


def validate_lineage(lineage: Lineage) -> Lineage:
    """Check a version's lineage (the parent's existence is checked against the database).

    >>> validate_lineage(Lineage(example_count=-1))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: lineage example_count must be >= 0, got -1
    """
    if lineage.parent_version < 0:
        raise InvalidInput(f"lineage parent_version must be >= 0, got {lineage.parent_version}")
    if lineage.example_count < 0:
        raise InvalidInput(f"lineage example_count must be >= 0, got {lineage.example_count}")
    if lineage.seed < 0:
        raise InvalidInput(f"lineage seed must be >= 0, got {lineage.seed}")
    validate_choice("source", lineage.source, SOURCES)
    validate_offsets(lineage.offsets)
    for name, value in lineage.metrics.items():
        if not name:
            raise InvalidInput("lineage metric names must not be empty")
        if not math.isfinite(value):
            raise InvalidInput(f"lineage metric {name!r} must be finite, got {value}")
    return lineage


def validate_new_version(version: NewVersion) -> NewVersion:
    """Check the fields of a version to register that need no database."""
    validate_model_name(version.model)
    if not version.spec_json.strip():
        raise InvalidInput("spec_json is required")
    if version.artifact and not version.artifact_signature:
        raise InvalidInput("artifact_signature is required when an artifact is given")
    validate_lineage(version.lineage)
    validate_text("description", version.description)
    validate_tags(version.tags)
    return version


def check_parent(model: str, parent_version: int, existing: Collection[int]) -> None:
    """Raise unless the parent version (0: none) is one of ``existing``.

    >>> check_parent("churn", 0, set())
    >>> check_parent("churn", 4, {1, 2})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.ModelNotFound: parent version 4 of model 'churn' does not exist
    """
    if parent_version and parent_version not in existing:
        raise ModelNotFound(f"parent version {parent_version} of model {model!r} does not exist")


def pick_seed(seed: int, entropy: int) -> int:
    """Keep a caller's seed, or turn ``entropy`` into a positive 31-bit seed for 0.

    >>> pick_seed(42, 7)
    42
    >>> 0 < pick_seed(0, 2**40 + 5) < 2**31
    True
    """
    return seed if seed else entropy % (2**31 - 1) + 1


def model_exists_error(name: str) -> AlreadyExists:
    """The error for creating a model whose name is taken.

    >>> str(model_exists_error("churn"))
    "model 'churn' already exists"
    """
    return AlreadyExists(f"model {name!r} already exists")


def no_model_error(name: str) -> ModelNotFound:
    """The error for a model that does not exist.

    >>> str(no_model_error("churn"))
    "no model named 'churn'"
    """
    return ModelNotFound(f"no model named {name!r}")


def no_version_error(model: str, ref: int | str) -> ModelNotFound:
    """The error for a version (number or alias) that does not exist.

    >>> str(no_version_error("churn", 7))
    "model 'churn' has no version 7"
    >>> str(no_version_error("churn", "champion"))
    "model 'churn' has no alias 'champion'"
    """
    if isinstance(ref, int):
        return ModelNotFound(f"model {model!r} has no version {ref}")
    return ModelNotFound(f"model {model!r} has no alias {ref!r}")
