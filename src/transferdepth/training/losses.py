"""DenseDepth training loss: masked L1 on DepthNorm depth, masked L1 on its gradients, and SSIM.

DepthNorm (internal to training only; `transferdepth.recipe`): ``dn = max_depth / depth`` with depth
clamped to the model's range [min_depth, max_depth] first, so with NYU's 0.1-10 m dn lies in [1, 100].

Masking, so that holes in real depth never train the model: before anything else, every invalid
target pixel is replaced by the detached prediction, and ``masked_pred`` (pred where valid, its
detached copy in holes) is what the SSIM sees. In holes both images are then the same constant, so
whatever the target holds there (0, NaN, garbage) cannot change the loss, and the prediction at a
hole pixel receives exactly zero gradient from every term:

* depth L1: mean over valid pixels only;
* gradient L1 (``grad_term``): forward differences in x and y; a difference counts only if both of
  its pixels are valid.
  - ``"mean"`` (default): each direction is averaged over its own valid differences and the two means
    are summed.
  - ``"tf"``: DenseDepth's ``K.mean(|dy_p - dy_t| + |dx_p - dx_t|)`` with TensorFlow's
    ``tf.image.image_gradients``, which pads a zero row (dy) and a zero column (dx) and so divides both
    sums by H*W. With a mask: the sum of the counted |differences| of both directions, divided by the
    number of VALID pixels (each valid pixel owns its down and right difference, which is 0 when its
    neighbour is a hole or off the image). All pixels valid: exactly TensorFlow's value, i.e. ``"mean"``
    scaled by about (1 - 1/W) and (1 - 1/H): 0.37% lower at 240x320;
* SSIM: Gaussian window, "valid" convolution (no padding, the border of ``window // 2`` pixels that
  scikit-image crops never exists), and ``(1 - SSIM) / 2`` is averaged over the windows whose
  centre pixel is valid.

A batch without any valid pixel gives a loss of exactly 0 that still has a grad_fn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M, depth_to_depthnorm, depthnorm_to_depth, to_space

# DepthNorm and the depth range live in `transferdepth.recipe` (one home); re-exported for callers of old.
__all__ = ["GRAD_TERMS", "LOSSES", "compute_loss", "depth_loss", "depth_to_depthnorm", "depthnorm_to_depth",
           "gradient_l1", "ssim", "to_space"]


def _gaussian_taps(window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian of ``window`` taps (as scipy.ndimage builds it)."""
    if window < 1 or window % 2 != 1:
        raise ValueError(f"ssim window must be a positive odd number of pixels, got {window}")
    x = torch.arange(window, dtype=dtype, device=device) - (window // 2)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 100.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Gaussian-window SSIM of (N,1,H,W) images (population covariance, Wang et al. 2004).

    The map is computed with valid convolution, so it is (N,1,H-window+1,W-window+1): exactly the
    region scikit-image averages after cropping ``(window-1)//2`` border pixels, which makes the
    mean equal to ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``.
    ``mask`` (N,1,H,W) bool/float weights each window by its centre pixel. ``reduction``: "mean"
    (scalar, weighted mean over all windows of the batch; 0 if all weights are 0) or "none" (the map).
    """
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim expects two (N,1,H,W) tensors of equal shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim window {window} exceeds image size {tuple(x.shape[-2:])}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"ssim reduction must be 'mean' or 'none', got {reduction!r}")
    g = _gaussian_taps(window, sigma, x.dtype, x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N,5,H,W), filtered depthwise
    stack = F.conv2d(stack, g.view(1, 1, 1, window).expand(5, 1, 1, window), groups=5)
    stack = F.conv2d(stack, g.view(1, 1, window, 1).expand(5, 1, window, 1), groups=5)
    ux, uy, uxx, uyy, uxy = stack.split(1, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    if reduction == "none":
        return smap
    if mask is None:
        return smap.mean()
    return _weighted_mean(smap, _centre_weights(mask, window, smap.dtype))


def _centre_weights(mask: Tensor, window: int, dtype: torch.dtype) -> Tensor:
    """(N,1,H,W) mask -> weights of the valid-convolution windows (their centre pixel)."""
    r = window // 2
    return mask[..., r: mask.shape[-2] - r, r: mask.shape[-1] - r].to(dtype)


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """sum(values * weights) / sum(weights), and 0 (with grad) when the weights sum to 0."""
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


GRAD_TERMS = ("mean", "tf")


def gradient_l1(pred: Tensor, target: Tensor, valid: Tensor, grad_term: str = "mean") -> Tensor:
    """Masked L1 between forward differences of (N,1,H,W) pred and target.

    A difference ``a[i+1] - a[i]`` counts only if ``valid[i]`` and ``valid[i+1]``. ``grad_term="mean"``:
    x mean + y mean over the counted differences; ``"tf"``: their sum over the number of valid pixels
    (TensorFlow's image_gradients + mean; see the module docstring).
    """
    if grad_term not in GRAD_TERMS:
        raise ValueError(f"grad_term must be one of {', '.join(GRAD_TERMS)}, got {grad_term!r}")
    total = pred.new_zeros(())
    for dim in (-1, -2):
        n = pred.shape[dim]
        dp = pred.narrow(dim, 1, n - 1) - pred.narrow(dim, 0, n - 1)
        dt = target.narrow(dim, 1, n - 1) - target.narrow(dim, 0, n - 1)
        pair_valid = (valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)).to(pred.dtype)
        if grad_term == "mean":
            total = total + _weighted_mean((dp - dt).abs(), pair_valid)
        else:
            total = total + ((dp - dt).abs() * pair_valid).sum()
    if grad_term == "tf":
        total = total / valid.sum().clamp(min=1).to(pred.dtype)
    return total


def _as_n1hw(t: Tensor, name: str) -> Tensor:
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or t.shape[1] != 1:
        raise ValueError(f"depth_loss: {name} must be (N,1,H,W) or (N,H,W), got {tuple(t.shape)}")
    return t


def depth_loss(
    pred_depthnorm: Tensor,
    depth_m: Tensor,
    valid: Tensor,
    *,
    w_depth: float = 0.1,
    w_grad: float = 1.0,
    w_ssim: float = 1.0,
    max_depth: float = MAX_DEPTH_M,
    min_depth: float = MIN_DEPTH_M,
    grad_term: str = "mean",
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, dict[str, float]]:
    """DenseDepth loss on DepthNorm: ``w_depth*L1 + w_grad*L1(gradients) + w_ssim*(1-SSIM)/2``, masked.

    pred_depthnorm: (N,1,h,w) network output (DepthNorm). depth_m: target in metres and valid: bool
    mask, both (N,1,h,w) or (N,h,w) at the prediction's resolution. Computed in float32 with autocast
    off. grad_term: "mean" or "tf" (TensorFlow's image_gradients as DenseDepth uses it; module docstring).
    Returns a scalar tensor, or ``(loss, {"depth", "grad", "ssim", "loss"} as floats)``.
    """
    if grad_term not in GRAD_TERMS:
        raise ValueError(f"depth_loss: grad_term must be one of {', '.join(GRAD_TERMS)}, got {grad_term!r}")
    depth_m, valid = _as_n1hw(depth_m, "depth_m"), _as_n1hw(valid, "valid")
    if pred_depthnorm.shape != depth_m.shape or valid.shape != depth_m.shape:
        raise ValueError(f"depth_loss: pred_depthnorm {tuple(pred_depthnorm.shape)} must match the target "
                         f"depth_m {tuple(depth_m.shape)} and valid {tuple(valid.shape)} (resize the target "
                         "to the prediction's resolution first)")
    with torch.autocast(device_type=pred_depthnorm.device.type, enabled=False):
        pred = pred_depthnorm.float()
        valid = valid.bool()
        # Holes: both images hold the detached prediction, so they carry no signal and no gradient.
        target = torch.where(valid, depth_to_depthnorm(depth_m.float(), max_depth, min_depth), pred.detach())
        masked_pred = torch.where(valid, pred, pred.detach())
        l_depth = _weighted_mean((masked_pred - target).abs(), valid.float())
        l_grad = gradient_l1(masked_pred, target, valid, grad_term)
        smap = ssim(masked_pred, target, data_range=max_depth / min_depth, reduction="none")
        l_ssim = _weighted_mean((1.0 - smap) / 2.0, _centre_weights(valid, 11, smap.dtype))
        loss = w_depth * l_depth + w_grad * l_grad + w_ssim * l_ssim
    if return_terms:
        terms = {"depth": l_depth.item(), "grad": l_grad.item(), "ssim": l_ssim.item(), "loss": loss.item()}
        return loss, terms
    return loss


# --- the loss zoo -----------------------------------------------------------------------------------------
# Every loss takes the network's raw output in its output space (`recipe.OUTPUT_SPACES`) and works in its own
# space: densedepth in DepthNorm, silog in log metres, berhu in metres, ssi in disparity (1 / metres), converted
# with `recipe.to_space` (not clamped to the depth range: a clamp would stop the gradient of a prediction that
# starts outside it).


def silog_loss(pred: Tensor, depth_m: Tensor, valid: Tensor, *, space: str = "log", max_depth: float = MAX_DEPTH_M,
               min_depth: float = MIN_DEPTH_M, variance_focus: float = 0.85, scale: float = 10.0,
               ) -> tuple[Tensor, dict[str, float]]:
    """Scale-invariant log loss (Eigen et al.; BTS / AdaBins' form): g = ln(pred) - ln(target) over the batch's
    valid pixels, ``scale * sqrt(mean(g^2) - variance_focus * mean(g)^2)``. Target clamped to the range."""
    depth_m, valid = _as_n1hw(depth_m, "depth_m"), _as_n1hw(valid, "valid").bool()
    with torch.autocast(device_type=pred.device.type, enabled=False):
        logp = to_space(pred.float(), space, "log", max_depth)
        g = (logp - torch.log(depth_m.float().clamp(min_depth, max_depth)))[valid]
        if g.numel() == 0:
            loss = pred.sum() * 0.0
        else:
            loss = scale * torch.sqrt((g * g).mean() - variance_focus * g.mean() ** 2 + 1e-12)
    return loss, {"silog": loss.item(), "loss": loss.item()}


def berhu_loss(pred: Tensor, depth_m: Tensor, valid: Tensor, *, space: str = "metric", max_depth: float = MAX_DEPTH_M,
               min_depth: float = MIN_DEPTH_M, c_ratio: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """Reverse Huber (FCRN, Laina et al. 2016) on metres over the batch's valid pixels: |r| where |r| <= c,
    (r^2 + c^2) / (2c) above, c = c_ratio * max |r| (the batch's, not differentiated)."""
    depth_m, valid = _as_n1hw(depth_m, "depth_m"), _as_n1hw(valid, "valid").bool()
    with torch.autocast(device_type=pred.device.type, enabled=False):
        r = (to_space(pred.float(), space, "metric", max_depth) - depth_m.float().clamp(min_depth, max_depth))[valid]
        if r.numel() == 0:
            loss = pred.sum() * 0.0
        else:
            a = r.abs()
            c = (c_ratio * a.max()).detach().clamp(min=1e-6)
            loss = torch.where(a <= c, a, (a * a + c * c) / (2 * c)).mean()
    return loss, {"berhu": loss.item(), "loss": loss.item()}


def _median_mad(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: median and mean absolute deviation from it over the mask (N,1,H,W) -> (N,1,1,1) each."""
    meds, mads = [], []
    for xi, mi in zip(x, m):
        v = xi[mi]
        med = v.median() if v.numel() else xi.new_zeros(())
        meds.append(med)
        mads.append((v - med).abs().mean().clamp(min=1e-6) if v.numel() else xi.new_ones(()))
    return torch.stack(meds).view(-1, 1, 1, 1), torch.stack(mads).view(-1, 1, 1, 1)


def ssi_loss(pred: Tensor, depth_m: Tensor, valid: Tensor, *, space: str = "disparity", max_depth: float = MAX_DEPTH_M,
             min_depth: float = MIN_DEPTH_M, alpha: float = 0.5, scales: int = 4) -> tuple[Tensor, dict[str, float]]:
    """MiDaS' scale-and-shift-invariant loss in disparity (Ranftl et al. 2020, eqs. 5-7 and 11): prediction and
    target are each normalised per image by their median and mean absolute deviation over valid pixels;
    ``ssimae = sum |p - t| / (2 M)`` plus ``alpha`` x the gradient matching term on R = p - t at `scales` scales
    (every 2^k-th pixel), ``sum_k sum (|dx R| + |dy R|) / M`` with differences only between valid pixels; M is
    the batch's number of valid pixels."""
    depth_m, valid = _as_n1hw(depth_m, "depth_m"), _as_n1hw(valid, "valid").bool()
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = to_space(pred.float(), space, "disparity", max_depth)
        t = 1.0 / depth_m.float().clamp(min_depth, max_depth)
        pm, ps = _median_mad(p, valid)
        tm, ts = _median_mad(t, valid)
        vf = valid.float()
        r = torch.where(valid, (p - pm) / ps - (t - tm) / ts, 0.0)  # holes hold anything: never multiplied
        m = valid.sum().clamp(min=1).float()
        data = r.abs().sum() / (2 * m)
        reg = pred.new_zeros(()).float()
        for k in range(scales):
            s = 2 ** k
            rk, vk = r[..., ::s, ::s], vf[..., ::s, ::s]
            dx = (rk[..., :, 1:] - rk[..., :, :-1]).abs() * vk[..., :, 1:] * vk[..., :, :-1]
            dy = (rk[..., 1:, :] - rk[..., :-1, :]).abs() * vk[..., 1:, :] * vk[..., :-1, :]
            reg = reg + (dx.sum() + dy.sum()) / vk.sum().clamp(min=1)
        loss = data + alpha * reg
    return loss, {"ssi": data.item(), "grad": reg.item(), "loss": loss.item()}


def densedepth_loss(pred: Tensor, depth_m: Tensor, valid: Tensor, *, space: str = "depthnorm",
                    **kw) -> tuple[Tensor, dict[str, float]]:
    """`depth_loss` (DenseDepth's, in DepthNorm) on a prediction in any output space."""
    max_depth = kw.get("max_depth", MAX_DEPTH_M)
    return depth_loss(to_space(pred, space, "depthnorm", max_depth), depth_m, valid, return_terms=True, **kw)


# name -> (function, the space it works in). `TrainConfig.loss` picks one; densedepth's term weights and
# grad_term are its ablation keys (w_depth, w_grad, w_ssim, grad_term).
LOSSES = {"densedepth": (densedepth_loss, "depthnorm"), "silog": (silog_loss, "log"),
          "berhu": (berhu_loss, "metric"), "ssi": (ssi_loss, "disparity")}


def compute_loss(name: str, pred: Tensor, depth_m: Tensor, valid: Tensor, *, space: str,
                 **kw) -> tuple[Tensor, dict[str, float]]:
    """The loss `name` of a network output `pred` in output space `space` against metres; (loss, terms)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; registered: {', '.join(LOSSES)}")
    fn = LOSSES[name][0]
    if pred.shape != _as_n1hw(depth_m, "depth_m").shape:
        raise ValueError(f"{name} loss: prediction {tuple(pred.shape)} and target {tuple(depth_m.shape)} differ")
    return fn(pred, depth_m, valid, space=space, **kw)
