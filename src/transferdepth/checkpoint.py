"""The model checkpoint: a directory with `model.safetensors` + `config.json`.

config.json: {"format": "transferdepth-model/1", "encoder", "decoder_width", "min_depth", "max_depth" (metres),
"max_depth_cm" (the same range in DenseDepth's units, informational), "mean", "std", plus free-form "meta"
(training run, metrics)}. Writes are atomic; loading checks the architecture.

Changelog: checkpoints without "min_depth"/"max_depth" (before 0.2) load with DenseDepth's NYU range,
0.1-10 m (or max_depth_cm / 100 where only that is present).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from transferdepth.models import DepthNet, build_model
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M
from transferdepth.utils import atomic_write

FORMAT = "transferdepth-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture it declares."""


def model_config(model: DepthNet) -> dict[str, Any]:
    return {"format": FORMAT, "encoder": model.encoder_name, "decoder_width": model.decoder_width,
            "min_depth": model.min_depth, "max_depth": model.max_depth,
            "max_depth_cm": model.max_depth_cm, "mean": list(model.spec.mean), "std": list(model.spec.std)}


def save_checkpoint(model: DepthNet, directory: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` (created), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    config = model_config(model) | {"meta": meta or {}}
    with atomic_write(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    return directory


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of a checkpoint directory (or of the directory holding a model.safetensors file)."""
    directory = _directory(path)
    cfg_path = directory / CONFIG_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})") from None
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    for key in ("encoder", "decoder_width"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path}: missing field '{key}'")
    return cfg


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> DepthNet:
    """The DepthNet saved in `path` (a checkpoint directory or its model.safetensors), in eval mode."""
    directory = _directory(path)
    cfg = read_config(directory)
    max_depth = cfg.get("max_depth", cfg["max_depth_cm"] / 100.0 if "max_depth_cm" in cfg else MAX_DEPTH_M)
    min_depth = cfg.get("min_depth", MIN_DEPTH_M)
    try:
        model = build_model(cfg["encoder"], float(cfg["decoder_width"]), pretrained=False,
                            min_depth=min_depth, max_depth=max_depth)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from None
    try:
        state = load_file(directory / WEIGHTS_FILE, device=map_location)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}") from None
    except Exception as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: unreadable ({e})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shapes = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not fit a {cfg['encoder']} model with decoder width "
            f"{cfg['decoder_width']} ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"{len(bad_shapes)} of other shapes, e.g. {(missing + unexpected + bad_shapes)[:2]})")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _directory(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_FILE, CONFIG_FILE):
        return p.parent
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p
