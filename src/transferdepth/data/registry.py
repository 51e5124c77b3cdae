"""Open any data source from a spec string: `SCHEME:PATH?key=value&key=value` (see docs/data.md).

    nyu-zip:/data/nyu_data.zip                      DenseDepth training zip (split train|test)
    nyu-npy:/data/nyu_test.zip                      DenseDepth Eigen test zip of .npy arrays
    nyu-mat:/data/nyu_depth_v2_labeled.mat?split=test&splits=/data/splits.mat
    nyu-bts:/data/nyu?list=nyudepthv2_test_files_with_gt.txt
    folder:/data/scene?rgb=*.color.jpg&depth=*.depth.png&scale=0.001&invalid=0,65535&index=0:800
    procedural:n=500&seed=0&height=240&width=320
    rgbd:7scenes-redkitchen?index=800:              a preset folder of the shared real RGB-D data
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, DatasetWrapper

RGBD_ENV = "TRANSFERDEPTH_RGBD"

# Preset folder options for the shared real RGB-D data (see shared/data/rgbd/README.md).
RGBD_PRESETS: dict[str, dict[str, str]] = {
    "7scenes-redkitchen": {"rgb": "*.color.jpg", "depth": "*.depth.png", "scale": "0.001",
                           "invalid": "0,65535"},  # intrinsics: camera-intrinsics.txt
    "sun3d-office": {"rgb": "*.color.png", "depth": "*.depth.png", "scale": "0.001", "invalid": "0"},
    "kinect-dining": {"rgb": "color/*.png", "depth": "depth/*.pgm", "scale": "0.001", "invalid": "0",
                      "intrinsics": "518,519,325.5,253.5"},
    "nyu-samples": {"rgb": "rgb/rgb_*.jpg", "depth": "depth/sync_depth_*.png", "scale": "0.001",
                    "invalid": "0", "max_depth": "10",
                    "intrinsics": "518.8579,519.46961,325.58245,253.73617"},
}


@dataclass
class Spec:
    """A parsed spec string: scheme, path (may be empty) and raw option strings."""

    scheme: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> Spec:
    """Split `SCHEME:PATH?k=v&k=v` (procedural takes `procedural:k=v&k=v`) without validating options."""
    if not isinstance(spec, str) or ":" not in spec:
        hint = ""
        if isinstance(spec, str) and spec.endswith(".zip"):
            hint = f" (e.g. nyu-zip:{spec} or nyu-npy:{spec})"
        raise DatasetError(str(spec), f"a dataset spec is SCHEME:PATH[?options]{hint}; "
                           f"valid schemes: {', '.join(SCHEMES)}")
    scheme, rest = spec.split(":", 1)
    scheme = scheme.strip().lower()
    if scheme == "procedural" and "?" not in rest:
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


# --- option value parsers: (text) -> value, raising ValueError with what was expected -----------------

def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError("expected comma-separated numbers") from None


def _intrinsics(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if len(values) != 4:
        raise ValueError("expected fx,fy,cx,cy (4 numbers, pixels)")
    return values


def _bits(text: str) -> int | None:
    if text not in ("8", "16", "any"):
        raise ValueError("expected 8, 16 or any")
    return None if text == "any" else int(text)


def _index(text: str) -> tuple[int | None, int | None]:
    lo, colon, hi = text.partition(":")
    if not colon:
        raise ValueError("expected LO:HI (frame numbers, HI excluded; either may be empty)")
    try:
        return (int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)
    except ValueError:
        raise ValueError("expected LO:HI with integer frame numbers") from None


def _text(text: str) -> str:
    if not text:
        raise ValueError("expected a value")
    return text


FOLDER_OPTIONS: dict[str, Callable[[str], Any]] = {
    "rgb": _text, "depth": _text, "scale": _float, "invalid": _floats, "max_depth": _float,
    "bits": _bits, "intrinsics": _intrinsics, "index": _index,
}

# scheme -> {option: parser}
SCHEMES: dict[str, dict[str, Callable[[str], Any]]] = {
    "nyu-zip": {"split": _text},
    "nyu-npy": {},
    "nyu-mat": {"split": _text, "splits": _text},
    "nyu-bts": {"list": _text},
    "folder": FOLDER_OPTIONS,
    "procedural": {"n": _int, "seed": _int, "height": _int, "width": _int},
    "rgbd": FOLDER_OPTIONS,
}


def _suggest(word: str, choices: list[str]) -> str:
    close = [c for c in choices if word and c.startswith(word)] or difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _options(spec: str, parsed: Spec) -> dict[str, Any]:
    parsers = SCHEMES[parsed.scheme]
    out = {}
    for key, text in parsed.options.items():
        if key not in parsers:
            valid = ", ".join(parsers) or "none"
            raise DatasetError(spec, f"unknown option {key!r} for {parsed.scheme}{_suggest(key, list(parsers))} "
                               f"(valid options: {valid})")
        try:
            out[key] = parsers[key](text)
        except ValueError as e:
            raise DatasetError(spec, f"option {key}={text!r}: {e}") from None
    return out


def rgbd_root() -> Path:
    """Folder of the shared real RGB-D sets: $TRANSFERDEPTH_RGBD, else ../shared/data/rgbd from the cwd,
    else from the repository root."""
    env = os.environ.get(RGBD_ENV)
    if env:
        return Path(env).expanduser()
    tried = [Path.cwd().parent / "shared/data/rgbd",
             Path(__file__).resolve().parents[3].parent / "shared/data/rgbd"]
    for p in tried:
        if p.is_dir():
            return p
    raise DatasetError("rgbd", f"shared RGB-D folder not found; set {RGBD_ENV} (tried {[str(p) for p in tried]})")


class SkipBad(DatasetWrapper):
    """Wraps a dataset: a sample that raises DatasetError is replaced by the next good one (i+1, i+2, ...).

    Bad indices are remembered (`skipped`: sorted list of (index, reason)) and not read again. Each returned
    sample carries `skipped`: a str with one `index<TAB>reason` line per bad index passed over to produce it
    ("" if none), which survives DataLoader workers and collation (a list of str per batch); call
    `note(sample_or_batch)` in the main process to merge those into this object's record, then `report()`.
    """

    def __init__(self, dataset: Dataset, max_consecutive: int = 64):
        super().__init__(dataset)
        self.max_consecutive = max_consecutive
        self.bad: dict[int, str] = {}

    @property
    def skipped(self) -> list[tuple[int, str]]:
        """(index, reason) of every bad sample seen so far (by this process, plus those noted)."""
        return sorted(self.bad.items())

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        passed: list[int] = []
        for step in range(min(n, self.max_consecutive)):
            i = (index + step) % n
            if i not in self.bad:
                try:
                    sample = dict(self.dataset[i])
                except DatasetError as e:
                    self.bad[i] = " ".join(str(e).split())  # one line
                else:
                    sample["skipped"] = "\n".join(f"{j}\t{self.bad[j]}" for j in passed)
                    return sample
            passed.append(i)
        source = getattr(self.dataset, "source", type(self.dataset).__name__)
        raise DatasetError(source, f"{len(passed)} consecutive bad samples from here, giving up; first: "
                           f"{self.bad[passed[0]]}", index)

    def note(self, sample_or_batch: dict[str, Any]) -> int:
        """Merge the `skipped` field of a sample or collated batch into `skipped`; returns how many are new."""
        field_ = sample_or_batch.get("skipped", "")
        texts = [field_] if isinstance(field_, str) else list(field_)
        new = 0
        for line in filter(None, "\n".join(texts).splitlines()):
            idx, _, reason = line.partition("\t")
            if int(idx) not in self.bad:
                self.bad[int(idx)] = reason
                new += 1
        return new

    def report(self) -> str:
        """One line: how many samples were skipped, and the first reason."""
        if not self.bad:
            return f"skip_bad: 0 of {len(self)} samples skipped"
        first, reason = self.skipped[0]
        return (f"skip_bad: {len(self.bad)} of {len(self)} samples skipped (bad); "
                f"first: index {first}: {reason}")


def open_dataset(spec: str, split: str | None = None, skip_bad: bool = False) -> Dataset:
    """Open a dataset of samples (rgb uint8 HxWx3, depth float32 metres, valid, intrinsics, name).

    `split` picks nyu-zip's CSV (train|test, default train), nyu-mat's subset (train|test|all, default test)
    or nyu-bts's default list (ROOT/nyudepthv2_{split}_files_with_gt.txt, used when no list= is given).
    With `skip_bad`, a bad sample is replaced by the next good one and recorded (see SkipBad).
    """
    parsed = parse_spec(spec)
    if parsed.scheme not in SCHEMES:
        raise DatasetError(spec, f"unknown scheme {parsed.scheme!r}{_suggest(parsed.scheme, list(SCHEMES))} "
                           f"(valid schemes: {', '.join(SCHEMES)})")
    opts = _options(spec, parsed)
    if "split" in opts and split is not None and opts["split"] != split:
        raise DatasetError(spec, f"split={opts['split']} in the spec contradicts split={split!r}")
    split = opts.pop("split", split)
    if parsed.scheme not in ("procedural",) and not parsed.path:
        raise DatasetError(spec, f"{parsed.scheme} needs a path: {parsed.scheme}:PATH[?options]")
    dataset = _BUILDERS[parsed.scheme](spec, parsed.path, split, opts)
    if len(dataset) == 0:
        raise DatasetError(spec, "the dataset is empty")
    if skip_bad:
        dataset = SkipBad(dataset)
    return dataset


def _no_split(spec: str, split: str | None, hint: str) -> None:
    if split is not None:
        raise DatasetError(spec, f"this source has no split {split!r}: {hint}")


def _nyu_zip(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    from transferdepth.data.nyu_zip import NyuZip

    return NyuZip(path, split or "train")


def _nyu_npy(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    from transferdepth.data.nyu_npy import NyuNpy

    if split not in (None, "test"):
        raise DatasetError(spec, f"nyu-npy holds only the Eigen test split, not {split!r}")
    return NyuNpy(path)


def _nyu_mat(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    from transferdepth.data.nyu_mat import NyuMat

    return NyuMat(path, split or "test", opts.get("splits"))


def _nyu_bts(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    from transferdepth.data.nyu_bts import NyuBts

    list_file = opts.get("list")
    if list_file is None:
        if split is None:
            raise DatasetError(spec, "nyu-bts needs list=FILE (a BTS file list) or a split "
                               "(uses ROOT/nyudepthv2_{split}_files_with_gt.txt)")
        list_file = str(Path(path) / f"nyudepthv2_{split}_files_with_gt.txt")
    return NyuBts(path, list_file)


def _folder(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    from transferdepth.data.folder import Folder

    _no_split(spec, split, "select frames with index=LO:HI")
    missing = [k for k in ("rgb", "depth") if k not in opts]
    if missing:
        raise DatasetError(spec, f"folder needs {' and '.join(f'{k}=GLOB' for k in missing)}")
    return Folder(path, **opts)


def _rgbd(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    if path not in RGBD_PRESETS:
        raise DatasetError(spec, f"unknown rgbd preset {path!r}{_suggest(path, list(RGBD_PRESETS))} "
                           f"(valid presets: {', '.join(RGBD_PRESETS)})")
    preset = {k: FOLDER_OPTIONS[k](v) for k, v in RGBD_PRESETS[path].items()}
    return _folder(spec, str(rgbd_root() / path), split, {**preset, **opts})


def _procedural(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    _no_split(spec, split, "use another seed for a different set")
    if path:
        raise DatasetError(spec, "procedural takes no path: procedural:n=500&seed=0")
    if "n" not in opts:
        raise DatasetError(spec, "procedural needs n=COUNT")
    try:
        from transferdepth.data.procedural import ProceduralScenes
    except ImportError as e:
        raise DatasetError(spec, f"procedural scenes are not available: {e}") from e
    return ProceduralScenes(**opts)


_BUILDERS: dict[str, Callable[[str, str, str | None, dict[str, Any]], Dataset]] = {
    "nyu-zip": _nyu_zip, "nyu-npy": _nyu_npy, "nyu-mat": _nyu_mat, "nyu-bts": _nyu_bts,
    "folder": _folder, "procedural": _procedural, "rgbd": _rgbd,
}
