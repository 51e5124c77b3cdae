"""Kept for existing imports (`transferdepth.data.cache.InMemory`); InMemory lives in `wrappers.py`."""

from transferdepth.data.wrappers import InMemory

__all__ = ["InMemory"]
