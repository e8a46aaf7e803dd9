"""Tracking of sent mail: link rewriting and bot filtering (pure functions)."""
