"""Write the photograph of the sparse-scan benchmark: scikit-image's ``coins`` (303x384,
uint8, bundled with scikit-image) as a TIFF, an image unlike the twin's.

    .venv/bin/python benchmarks/experiments/make_coins_tif.py build/coins.tif
    cd build && ../.venv/bin/python -m emauto bench sparse-scan --image coins.tif \
        --coverage 0.05 --json --save ../benchmarks/sparse-scan-latest.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .tif file to write")
    args = parser.parse_args()
    import tifffile
    from skimage import data

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.out, data.coins())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
