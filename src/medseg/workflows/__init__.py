"""Workflows above the engine: evaluate, predict, report (the CLI calls these)."""
