"""Open any data source from a spec string: `SCHEME:PATH?key=value&key=value` (see docs/data.md).

    nyu-zip:/data/nyu_data.zip                      DenseDepth training zip (split train|test)
    nyu-npy:/data/nyu_test.zip                      DenseDepth Eigen test zip of .npy arrays
    nyu-mat:/data/nyu_depth_v2_labeled.mat?split=test&splits=/data/splits.mat
    nyu-bts:/data/nyu?list=nyudepthv2_test_files_with_gt.txt
    folder:/data/scene?rgb=*.color.jpg&depth=*.depth.png&scale=0.001&invalid=0,65535&index=0:800
    procedural:n=500&seed=0&height=240&width=320
    rgbd:7scenes-redkitchen?index=800:              a preset folder of the shared real RGB-D data

Sources register themselves next to their readers: each reader module ends with one
`register_source(scheme, open_fn, options)` call. This module knows no source by name. Discovery: the first
time a scheme is looked up (and whenever an unknown one is), every module of the `transferdepth.data`
package (every `*.py` on the package's `__path__`, found with pkgutil) is imported, which runs those calls.
So adding a source is one new file in `transferdepth/data/`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError

PACKAGE = "transferdepth.data"

OptionParser = Callable[[str], Any]
# open_fn(spec, path, split, options) -> Dataset; options are already parsed, `split` is taken out of them.
OpenFn = Callable[[str, str, "str | None", "dict[str, Any]"], Dataset]


@dataclass(frozen=True)
class Source:
    """A registered data source: its scheme, its options (name -> parser) and the function that opens it."""

    scheme: str
    open: OpenFn
    options: dict[str, OptionParser] = field(default_factory=dict)
    takes_path: bool = True  # False: `SCHEME:k=v&k=v`, no path (procedural)
    module: str = ""


_SOURCES: dict[str, Source] = {}
_IMPORT_ERRORS: dict[str, str] = {}  # module -> why it could not be imported (named for unknown schemes)
_discovered = False


def register_source(scheme: str, open_fn: OpenFn, options: dict[str, OptionParser] | None = None, *,
                    takes_path: bool = True) -> Source:
    """Register `scheme` (call once, at the bottom of the reader's module). Re-registering from the same
    module (a reload) replaces the entry; the same scheme from another module is a ValueError."""
    scheme = scheme.strip().lower()
    module = getattr(open_fn, "__module__", "") or ""
    old = _SOURCES.get(scheme)
    if old is not None and old.module != module:
        raise ValueError(f"data source scheme {scheme!r} registered twice: by {old.module} and by {module}")
    source = Source(scheme, open_fn, dict(options or {}), takes_path, module)
    _SOURCES[scheme] = source
    return source


def discover() -> None:
    """Import every module of the transferdepth.data package (on its current `__path__`) not yet imported."""
    global _discovered
    _discovered = True
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        name = f"{PACKAGE}.{info.name}"
        if name in sys.modules or name in _IMPORT_ERRORS:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:  # a reader whose optional dependency is missing: the others still work
            _IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"


def sources() -> dict[str, Source]:
    """All registered sources, scheme -> Source (after discovery)."""
    if not _discovered:
        discover()
    return dict(_SOURCES)


def _lookup(scheme: str) -> Source | None:
    if scheme not in sources():
        discover()  # a module added to the package (or its __path__) since the last discovery
    return _SOURCES.get(scheme)


@dataclass
class Spec:
    """A parsed spec string: scheme, path (may be empty) and raw option strings."""

    scheme: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> Spec:
    """Split `SCHEME:PATH?k=v&k=v` (a source without a path, e.g. procedural, takes `SCHEME:k=v&k=v`)
    without validating options."""
    if not isinstance(spec, str) or ":" not in spec:
        hint = ""
        if isinstance(spec, str) and spec.endswith(".zip"):
            hint = f" (e.g. nyu-zip:{spec} or nyu-npy:{spec})"
        raise DatasetError(str(spec), f"a dataset spec is SCHEME:PATH[?options]{hint}; "
                           f"valid schemes: {', '.join(sources())}")
    scheme, rest = spec.split(":", 1)
    scheme = scheme.strip().lower()
    source = _lookup(scheme)
    if source is not None and not source.takes_path and "?" not in rest:
        rest = "?" + rest
    path, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise DatasetError(spec, f"option {item!r} must be key=value")
        if key in options:
            raise DatasetError(spec, f"option {key!r} given twice")
        options[key.strip()] = value.strip()
    return Spec(scheme, os.path.expanduser(path.strip()), options)


# --- option value parsers for sources: (text) -> value, raising ValueError with what was expected ----------

def opt_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def opt_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def opt_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError("expected comma-separated numbers") from None


def opt_text(text: str) -> str:
    if not text:
        raise ValueError("expected a value")
    return text


def suggest(word: str, choices: list[str]) -> str:
    """'; did you mean X?' for the closest choice, or ''."""
    close = [c for c in choices if word and c.startswith(word)] or difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def no_split(spec: str, split: str | None, hint: str) -> None:
    """For sources without splits: a DatasetError if a split was asked for."""
    if split is not None:
        raise DatasetError(spec, f"this source has no split {split!r}: {hint}")


def _options(spec: str, parsed: Spec, parsers: dict[str, OptionParser]) -> dict[str, Any]:
    out = {}
    for key, text in parsed.options.items():
        if key not in parsers:
            valid = ", ".join(parsers) or "none"
            raise DatasetError(spec, f"unknown option {key!r} for {parsed.scheme}{suggest(key, list(parsers))} "
                               f"(valid options: {valid})")
        try:
            out[key] = parsers[key](text)
        except ValueError as e:
            raise DatasetError(spec, f"option {key}={text!r}: {e}") from None
    return out


def open_dataset(spec: str, split: str | None = None, skip_bad: bool = False) -> Dataset:
    """Open a dataset of samples (rgb uint8 HxWx3, depth float32 metres, valid, intrinsics, name).

    `split` picks nyu-zip's CSV (train|test, default train), nyu-mat's subset (train|test|all, default test)
    or nyu-bts's default list (ROOT/nyudepthv2_{split}_files_with_gt.txt, used when no list= is given).
    With `skip_bad`, a bad sample is replaced by the next good one and recorded (see wrappers.SkipBad).
    """
    parsed = parse_spec(spec)
    source = _lookup(parsed.scheme)
    if source is None:
        schemes = list(sources())
        broken = f"; readers that failed to import: {_IMPORT_ERRORS}" if _IMPORT_ERRORS else ""
        raise DatasetError(spec, f"unknown scheme {parsed.scheme!r}{suggest(parsed.scheme, schemes)} "
                           f"(valid schemes: {', '.join(schemes)}){broken}")
    opts = _options(spec, parsed, source.options)
    if "split" in opts and split is not None and opts["split"] != split:
        raise DatasetError(spec, f"split={opts['split']} in the spec contradicts split={split!r}")
    split = opts.pop("split", split)
    if source.takes_path and not parsed.path:
        raise DatasetError(spec, f"{parsed.scheme} needs a path: {parsed.scheme}:PATH[?options]")
    if not source.takes_path and parsed.path:
        raise DatasetError(spec, f"{parsed.scheme} takes no path: {parsed.scheme}:key=value&key=value")
    dataset = source.open(spec, parsed.path, split, opts)
    if len(dataset) == 0:
        raise DatasetError(spec, "the dataset is empty")
    if skip_bad:
        from transferdepth.data.wrappers import SkipBad

        dataset = SkipBad(dataset)
    return dataset
