"""The headwater admin CLI."""
