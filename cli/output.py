"""How read commands print: a rich table for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


class Output(StrEnum):
    """Output formats of read commands."""

    table = "table"
    json = "json"


OutputOption = typer.Option(
    Output.table, "--output", "-o", help="table for people, json for scripts."
)


def to_plain(message: Message) -> dict[str, Any]:
    """A protobuf message as a JSON-ready dict (protobuf JSON mapping)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Any) -> None:
    """Print ``value`` (protos, lists of protos, plain data) as JSON on stdout."""
    if isinstance(value, Message):
        value = to_plain(value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        value = [to_plain(v) if isinstance(v, Message) else v for v in value]
    typer.echo(json.dumps(value, indent=2, default=str))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under column headers."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        # Short cells (names, versions, numbers) are never cut; long ones fold.
        widest = max((len(str(row[index])) for row in rows), default=0)
        table.add_column(column, min_width=min(widest, 20), overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def print_mapping(title: str, mapping: Mapping[str, Any]) -> None:
    """Print a two-column key/value table."""
    print_table(title, ("field", "value"), list(mapping.items()))
