"""Model weight files: one reader for emauto's ``.pt`` files, and file digests.

Every network emauto ships (the Ronchigram estimator, the patch classifier, the completion
U-Net) is saved as one dict ``{"format", "metadata" (JSON), "state_dict"}`` and read back
with ``torch.load(weights_only=True)``: no pickled code.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from emauto.errors import ModelFileError

#: The package folder of every model and policy emauto ships.
SHIPPED_PACKAGE = "emauto.models"


def shipped_path(name: str) -> Path:
    """A file or folder emauto ships in ``emauto/models/weights/`` (found through
    `importlib.resources`, so an installed wheel finds it as well as a checkout)."""
    return Path(str(resources.files(SHIPPED_PACKAGE) / "weights" / name))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_weights_file(path: Path, format_name: str, missing: str) -> dict[str, Any]:
    """The dict saved at ``path`` with ``"format" == format_name``; `ModelFileError` (its
    message ``missing`` for an absent file) when the file cannot be such a dict."""
    import torch

    if not path.is_file():
        raise ModelFileError(f"{path}: {missing}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on corrupt files
        raise ModelFileError(f"{path}: not a readable torch file ({exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != format_name:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ModelFileError(f"{path}: expected format {format_name!r}, found {found!r}")
    return blob
