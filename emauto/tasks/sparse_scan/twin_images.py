"""Ground-truth images from the digital twin, taken through the Microscope contract.

The twin is opened with ``effects=none`` (no noise, drift or jitter): its ADF raster is the
truth a sparse scan is scored against. Benchmark images use the built-in (seed-0) specimens
at the stage origin; training images (`training_images`) use the seed-1 recipes in
``recipes/`` of this task (different atoms) at random stage positions, scan rotations
and fields of view, so training and evaluation never share an image.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from emauto.drivers import connect
from emauto.microscope import ImageRequest, RasterScan

__all__ = [
    "BENCH_FOV_M",
    "SPECIMENS",
    "benchmark_images",
    "training_images",
    "training_recipe",
    "twin_image",
]

#: The twin's built-in specimens.
SPECIMENS = ("amorphous_carbon", "au_on_carbon", "srtio3")
#: Field of view (m) of each specimen's benchmark image.
BENCH_FOV_M = {"amorphous_carbon": 8e-9, "au_on_carbon": 16e-9, "srtio3": 8e-9}


def training_recipe(specimen: str) -> Path:
    """The seed-1 training recipe of a built-in specimen."""
    return Path(str(resources.files("emauto.tasks.sparse_scan") / "recipes")) / (
        f"{specimen}_seed1.yaml"
    )


def twin_image(
    uri: str,
    shape: tuple[int, int] = (256, 256),
    fov_m: float = 8e-9,
    stage_m: tuple[float, float] = (0.0, 0.0),
    rotation_rad: float = 0.0,
    dwell_s: float = 2e-6,
) -> np.ndarray:
    """A noise-free ADF raster (float64 ``[y, x]``) of the twin at ``uri``."""
    scope = connect(uri)
    try:
        scope.set(
            {
                "scan_fov": fov_m,
                "stage_x": stage_m[0],
                "stage_y": stage_m[1],
                "scan_rotation": rotation_rad,
            }
        )
        frame = scope.acquire(
            ImageRequest(detector="adf", scan=RasterScan(shape=shape), dwell_s=dwell_s)
        )
    finally:
        scope.close()
    return np.asarray(frame.data, dtype=np.float64)


def benchmark_images(shape: tuple[int, int] = (256, 256)) -> dict[str, np.ndarray]:
    """One image per built-in specimen (seed 0, stage origin, `BENCH_FOV_M`)."""
    images = {}
    for specimen in SPECIMENS:
        print(f"[sparse-scan] twin image of {specimen} ...", file=sys.stderr, flush=True)
        images[specimen] = twin_image(
            f"sim://?specimen={specimen}&effects=none", shape, BENCH_FOV_M[specimen]
        )
    return images


def training_images(
    per_specimen: int, shape: tuple[int, int] = (128, 128), seed: int = 0
) -> Iterator[tuple[str, np.ndarray]]:
    """``per_specimen`` random training images of each specimen's seed-1 recipe.

    Stage positions uniform within +-10 nm, scan rotation uniform, field of view
    log-uniform between 0.5x and 2x the benchmark's (times ``shape`` / 256).
    """
    from emauto.drivers.sim.twin import SimulatedMicroscope

    rng = np.random.default_rng(seed)
    for specimen in SPECIMENS:
        scope = connect(f"sim://?specimen={training_recipe(specimen)}&effects=none")
        assert isinstance(scope, SimulatedMicroscope)
        try:
            for _ in range(per_specimen):
                fov = BENCH_FOV_M[specimen] * shape[1] / 256 * float(np.exp(rng.uniform(-0.7, 0.7)))
                scope.set(
                    {
                        "scan_fov": fov,
                        "stage_x": float(rng.uniform(-10e-9, 10e-9)),
                        "stage_y": float(rng.uniform(-10e-9, 10e-9)),
                        "scan_rotation": float(rng.uniform(-np.pi, np.pi)),
                    }
                )
                frame = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=shape)))
                yield specimen, np.asarray(frame.data, dtype=np.float64)
        finally:
            scope.close()
