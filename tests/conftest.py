"""Shared pytest configuration for OPSS."""
