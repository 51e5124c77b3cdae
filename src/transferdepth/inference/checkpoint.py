"""The model checkpoint: a directory with `model.safetensors` + `config.json`.

config.json: {"format": "transferdepth-model/1", "encoder", "decoder_width", "decoder_act_a", "bottleneck_relu",
"input_norm", "pad_multiple", "min_depth", "max_depth" (metres), "max_depth_cm" (the same range in DenseDepth's units,
informational), "mean", "std" (the normalisation the model applies, after `input_norm`), plus free-form
"meta" (training run, metrics)}. Writes are atomic; loading validates every field, rebuilds the exact
architecture with the weights-free `create_model` (never touching the network) and checks every tensor.

Changelog (all still "transferdepth-model/1"; a missing key means what the code did before it existed):
- 0.2: "min_depth"/"max_depth"; without them, DenseDepth's NYU range 0.1-10 m (or max_depth_cm / 100).
- 0.2: "decoder_act_a" (default true), "input_norm" (default "imagenet"), "bottleneck_relu" (the resolved
  bool; default false). DenseNet-161/169 models now apply ReLU to norm5 before the decoder (as DenseDepth)
  and record "bottleneck_relu": true; an older DenseNet checkpoint, without the key, loads with false and
  predicts exactly as before.
- 0.2: "pad_multiple" (an integer >= 1; default 32). New models run any input size without padding (1:
  only sides shorter than 32 are padded); before, every side was replicate-padded to a multiple of 32 and the
  output cropped, so an older checkpoint, without the key, loads with 32 and predicts exactly as before. A
  run that starts from a checkpoint (`init_checkpoint`) builds a new model: it trains, and saves, with 1.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from transferdepth.models import DepthNet, create_model, hub_source
from transferdepth.models.depthnet import OLD_PAD_MULTIPLE
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M
from transferdepth.utils import atomic_write

FORMAT = "transferdepth-model/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
WHAT_IT_HOLDS = f"a checkpoint is a folder holding {WEIGHTS_FILE} and {CONFIG_FILE}; pass the folder"
INPUT_NORMS = ("imagenet", "none")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the architecture it declares."""


def model_config(model: DepthNet) -> dict[str, Any]:
    """The architecture keys of config.json for `model` (everything `load_checkpoint` needs to rebuild it)."""
    return {"format": FORMAT, "encoder": model.encoder_name, "decoder_width": model.decoder_width,
            "decoder_act_a": model.decoder_act_a, "bottleneck_relu": model.bottleneck_relu,
            "input_norm": model.input_norm, "pad_multiple": model.pad_multiple, "min_depth": model.min_depth, "max_depth": model.max_depth,
            "max_depth_cm": model.max_depth_cm, "mean": list(model.norm_mean), "std": list(model.norm_std)}


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
    """config.json of a checkpoint directory (or of the directory holding a model.safetensors file), as read."""
    directory = _directory(path)
    cfg_path = directory / CONFIG_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE}); {WHAT_IT_HOLDS}") from None
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    for key in ("encoder", "decoder_width"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path}: missing field '{key}'")
    return cfg


def architecture(cfg: dict[str, Any], cfg_path: str | os.PathLike = CONFIG_FILE) -> dict[str, Any]:
    """`create_model` keyword arguments from a config.json dict, every field checked.

    Missing optional keys take the value older checkpoints were written with (see the changelog above).
    Raises CheckpointError naming `cfg_path` and the field.
    """
    def bad(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{cfg_path}: field '{field}' must be {expected}, got {cfg.get(field)!r}")

    def number(field: str, positive: bool = True) -> float:
        v = cfg[field]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise bad(field, "a finite number > 0")
        return float(v)

    def flag(field: str, default: bool) -> bool:
        v = cfg.get(field, default)
        if not isinstance(v, bool):
            raise bad(field, "true or false")
        return v

    encoder = cfg.get("encoder")
    if not isinstance(encoder, str) or not encoder:
        raise bad("encoder", "an encoder name (a string)")
    if hub_source(encoder) is not None:
        raise CheckpointError(f"{cfg_path}: field 'encoder' is {encoder!r}, a timm hub/folder source; loading a "
                              "checkpoint never touches the network, so only registry encoder names are accepted")
    if "max_depth" in cfg:
        max_depth = number("max_depth")
    elif "max_depth_cm" in cfg:
        max_depth = number("max_depth_cm") / 100.0
    else:
        max_depth = MAX_DEPTH_M
    min_depth = number("min_depth") if "min_depth" in cfg else MIN_DEPTH_M
    if min_depth >= max_depth:
        raise CheckpointError(f"{cfg_path}: field 'min_depth' ({min_depth} m) must be below max_depth "
                              f"({max_depth} m)")
    input_norm = cfg.get("input_norm", "imagenet")
    if input_norm not in INPUT_NORMS:
        raise bad("input_norm", " or ".join(repr(n) for n in INPUT_NORMS))
    pad_multiple = cfg.get("pad_multiple", OLD_PAD_MULTIPLE)
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or pad_multiple < 1:
        raise bad("pad_multiple", "an integer >= 1")
    return {"encoder": encoder, "decoder_width": number("decoder_width"), "min_depth": min_depth,
            "max_depth": max_depth, "decoder_act_a": flag("decoder_act_a", True),
            "bottleneck_relu": flag("bottleneck_relu", False), "input_norm": input_norm,
            "pad_multiple": pad_multiple}


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> DepthNet:
    """The DepthNet saved in `path` (a checkpoint directory or its model.safetensors), in eval mode."""
    directory = _directory(path)
    cfg_path = directory / CONFIG_FILE
    arch = architecture(read_config(directory), cfg_path)
    try:
        model = create_model(arch.pop("encoder"), arch.pop("decoder_width"), **arch)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    try:
        state = load_file(directory / WEIGHTS_FILE, device=map_location)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}; {WHAT_IT_HOLDS}") from None
    except Exception as e:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: unreadable ({e})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shapes = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not fit a {model.encoder_name} model with decoder width "
            f"{model.decoder_width} ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"{len(bad_shapes)} of other shapes, e.g. {(missing + unexpected + bad_shapes)[:2]})")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _directory(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        if p.name in (WEIGHTS_FILE, CONFIG_FILE):
            return p.parent
        raise CheckpointError(f"{p}: not a checkpoint; {WHAT_IT_HOLDS}")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p
