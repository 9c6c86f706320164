"""Region search: find regions of interest on a survey field."""
