"""Microscope wrappers: each implements the contract over another Microscope."""
