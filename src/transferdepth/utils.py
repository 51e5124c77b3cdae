"""Small shared helpers: atomic file and folder writes, the output-folder check every command that writes a
folder uses, bounded reading of small files a user gives (configs), device names, the CPU allocator. Imports
no torch until a device is resolved."""

from __future__ import annotations

import errno
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# --- files a user gives us, folders we write -----------------------------------------------------------

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config.json or YAML file is a few KB; anything larger is not one


class UserFileError(ValueError):
    """A file given by a user that cannot be read as one: not a regular file, too large, nested too deeply."""


def read_user_text(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text (UTF-8) of a small regular file a user gave (a config.json, a YAML config), read safely.

    A FIFO, device, socket or folder (also behind a symlink, e.g. to /dev/zero) is refused without reading
    or blocking (the file is opened non-blocking and checked with fstat), and at most `max_bytes` bytes are
    read. Raises FileNotFoundError for a missing file, UserFileError (one line naming `path` and `what`)
    otherwise.
    """
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise UserFileError(f"{path}: is a folder, expected a {what} (a regular file)") from None
    except OSError as e:
        raise UserFileError(f"{path}: cannot open the {what} ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
                    if stat.S_ISSOCK(mode) else "not a regular file")
            raise UserFileError(f"{path}: is {kind}, expected a {what} (a regular file)")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UserFileError(f"{path}: larger than {max_bytes} bytes, too large for a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserFileError(f"{path}: not UTF-8 text, expected a {what} (byte {e.start})") from None


class OutputFolderError(ValueError):
    """An output folder that may not receive this command's output (a file, someone else's files, or our
    earlier output without --overwrite)."""


def check_output_folder(path: str | os.PathLike, *, flag: str, what: str, holds: Callable[[Path], bool],
                        overwrite: bool = False, reuse: bool = False) -> bool:
    """May the folder `path` receive `what` (e.g. "a checkpoint folder")? Changes nothing; True when an
    existing `what` there will be replaced (then `overwrite` was given).

    A missing or empty folder is fine. A folder that `holds` (a predicate on the folder) `what` is fine with
    `reuse` (a command that continues its own output, e.g. a study) or `overwrite`, else refused. A non-empty
    folder that holds no `what` is refused even with `overwrite`: its files are someone else's and the
    output must not be mixed with them. Raises OutputFolderError naming `flag` and `path`, one line.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return False
    if not p.is_dir():
        raise OutputFolderError(f"{flag} {path}: exists and is not a folder; give a new or empty folder")
    names = sorted(c.name for c in p.iterdir())
    if not names:
        return False
    if not holds(p):
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise OutputFolderError(f"{flag} {path}: is not empty and is not {what} (it holds {listed}); choose a new "
                                "or empty folder (nothing there is replaced, even with --overwrite)")
    if reuse:
        return False
    if not overwrite:
        raise OutputFolderError(f"{flag} {path}: is already {what}; pass --overwrite to replace it")
    return True


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temp folder beside `path`; on success it replaces `path` (an existing folder there is moved
    aside first and deleted only after the rename), on error it is removed and `path` is left as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    aside = None
    try:
        yield tmp
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, aside / path.name)
        try:
            os.replace(tmp, path)
        except OSError as e:
            if aside is not None:  # put the old folder back
                os.replace(aside / path.name, path)
            raise type(e)(e.errno, f"cannot write ({e.strerror or e})", str(path)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


# Progress of long work (train, compare, predict, video, export calibration, the demo, evaluate). "bar": tqdm's
# redrawn bar; "plain": whole lines (the first, each 10 % of the total or every 30 s, whichever comes first, and
# the last), for logs; "auto": bar when the stream is a terminal, else plain; "none": nothing.
PROGRESS_MODES = ("auto", "bar", "plain", "none")
PLAIN_EVERY_S = 30.0  # seconds between plain lines when the 10 % steps are slower
_progress_default = ["auto"]


def check_progress_mode(mode: str, what: str = "--progress") -> str:
    """`mode` if it is one of PROGRESS_MODES; else ValueError naming `what`."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"{what}: expected one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    return mode


def set_progress(mode: str) -> None:
    """The mode `progress()` uses when it is given none (a command's `--progress`)."""
    _progress_default[0] = check_progress_mode(mode)


def progress(iterable: Any = None, *, total: float | None = None, desc: str | None = None, unit: str = "it",
             mode: str | None = None, file: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress object (iterate it, or `update`/`set_postfix`/`write`/`close` it) in `mode` (None: the
    default of `set_progress`, else "auto"), written to `file` (default stderr)."""
    import sys

    from tqdm import tqdm

    file = sys.stderr if file is None else file
    mode = check_progress_mode(_progress_default[0] if mode is None else mode, "progress mode")
    if mode == "auto":
        mode = "bar" if getattr(file, "isatty", lambda: False)() else "plain"
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    common = dict(total=total, desc=desc, unit=unit, file=file, **kwargs)
    if mode == "none":
        return tqdm(iterable, disable=True, **common)
    if mode == "bar":
        return tqdm(iterable, dynamic_ncols=True, **common)
    return _plain_class()(iterable, **common)


_PLAIN: list[type] = []


def _plain_class() -> type:
    """tqdm printing whole lines, never redrawn (built on first use: importing utils imports no tqdm)."""
    if _PLAIN:
        return _PLAIN[0]
    from tqdm import tqdm

    class PlainProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._shown: tuple[float, float] | None = None  # (n, time) of the last line written
            kwargs.update(mininterval=0, miniters=1, leave=False, ncols=None, ascii=True)
            kwargs.setdefault("bar_format", "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                              "{rate_fmt}{postfix}]" if kwargs.get("total") else None)
            super().__init__(*args, **kwargs)

        def _due(self) -> bool:
            if self._shown is None:
                return True
            n0, t0 = self._shown
            if self.n == n0:
                return False
            if self.total and int(10 * self.n / self.total) > int(10 * n0 / self.total):
                return True
            return self._time() - t0 >= PLAIN_EVERY_S

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if msg is not None or pos:  # msg="": a clear; nothing to clear in a log
                return False
            if self._due():
                self._line()
            return True

        def _line(self) -> None:
            self._shown = (self.n, self._time())
            self.fp.write(self.__str__() + "\n")
            getattr(self.fp, "flush", lambda: None)()

        def clear(self, nolock: bool = False) -> None:
            pass  # lines stay; tqdm.write prints between them

        def close(self) -> None:
            if not self.disable and self._shown is not None and self._shown[0] != self.n:
                self._line()  # the last line, always
            super().close()

    _PLAIN.append(PlainProgress)
    return PlainProgress


def check_number(value: float, flag: str, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False, unit: str = "") -> float:
    """`value` if it is a finite number (an integer when `integer`) in [lo, hi]; else ValueError naming `flag`
    and the range, one line. Every numeric command-line flag is checked with this before any work starts."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (not integer or float(value).is_integer())
          and (lo is None or value >= lo) and (hi is None or value <= hi))
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bounds = (f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else f" >= {lo:g}" if lo is not None
                  else f" <= {hi:g}" if hi is not None else "")
        raise ValueError(f"{flag} must be {kind}{bounds}{' ' + unit if unit else ''}, got {value!r}")
    return value
