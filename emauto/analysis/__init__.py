"""On-the-fly analysis of acquired images: atom columns, lattice, resolution, drift.

Every function takes a 2-D image indexed ``[y, x]`` and returns positions as ``(x, y)``
pixels; physical figures are in metres where the pixel size is known.
"""
