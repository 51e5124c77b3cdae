"""The package's version: one home (pyproject reads it; `transferdepth.__version__` re-exports it)."""

__version__ = "0.1.0"
