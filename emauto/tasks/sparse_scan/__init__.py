"""Sparse scanning: choose where to put the probe, reconstruct the image."""
