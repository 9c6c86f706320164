"""Probe tuning: correct the probe's aberrations from Ronchigrams."""
