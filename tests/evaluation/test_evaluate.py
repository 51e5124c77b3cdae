"""Evaluation protocols end to end, the evaluate CLI, and the encoder comparison study."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from transferdepth import cli
from transferdepth.data import open_dataset
from transferdepth.evaluation.evaluate import evaluate, predict_dataset
from transferdepth.evaluation.metrics import depth_metrics
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.study.compare import compare
from transferdepth.training.config import load_config
from transferdepth.weights.build import build_model


class _Constant(torch.nn.Module):
    """A DepthNet stand-in predicting `value` metres everywhere; records the normalised input sizes."""

    min_depth, max_depth = 0.1, 10.0

    def __init__(self, value: float):
        super().__init__()
        self.value, self.sizes = value, []
        self.p = torch.nn.Parameter(torch.zeros(()))

    def normalize(self, rgb01):
        self.sizes.append(tuple(rgb01.shape[-2:]))
        return rgb01

    def forward(self, x):  # DepthNorm at half resolution
        return torch.full((x.shape[0], 1, (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2), self.max_depth / self.value)


class _Toy(torch.utils.data.Dataset):
    """Two 48x64 samples: depth 2 m with a hole column; a `crop` like nyu_test.zip's."""

    crop = (4, 43, 8, 55)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        depth = np.full((48, 64), 2.0 + i, np.float32)
        valid = np.ones((48, 64), bool)
        valid[:, 10] = False
        depth[:, 10] = 0.0 if i == 0 else 2.0 + i
        return {"rgb": np.zeros((48, 64, 3), np.uint8), "depth": depth, "valid": valid, "intrinsics": None,
                "name": f"toy{i}"}


def test_evaluate_matches_the_metric_definitions():
    ds = _Toy()
    m = _Constant(2.5)
    eig = evaluate(m, ds, "eigen", crop="full")
    gt = np.stack([ds[i]["depth"] for i in range(2)])
    expected = depth_metrics(np.full_like(gt, 2.5), gt, "eigen", crop=(0, 47, 0, 63))
    for k in ("d1", "abs_rel", "rmse", "log10"):
        assert eig[k] == pytest.approx(expected[k])
    assert eig["abs_rel"] == pytest.approx((0.5 / 2 + 0.5 / 3) / 2)  # per image, holes masked
    # densedepth takes the dataset's crop (inclusive) and pools; here the crop excludes the hole column? no:
    # column 10 is inside cols 8..55, so image 0's zero-depth hole is refused without a mask
    with pytest.raises(ValueError):
        evaluate(m, ds, "densedepth")
    assert m.sizes[0] == (48, 64)


def test_evaluate_resizes_input_and_median_scales():
    ds = _Toy()
    m = _Constant(5.0)
    p = predict_dataset(m, ds, size=(24, 32))
    assert m.sizes == [(24, 32)] and p.pred.shape == (2, 48, 64)
    scaled = evaluate(m, ds, "eigen", crop="full", median_scaling=True, predictions=p)
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-6) and scaled["d1"] == 1.0
    assert scaled["median_scaled"] is True


def _assert_same_record(rec, ref, rel):
    """Every key of `ref` in `rec` with the same value (floats to `rel`)."""
    for k, v in ref.items():
        assert rec[k] == (pytest.approx(v, rel=rel) if isinstance(v, float) else v), k


def _tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("mobilenetv2", pretrained=False)
    return save_checkpoint(model, tmp_path / "ckpt")


def test_evaluate_cli_writes_metrics_json(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path)
    code = cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", "procedural:n=3&seed=5&height=64&width=64",
                     "--protocol", "eigen", "--crop", "full", "--out", str(tmp_path / "ev")])
    assert code == 0
    out = capsys.readouterr().out
    assert "protocol eigen" in out
    rec = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"protocol", "d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog",
            "n_images"} <= rec.keys()
    assert rec["protocol"] == "eigen" and rec["n_images"] == 3
    # the CLI's numbers are the API's on the same checkpoint and data (the model's range; eigen mask < 10 m)
    from transferdepth.inference.checkpoint import load_checkpoint

    api = evaluate(load_checkpoint(ckpt), open_dataset("procedural:n=3&seed=5&height=64&width=64"), "eigen",
                   crop="full")
    _assert_same_record(rec, api, rel=1e-6)
    assert rec["clamp_m"] == [0.1, 10.0] and rec["mask_m"] == [1e-3, 10.0]
    assert rec["rmse_pooling"] == "mean of per-image RMSE" and "RMSE mean of per-image RMSE" in out
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", "procedural:n=1", "--crop", "1,2"]) == 2


def test_compare_writes_the_study(tmp_path):
    base = load_config(overrides=dict(pretrained=False, train_data="procedural:n=8&seed=0&height=64&width=64",
                                      height=64, width=64, batch_size=4, max_steps=2, num_workers=0,
                                      tensorboard=False, progress=False, log_every=1))
    rows = compare(["mobilenetv2", "efficientnet_lite0"], base, tmp_path / "study",
                   "procedural:n=3&seed=7&height=64&width=64", crop="full", latency_repeats=1)
    assert [r["encoder"] for r in rows] == ["mobilenetv2", "efficientnet_lite0"]
    for name in ("comparison.md", "comparison.csv", "comparison.html", "loss_curves.png", "predictions.png"):
        assert (tmp_path / "study" / name).stat().st_size > 0
    table = list(csv.DictReader((tmp_path / "study" / "comparison.csv").open()))
    assert [r["encoder"] for r in table] == ["mobilenetv2", "efficientnet_lite0"]
    torch.manual_seed(0)
    n_params = sum(p.numel() for p in build_model("mobilenetv2", pretrained=False).parameters())
    assert float(table[0]["params_M"]) == pytest.approx(n_params / 1e6, abs=5e-4)
    assert "protocol eigen" in (tmp_path / "study" / "comparison.md").read_text()
    # evaluating given runs instead of training them
    again = compare(["mobilenetv2"], base, tmp_path / "study2", "procedural:n=3&seed=7&height=64&width=64",
                    crop="full", checkpoints={"mobilenetv2": str(tmp_path / "study" / "mobilenetv2")},
                    latency_repeats=1)
    assert again[0]["abs_rel"] == pytest.approx(rows[0]["abs_rel"])


class _Ramp(_Constant):
    """Ignores its input and predicts a left-right ramp, 1 m (left) to 4 m (right), at half resolution.

    With flip averaging, infer averages the ramp and its mirror: exactly 2.5 m everywhere."""

    def forward(self, x):
        h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
        metres = 1.0 + 3.0 * torch.arange(w, dtype=torch.float32) / (w - 1)
        return (self.max_depth / metres).expand(x.shape[0], 1, h, w)


def test_flip_averaging_is_on_by_default_and_off_when_asked():
    ds = _Toy()  # gt 2 m and 3 m
    flipped = evaluate(_Ramp(1.0), ds, "eigen", crop="full")
    assert flipped["abs_rel"] == pytest.approx((0.5 / 2 + 0.5 / 3) / 2, rel=1e-5)
    assert flipped["rmse"] == pytest.approx(0.5, rel=1e-5) and flipped["flip"] is True
    plain = evaluate(_Ramp(1.0), ds, "eigen", crop="full", flip=False)
    ramp = predict_dataset(_Ramp(1.0), ds, flip=False).pred
    assert ramp[0, 0, 0] == pytest.approx(1.0, abs=0.05) and ramp[0, 0, -1] == pytest.approx(4.0, abs=0.05)
    assert plain["abs_rel"] == pytest.approx(depth_metrics(ramp, np.stack([ds[i]["depth"] for i in range(2)]),
                                                           "eigen", crop=(0, 47, 0, 63))["abs_rel"])
    assert plain["abs_rel"] > flipped["abs_rel"] + 0.1


def _nyu_test_zip(path, crop=(4, 43, 8, 55)):
    """A 2-image nyu_test.zip: gt 2 m inside the crop except image 1's right half (4 m); 0.5 m outside."""
    depth = np.full((2, 48, 64), 0.5, np.float32)
    depth[:, 4:44, 8:56] = 2.0
    depth[1, 4:44, 32:56] = 4.0
    arrays = {"eigen_test_rgb.npy": np.zeros((2, 48, 64, 3), np.uint8), "eigen_test_depth.npy": depth,
              "eigen_test_crop.npy": np.array(crop)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a)
            zf.writestr(name, buf.getvalue())
    return path


def test_densedepth_run_on_a_nyu_test_zip_uses_its_crop_and_pools(tmp_path):
    ds = open_dataset(f"nyu-npy:{_nyu_test_zip(tmp_path / 'nyu_test.zip')}")
    rec = evaluate(_Constant(2.2), ds, "densedepth")
    # hand pooling over the 2 x 40 x 48 = 3840 cropped pixels: 2880 at 2 m (error 0.2), 960 at 4 m (error 1.8)
    assert rec["crop"] == [4, 43, 8, 55] and rec["n_images"] == 2
    assert rec["abs_rel"] == pytest.approx((2880 * 0.1 + 960 * 0.45) / 3840, rel=1e-5)
    assert rec["rmse"] == pytest.approx(np.sqrt((2880 * 0.04 + 960 * 3.24) / 3840), rel=1e-5)
    assert rec["rmse_per_image"] == pytest.approx((0.2 + np.sqrt((0.04 + 3.24) / 2)) / 2, rel=1e-5)
    assert (rec["d1"], rec["d2"], rec["d3"]) == pytest.approx((0.75, 0.75, 1.0))
    assert rec["log10"] == pytest.approx((2880 * np.log10(1.1) + 960 * np.log10(4 / 2.2)) / 3840, rel=1e-5)
    assert rec["rmse_pooling"] == "pooled over all pixels" and rec["mask_m"] is None


def test_streaming_equals_in_memory_on_the_same_arrays():
    from helpers import tiny_model

    model = tiny_model()
    ds = open_dataset("procedural:n=5&seed=2&height=48&width=64")
    preds = predict_dataset(model, ds, batch_size=2)
    for protocol, crop in (("eigen", None), ("densedepth", (2, 45, 3, 60)), ("eigen", "full")):
        streamed = evaluate(model, ds, protocol, crop=crop, batch_size=2)
        box = crop if crop != "full" else (0, 47, 0, 63)
        whole = depth_metrics(preds.pred, preds.gt, protocol, crop=box)
        _assert_same_record(streamed, whole, rel=1e-9)
        _assert_same_record(evaluate(model, ds, protocol, crop=crop, predictions=preds), whole, rel=1e-9)
    scaled = evaluate(model, ds, "eigen", median_scaling=True, batch_size=3)
    from transferdepth.evaluation.metrics import median_scale

    ref = depth_metrics(median_scale(preds.pred, preds.gt, preds.valid), preds.gt, "eigen")
    assert scaled["abs_rel"] == pytest.approx(ref["abs_rel"], rel=1e-6)
    assert scaled["abs_rel"] != pytest.approx(evaluate(model, ds, "eigen")["abs_rel"], rel=1e-3)


def test_evaluate_masks_follow_the_models_range():
    ds = _Toy()  # gt 2 and 3 m
    far = _Constant(2.5)
    far.max_depth = 2.5  # a model whose range ends at 2.5 m: the eigen mask keeps gt < 2.5 m (image 0 only)
    rec = evaluate(far, ds, "eigen", crop="full")
    assert rec["n_images"] == 1 and rec["mask_m"] == [1e-3, 2.5] and rec["abs_rel"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        evaluate(_Constant(2.5), ds, "eigen", min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(_Constant(2.5), ds, "eigen", batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        evaluate(_Constant(2.5), ds, "eigen", limit=-1)
