"""KITTI (issue 10, item 3): the `kitti` source on a small fixture in the real on-disk layout, the `kitti`
evaluation protocol against BTS's eval code written out independently here, and one-command evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth.cli import main
from transferdepth.data import DatasetError, open_dataset
from transferdepth.evaluation.evaluate import evaluate, iter_predictions
from transferdepth.evaluation.metrics import MetricAccumulator, compute_errors, depth_metrics, garg_crop
from transferdepth.inference.checkpoint import load_checkpoint, save_checkpoint

FOCAL = 721.5377
# (date, drive, frame, height, width): two drives of different sizes, as KITTI's are
FRAMES = [("2011_09_26", "2011_09_26_drive_0002_sync", 69, 62, 200),
          ("2011_09_26", "2011_09_26_drive_0002_sync", 54, 62, 200),
          ("2011_09_30", "2011_09_30_drive_0016_sync", 5, 60, 196)]


def make_kitti(tmp: Path, frames=FRAMES, seed: int = 0) -> tuple[str, dict[str, np.ndarray]]:
    """Raw images under tmp/raw, the depth benchmark's gt under tmp/gt/{train,val}, a BTS-style Eigen list
    with one `None` line. Returns (spec, {rgb_rel: raw uint16 depth})."""
    rng = np.random.default_rng(seed)
    raws, lines = {}, []
    for k, (date, drive, n, h, w) in enumerate(frames):
        rgb_rel = f"{date}/{drive}/image_02/data/{n:010d}.png"
        depth_rel = f"{drive}/proj_depth/groundtruth/image_02/{n:010d}.png"
        (tmp / "raw" / rgb_rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp / "raw" / rgb_rel)
        raw = rng.integers(256, 90 * 256, (h, w)).astype(np.uint16)  # 1..90 m, beyond the 80 m cap too
        raw[rng.random((h, w)) < 0.6] = 0  # sparse, like projected LiDAR
        d = tmp / "gt" / ("val" if k == 2 else "train") / depth_rel
        d.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw).save(d)
        raws[rgb_rel] = raw
        lines.append(f"{rgb_rel} {depth_rel} {FOCAL}")
    lines.insert(1, f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{99:010d}.png None {FOCAL}")
    (tmp / "eigen_test_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return f"kitti:{tmp / 'raw'}?depth={tmp / 'gt'}&list={tmp / 'eigen_test_files_with_gt.txt'}", raws


def test_source_reads_pairs_in_metres_skipping_frames_without_gt(tmp_path):
    spec, raws = make_kitti(tmp_path)
    ds = open_dataset(spec)
    assert len(ds) == 3 and ds.no_gt == [f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{99:010d}.png"]
    for i, (date, drive, n, h, w) in enumerate(FRAMES):
        s = ds[i]
        raw = raws[s["name"]]
        assert s["name"] == f"{date}/{drive}/image_02/data/{n:010d}.png"
        assert s["rgb"].dtype == np.uint8 and s["rgb"].shape == (h, w, 3)
        assert s["depth"].dtype == np.float32 and s["valid"].dtype == bool
        np.testing.assert_array_equal(s["valid"], raw > 0)
        np.testing.assert_array_equal(s["depth"], np.where(raw > 0, raw / 256.0, 0).astype(np.float32))
        np.testing.assert_array_equal(s["intrinsics"], [[FOCAL, 0, w / 2], [0, FOCAL, h / 2], [0, 0, 1]])
    assert ds[0]["depth"].max() > 80  # the source does not cap; the protocol does


def test_split_finds_the_list_and_depth_defaults_to_the_image_root(tmp_path):
    spec, _ = make_kitti(tmp_path)
    root = tmp_path / "raw"
    (root / "eigen_test_files_with_gt.txt").write_text((tmp_path / "eigen_test_files_with_gt.txt").read_text())
    assert len(open_dataset(f"kitti:{root}?depth={tmp_path / 'gt'}", split="test")) == 3
    with pytest.raises(DatasetError, match=r"\(.*raw/2011_09_26_drive_0002_sync/proj_depth/.*\): file not found"):
        open_dataset(f"kitti:{root}", split="test")[0]


def test_kb_crop_is_btss_window_and_moves_the_principal_point(tmp_path):
    frames = [("2011_09_26", "2011_09_26_drive_0002_sync", 1, 375, 1242),
              ("2011_09_30", "2011_09_30_drive_0016_sync", 2, 370, 1226)]
    spec, raws = make_kitti(tmp_path, frames)
    full, kb = open_dataset(spec), open_dataset(spec + "&kb_crop=1")
    for i, (top, left) in enumerate([(23, 13), (18, 5)]):  # top = H - 352, left = (W - 1216) // 2
        a, b = full[i], kb[i]
        assert b["rgb"].shape == (352, 1216, 3) and b["frame"] == (top, left, *a["depth"].shape)
        np.testing.assert_array_equal(b["rgb"], a["rgb"][top:top + 352, left:left + 1216])
        np.testing.assert_array_equal(b["depth"], a["depth"][top:top + 352, left:left + 1216])
        np.testing.assert_allclose(b["intrinsics"][:2, 2], a["intrinsics"][:2, 2] - [left, top])
    small = make_kitti(tmp_path / "s", FRAMES[:1])[0] + "&kb_crop=1"
    with pytest.raises(DatasetError, match=r"kb_crop needs an image of at least 1216x352 \(WxH\), got 200x62"):
        open_dataset(small)[0]


def bts_garg_metrics(pred: np.ndarray, gt: np.ndarray, lo: float = 1e-3, hi: float = 80.0) -> dict:
    """BTS's bts_eval.py / AdaBins' evaluate.py (--garg_crop), written out: clip pred, mask, crop, per image."""
    pred = np.clip(pred, lo, hi)
    valid = (gt > lo) & (gt < hi)
    h, w = gt.shape
    eval_mask = np.zeros_like(valid)
    eval_mask[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    valid &= eval_mask
    return compute_errors(pred[valid], gt[valid])


def test_garg_crop_of_kitti_sizes():
    assert garg_crop(375, 1242) == (153, 370, 44, 1196)  # rows 153:371, cols 44:1197 (inclusive here)
    assert garg_crop(370, 1224) == (151, 365, 43, 1179)  # 0.40810811 * 370 = 151.000..., int() as BTS


def test_kitti_protocol_matches_bts_per_image_on_mixed_sizes():
    rng = np.random.default_rng(1)
    acc, rows = MetricAccumulator("kitti"), []
    for h, w in [(375, 1242), (370, 1224), (376, 1241)]:
        gt = np.where(rng.random((h, w)) < 0.3, rng.uniform(0.5, 95, (h, w)), 0.0)
        pred = rng.uniform(-1, 100, (h, w))  # out of range both ways: clipped to [1e-3, 80]
        acc.add(pred, gt)
        rows.append(bts_garg_metrics(pred, gt))
    got = acc.result()
    for k in ("d1", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert got[k] == pytest.approx(np.mean([r[k] for r in rows]), rel=1e-12), k
    assert got["crop_fractions"] == [0.40810811, 0.99189189, 0.03594771, 0.96405229] and got["cap_m"] == 80.0
    assert got["n_images"] == 3 and depth_metrics(pred, gt, "kitti")["cap_m"] == 80.0


def test_kb_cropped_evaluation_scores_the_pixels_bts_scores():
    """BTS predicts on the 352x1216 crop, pastes it into a zero full-size map, then applies the Garg crop to
    the FULL gt. The protocol given the crop plus its `frame` must score exactly those pixels."""
    rng = np.random.default_rng(2)
    h, w = 375, 1242
    top, left = h - 352, (w - 1216) // 2
    gt = np.where(rng.random((h, w)) < 0.3, rng.uniform(0.5, 95, (h, w)), 0.0)
    pred_kb = rng.uniform(1, 80, (352, 1216))
    pasted = np.zeros((h, w))
    pasted[top:top + 352, left:left + 1216] = pred_kb
    ref = bts_garg_metrics(pasted, gt)
    acc = MetricAccumulator("kitti")
    acc.add(pred_kb, gt[top:top + 352, left:left + 1216], frame=(top, left, h, w))
    got = acc.result()
    for k in ("d1", "abs_rel", "rmse", "silog"):
        assert got[k] == pytest.approx(ref[k], rel=1e-12), k
    wrong = MetricAccumulator("kitti")  # the Garg fractions of the 352x1216 crop itself are other pixels
    wrong.add(pred_kb, gt[top:top + 352, left:left + 1216])
    assert wrong.result()["rmse"] != pytest.approx(ref["rmse"], rel=1e-6)


def test_one_command_evaluation_on_mixed_sizes(tmp_path, capsys):
    spec, _ = make_kitti(tmp_path)
    model = tiny_model()
    model.max_depth = 80.0
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", spec, "--protocol", "kitti", "--device", "cpu",
                 "--batch-size", "3", "--out", str(tmp_path / "out")]) == 0
    rec = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert rec["protocol"] == "kitti" and rec["n_images"] == 3 and rec["mask_m"] == [1e-3, 80.0]
    assert rec["crop_fractions"] == [0.40810811, 0.99189189, 0.03594771, 0.96405229] and rec["cap_m"] == 80.0
    assert "garg" in rec["crop"] and "0.408108" in capsys.readouterr().out
    # reference: the same predictions (one image at a time) scored by BTS's code as written out above
    loaded = load_checkpoint(ckpt)
    ds = open_dataset(spec)
    rows = [bts_garg_metrics(p.astype(np.float64), s["depth"].astype(np.float64))
            for p, s in iter_predictions(loaded, ds, batch_size=1, device="cpu")]
    for k in ("d1", "abs_rel", "rmse", "silog"):
        assert rec[k] == pytest.approx(np.mean([r[k] for r in rows]), rel=1e-5), k


def test_kitti_cap_follows_an_explicit_max_depth(tmp_path):
    spec, _ = make_kitti(tmp_path)
    model = tiny_model()
    model.max_depth = 80.0
    rec = evaluate(model, open_dataset(spec), "kitti", device="cpu", max_depth=50.0)
    assert rec["mask_m"] == [1e-3, 50.0] and rec["cap_m"] == 50.0 and rec["clamp_m"] == [0.1, 50.0]


def test_kitti_mask_is_strict_at_both_ends():
    """1e-3 < gt < 80 m, strict as in BTS: a gt of exactly 80 m or 1e-3 m is not scored."""
    gt = np.full((100, 100), 10.0)
    pred = np.full((100, 100), 10.0)
    gt[60, 50], gt[61, 50] = 80.0, 1e-3  # inside the Garg box (rows 40:99, cols 3:96)
    assert depth_metrics(pred, gt, "kitti")["abs_rel"] == 0.0
    gt[62, 50] = 79.9  # just below the cap: scored
    assert depth_metrics(pred, gt, "kitti")["abs_rel"] > 0


def test_training_reads_the_kitti_source(tmp_path):
    """The source feeds training as is (sizes differ per drive; training resizes/crops to height x width)."""
    import torch

    from transferdepth.training import train
    from transferdepth.training.config import load_config

    spec, _ = make_kitti(tmp_path)
    cfg = load_config(overrides=dict(encoder="mobilenetv2", pretrained=False, train_data=spec, height=64, width=64,
                                     batch_size=2, max_steps=1, num_workers=0, tensorboard=False, progress=False,
                                     max_depth=80.0, device="cpu"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(cfg, tmp_path / "run").steps == 1
    finally:
        torch.set_num_threads(n)
