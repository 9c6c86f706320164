"""emauto: an automation agent for (scanning) transmission electron microscopes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emauto.version import __version__

if TYPE_CHECKING:
    from emauto.microscope import Microscope


def connect(uri: str = "sim://", **kwargs: Any) -> Microscope:
    """Open a microscope by URI (see `emauto.drivers.connect`)."""
    from emauto.drivers import connect as _connect

    return _connect(uri, **kwargs)


from emauto.tasks import register_envs  # noqa: E402  (after __version__: registration imports gymnasium)

register_envs()

__all__ = ["__version__", "connect"]
