"""Scheduling core (pure Python, no torch)."""
