"""On-the-fly analysis of acquired images: evidence that atomic columns are resolved, then
columns (2-D Gaussian fits with uncertainties), sublattices, lattice, resolution, drift, and
frame series (`series`); synthetic test images with ground truth (`synthetic`).

Every function takes a 2-D image indexed ``[y, x]`` and returns positions as ``(x, y)``
pixels; physical figures are in metres where the pixel size is known.
"""
