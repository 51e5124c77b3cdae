"""Small shared helpers: atomic file writes, device names. Imports no torch until a device is resolved."""

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
