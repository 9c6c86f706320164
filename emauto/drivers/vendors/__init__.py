"""Vendor adapters: the Microscope contract over a vendor's own library (optional extras).

Each adapter converts units, axes and signs at its boundary only; see docs/vendors.md.
`BACKENDS` names every backend ``emauto serve`` can put behind its safety layer.
"""

from __future__ import annotations

from emauto.registry import Registry

#: Every ``emauto serve`` backend: name -> ``open(server_config) -> Microscope``.
BACKENDS = Registry(
    "serve backend",
    {
        "sim": "emauto.drivers.vendors.backends:open_sim_backend",
        "temscript": "emauto.drivers.vendors.backends:open_temscript_backend",
        "nion": "emauto.drivers.vendors.backends:open_nion_backend",
    },
)
