"""The package version, in a module of its own so any layer can read it without importing the
public API (and so the build reads it without importing torch)."""

__version__ = "0.1.0"
