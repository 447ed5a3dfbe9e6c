"""The names of the registry's protobuf enums, in one place.

Settings, the CLI, SQL rows and error messages use these lower-case names; the
wire uses the enum values. Each table maps value → name; :func:`value_of`
goes back.

>>> TASKS[registry_pb2.TASK_BINARY]
'binary'
>>> value_of(SOURCES, "online-snapshot") == registry_pb2.VERSION_SOURCE_ONLINE_SNAPSHOT
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from headwater.shared.pb import registry_pb2

#: An enum's value type (each table's keys are one protobuf enum's values).
E = TypeVar("E", bound=int)

TASKS: Mapping[registry_pb2.Task.ValueType, str] = {
    registry_pb2.TASK_BINARY: "binary",
    registry_pb2.TASK_MULTICLASS: "multiclass",
    registry_pb2.TASK_REGRESSION: "regression",
}
FEATURE_TYPES: Mapping[registry_pb2.FeatureType.ValueType, str] = {
    registry_pb2.FEATURE_TYPE_FLOAT: "float",
    registry_pb2.FEATURE_TYPE_INT: "int",
    registry_pb2.FEATURE_TYPE_STR: "str",
    registry_pb2.FEATURE_TYPE_BOOL: "bool",
}
SOURCES: Mapping[registry_pb2.VersionSource.ValueType, str] = {
    registry_pb2.VERSION_SOURCE_SPEC: "spec",
    registry_pb2.VERSION_SOURCE_ONLINE_SNAPSHOT: "online-snapshot",
    registry_pb2.VERSION_SOURCE_BATCH: "batch",
}
ROLES: Mapping[registry_pb2.RouteRole.ValueType, str] = {
    registry_pb2.ROUTE_ROLE_PRIMARY: "primary",
    registry_pb2.ROUTE_ROLE_CANARY: "canary",
    registry_pb2.ROUTE_ROLE_SHADOW: "shadow",
    registry_pb2.ROUTE_ROLE_CHALLENGER: "challenger",
}
MODES: Mapping[registry_pb2.ServingMode.ValueType, str] = {
    registry_pb2.SERVING_MODE_LIVE: "live",
    registry_pb2.SERVING_MODE_PINNED: "pinned",
}
STRATEGIES: Mapping[registry_pb2.RolloutStrategy.ValueType, str] = {
    registry_pb2.ROLLOUT_STRATEGY_DIRECT: "direct",
    registry_pb2.ROLLOUT_STRATEGY_BLUE_GREEN: "blue-green",
    registry_pb2.ROLLOUT_STRATEGY_CANARY: "canary",
    registry_pb2.ROLLOUT_STRATEGY_ROLLING: "rolling",
    registry_pb2.ROLLOUT_STRATEGY_SHADOW: "shadow",
    registry_pb2.ROLLOUT_STRATEGY_BANDIT: "bandit",
}
ROLLOUT_STATES: Mapping[registry_pb2.RolloutState.ValueType, str] = {
    registry_pb2.ROLLOUT_STATE_PENDING: "pending",
    registry_pb2.ROLLOUT_STATE_PROGRESSING: "progressing",
    registry_pb2.ROLLOUT_STATE_PAUSED: "paused",
    registry_pb2.ROLLOUT_STATE_PROMOTED: "promoted",
    registry_pb2.ROLLOUT_STATE_ROLLED_BACK: "rolled_back",
    registry_pb2.ROLLOUT_STATE_ABORTED: "aborted",
}
ROLLOUT_ACTIONS: Mapping[registry_pb2.RolloutAction.ValueType, str] = {
    registry_pb2.ROLLOUT_ACTION_PAUSE: "pause",
    registry_pb2.ROLLOUT_ACTION_RESUME: "resume",
    registry_pb2.ROLLOUT_ACTION_ADVANCE: "advance",
    registry_pb2.ROLLOUT_ACTION_PROMOTE: "promote",
    registry_pb2.ROLLOUT_ACTION_ROLLBACK: "rollback",
    registry_pb2.ROLLOUT_ACTION_ABORT: "abort",
    registry_pb2.ROLLOUT_ACTION_START: "start",
}


def value_of(table: Mapping[E, str], name: str) -> E:
    """The enum value of a name in one of the tables above.

    Raises:
        KeyError: the table has no such name.

    """
    for value, known in table.items():
        if known == name:
            return value
    raise KeyError(name)


def names(table: Mapping[E, str]) -> tuple[str, ...]:
    """The names of a table, in enum order.

    >>> names(MODES)
    ('live', 'pinned')
    """
    return tuple(table[value] for value in sorted(table))
