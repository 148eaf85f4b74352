"""digitcmp's version: one place, read by the package, the build and every record of provenance."""

__version__ = "0.2.0"
