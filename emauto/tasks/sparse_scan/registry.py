"""Sparse-scan names, registered once: scan strategies and reconstructions.

A static strategy is a plan factory ``(shape, n, rng) -> ScanPlan`` (`strategies.make_plan`
builds it at a coverage); an adaptive strategy is ``(shape, coverage, measure, seed) ->
(ScanPlan, values)`` that chooses each batch of positions from what it has measured (the RL
policy's patch chooser sits behind ``rl``). A reconstruction is ``(values, mask) -> image``.
The CLI, the benchmark and ``emauto scan`` take their choices from here.
"""

from __future__ import annotations

from emauto.registry import Registry

#: Fixed patterns, planned before the first position is measured.
STATIC_STRATEGIES = Registry(
    "static scan strategy",
    {
        "raster": "emauto.tasks.sparse_scan.strategies:raster_plan",
        "raster_lines": "emauto.tasks.sparse_scan.strategies:raster_lines_plan",
        "random": "emauto.tasks.sparse_scan.strategies:random_plan",
        "jittered": "emauto.tasks.sparse_scan.strategies:jittered_plan",
        "spiral": "emauto.tasks.sparse_scan.strategies:spiral_plan",
        "lissajous": "emauto.tasks.sparse_scan.strategies:lissajous_plan",
        "line_hop": "emauto.tasks.sparse_scan.strategies:line_hop_plan",
    },
)
#: Strategies that choose where to measure next from what they have measured.
ADAPTIVE_STRATEGIES = Registry(
    "adaptive scan strategy",
    {
        "uncertainty": "emauto.tasks.sparse_scan.adaptive:uncertainty_scan",
        "rl": "emauto.tasks.sparse_scan.policies.rl:rl_scan",
    },
)
#: Every strategy, static first.
STRATEGIES = Registry("scan strategy", {**STATIC_STRATEGIES, **ADAPTIVE_STRATEGIES})

#: Every reconstruction from sparse samples.
RECONSTRUCTIONS = Registry(
    "reconstruction",
    {
        "linear": "emauto.tasks.sparse_scan.reconstruct:linear",
        "tv": "emauto.tasks.sparse_scan.reconstruct:tv",
        "cs": "emauto.tasks.sparse_scan.reconstruct:cs",
        "biharmonic": "emauto.tasks.sparse_scan.reconstruct:biharmonic",
        "gp": "emauto.tasks.sparse_scan.reconstruct:gp",
        "completion": "emauto.tasks.sparse_scan.reconstruct:completion",
        "validated": "emauto.tasks.sparse_scan.validation:validated",
    },
)
#: Left out of the benchmark unless asked for: ``gp`` needs O(points^2) memory and minutes
#: per 256x256 image at 1/20; ``biharmonic`` 17 s per 512x512 image at 1/20 on one core.
SLOW_RECONSTRUCTIONS = frozenset({"gp", "biharmonic"})
#: Reconstructions that choose among the others (not a method of their own).
CHOOSING_RECONSTRUCTIONS = frozenset({"validated"})
#: What the benchmark and ``emauto scan`` reconstruct with unless told otherwise.
DEFAULT_RECONSTRUCTION = "validated"
#: The methods ``validated`` chooses among and the benchmark scores: every one but the slow
#: and the choosing ones.
FAST_RECONSTRUCTIONS = tuple(
    name
    for name in RECONSTRUCTIONS
    if name not in SLOW_RECONSTRUCTIONS and name not in CHOOSING_RECONSTRUCTIONS
)
