"""Engines: what runs a model, whether it is installed here, and `auto` (the fastest, measured and cached).

    torch           PyTorch eager, channels_last (`inference.core.infer`; any device)
    compile         torch.compile, inductor, frozen weights (`compile_engine.CompiledRunner`; CPU, a C++ compiler)
    onnx            onnxruntime (`onnx_engine.OnnxRunner`; pip install 'transferdepth[export]')
    openvino        OpenVINO, f32 (`openvino_engine.OpenVinoRunner`; pip install 'transferdepth[openvino]')
    openvino-bf16   OpenVINO with bfloat16 arithmetic, where the CPU has AVX-512 BF16 or AMX (not the same
                    metres: about 1e-2 relative; never chosen by auto)
    auto            the fastest of torch, compile, onnx and openvino (all four equal to the torch engine within
                    1e-4 m) on this model at its input size on this machine: each available one is timed a few
                    rounds once; the choice is cached (`cache_path`) and reported on stderr

The cache is one JSON file: $TRANSFERDEPTH_ENGINE_CACHE if set, else $XDG_CACHE_HOME/transferdepth/engines.json
(XDG_CACHE_HOME defaults to ~/.cache). An entry is keyed by the model files' SHA-256, the input size, batch and
threads, the engines' versions and the CPU (model name, count, instruction-set flags); delete the file to
measure again. Nothing here imports torch at import time (`transferdepth predict --help` stays light).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ENGINES = ("torch", "compile", "onnx", "openvino", "openvino-bf16")
CHOICES = (*ENGINES, "auto")
AUTO_CANDIDATES = ("torch", "compile", "onnx", "openvino")  # fp32: the torch engine's metres within 1e-4 m
AUTO_SIZE = (480, 640)  # (H, W) auto measures at when no input size is given
CACHE_ENV = "TRANSFERDEPTH_ENGINE_CACHE"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
INSTALL = {"onnx": ("onnxruntime", "pip install 'transferdepth[export]'"),
           "openvino": ("openvino", "pip install 'transferdepth[openvino]'"),
           "openvino-bf16": ("openvino", "pip install 'transferdepth[openvino]'")}


class EngineError(ValueError):
    """An engine that is unknown or not installed here; the message is one line saying what to install."""


def missing(name: str) -> str | None:
    """Why engine `name` cannot run here (one line, with what to install), or None if it can."""
    if name not in ENGINES:
        return f"engine '{name}': unknown; choose one of {', '.join(CHOICES)}"
    if name in INSTALL:
        module, pip = INSTALL[name]
        try:
            __import__(module)
        except ImportError:
            return f"the {name} engine needs {module}: {pip}"
    if name == "compile":
        from transferdepth.deploy.compile_engine import compiler

        if compiler() is None:
            return "the compile engine needs a C++ compiler for torch inductor (g++ or clang++ on PATH, or $CXX)"
    if name == "openvino-bf16":
        from transferdepth.deploy.openvino_engine import has_bf16

        if not has_bf16():
            return "the openvino-bf16 engine needs a CPU with AVX-512 BF16 or AMX; use openvino"
    return None


def check_engine(name: str) -> None:
    """EngineError (one line, naming the extra to install) unless engine `name` can run here."""
    reason = missing(name)
    if reason:
        raise EngineError(reason)


def make_runner(name: str, source: Any, threads: int | None = None) -> Any:
    """A runner (`run`, `predict`, `stand_in`; see `onnx_engine.OnnxRunner`) of engine `name` on `source` (a
    checkpoint directory; a .onnx file for onnx / openvino; an IR .xml for openvino; a DepthNet for compile)."""
    check_engine(name)
    if name == "compile":
        from transferdepth.deploy.compile_engine import CompiledRunner

        return CompiledRunner(source, threads=threads)
    if name == "onnx":
        from transferdepth.deploy.onnx_engine import OnnxRunner

        return OnnxRunner(source, threads=threads)
    if name in ("openvino", "openvino-bf16"):
        from transferdepth.deploy.openvino_engine import OpenVinoRunner

        return OpenVinoRunner(source, threads=threads, precision="bf16" if name == "openvino-bf16" else "f32")
    raise EngineError(f"engine '{name}': has no runner (the torch engine is `DepthEstimator` itself)")


def cache_path() -> Path:
    """Where auto's measurements are kept: $TRANSFERDEPTH_ENGINE_CACHE, else
    $XDG_CACHE_HOME/transferdepth/engines.json (XDG_CACHE_HOME: ~/.cache by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "transferdepth" / "engines.json"


def cpu_info() -> dict[str, Any]:
    """The CPU as auto's cache key sees it: model name, logical cores, the instruction-set flags that matter."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"name": name, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags]}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("torch", "onnxruntime", "openvino"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def model_files(source: str | os.PathLike) -> list[Path]:
    """The files that make the model: a checkpoint's model.safetensors + config.json, an IR's .xml + .bin, or
    the file itself."""
    path = Path(source)
    if path.is_dir():
        return [p for p in (path / "model.safetensors", path / "config.json") if p.is_file()]
    if path.suffix.lower() == ".xml":
        return [path, path.with_suffix(".bin")]
    return [path]


def file_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the files' contents, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cache_key(source: str | os.PathLike, size: tuple[int, int], batch: int, threads: int | None) -> dict[str, Any]:
    """What a measurement depends on: the model files' hash, the input, the engines' versions and the CPU."""
    return {"model": file_hash(model_files(source)), "size": list(size), "batch": batch, "threads": threads,
            "versions": _versions(), "cpu": cpu_info()}


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {"entries": {}}
    except (OSError, ValueError):  # missing or unreadable: measure again and write a new one
        return {"entries": {}}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    from transferdepth.utils import atomic_write

    try:
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    except OSError as e:  # a read-only home: the choice still stands, only not remembered
        _say(f"engine auto: could not write its cache {path} ({e.strerror or e}); measuring again next time")


def _say(line: str) -> None:
    print(f"transferdepth: {line}", file=sys.stderr)


def candidates_for(source: str | os.PathLike, names: Sequence[str] = AUTO_CANDIDATES) -> list[str]:
    """The engines of `names` that can read `source` (torch and compile need a checkpoint directory)."""
    path = Path(source)
    files = {".onnx": ("onnx", "openvino"), ".xml": ("openvino",)}
    readable = files.get(path.suffix.lower(), ENGINES) if not path.is_dir() else ENGINES
    return [n for n in names if n in readable]


def choose_engine(source: str | os.PathLike, *, size: tuple[int, int] | None = None, batch: int = 1,
                  threads: int | None = None, names: Sequence[str] = AUTO_CANDIDATES, rounds: int = 3,
                  say: Callable[[str], None] = _say) -> str:
    """`auto`: the fastest engine of `names` available here for `source` (a checkpoint directory, Hub name, .onnx
    or IR .xml) at `size` (H, W; default 480x640) and `batch`. Read from the cache (`cache_path`) when this model
    was measured on this machine with these versions; else each engine runs once (not counted: compile compiles
    then, its cost is reported) and then `rounds` times in turn; the median wins and is cached. Says on stderr
    (`say`) what it chose and why."""
    from transferdepth.inference.hub import is_hub_name, resolve_checkpoint

    if not Path(source).exists() and is_hub_name(source):
        source = resolve_checkpoint(source)
    size = tuple(size or AUTO_SIZE)
    wanted = candidates_for(source, names)
    usable = [n for n in wanted if missing(n) is None]
    if len(usable) <= 1:
        chosen = usable[0] if usable else (wanted or ["torch"])[0]
        absent = "; ".join(missing(n) or "" for n in wanted if n not in usable)
        say(f"engine auto: {chosen}, the only engine here for {source}" + (f" ({absent})" if absent else ""))
        return chosen
    path, key = cache_path(), cache_key(source, size, batch, threads)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    data = _read_cache(path)
    entry = data["entries"].get(digest)
    if entry and entry.get("chosen") in usable and set(entry.get("ms", {})) | set(entry.get("failed", {})) >= set(
            usable):  # every engine here was measured (or failed) then
        say(f"engine auto: {entry['chosen']} (measured {entry['measured']}: {_timings(entry)}; cached in {path}, "
            f"rm it or set ${CACHE_ENV} to measure again)")
        return entry["chosen"]
    say(f"engine auto: timing {', '.join(usable)} on {Path(source).name} at {size[0]}x{size[1]}, batch {batch} "
        "(once per model and machine)")
    ms, first_s, failed = measure(source, usable, size, batch, threads, rounds)
    if not ms:
        raise EngineError(f"engine auto: no engine ran {source} ({'; '.join(failed.values())})")
    chosen = min(ms, key=ms.get)
    entry = {"chosen": chosen, "ms": ms, "first_call_s": first_s, "failed": failed, "key": key,
             "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    data["entries"][digest] = entry
    _write_cache(path, data)
    say(f"engine auto: {chosen} ({_timings(entry)}; median of {rounds} after one uncounted first call; "
        f"cached in {path}, rm it or set ${CACHE_ENV} to measure again)")
    return chosen


def _timings(entry: dict[str, Any]) -> str:
    first = entry.get("first_call_s", {})
    parts = [f"{n} {v:.1f} ms" + (f" (first call {first[n]:.0f} s, compiling)" if n == "compile" and n in first
                                  else "") for n, v in sorted(entry["ms"].items(), key=lambda kv: kv[1])]
    parts += [f"{n} failed: {why}" for n, why in entry.get("failed", {}).items()]
    return ", ".join(parts)


def measure(source: str | os.PathLike, names: Sequence[str], size: tuple[int, int], batch: int = 1,
            threads: int | None = None, rounds: int = 3) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Time engines `names` on `source` at `size` (H, W), `batch` random images, no flip: one first call each
    (seconds, returned apart), then `rounds` calls each in turn. Returns (median ms, first-call s, {engine: why}
    for those that failed to load or run)."""
    import tempfile

    import torch

    if threads:
        torch.set_num_threads(int(threads))  # the torch engines' threads (process-wide), as the others'
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    calls, first_s, failed = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="transferdepth-auto-") as tmp:
        graph = _shared_onnx(source, names, Path(tmp))
        for name in names:
            try:
                fn = _timed_call(name, source, graph, threads, x)
                start = time.perf_counter()
                fn()
                first_s[name], calls[name] = time.perf_counter() - start, fn
            except Exception as e:  # an engine that cannot run this model: reported, not chosen
                failed[name] = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        times: dict[str, list[float]] = {n: [] for n in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {n: round(statistics.median(v), 2) for n, v in times.items()}, first_s, failed


def _shared_onnx(source: str | os.PathLike, names: Sequence[str], tmp: Path) -> str | os.PathLike:
    """A checkpoint directory exported once to fp32 ONNX for the onnx and openvino engines (else `source`)."""
    if not Path(source).is_dir() or not {"onnx", "openvino"} & set(names):
        return source
    from transferdepth.deploy.export import export_onnx
    from transferdepth.inference.checkpoint import load_checkpoint

    return export_onnx(load_checkpoint(source), tmp / "model.onnx")


def _timed_call(name: str, source: str | os.PathLike, graph: str | os.PathLike, threads: int | None,
                x: Any) -> Callable[[], Any]:
    """One call of engine `name` on `x` (N,3,H,W): what `predict` runs per batch without flip."""
    if name == "torch":
        import torch

        from transferdepth.inference.checkpoint import load_checkpoint
        from transferdepth.inference.core import infer

        model = load_checkpoint(source).eval().to(memory_format=torch.channels_last)  # as DepthEstimator on CPU
        return lambda: infer(model, x, flip=False)
    runner = make_runner(name, source if name == "compile" else graph, threads)
    return lambda: runner.run(x)
