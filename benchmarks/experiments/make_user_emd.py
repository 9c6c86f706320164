"""Write the "user .emd file" of the sparse-scan benchmark: a twin image, not a real one.

A noise-free 256x256 ADF raster of the digital twin's built-in (seed-0) Au-on-carbon
specimen, the one the benchmark's own twin images use, at another stage position and scan
rotation than the benchmark's image (drawn from ``--seed``: stage uniform within +-10 nm,
rotation uniform; the specimen is a periodic 20 nm cell), 16 nm field of view, written as an
EMD (NCEM/HDF5) file through rosettasciio with its pixel size in nm, as a microscope
program would. The completion network never saw this specimen (it trains on procedural
images, `tasks/sparse_scan/domain_images.py`), but the image is the twin's: what the
sparse-scan benchmark measures on it is measured on a twin image.

    .venv/bin/python benchmarks/experiments/make_user_emd.py build/twin_au_region.emd
    cd build && ../.venv/bin/python -m emauto bench sparse-scan --image twin_au_region.emd \
        --coverage 0.05 --dose 200 --json --save ../benchmarks/sparse-scan-latest.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emauto.drivers import connect
from emauto.microscope import ImageRequest, RasterScan
from emauto.tasks.sparse_scan.twin_images import BENCH_FOV_M

SPECIMEN = "au_on_carbon"


def twin_region(seed: int, size: int) -> tuple[np.ndarray, dict[str, float]]:
    """The noise-free ADF image (float32 ``[y, x]``) and where it was taken."""
    rng = np.random.default_rng(seed)
    where = {
        "stage_x_m": float(rng.uniform(-10e-9, 10e-9)),
        "stage_y_m": float(rng.uniform(-10e-9, 10e-9)),
        "scan_rotation_rad": float(rng.uniform(-np.pi, np.pi)),
        "fov_m": BENCH_FOV_M[SPECIMEN],
    }
    scope = connect(f"sim://?specimen={SPECIMEN}&effects=none")
    try:
        scope.set(
            {
                "scan_fov": where["fov_m"],
                "stage_x": where["stage_x_m"],
                "stage_y": where["stage_y_m"],
                "scan_rotation": where["scan_rotation_rad"],
            }
        )
        small = ImageRequest(detector="adf", scan=RasterScan(shape=(8, 8)))
        while scope.read().stage_moving:  # let the stage arrive (each frame advances time)
            scope.acquire(small)
        frame = scope.acquire(ImageRequest(detector="adf", scan=RasterScan(shape=(size, size))))
    finally:
        scope.close()
    return np.asarray(frame.data, dtype=np.float32), where


def write_emd(path: Path, image: np.ndarray, pixel_nm: float, title: str) -> None:
    """``image`` as an EMD file with its pixel size, through rosettasciio."""
    from rsciio.emd import file_writer

    axes = [
        {"size": n, "name": name, "scale": pixel_nm, "offset": 0.0, "units": "nm",
         "navigate": False}
        for n, name in zip(image.shape, ("y", "x"), strict=True)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    file_writer(
        str(path),
        {
            "data": image,
            "axes": axes,
            "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""}},
            "original_metadata": {},
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .emd file to write")
    parser.add_argument("--seed", type=int, default=2026, help="draws the stage and rotation")
    parser.add_argument("--size", type=int, default=256, help="pixels per side")
    args = parser.parse_args()
    image, where = twin_region(args.seed, args.size)
    pixel_nm = where["fov_m"] / args.size * 1e9
    title = f"twin {SPECIMEN} (seed-0 specimen), not a real image; " + json.dumps(where)
    write_emd(args.out, image, pixel_nm, title)
    print(json.dumps({"out": str(args.out), "specimen": SPECIMEN, "seed": args.seed,
                      "shape": list(image.shape), "pixel_nm": pixel_nm, **where}))  # fmt: skip


if __name__ == "__main__":
    main()
