"""torch.hub entry points: `torch.hub.load("<owner>/transferdepth", "depth_estimator", checkpoint=...)`.

`checkpoint` is a checkpoint folder (model.safetensors + config.json) or a Hugging Face Hub model name,
"org/name" or "org/name@revision" (needs huggingface_hub: `pip install 'transferdepth[hub]'`). torch.hub runs
this file from its download of the repository, where the package is not installed: its `src/` is put first
on the import path.
"""

import os
import sys

dependencies = ["torch", "torchvision", "timm", "safetensors", "numpy", "PIL", "yaml", "tqdm"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "transferdepth")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)


def depth_estimator(checkpoint, device=None, revision=None, **kwargs):
    """A `transferdepth.DepthEstimator` (image in, HxW float32 depth in metres out) for `checkpoint` (a folder
    or "org/name[@rev]" on the Hub). device: "auto"/None, "cpu", "cuda", ...; other keyword arguments as
    `DepthEstimator` (flip, max_side, input_size, ...)."""
    from transferdepth.api.estimator import DepthEstimator

    return DepthEstimator.from_pretrained(checkpoint, device=device, revision=revision, **kwargs)


def depth_net(checkpoint, revision=None):
    """The bare network (`transferdepth.models.DepthNet`, eval mode, CPU) of `checkpoint`; it predicts
    DepthNorm at half resolution: `transferdepth.inference.core.infer(net, rgb)` is the path to metres."""
    from transferdepth.inference.checkpoint import load_checkpoint
    from transferdepth.inference.hub import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(checkpoint, revision))
