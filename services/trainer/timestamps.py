"""Protobuf Timestamps ⇄ seconds since the epoch, for both wings of the trainer.

>>> seconds(timestamp(1_700_000_000.5))
1700000000.5
>>> seconds(Timestamp()) is None
True
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp:
    """A protobuf Timestamp of seconds since the epoch."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def seconds(stamp: Timestamp) -> float | None:
    """Seconds since the epoch of a Timestamp; None when unset (zero)."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.seconds + stamp.nanos / 1e9
