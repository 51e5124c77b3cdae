"""`DepthEstimator`: a trained network behind one call, image in, depth in metres out.

    est = DepthEstimator.from_pretrained("runs/nyu/best")     # a checkpoint directory (or "org/name": the Hub)
    depth = est.predict("room.jpg")                            # HxW float32 metres, the image's own size
    est = DepthEstimator.from_onnx("model.onnx")               # the same, on onnxruntime (an export)
    est = DepthEstimator.from_pretrained("runs/nyu/best", engine="auto")  # the fastest engine here (deploy.engines)

Images are read as 8-bit RGB: EXIF orientation applied (files), greyscale / alpha / palette converted,
16-bit and 32-bit single-channel images scaled by their own maximum to 8 bit. Every problem with an input
raises `ImageError` (a ValueError) naming the file and the reason (reading and writing images:
`transferdepth.inference.imageio`). The network sees at most `max_side` pixels on the longer side (default 1280).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferdepth.deploy.onnx_engine import OnnxRunner
from transferdepth.geometry.align import Alignment, align_depth, prepare_target
from transferdepth.inference.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from transferdepth.inference.core import CHANNELS_LAST_DEVICES, infer, rgb_to_tensor
from transferdepth.inference.hub import HubError, resolve_checkpoint
from transferdepth.inference.imageio import (  # noqa: F401  (ImageError, load_image: public here too)
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageInput,
    array_to_rgb,
    check_pixels,
    load_image,
    pil_to_rgb,
)
from transferdepth.models import DepthNet
from transferdepth.utils import resolve_device


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when none is given: 4 on a GPU; 1 on the CPU, where PyTorch ran 1.3-2.8x slower
    per image at batch 8 than at batch 1 at 480x640 for every encoder, and the other engines gained at most
    1.75x from batching (docs/using.md, "Batch size on the CPU")."""
    return 4 if device.type == "cuda" else 1


def batch_size_for(predictor: object) -> int:
    """`default_batch_size` of `predictor.device` (an estimator's; 1, the CPU's, for one without a device)."""
    device = getattr(predictor, "device", None)
    return default_batch_size(device) if isinstance(device, torch.device) else 1


DEFAULT_MAX_SIDE = 1280  # px; the network sees at most 1280 on the longer side (see DepthEstimator)


class DepthEstimator:
    """A depth network for inference: images -> HxW float32 depth in metres at each image's own size.

    model: a DepthNet (from `build_model` or `load_checkpoint`). device: "auto" / None (CUDA if available),
    "cpu", "cuda", "cuda:N", "mps"; an unknown or missing device raises ValueError (`utils.resolve_device`).
    flip: average with the mirrored image's prediction (as DenseDepth; 2x the compute).
    max_pixels: larger images are refused with ImageError. Depth is clamped to [min_depth, max_depth] m
    (default: the model's own range).
    input_size: (H, W) the network sees (images are resized to it and the depth map resized back to the
    image's size), e.g. the resolution a model was trained at.
    max_side: with no input_size, an image whose longer side exceeds max_side pixels is resized (aspect
    kept) so that side is max_side for the network, and the depth map is resized back to the image's size;
    smaller images run at their own size. This bounds memory and time whatever the photo's size (peak
    memory grows with the pixels the network sees: docs/using.md). The default, 1280, is twice the long
    side of the 640x480 frames NYU models are trained on (far above it, objects look larger to the
    network than any it learnt from) and caps a 12 MP photo's cost at about that of a 1.2 MP one.
    None = every image at its own size.
    On CPU and CUDA the model's weights are put in channels_last memory (in place; the same maths, faster).
    """

    engine = "torch"  # the engine that runs it (deploy.engines.ENGINES; OnnxDepthEstimator: its runner's)

    def __init__(self, model: DepthNet, device: str | torch.device | None = None, flip: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, min_depth: float | None = None,
                 max_depth: float | None = None, input_size: tuple[int, int] | None = None,
                 max_side: int | None = DEFAULT_MAX_SIDE):
        self.device = device if isinstance(device, torch.device) else resolve_device(device, "device")
        if input_size is not None:
            input_size = tuple(input_size)
            if len(input_size) != 2 or not all(isinstance(v, int) and v > 0 for v in input_size):
                raise ValueError(f"input_size: expected (height, width), two positive integers, got {input_size}")
        if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
            raise ValueError(f"max_side: expected a positive number of pixels or None, got {max_side!r}")
        self.model = model.to(self.device).eval()
        if self.device.type in CHANNELS_LAST_DEVICES:  # the same maths, faster convolutions (inference.py)
            self.model.to(memory_format=torch.channels_last)
        self.flip, self.max_pixels = flip, max_pixels
        self.min_depth = model.min_depth if min_depth is None else float(min_depth)
        self.max_depth = model.max_depth if max_depth is None else float(max_depth)
        self.input_size = input_size
        self.max_side = max_side

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) the network sees for an image of height x width: input_size, else the image's size
        scaled down (aspect kept) so its longer side is at most max_side."""
        if self.input_size is not None:
            return self.input_size
        if self.max_side is None or max(height, width) <= self.max_side:
            return height, width
        scale = self.max_side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        revision: str | None = None, engine: str = "torch", threads: int | None = None,
                        **kwargs: Any) -> DepthEstimator:
        """Load a checkpoint directory (or its model.safetensors), or a Hugging Face Hub model by name,
        "org/name" or "org/name@rev" (`revision`: a branch, tag or commit; needs `transferdepth[hub]`; the
        Hub's cache, offline with HF_HUB_OFFLINE=1). A local folder of that name wins. Raises CheckpointError
        (one line) if unusable. engine: torch (default), compile, onnx, openvino, openvino-bf16 or auto
        (`from_engine`); threads: that engine's CPU threads."""
        try:
            folder = resolve_checkpoint(path, revision)
        except HubError as e:
            raise CheckpointError(str(e)) from None
        if engine != "torch":
            return cls.from_engine(engine, folder, device=device, threads=threads, **kwargs)
        est = cls(load_checkpoint(folder), device=device, **kwargs)
        est.source = str(folder)
        return est

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, flip: bool | None = None, threads: int | None = None,
                  providers: Sequence[str] | None = None, **kwargs: Any) -> OnnxDepthEstimator:
        """The ONNX engine: a .onnx file written by `transferdepth export` (any precision), or a checkpoint
        directory (exported to a temporary fp32 file), run by onnxruntime behind the same predict,
        predict_batch and predict_rgb. flip: None = True, or the graph's own averaging for a `--flip`
        export (never flipped twice). threads: onnxruntime intra-op threads (None: its default).
        Raises ValueError (one line) for a file that is not one of our exports or a missing onnxruntime."""
        return OnnxDepthEstimator(path, flip=flip, threads=threads, providers=providers, **kwargs)

    @classmethod
    def from_openvino(cls, path: str | os.PathLike, flip: bool | None = None, threads: int | None = None,
                      precision: str = "f32", **kwargs: Any) -> OnnxDepthEstimator:
        """The OpenVINO engine (`deploy.openvino_engine.OpenVinoRunner`): an IR .xml from `transferdepth export
        --format openvino`, one of our .onnx files, or a checkpoint directory, on the CPU. precision: "f32" (the
        torch engine's metres within 1e-4 m) or "bf16" (where the CPU has it). flip and threads as `from_onnx`.
        Raises ValueError (one line) for a file without our metadata or a missing openvino."""
        from transferdepth.deploy.engines import make_runner

        runner = make_runner("openvino-bf16" if precision == "bf16" else "openvino", path, threads)
        return OnnxDepthEstimator(path, flip=flip, runner=runner, **kwargs)

    @classmethod
    def from_engine(cls, engine: str, source: str | os.PathLike, device: str | torch.device | None = None,
                    threads: int | None = None, flip: bool | None = None, **kwargs: Any) -> DepthEstimator:
        """`source` (a checkpoint directory or Hub name; a .onnx for onnx / openvino; an IR .xml for openvino) on
        `engine` (`deploy.engines.CHOICES`). "auto" picks the fastest here for this model at `input_size`
        (default 480x640) from a measurement cached once per model and machine (`deploy.engines.choose_engine`;
        torch where `device` is a GPU) and says which on stderr. Every engine but torch runs on the CPU.
        Raises ValueError (one line) for an engine that is not installed, naming the extra to install."""
        from transferdepth.deploy.engines import check_engine, choose_engine, make_runner

        if engine == "auto":
            gpu = resolve_device(None if device is None else str(device), "device").type != "cpu"
            engine = "torch" if gpu else choose_engine(source, size=kwargs.get("input_size"), threads=threads)
        if engine == "torch":
            return cls.from_pretrained(source, device=device, flip=True if flip is None else flip, **kwargs)
        check_engine(engine)
        if device is not None and str(device) not in ("auto", "cpu"):
            raise ValueError(f"device {device}: the {engine} engine runs on the CPU (use the torch engine)")
        return OnnxDepthEstimator(source, flip=flip, runner=make_runner(engine, source, threads), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write `model.safetensors` + `config.json` into `directory`; `from_pretrained` reads it back."""
        return save_checkpoint(self.model, directory, meta)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    license: str | None = None, commit_message: str | None = None) -> str:
        """Upload this model to the Hugging Face Hub model repo `repo_id` ("org/name"; created if missing)
        with a model card written from its metadata; returns the repo's URL. The metadata (training config,
        import provenance) is that of the checkpoint it was loaded from; a model built in Python has none.
        Needs `transferdepth[hub]` and a token (`hf auth login` or HF_TOKEN). See `api.hub.push_checkpoint`."""
        import tempfile

        from transferdepth.api.hub import push_checkpoint

        source = getattr(self, "source", None)
        meta = read_config(source).get("meta") if source else None
        with tempfile.TemporaryDirectory(prefix="transferdepth-push-") as tmp:
            self.save_pretrained(tmp, meta=meta if isinstance(meta, dict) else None)
            return push_checkpoint(tmp, repo_id, private=private, token=token, license=license,
                                   commit_message=commit_message)

    def to_rgb(self, image: ImageInput) -> np.ndarray:
        """Any accepted input (path, PIL image, array) -> uint8 HxWx3 RGB, within max_pixels."""
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.max_pixels)
        if isinstance(image, Image.Image):
            check_pixels("<PIL image>", image.size, self.max_pixels)
            return pil_to_rgb(image, "<PIL image>")
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:
                check_pixels("<array>", (image.shape[1], image.shape[0]), self.max_pixels)
            return array_to_rgb(image)
        raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")

    def predict(self, image: ImageInput, align_to: Any = None, align: str = "scale", *, robust: bool = False,
                align_space: str | None = None) -> np.ndarray:
        """One image -> HxW float32 depth in metres at the image's own size.

        align_to: known metres to fit the prediction to (docs/3d.md, `transferdepth.geometry.align`): a 16-bit
        PNG in mm at the image's size (0 = unknown), a CSV of x,y,metres (pixels of the image as displayed), an
        (N, 3) array of x, y, metres or an HxW map in metres (0 = unknown). align: "scale" (least squares in
        depth) or "scale-shift" (in disparity, 1/m, as MiDaS; align_space "depth" or "disparity" to choose);
        robust: RANSAC (needs scikit-learn). The fit is made on the map at the image's size (after the
        network's output is resized back); aligned metres are clamped to `geometry.align.ALIGN_RANGE_M`.
        A bad target, or fewer known points than the fit needs, raises AlignError (a ValueError, one line)
        before the network runs. `predict_aligned` also returns the fit.
        """
        if align_to is None:
            return self.predict_rgb([self.to_rgb(image)])[0]
        return self.predict_aligned(image, align_to, align, robust=robust, align_space=align_space)[0]

    def predict_aligned(self, image: ImageInput, align_to: Any, align: str = "scale", *, robust: bool = False,
                        align_space: str | None = None) -> tuple[np.ndarray, Alignment]:
        """`predict` with `align_to`: (HxW float32 aligned metres, the fit: scale, shift, space, points used)."""
        rgb = self.to_rgb(image)
        points = prepare_target(align_to, rgb.shape[:2], align, robust=robust, space=align_space)
        depth = self.predict_rgb([rgb])[0]
        return align_depth(depth, points, align, robust=robust, space=align_space)

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int | None = None) -> list[np.ndarray]:
        """Several images -> one HxW float32 metres map each, in order; same-size images share a batch of at
        most batch_size (None: `default_batch_size(self.device)`, 4 on a GPU, 1 on the CPU)."""
        batch_size = batch_size or default_batch_size(self.device)
        rgbs = [self.to_rgb(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(rgbs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(rgbs):
            by_size.setdefault(rgb.shape[:2], []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                for i, depth in zip(chunk, self.predict_rgb([rgbs[i] for i in chunk])):
                    out[i] = depth
        return out  # type: ignore[return-value]

    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same-size uint8 HxWx3 RGB arrays as one batch -> HxW float32 metres each."""
        x = rgb_to_tensor(rgbs, self.device)
        depth = infer(self.model, x, flip=self.flip, input_size=self.network_size(*x.shape[-2:]),
                      min_depth=self.min_depth, max_depth=self.max_depth)
        return list(depth[:, 0].float().cpu().numpy())


class OnnxDepthEstimator(DepthEstimator):
    """`DepthEstimator` on onnxruntime (`deploy.onnx_engine.OnnxRunner`): the graph of
    `transferdepth.deploy.export.export_onnx` (RGB [0,1] -> metres at the input's size, clamped) replaces
    `infer`; image reading, sizes and batching are DepthEstimator's. Without resizing (image within max_side,
    no input_size) it equals the torch engine within 1e-4 m for fp32 exports. When the network sees another
    size, the graph returns depth at that size and it is resized once more to the image's (the torch engine
    resizes once): close, not equal. Flip averaging: inside the graph for a `--flip` export (metadata
    `transferdepth.flip`), else the mirrored image's run, mirrored back and averaged in metres (as `infer`).
    Use `from_onnx`.
    """

    def __init__(self, source: str | os.PathLike, flip: bool | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 input_size: tuple[int, int] | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                 runner: Any = None):
        # runner: another engine's runner with OnnxRunner's interface (OpenVINO, torch.compile: deploy.engines)
        self.runner = runner if runner is not None else OnnxRunner(source, threads=threads, providers=providers)
        self.engine = getattr(self.runner, "name", "onnx")
        self.source = self.runner.source
        if flip is False and self.runner.graph_flip:
            raise ValueError(f"{source}: exported with --flip (averaging inside the graph); it cannot run "
                             "without flip averaging: export it again without --flip")
        super().__init__(self.runner.stand_in(), torch.device("cpu"), flip=True if flip is None else flip,
                         max_pixels=max_pixels, input_size=input_size, max_side=max_side)

    # the runner's description of the graph, here as on the estimator
    meta = property(lambda self: self.runner.meta)
    graph_flip = property(lambda self: self.runner.graph_flip)
    precision = property(lambda self: self.runner.precision)

    @property
    def session(self) -> Any:
        """The onnxruntime InferenceSession."""
        return self.runner.session

    @session.setter
    def session(self, value: Any) -> None:
        self.runner.session = value

    def save_pretrained(self, directory: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        raise ValueError(f"{self.source}: the {self.engine} engine's estimator has no checkpoint to save (use "
                         "the checkpoint it was built from)")

    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same-size uint8 HxWx3 RGB arrays as one batch -> HxW float32 metres each."""
        x = rgb_to_tensor(rgbs)
        depth = self.runner.predict(x, self.network_size(*x.shape[-2:]), self.flip, self.min_depth, self.max_depth)
        return list(depth[:, 0].float().numpy())
