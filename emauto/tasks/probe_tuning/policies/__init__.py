"""Probe-tuning policies."""
