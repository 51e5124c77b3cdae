"""One optimizer step as training runs it: forward under AMP, DenseDepth loss, backward, clipping, the NaN guard.

`benchmarks/training/train_step.py` times this same `TrainStep`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from transferdepth.models import DepthNet
from transferdepth.training.config import TrainConfig
from transferdepth.training.losses import compute_loss
from transferdepth.training.setup import all_true, autocast


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient, or a step that left a weight non-finite."""


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam as `cfg` says (lr, betas, eps, weight decay, AMSGrad).

    With `encoder_lr_mult` != 1 there are two parameter groups, "decoder" (everything but the encoder; first,
    so `param_groups[0]` carries `lr`) and "encoder" (lr x encoder_lr_mult); otherwise one group, as before.
    """
    kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
              amsgrad=cfg.adam_amsgrad)
    encoder = getattr(model, "encoder", None)
    if cfg.encoder_lr_mult == 1.0 or encoder is None:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, **kw)
    enc = {id(p) for p in encoder.parameters()}
    groups = [{"name": "decoder", "params": [p for p in model.parameters() if id(p) not in enc], "lr": cfg.lr},
              {"name": "encoder", "params": list(encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_mult}]
    return torch.optim.Adam(groups, **kw)


def warmup_steps(total_steps: int, cfg: TrainConfig) -> int:
    """The number of warm-up steps: `warmup_ratio` of the run's steps, rounded."""
    return round(cfg.warmup_ratio * total_steps)


def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based) of `total_steps`.

    Linear warm-up over the first `warmup_steps(total_steps, cfg)` steps ((step + 1) / warm-up), then 1
    (`lr_schedule: constant`) or a cosine from 1 at the end of the warm-up to 0 at `total_steps` (`cosine`).
    A function of the step alone, so a resumed run follows the same schedule as an uninterrupted one (with
    the same `max_steps`/`epochs`: the schedule spans the run's length).
    """
    warm = warmup_steps(total_steps, cfg)
    if step < warm:
        return (step + 1) / warm
    if cfg.lr_schedule == "cosine":
        span = max(total_steps - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))
    return 1.0


def set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, factor: float) -> None:
    """Set every group's lr to its base (cfg.lr; x encoder_lr_mult for the "encoder" group) times `factor`."""
    for g in opt.param_groups:
        g["lr"] = cfg.lr * (cfg.encoder_lr_mult if g.get("name") == "encoder" else 1.0) * factor


def loss_options(cfg: TrainConfig, model: DepthNet) -> dict[str, Any]:
    """Keyword arguments of this run's loss (`cfg.loss`, `training.losses.LOSSES`): the model's depth range
    (metres), and for the DenseDepth loss its term weights and gradient term."""
    kw: dict[str, Any] = {"max_depth": model.max_depth, "min_depth": model.min_depth}
    if cfg.loss == "densedepth":
        kw |= {"w_depth": cfg.w_depth, "w_grad": cfg.w_grad, "w_ssim": cfg.w_ssim, "grad_term": cfg.grad_term}
    return kw


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def tensors_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every element of every tensor is finite (one fused norm; inf or nan anywhere makes it non-finite)."""
    ts = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    return not ts or bool(torch.isfinite(torch.nn.utils.get_total_norm(ts)))


def set_memory_format(model: DepthNet, cfg: TrainConfig) -> DepthNet:
    """Put the model's weights in channels_last memory when `cfg.channels_last` (in place; before any DDP
    wrapping). `TrainStep` gives each batch the same layout."""
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class TrainStep:
    """`step(x, depth, valid) -> (applied, loss terms)` on `net` (the model, or its DDP wrapper).

    x: (N,3,H,W) normalised images (made channels_last here when `cfg.channels_last`, see `set_memory_format`); depth: (N,1,H/2,W/2) metres; valid: bool mask like depth. A step whose
    loss or gradient is non-finite on any process is not applied: gradients are dropped and BatchNorm
    statistics restored (`applied` False). A step that leaves a parameter non-finite raises TrainingDiverged.
    """

    def __init__(self, net: nn.Module, model: DepthNet, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 device: torch.device, amp: torch.dtype | None):
        self.net, self.model, self.opt, self.device, self.amp = net, model, opt, device, amp
        self.grad_clip, self.channels_last = cfg.grad_clip, cfg.channels_last
        self.loss_kw = loss_options(cfg, model)
        self.loss_name, self.space = cfg.loss, model.output_space
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.bn_buffers = _bn_buffers(model)

    def __call__(self, x: Tensor, depth: Tensor, valid: Tensor) -> tuple[bool, dict[str, float]]:
        bn_saved = [b.clone() for b in self.bn_buffers]  # a non-finite batch must not poison BN statistics
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            pred = self.net(x)
        loss, terms = compute_loss(self.loss_name, pred, depth, valid, space=self.space, **self.loss_kw)
        self.opt.zero_grad(set_to_none=True)
        ok = all_true(math.isfinite(terms["loss"]), self.device)
        if ok:
            self.scaler.scale(loss).backward()
            ok = self._gradients_finite()
        if not ok:
            self._undo(bn_saved)
            return False, terms
        self.scaler.step(self.opt)
        self.scaler.update()
        if not all_true(tensors_finite(self.params), self.device):
            raise TrainingDiverged("this step made a weight non-finite although its loss and gradient were "
                                   "finite (optimizer overflow); stopping without writing it. Lower the "
                                   "learning rate or raise adam_eps")
        return True, terms

    def _gradients_finite(self) -> bool:
        self.scaler.unscale_(self.opt)
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            return all_true(bool(torch.isfinite(norm)), self.device)
        return all_true(tensors_finite(p.grad for p in self.params), self.device)

    def _undo(self, bn_saved: list[Tensor]) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler.is_enabled() and self.scaler._per_optimizer_states[id(self.opt)]["found_inf_per_device"]:
            self.scaler.update()  # fp16 overflow: lower the scale so the next step can succeed
        with torch.no_grad():
            for b, saved in zip(self.bn_buffers, bn_saved):
                b.copy_(saved)
