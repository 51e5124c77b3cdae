"""Small shared helpers: atomic file writes, device names, the CPU allocator. Imports no torch until a device
is resolved."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, on error remove it.

    Readers never see a half-written file and a crash never destroys the previous version. The file gets
    the usual permissions (0666 & ~umask), not mkstemp's 0600.
    """
    path = Path(path)
    if path.is_dir():  # checked first: os.replace's error would name the temp file, not the output
        raise IsADirectoryError(errno.EISDIR, "is a folder, cannot write a file there", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        try:
            os.replace(tmp_path, path)
        except OSError as e:  # name the output the user asked for, not our temp file
            raise type(e)(e.errno, f"cannot write ({e.strerror or e})", str(path)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def resolve_device(name: str | None, what: str = "--device") -> torch.device:
    """'auto'/None (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N', 'mps' -> torch.device.

    Raises ValueError with one line naming `what` for an unknown name or a device this machine lacks.
    """
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}: unknown device '{name}' (expected auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}: '{name}' asked for, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what}: '{name}' asked for, but only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what}: 'mps' asked for, but MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{what}: unsupported device '{name}' (expected auto, cpu, cuda, cuda:N or mps)")
    return dev


# glibc malloc: blocks from this size up are mapped fresh from the OS (and faulted in page by page on first
# touch) and unmapped when freed; free memory above this at the heap's top is given back to the OS
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's own ceiling for its dynamic threshold on 64-bit
TRIM_THRESHOLD_BYTES = 1 << 30
ALLOCATOR_ENV = "TRANSFERDEPTH_MALLOC"  # "0": leave the allocator alone
_ALLOCATOR_OWNED = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")
_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Let glibc's malloc reuse freed activation memory instead of mapping it fresh on every forward pass.

    A CPU forward pass at 480x640 frees and allocates tensors of 1-30 MB each time; glibc maps those fresh
    and every page is faulted in again (EfficientNet-Lite0 at 480x640: 62 ms per image, 39 ms with this;
    docs/using.md). Sets M_MMAP_THRESHOLD to 32 MiB and M_TRIM_THRESHOLD to 1 GiB for this process (and the
    DataLoader workers it forks later): the process keeps up to 1 GiB of freed memory for reuse instead of
    giving it back. Process-wide, so the CLI calls it and the Python API leaves it to you. Does nothing
    (returns False) off glibc, when `TRANSFERDEPTH_MALLOC=0`, or when the environment already tunes the
    allocator (MALLOC_*_ variables, GLIBC_TUNABLES with malloc, or jemalloc/tcmalloc/mimalloc in LD_PRELOAD).
    Idempotent; returns whether the settings are in effect."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    import platform

    env = os.environ
    preload = env.get("LD_PRELOAD", "")
    if (env.get(ALLOCATOR_ENV, "1") == "0" or any(k in env for k in _ALLOCATOR_OWNED)
            or "malloc" in env.get("GLIBC_TUNABLES", "")
            or any(a in preload for a in ("jemalloc", "tcmalloc", "mimalloc"))
            or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"):
        return _tuned
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return _tuned
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    _tuned = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(m_trim_threshold, TRIM_THRESHOLD_BYTES))
    return _tuned
