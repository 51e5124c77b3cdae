"""The training loop: set up a run (everything that can fail is checked before the out folder changes),
then epochs of steps with logging, checkpoints and validation."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from transferdepth.inference.checkpoint import CheckpointError, architecture, load_checkpoint, read_config
from transferdepth.models import DepthNet
from transferdepth.training import data as tdata
from transferdepth.training import setup
from transferdepth.training import state as tstate
from transferdepth.training import step as tstep
from transferdepth.training.config import (
    ConfigError,
    TrainConfig,
    init_conflicts,
    resolve_output_init,
    save_config,
)
from transferdepth.training.validation import validate_and_log
from transferdepth.utils import atomic_write, progress
from transferdepth.weights.build import build_model


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    skipped_steps: int
    seconds: float
    metrics: dict[str, Any] | None


@dataclass
class _Run:
    """Everything one training process holds while it trains."""

    cfg: TrainConfig
    out: Path
    resume: bool
    device: torch.device
    rank: int
    world: int
    amp: torch.dtype | None
    model: DepthNet
    step: tstep.TrainStep
    train_ds: Dataset
    raw: Any
    val_loader: DataLoader | None
    sampler: DistributedSampler
    state: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    empty: tdata.EmptyDepthCounter = field(default_factory=tdata.EmptyDepthCounter)
    data_label: str | None = None  # names a given train_dataset in run.json
    output_init: dict[str, Any] = field(default_factory=dict)  # how the decoder's last layer started (run.json)
    t_start: float = 0.0
    metrics: dict[str, Any] | None = None
    norm: tuple[tuple[float, ...], tuple[float, ...]] = field(init=False)  # the model's (mean, std), read once

    def __post_init__(self) -> None:
        self.norm = tdata.normalization(self.model)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with `init_checkpoint` applied: the checkpoint's architecture keys and depth range replace the
    config's (an explicit, different one is a ConfigError naming it); `cfg` itself without it."""
    if not cfg.init_checkpoint:
        return cfg
    try:
        arch = architecture(read_config(cfg.init_checkpoint), Path(cfg.init_checkpoint) / "config.json")
    except CheckpointError as e:
        raise ConfigError(f"init_checkpoint: {e}") from None
    return dataclasses.replace(cfg, **init_conflicts(cfg, arch))


def build(cfg: TrainConfig) -> DepthNet:
    """The model `cfg` describes (architecture keys and depth range; ImageNet weights as configured, or every
    weight from `cfg.init_checkpoint`: pass `resolve_config(cfg)`, whose architecture is the checkpoint's)."""
    if cfg.init_checkpoint:
        init_conflicts(cfg, architecture(read_config(cfg.init_checkpoint)))  # every key must equal the checkpoint's
    pretrained: bool | str = False if cfg.init_checkpoint else (cfg.encoder_weights or cfg.pretrained)
    model = build_model(cfg.encoder, cfg.decoder_width, pretrained=pretrained, min_depth=cfg.min_depth,
                        max_depth=cfg.max_depth, decoder_act_a=cfg.decoder_act_a, bottleneck_relu=cfg.bottleneck_relu,
                        decoder_init=cfg.decoder_init, bn_momentum=cfg.bn_momentum, input_norm=cfg.input_norm,
                        decoder=cfg.decoder, output_space=cfg.output_space)
    if cfg.init_checkpoint:
        model.load_state_dict(load_checkpoint(cfg.init_checkpoint).state_dict())
    return model


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          train_dataset: Dataset | None = None, data_label: str | None = None) -> TrainResult:
    """Train a DepthNet as `cfg` says and write the run to `out_dir` (see the package docstring).

    train_dataset: optional ready dataset of transformed samples (dicts with `image` (3,H,W) normalised
    float, or uint8 RGB normalised here with the model's mean/std, `depth` (1,H/2,W/2) metres, `valid`), used instead of `cfg.train_data`; it must have `set_epoch`
    if it augments. data_label: a name for that dataset, kept in run.json as `train_data_label` so that a later
    resume can check it continues on the same data (`study.compare.run_grid` does). Nothing in `out_dir` changes until the data, the model and its weights are ready; with
    --overwrite the old run is kept aside until the new run's first checkpoint is written.
    """
    out = Path(out_dir)
    cfg = resolve_config(cfg)
    rank, world, local_rank, owned = setup.dist_setup(cfg.device)
    try:
        device = setup.train_device(cfg.device, local_rank)
        replace = tstate.prepare_out_dir(out, cfg, resume, overwrite) if rank == 0 else False
        run = _set_up(cfg, out, resume, train_dataset, device, rank, world)
        run.data_label = data_label
        replacement = tstate.RunReplacement(out) if replace else None
        if replacement is not None:
            replacement.begin()
        setup.barrier()
        try:
            return _train_run(run, replacement)
        except BaseException:
            if replacement is not None:
                replacement.rollback()
            raise
    finally:
        setup.dist_teardown(owned)


def _set_up(cfg: TrainConfig, out: Path, resume: bool, train_dataset: Dataset | None, device: torch.device,
            rank: int, world: int) -> _Run:
    """Model, data, optimizer and (on --resume) the checkpoint's state; reads but never writes `out`."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build(cfg)
    train_ds, raw = tdata.open_train_data(cfg, model) if train_dataset is None else (train_dataset, None)
    val_ds = tdata.open_val_data(cfg, model)
    if val_ds is not None:
        tdata.check_val_data(val_ds, str(cfg.val_data), model.max_depth)
    if len(train_ds) < cfg.batch_size * world:
        raise ConfigError(f"training set has {len(train_ds)} samples, fewer than one global batch "
                          f"({cfg.batch_size} x {world} processes)")
    output_init = resolve_output_init(cfg.decoder, cfg.output_init)
    init_info: dict[str, Any] = {"mode": "init_checkpoint" if cfg.init_checkpoint else output_init}
    if output_init == "targets" and not resume and not cfg.init_checkpoint:  # a start, not a continuation
        init_info["value"] = tdata.target_mean(train_ds, model)
        init_info["space"] = model.output_space
        model.init_output_(init_info["value"])
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_steps": 0, "nan_streak": 0,
                             "train_seconds": 0.0}
    if resume:
        _, state, weights = tstate.load_state(out)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise ConfigError(f"--resume: the checkpoint in {out} does not fit this model "
                              f"({str(e).splitlines()[0]})") from None
    model.to(device)
    tstep.set_memory_format(model, cfg)
    amp = setup.amp_dtype(cfg, device)
    net = setup.wrap_ddp(model, cfg, device, world)
    step = tstep.TrainStep(net, model, tstep.make_optimizer(cfg, model), cfg, device, amp)
    if resume:
        step.opt.load_state_dict(state["optimizer"])
        step.scaler.load_state_dict(state["scaler"])
        tstate.restore_rng(state)
    state = {k: v for k, v in state.items() if k not in ("optimizer", "scaler") and not k.startswith("rng_")}
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    steps_per_epoch = len(sampler) // cfg.batch_size
    pin = device.type == "cuda"
    return _Run(cfg, out, resume, device, rank, world, amp, model, step, train_ds, raw,
                tdata.val_loader(val_ds, cfg, pin), sampler, state, steps_per_epoch,
                cfg.max_steps or cfg.epochs * steps_per_epoch, output_init=init_info)


class _RunLog:
    """Rank 0's outputs while training: run.json, config.yaml, history.jsonl, TensorBoard, tqdm (no-ops
    on other ranks)."""

    def __init__(self, run: _Run):
        self.writer = self.history = self.bar = None
        self.t_window, self.imgs_window = time.perf_counter(), 0
        if not run.is_main:
            return
        cfg, out, step = run.cfg, run.out, run.state["step"]
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "run.json") as tmp:
            info = {**tstate.run_info(cfg, run.world, run.device), "train_data_label": run.data_label}
            info["output_init"] = run.output_init
            if run.resume:  # a resumed run keeps the start its first part recorded
                info["output_init"] = tstate.recorded_run(out).get("output_init", run.output_init)
            tmp.write_text(json.dumps(info, indent=2))
        save_config(cfg, out / "config.yaml")
        if run.resume:
            tstate.truncate_history(out / "history.jsonl", step)
        self.history = open(out / "history.jsonl", "a")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=step if run.resume else None)
        if cfg.progress != "none":  # a bar on a terminal, plain lines in a log (utils.progress)
            self.bar = progress(total=run.total_steps, initial=step, desc=f"train {cfg.encoder}", unit="step",
                                mode=cfg.progress)

    def step(self, run: _Run, terms: dict[str, float], images: int) -> None:
        """Count a step; every `log_every` steps (and the last) write history.jsonl, TensorBoard, tqdm."""
        self.imgs_window += images
        step = run.state["step"]
        if self.bar is not None:
            self.bar.update(1)
        if self.history is None or not (step % run.cfg.log_every == 0 or step == run.total_steps):
            return
        now = time.perf_counter()
        ips = self.imgs_window / max(now - self.t_window, 1e-9)
        self.t_window, self.imgs_window = now, 0
        rec = {"step": step, "epoch": run.state["epoch"], **terms, "lr": run.step.opt.param_groups[0]["lr"],
               "images_per_s": ips, "skipped_steps": run.state["skipped_steps"],
               "time_s": run.state["train_seconds"] + now - run.t_start}
        self.history.write(json.dumps(rec) + "\n")
        self.history.flush()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{terms['loss']:.4f}", img_s=f"{ips:.1f}")
        if self.writer is not None:
            for k, v in terms.items():  # the loss and its terms (each loss names its own)
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("train/lr", rec["lr"], step)
            self.writer.add_scalar("train/images_per_s", ips, step)

    def message(self, text: str) -> None:
        if self.history is not None:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        for thing in (self.bar, self.writer, self.history):
            if thing is not None:
                thing.close()


def _train_run(run: _Run, replacement: tstate.RunReplacement | None) -> TrainResult:
    log = _RunLog(run)
    run.t_start = time.perf_counter()
    try:
        while run.state["step"] < run.total_steps:
            _train_epoch(run, log, replacement)
        if run.state["batch_in_epoch"]:
            _check_empty_depth(run, log, "the steps run")
    finally:
        log.close()
    seconds = run.state["train_seconds"] + time.perf_counter() - run.t_start
    if run.is_main and run.raw is not None and hasattr(run.raw, "report"):
        print(run.raw.report())
    return TrainResult(run.out, run.state["step"], run.state["skipped_steps"], seconds, run.metrics)


def _train_epoch(run: _Run, log: _RunLog, replacement: tstate.RunReplacement | None) -> None:
    """The rest of the current epoch (or up to total_steps), checkpointing and validating on schedule."""
    cfg, state = run.cfg, run.state
    epoch = state["epoch"]
    loader = tdata.epoch_loader(run.train_ds, run.sampler, cfg, epoch, state["batch_in_epoch"], run.rank,
                                run.device.type == "cuda")
    _set_train_mode(run.step.net, cfg.batchnorm)
    for batch in loader:
        _one_step(run, batch, log)
        step = state["step"]
        last = step >= run.total_steps
        if step % cfg.ckpt_every == 0 or last:
            _checkpoint(run)
            if replacement is not None:
                replacement.commit()
        end_of_epoch = state["batch_in_epoch"] >= run.steps_per_epoch
        if run.val_loader is not None and ((cfg.val_every and step % cfg.val_every == 0)
                                           or (not cfg.val_every and end_of_epoch) or last):
            if run.is_main:
                run.metrics = validate_and_log(run.model, run.val_loader, run.device, run.amp, log.writer, step,
                                               run.out)
            setup.barrier()
        if last:
            break
    if state["batch_in_epoch"] >= run.steps_per_epoch:
        _check_empty_depth(run, log, f"epoch {epoch}")
        if run.is_main and run.raw is not None and hasattr(run.raw, "report"):
            log.message(f"epoch {epoch}: {run.raw.report()}")
        state["epoch"] += 1
        state["batch_in_epoch"] = 0


def _one_step(run: _Run, batch: dict[str, Any], log: _RunLog) -> None:
    cfg, state = run.cfg, run.state
    if run.raw is not None and hasattr(run.raw, "note"):
        run.raw.note(batch)
    x = tdata.batch_images(batch["image"], run.norm, run.device)
    depth = batch["depth"].to(run.device, non_blocking=True)
    valid = batch["valid"].to(run.device, non_blocking=True)
    run.empty.add(batch["valid"])
    tstep.set_lr(run.step.opt, cfg, tstep.lr_factor(state["step"], run.total_steps, cfg))
    applied, terms = run.step(x, depth, valid)
    if applied:
        state["nan_streak"] = 0
    else:
        state["skipped_steps"] += 1
        state["nan_streak"] += 1
        if state["nan_streak"] >= cfg.nan_patience:
            raise tstep.TrainingDiverged(
                f"{state['nan_streak']} steps in a row had a non-finite loss or gradient (last at step "
                f"{state['step'] + 1}); stopping. Lower the learning rate, enable grad_clip, or check the data")
    state["step"] += 1
    state["batch_in_epoch"] += 1
    log.step(run, terms, x.shape[0] * run.world)


def _check_empty_depth(run: _Run, log: _RunLog, when: str) -> None:
    """Warn with the count of training samples without a valid depth pixel; refuse when all are empty."""
    empty, seen = setup.all_sum(list(run.empty.take()), run.device)
    if seen and empty == seen:
        raise ConfigError(f"train_data {run.cfg.train_data}: none of the {seen} samples of {when} has a valid "
                          "depth pixel (all zero or invalid?), so there is nothing to learn; check the depth "
                          "files and their scale")
    if empty:
        log.message(f"warning: {when}: {empty} of {seen} training samples have no valid depth pixel "
                    "(they add nothing to the loss)")


def _checkpoint(run: _Run) -> None:
    if run.is_main:
        saved = dict(run.state)
        saved["train_seconds"] = run.state["train_seconds"] + time.perf_counter() - run.t_start
        tstate.save_state(run.out, run.model, run.step.opt, run.step.scaler, saved, run.cfg)
    setup.barrier()


def _set_train_mode(model: nn.Module, batchnorm: str) -> None:
    model.train()
    if batchnorm == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
