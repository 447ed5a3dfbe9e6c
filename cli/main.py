"""The ``headwater`` console script: parses, then delegates. No logic lives here."""

from __future__ import annotations

import typer

from headwater.cli import gate_commands, registry_commands, rollout_commands, stack_commands

app = typer.Typer(
    name="headwater",
    help="headwater: event-driven MLOps for River models that never stop learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(stack_commands.up)
app.command()(stack_commands.down)
app.command()(stack_commands.status)
app.command()(stack_commands.serve)
app.command()(stack_commands.demo)
app.add_typer(registry_commands.models, name="models")
app.add_typer(registry_commands.versions, name="versions")
registry_commands.versions.command("evaluations")(gate_commands.versions_evaluations)
app.add_typer(registry_commands.alias, name="alias")
app.command()(rollout_commands.deploy)
app.add_typer(rollout_commands.rollout, name="rollout")
app.add_typer(gate_commands.gates, name="gates")
app.command()(registry_commands.predict)
app.command()(registry_commands.feedback)
app.command()(registry_commands.checkpoint)

if __name__ == "__main__":
    app()
