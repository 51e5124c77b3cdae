"""The model checkpoint: a directory with `model.safetensors` + `config.json`.

config.json: {"format": "transferdepth-model/1", "encoder", "decoder_width", "decoder_act_a", "bottleneck_relu",
"input_norm", "pad_multiple", "min_depth", "max_depth" (metres), "max_depth_cm" (the same range in DenseDepth's units,
informational), "mean", "std" (the normalisation the model applies, after `input_norm`), "decoder",
"output_space", plus free-form
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
- 0.3: "decoder" (a registered decoder; default "densedepth") and "output_space" (what the network regresses:
  depthnorm, metric, log or disparity; default "depthnorm"). Every checkpoint before them is a DenseDepth
  decoder regressing DepthNorm, and loads as one.
- 0.3 (hardening): every key is checked against `SCHEMA` (kind, range or choices, default) before a network
  is built: decoder_width in (0, 2], pad_multiple in [1, 64], mean/std three finite numbers (std > 0) that
  must equal what the model applies; config.json is read only as a regular file of at most 1 MiB; a NaN or
  infinite weight is refused, naming the tensor.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferdepth.inference.hub import HubError, resolve_checkpoint
from transferdepth.models import DepthNet, available_decoders, create_model, hub_source
from transferdepth.models.depthnet import OLD_PAD_MULTIPLE
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M, OUTPUT_SPACES
from transferdepth.utils import UserFileError, atomic_write, check_output_folder, read_user_text

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
            "max_depth_cm": model.max_depth_cm, "mean": list(model.norm_mean), "std": list(model.norm_std),
            "decoder": model.decoder_name, "output_space": model.output_space}


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


def is_checkpoint_folder(path: Path) -> bool:
    """True for a folder holding a checkpoint and nothing else (config.json, and model.safetensors if written):
    one that a new checkpoint may replace as a whole without losing anyone's files."""
    names = {p.name for p in path.iterdir()}
    return CONFIG_FILE in names and names <= {CONFIG_FILE, WEIGHTS_FILE}


def check_checkpoint_out(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False) -> bool:
    """Check that a checkpoint may be written to the folder `path` (`utils.check_output_folder`): new or
    empty, or holding only a checkpoint and `overwrite`. Changes nothing; True when one will be replaced."""
    return check_output_folder(path, flag=flag, what="a checkpoint folder (model.safetensors and config.json only)",
                               holds=is_checkpoint_folder, overwrite=overwrite)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of a checkpoint directory (or of the directory holding a model.safetensors file), as read.

    Only a regular file of at most `MAX_CONFIG_BYTES` is read (a FIFO or a link to a device is refused
    without blocking); JSON nested too deeply is refused. Raises CheckpointError (one line)."""
    directory = _directory(path)
    cfg_path = directory / CONFIG_FILE
    try:
        cfg = json.loads(read_user_text(cfg_path, "checkpoint config.json"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE}); {WHAT_IT_HOLDS}") from None
    except UserFileError as e:
        raise CheckpointError(str(e)) from None
    except RecursionError:
        raise CheckpointError(f"{cfg_path}: JSON nested too deeply to be a checkpoint config") from None
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    for key in ("encoder", "decoder_width"):
        if key not in cfg:
            raise CheckpointError(f"{cfg_path}: missing field '{key}'")
    return cfg


# --- the schema of config.json ---------------------------------------------------------------------------

_REQUIRED = object()
MAX_DECODER_WIDTH = 2.0  # decoder channels = width x the encoder's last channels; DenseDepth uses 0.5 and 1.0
MAX_PAD_MULTIPLE = 64  # 1 (new models) or 32 (before the key existed); more only wastes memory


@dataclass(frozen=True)
class Field:
    """One config.json key. kind: "str", "bool", "int", "number" (finite int or float) or "rgb" (three
    finite numbers); ok: the range or choice rule for a value of that kind, `expected` says it in words;
    default: the value of a checkpoint written before the key existed (_REQUIRED: none)."""

    kind: str
    expected: str
    ok: Callable[[Any], bool] = lambda v: True
    default: Any = _REQUIRED


def _positive(v: float) -> bool:
    return v > 0


# field -> (kind, range or choices, default). Add a key here (and to `model_config`) and it is read and checked;
# `architecture` turns the checked values into `create_model` arguments.
SCHEMA: dict[str, Field] = {
    "format": Field("str", f"'{FORMAT}'", lambda v: v == FORMAT, FORMAT),
    "encoder": Field("str", "an encoder name (a non-empty string)", bool),
    "decoder_width": Field("number", f"a number in (0, {MAX_DECODER_WIDTH:g}]", lambda v: 0 < v <= MAX_DECODER_WIDTH),
    "decoder_act_a": Field("bool", "true or false", default=True),
    "bottleneck_relu": Field("bool", "true or false", default=False),
    "input_norm": Field("str", " or ".join(repr(n) for n in INPUT_NORMS), lambda v: v in INPUT_NORMS, "imagenet"),
    "pad_multiple": Field("int", f"an integer in [1, {MAX_PAD_MULTIPLE}]", lambda v: 1 <= v <= MAX_PAD_MULTIPLE,
                          OLD_PAD_MULTIPLE),
    "min_depth": Field("number", "a finite number > 0 (metres)", _positive, MIN_DEPTH_M),
    "max_depth": Field("number", "a finite number > 0 (metres)", _positive, None),  # None: from max_depth_cm
    "max_depth_cm": Field("number", "a finite number > 0 (centimetres)", _positive, None),
    "mean": Field("rgb", "three finite numbers (R, G, B)", default=None),  # None: not recorded
    "std": Field("rgb", "three finite numbers > 0 (R, G, B)", lambda v: min(v) > 0, None),
    "decoder": Field("str", "a registered decoder (" + ", ".join(available_decoders()) + ")",
                     lambda v: v in available_decoders(), "densedepth"),
    "output_space": Field("str", " or ".join(repr(s) for s in OUTPUT_SPACES), lambda v: v in OUTPUT_SPACES,
                          "depthnorm"),
}


def _kind_ok(kind: str, v: Any) -> bool:
    def num(x: Any) -> bool:
        return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)

    return {"str": lambda: isinstance(v, str), "bool": lambda: isinstance(v, bool), "number": lambda: num(v),
            "int": lambda: isinstance(v, int) and not isinstance(v, bool),
            "rgb": lambda: isinstance(v, list) and len(v) == 3 and all(num(x) for x in v)}[kind]()


def checked_fields(cfg: dict[str, Any], cfg_path: str | os.PathLike = CONFIG_FILE) -> dict[str, Any]:
    """Every SCHEMA key of a config.json dict: its value, checked (kind and range), or its default when
    absent. Raises CheckpointError naming `cfg_path`, the field and the expected range."""
    out = {}
    for name, f in SCHEMA.items():
        if name not in cfg:
            if f.default is _REQUIRED:
                raise CheckpointError(f"{cfg_path}: missing field '{name}'")
            out[name] = f.default
            continue
        v = cfg[name]
        if not (_kind_ok(f.kind, v) and f.ok(v)):
            raise CheckpointError(f"{cfg_path}: field '{name}' must be {f.expected}, got {v!r}")
        out[name] = float(v) if f.kind == "number" else v
    return out


def architecture(cfg: dict[str, Any], cfg_path: str | os.PathLike = CONFIG_FILE) -> dict[str, Any]:
    """`create_model` keyword arguments from a config.json dict, every field checked (`SCHEMA`).

    Missing optional keys take the value older checkpoints were written with (see the changelog above).
    Raises CheckpointError naming `cfg_path` and the field.
    """
    c = checked_fields(cfg, cfg_path)
    encoder = c["encoder"]
    if hub_source(encoder) is not None:
        raise CheckpointError(f"{cfg_path}: field 'encoder' is {encoder!r}, a timm hub/folder source; loading a "
                              "checkpoint never touches the network, so only registry encoder names are accepted")
    if c["max_depth"] is not None:
        max_depth = c["max_depth"]
    elif c["max_depth_cm"] is not None:
        max_depth = c["max_depth_cm"] / 100.0
    else:
        max_depth = MAX_DEPTH_M
    min_depth = c["min_depth"]
    if min_depth >= max_depth:
        raise CheckpointError(f"{cfg_path}: field 'min_depth' ({min_depth} m) must be below max_depth "
                              f"({max_depth} m)")
    return {"encoder": encoder, "decoder_width": c["decoder_width"], "min_depth": min_depth,
            "max_depth": max_depth, "decoder_act_a": c["decoder_act_a"],
            "bottleneck_relu": c["bottleneck_relu"], "input_norm": c["input_norm"],
            "pad_multiple": c["pad_multiple"], "decoder": c["decoder"], "output_space": c["output_space"]}


def _check_normalisation(model: DepthNet, cfg: dict[str, Any], cfg_path: Path) -> None:
    """config.json's mean/std (when recorded) must be what the model applies (its encoder and input_norm)."""
    for key, applied in (("mean", model.norm_mean), ("std", model.norm_std)):
        saved = cfg.get(key)
        if saved is not None and not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
                                         for a, b in zip(saved, applied)):
            raise CheckpointError(f"{cfg_path}: field '{key}' is {saved}, but a {model.encoder_name} model with "
                                  f"input_norm {model.input_norm!r} applies {list(applied)}; the file was edited "
                                  "or belongs to another model")


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of `state` holding NaN or +-inf, or None."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> DepthNet:
    """The DepthNet saved in `path` (a checkpoint directory or its model.safetensors), in eval mode.

    Refused (CheckpointError, one line): a config field out of its range (`SCHEMA`), weights that do not fit
    the declared architecture, and a weight that is NaN or infinite (naming the first such tensor)."""
    directory = _directory(path)
    cfg_path = directory / CONFIG_FILE
    cfg = read_config(directory)
    arch = architecture(cfg, cfg_path)
    try:
        model = create_model(arch.pop("encoder"), arch.pop("decoder_width"), **arch)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    _check_normalisation(model, checked_fields(cfg, cfg_path), cfg_path)
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
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: tensor '{bad}' holds NaN or infinite values; the "
                              "model would predict nothing usable (a diverged or damaged file)")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _directory(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        if p.name in (WEIGHTS_FILE, CONFIG_FILE):
            return p.parent
        raise CheckpointError(f"{p}: not a checkpoint; {WHAT_IT_HOLDS}")
    if not p.exists():  # a Hub name (org/name[@rev]) -> its snapshot folder; else one line naming both tries
        try:
            return resolve_checkpoint(path)
        except HubError as e:
            raise CheckpointError(str(e)) from None
    return p
