"""Vendor adapters: the Microscope contract over a vendor's own library (optional extras).

Each adapter converts units, axes and signs at its boundary only; see docs/vendors.md.
"""
