"""One optimizer step as training runs it: forward under AMP, DenseDepth loss, backward, clipping, the NaN guard.

`benchmarks/train_step.py` times this same `TrainStep`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from transferdepth.config import TrainConfig
from transferdepth.losses import depth_loss
from transferdepth.models import DepthNet
from transferdepth.train.setup import all_true, autocast


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient, or a step that left a weight non-finite."""


FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam as `cfg` says (lr, betas, eps, weight decay, AMSGrad).

    torch's fused kernel where every parameter is a float tensor on the CPU or CUDA (the same update, one pass
    over all parameters: on a 2-core CPU about 3x faster than the per-tensor loop torch picks for CPU
    parameters, `benchmarks/train_step_vs_port.py`); the default implementation elsewhere."""
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay, amsgrad=cfg.adam_amsgrad, fused=fused or None)


def loss_options(cfg: TrainConfig, model: DepthNet) -> dict[str, Any]:
    """Keyword arguments of `depth_loss` for this run: weights and the model's depth range (metres)."""
    kw: dict[str, Any] = {"w_depth": cfg.w_depth, "w_grad": cfg.w_grad, "w_ssim": cfg.w_ssim,
                          "max_depth": model.max_depth, "min_depth": model.min_depth, "grad_term": cfg.grad_term}
    return kw


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def tensors_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every element of every tensor is finite (one fused norm; inf or nan anywhere makes it non-finite)."""
    ts = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    return not ts or bool(torch.isfinite(torch.nn.utils.get_total_norm(ts)))


class TrainStep:
    """`step(x, depth, valid) -> (applied, loss terms)` on `net` (the model, or its DDP wrapper).

    x: (N,3,H,W) normalised images; depth: (N,1,H/2,W/2) metres; valid: bool mask like depth. A step whose
    loss or gradient is non-finite on any process is not applied: gradients are dropped and BatchNorm
    statistics restored (`applied` False). A step that leaves a parameter non-finite raises TrainingDiverged.
    """

    def __init__(self, net: nn.Module, model: DepthNet, opt: torch.optim.Optimizer, cfg: TrainConfig,
                 device: torch.device, amp: torch.dtype | None):
        self.net, self.model, self.opt, self.device, self.amp = net, model, opt, device, amp
        self.grad_clip = cfg.grad_clip
        self.loss_kw = loss_options(cfg, model)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.bn_buffers = _bn_buffers(model)

    def __call__(self, x: Tensor, depth: Tensor, valid: Tensor) -> tuple[bool, dict[str, float]]:
        bn_saved = [b.clone() for b in self.bn_buffers]  # a non-finite batch must not poison BN statistics
        with autocast(self.device, self.amp):
            pred = self.net(x)
        loss, terms = depth_loss(pred, depth, valid, return_terms=True, **self.loss_kw)
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
