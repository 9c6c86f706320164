"""emauto's version (one place; read by the package metadata and the records)."""

__version__ = "0.1.0"
