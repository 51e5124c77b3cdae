"""`PerProcess`: a lazily opened value (file handle, cache dict) private to each process.

Open zip/HDF5 handles must not cross a fork (DataLoader workers would share one file position) nor be
pickled (spawn). A `PerProcess(opener)` calls `opener()` on first use in each process (keyed by the
process id), and pickles to an unopened copy; the zip, mat and npy readers hold their handles in one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, opener: Callable[[], T]):
        self.opener = opener  # must be picklable (a class, a partial, a module-level function)
        self._value: T | None = None
        self._pid: int | None = None

    def get(self) -> T:
        """The value for this process, opened now if this process has not opened it yet."""
        if self._pid != os.getpid():
            self._value, self._pid = None, None  # a parent's handle is left alone, never closed here
            self._value = self.opener()
            self._pid = os.getpid()
        return self._value  # type: ignore[return-value]

    def peek(self) -> T | None:
        """The value if this process opened it, else None (opens nothing)."""
        return self._value if self._pid == os.getpid() else None

    def close(self) -> None:
        """Close (if it has `close`) and forget this process's value."""
        value = self.peek()
        self._value, self._pid = None, None
        if value is not None and hasattr(value, "close"):
            value.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"opener": self.opener, "_value": None, "_pid": None}
