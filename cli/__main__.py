"""``python -m headwater.cli`` runs the console script."""

from headwater.cli.main import app

app()
