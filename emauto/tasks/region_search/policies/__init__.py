"""Region-search policies."""
