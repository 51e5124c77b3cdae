"""Training configuration: one dataclass, read from YAML, overridden from the command line, validated.

Every field is documented here and in `transferdepth train --help` (flags are generated from the fields).
Defaults equal the `densedepth` recipe (`recipe.PRESETS`): DenseDepth's code (Adam lr 1e-4, AMSGrad, eps 1e-7,
batch 8, flip 0.5, channel swap, Glorot decoder init, Keras BN momentum), 640x480 in, 320x240 out.
`load_config` applies the chosen recipe's values first, then the YAML file, then command-line flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transferdepth.inference.checkpoint import MAX_DECODER_WIDTH
from transferdepth.models.decoders import available_decoders
from transferdepth.recipe import (
    DEFAULT_PRESET,
    DENSEDEPTH_SWAP_P,
    MAX_DEPTH_M,
    MIN_DEPTH_M,
    OUTPUT_SPACES,
    PRESETS,
    check_depth_range,
)
from transferdepth.training.losses import LOSSES
from transferdepth.utils import PROGRESS_MODES


class ConfigError(ValueError):
    """A configuration key that does not exist, a value of the wrong type, or an impossible combination."""


@dataclass
class TrainConfig:
    recipe: str = field(default=DEFAULT_PRESET, metadata={
        "help": f"preset applied before the YAML file and flags: {', '.join(PRESETS)}"})
    # model
    encoder: str = field(default="densenet169", metadata={"help": "encoder name (see `weights list`) or timm:<name>"})
    decoder_width: float = field(default=0.5, metadata={
        "help": "decoder size: densedepth's channels = width * bottleneck channels; every other decoder's "
                "= width * its reference's (1.0 = the reference)"})
    decoder: str = field(default="densedepth", metadata={
        "help": "decoder (models/decoders): densedepth, unet, fpn, bts, fastdepth, dpt"})
    output_space: str | None = field(default=None, metadata={
        "help": "what the network regresses: depthnorm, metric, log or disparity (none: the decoder's own)"})
    pretrained: bool = field(default=True, metadata={"help": "start from ImageNet weights"})
    encoder_weights: str | None = field(default=None, metadata={"help": "ImageNet checkpoint file to use"})
    batchnorm: str = field(default="train", metadata={
        "help": "train: update BN statistics (SyncBatchNorm under DDP on CUDA); frozen: keep ImageNet statistics"})
    min_depth: float = field(default=MIN_DEPTH_M, metadata={"help": "the model's nearest depth, metres"})
    max_depth: float = field(default=MAX_DEPTH_M, metadata={"help": "the model's farthest depth, metres"})
    decoder_act_a: bool = field(default=True, metadata={"help": "LeakyReLU after each decoder convA"})
    bottleneck_relu: bool | None = field(default=None, metadata={
        "help": "ReLU on the encoder's last features (none: the encoder's registry default)"})
    decoder_init: str = field(default="glorot", metadata={"help": "decoder initialisation: torch or glorot"})
    output_init: str = field(default="auto", metadata={
        "help": "where the decoder's last layer starts: targets (the output starts at the mean training target, "
                "read from up to 32 samples), reference (the decoder's reference initialisation), auto "
                "(reference for densedepth, targets for the other decoders)"})
    bn_momentum: float | None = field(default=0.01, metadata={
        "help": "encoder BatchNorm momentum, torch convention (Keras 0.99 == 0.01; none: torch's 0.1)"})
    input_norm: str = field(default="imagenet", metadata={"help": "input normalisation: imagenet or none"})
    init_checkpoint: str | None = field(default=None, metadata={
        "help": "checkpoint folder whose weights start this new run (e.g. an imported DenseDepth model); its "
                "architecture keys and depth range are used, a different explicit one is refused; "
                "pretrained/encoder_weights are then not used"})
    # data
    train_data: str = field(default="procedural:n=2000&seed=0&height=480&width=640",
                            metadata={"help": "dataset spec of the training set"})
    train_split: str | None = field(default=None, metadata={"help": "split of train_data (e.g. train)"})
    val_data: str | None = field(default=None, metadata={"help": "dataset spec for periodic validation"})
    val_split: str | None = field(default=None, metadata={"help": "split of val_data (e.g. test)"})
    height: int = field(default=480, metadata={"help": "input height (samples are resized/cropped to it)"})
    width: int = field(default=640, metadata={"help": "input width"})
    flip_p: float = field(default=0.5, metadata={"help": "horizontal flip probability"})
    swap_p: float = field(default=DENSEDEPTH_SWAP_P, metadata={"help": "rate of colour channel swaps"})
    target_resize: str = field(default="mask_mean", metadata={
        "help": "half-resolution target: mask_mean or inverse_antialias"})
    shuffle: str = field(default="epoch", metadata={
        "help": "epoch: reshuffle every epoch; fixed: one seeded order every epoch (Keras-style)"})
    skip_bad: bool = field(default=False, metadata={"help": "skip unreadable samples (counted, reported)"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes per training process"})
    # optimisation
    batch_size: int = field(default=8, metadata={"help": "images per step per process"})
    epochs: int = field(default=20, metadata={"help": "epochs (ignored when max_steps is set)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate"})
    beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    adam_eps: float = field(default=1e-7, metadata={"help": "Adam epsilon"})
    adam_amsgrad: bool = field(default=True, metadata={"help": "AMSGrad variant of Adam"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    encoder_lr_mult: float = field(default=1.0, metadata={
        "help": "the encoder's learning rate is lr x this (the decoder's is lr)"})
    warmup_ratio: float = field(default=0.0, metadata={
        "help": "linear learning-rate warm-up over this fraction of the run's steps"})
    lr_schedule: str = field(default="constant", metadata={
        "help": "learning rate after warm-up: constant, or cosine (decays to 0 at the last step)"})
    loss: str = field(default="densedepth", metadata={
        "help": "training loss: densedepth (its terms: w_depth, w_grad, w_ssim, grad_term), silog, berhu, ssi"})
    w_depth: float = field(default=0.1, metadata={"help": "weight of the L1 depth term"})
    w_grad: float = field(default=1.0, metadata={"help": "weight of the L1 gradient term"})
    w_ssim: float = field(default=1.0, metadata={"help": "weight of the (1 - SSIM)/2 term"})
    grad_term: str = field(default="mean", metadata={"help": "gradient loss term: mean or tf (DenseDepth's)"})
    grad_clip: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    nan_patience: int = field(default=10, metadata={"help": "stop after this many non-finite steps in a row"})
    amp: str = field(default="auto", metadata={
        "help": "mixed precision on CUDA: auto (bf16 where supported, else fp16), bf16, fp16, off"})
    channels_last: bool = field(default=True, metadata={
        "help": "channels_last memory format for training (same maths, other rounding; a CPU step 1.15-1.5x faster)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and augmentation"})
    # logging and checkpoints
    log_every: int = field(default=10, metadata={"help": "steps between logged losses"})
    val_every: int = field(default=0, metadata={"help": "steps between validations (0: end of each epoch)"})
    val_max_images: int = field(default=64, metadata={"help": "validation images per validation"})
    ckpt_every: int = field(default=500, metadata={"help": "steps between checkpoints (always at the end)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard scalars and image grids"})
    progress: str = field(default="auto", metadata={
        "help": "progress: auto (a bar on a terminal, else a plain line every 10%% or 30 s), bar, plain, none "
                "(true/false: auto/none)"})

    def __post_init__(self) -> None:
        self.progress = _progress_mode(self.progress)
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        for ok, message in _checks(self):
            if not ok:
                raise ConfigError(message)
        try:
            check_depth_range(self.min_depth, self.max_depth, "min_depth/max_depth")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_SEED = 2**32 - 1  # numpy's np.random.seed takes seeds below 2**32
MAX_SIDE = 8192  # pixels, height and width of training inputs
MAX_BATCH_SIZE = 4096


CHOICES = {"recipe": tuple(PRESETS), "batchnorm": ("train", "frozen"), "amp": ("auto", "bf16", "fp16", "off"),
           "decoder_init": ("torch", "glorot"), "output_init": ("auto", "reference", "targets"),
           "input_norm": ("imagenet", "none"),
           "target_resize": ("mask_mean", "inverse_antialias"), "shuffle": ("epoch", "fixed"),
           "grad_term": ("mean", "tf"), "lr_schedule": ("constant", "cosine"), "progress": PROGRESS_MODES,
           "decoder": tuple(available_decoders()), "loss": tuple(LOSSES)}


def _progress_mode(value: Any) -> Any:
    """`progress` as a mode; true/false (the key was a bool before) mean auto/none."""
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return "auto" if value in (True, "true", "True", "TRUE") else "none"
    return value


def _checks(c: TrainConfig) -> list[tuple[bool, str]]:
    """(condition, message) for every range rule of the config (float keys are also checked to be finite)."""
    odd = [f"{k}={v}" for k, v in (("height", c.height), ("width", c.width)) if v % 2]
    return [
        *((getattr(c, k) in v, f"{k} must be one of {', '.join(v)}; got {getattr(c, k)!r}") for k, v in CHOICES.items()),
        (0 < c.decoder_width <= MAX_DECODER_WIDTH, f"decoder_width must be in (0, {MAX_DECODER_WIDTH:g}]"),
        (c.output_space is None or c.output_space in OUTPUT_SPACES,
         f"output_space must be one of {', '.join(OUTPUT_SPACES)} or null; got {c.output_space!r}"),
        (32 <= c.height <= MAX_SIDE and 32 <= c.width <= MAX_SIDE,
         f"height and width must be >= 32 and <= {MAX_SIDE} pixels"),
        (not odd, f"height and width must be even: the network predicts at half resolution and an odd size "
                  f"({', '.join(odd)}) gives a prediction one pixel larger than its half-resolution target"),
        (1 <= c.batch_size <= MAX_BATCH_SIZE, f"batch_size must be in [1, {MAX_BATCH_SIZE}]"),
        (c.epochs >= 1, "epochs must be >= 1"),
        (c.max_steps is None or c.max_steps >= 1, "max_steps must be >= 1"),
        (c.lr > 0, "lr must be > 0"),
        (0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
        (c.adam_eps > 0, "adam_eps must be > 0"),
        (c.weight_decay >= 0, "weight_decay must be >= 0"),
        (c.encoder_lr_mult > 0, "encoder_lr_mult must be > 0"),
        (0 <= c.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
        (min(c.w_depth, c.w_grad, c.w_ssim) >= 0 and c.w_depth + c.w_grad + c.w_ssim > 0,
         "w_depth, w_grad and w_ssim must be >= 0 and not all 0"),
        (c.bn_momentum is None or 0 < c.bn_momentum <= 1, "bn_momentum must be in (0, 1] (torch convention)"),
        (0 <= c.flip_p <= 1 and 0 <= c.swap_p <= 1, "flip_p and swap_p must be in [0, 1]"),
        (c.nan_patience >= 1, "nan_patience must be >= 1"),
        (c.num_workers >= 0, "num_workers must be >= 0"),
        (0 <= c.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}]"),
        (c.log_every >= 1 and c.ckpt_every >= 1 and c.val_every >= 0,
         "log_every and ckpt_every must be >= 1, val_every >= 0"),
        (c.val_max_images >= 1, "val_max_images must be >= 1"),
        (c.grad_clip is None or c.grad_clip > 0, "grad_clip must be > 0"),
    ]


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def resolve_output_init(decoder: str, output_init: str) -> str:
    """`output_init` with "auto" resolved: "reference" for the DenseDepth decoder (faithful; it trains from
    its own start), "targets" for the others (their heads start near 0, or spread over (0, max_depth) for
    BTS, and Adam at 1e-4 moves a bias about 0.01 per 100 steps: docs/study.md)."""
    if output_init != "auto":
        return output_init
    return "reference" if decoder == "densedepth" else "targets"


_HINTS = typing.get_type_hints(TrainConfig)
# keys that define the network: a resume with another value is refused
ARCHITECTURE_KEYS = ("encoder", "decoder_width", "min_depth", "max_depth", "decoder_act_a", "bottleneck_relu",
                     "input_norm", "decoder", "output_space")


def _base_type(name: str) -> tuple[type, bool]:
    """(the scalar type of field `name`, whether None is allowed)."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in args if a is not type(None)), type(None) in args
    return hint, False


_FLOAT_FIELDS = tuple(name for name in FIELDS if _base_type(name)[0] is float)


def coerce(name: str, value: Any, source: str = "config") -> Any:
    """`value` as the type of field `name`; strings from the command line are parsed."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: unknown key '{name}'{hint}; valid keys: {', '.join(FIELDS)}")
    if name == "progress":
        value = _progress_mode(value)
    typ, optional = _base_type(name)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{source}: '{name}' must be a {typ.__name__}, got null")
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
        else:
            try:
                return typ(float(text)) if typ is int and float(text).is_integer() else typ(text)
            except ValueError:
                pass
        raise ConfigError(f"{source}: '{name}' must be a {typ.__name__}, got '{value}'")
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{source}: '{name}' must be a {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe's values (`recipe` from the flags, else the file, else the default), then the YAML file at
    `path`, then `overrides` (e.g. from the command line)."""
    from_file = _read_yaml(Path(path)) if path is not None else {}
    from_flags = {k: coerce(k, v, "command line") for k, v in (overrides or {}).items()}
    recipe = from_flags.get("recipe", from_file.get("recipe", DEFAULT_PRESET))
    if recipe not in PRESETS:
        raise ConfigError(f"recipe must be one of {', '.join(PRESETS)}; got {recipe!r}")
    explicit = {**from_file, **from_flags}
    cfg = TrainConfig(**{**PRESETS[recipe], **explicit, "recipe": recipe})
    cfg.explicit_keys = frozenset(explicit)  # type: ignore[attr-defined]  # for init_checkpoint's conflict check
    return cfg


def with_recipe(cfg: TrainConfig, recipe: str) -> TrainConfig:
    """`cfg` under another recipe (a study row `ENCODER@RECIPE`): keys the user set keep their values
    (`cfg.explicit_keys` from `load_config`; for a TrainConfig built directly, the keys that differ from its
    own recipe's values), every other key of either recipe takes `recipe`'s value, or its default where
    `recipe` does not set it."""
    if recipe not in PRESETS:
        raise ConfigError(f"recipe must be one of {', '.join(PRESETS)}; got {recipe!r}")
    old = PRESETS[cfg.recipe]
    explicit = getattr(cfg, "explicit_keys", None)
    if explicit is None:
        explicit = {k for k in FIELDS if k != "recipe" and getattr(cfg, k) != old.get(k, FIELDS[k].default)}
    values = {k: PRESETS[recipe].get(k, FIELDS[k].default) for k in {*old, *PRESETS[recipe]} if k not in explicit}
    new = dataclasses.replace(cfg, **{**values, "recipe": recipe})
    new.explicit_keys = frozenset(explicit)  # type: ignore[attr-defined]
    return new


def init_conflicts(cfg: TrainConfig, arch: dict[str, Any]) -> dict[str, Any]:
    """`arch` (a checkpoint's ARCHITECTURE_KEYS) for a run of `cfg` that starts from that checkpoint.

    Keys the user set (`cfg.explicit_keys`, recorded by `load_config`; every key for a TrainConfig built
    directly) that differ from the checkpoint's are a ConfigError naming each key (`bottleneck_relu: null`,
    "the encoder's default", is not a conflict).
    """
    explicit = getattr(cfg, "explicit_keys", None)
    conflicts = [f"{k}={getattr(cfg, k)!r} (the checkpoint has {arch[k]!r})" for k in ARCHITECTURE_KEYS
                 if (explicit is None or k in explicit) and getattr(cfg, k) is not None
                 and not _same(getattr(cfg, k), arch[k])]
    if conflicts:
        raise ConfigError(f"init_checkpoint {cfg.init_checkpoint}: the architecture comes from the checkpoint, but "
                          f"this config sets {'; '.join(conflicts)}; remove the key or make it equal")
    return {k: arch[k] for k in ARCHITECTURE_KEYS}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return not isinstance(a, bool) and not isinstance(b, bool) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def read_yaml_file(path: str | os.PathLike) -> Any:
    """The YAML document of a config file a user gave, read safely: a regular file of at most
    `utils.MAX_CONFIG_BYTES` (a FIFO or a link to a device is refused without blocking), not nested too
    deeply. Raises ConfigError naming the file, one line."""
    from transferdepth.utils import UserFileError, read_user_text

    try:
        return yaml.safe_load(read_user_text(path, "YAML config file"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UserFileError as e:
        raise ConfigError(str(e)) from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return {k: coerce(k, v, str(path)) for k, v in data.items()}


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    from transferdepth.utils import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
