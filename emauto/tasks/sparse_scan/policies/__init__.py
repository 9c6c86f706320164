"""Sparse-scan policies."""
