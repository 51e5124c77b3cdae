"""The demo flow end to end, shrunk (the full demo runs with `make demo`)."""

from __future__ import annotations

import json

from transferdepth.apps.demo import DemoOptions, headline, motorcycle, run_demo


def test_demo_writes_a_report(tmp_path):
    opts = DemoOptions(out=tmp_path / "demo", steps=3, batch_size=2, height=64, width=64, n_train=6, n_test=3)
    summary = run_demo(opts, log=lambda s: None)
    out = tmp_path / "demo"
    page = (out / "report.html").read_text()
    for name in ("loss_curve.png", "predictions.png", "depth_color_0.png", "point_cloud.png", "motorcycle.png"):
        assert (out / name).stat().st_size > 0 and name in page
    assert "protocol eigen" in page and "Middlebury" in page
    rows = json.loads((out / "summary.json").read_text())["metrics"]
    assert rows[0]["n_images"] == 3 and 0 <= rows[0]["d1"] <= 1
    assert rows[1]["median_scaled"] is True
    assert summary["steps"] == 3 and "report:" in headline(summary)


def test_motorcycle_ground_truth_is_metric():
    m = motorcycle()
    d = m["depth"][m["valid"]]
    # f*B/(disp+doffs): the scene spans roughly 1.5-5 m in front of the rig
    assert 1.0 < d.min() < d.max() < 5.5 and not m["valid"].all()


def test_demo_on_a_real_folder(tmp_path, rgbd_root):
    opts = DemoOptions(out=tmp_path / "d2", data="rgbd:kinect-dining", steps=2, batch_size=2, height=64, width=64)
    summary = run_demo(opts, log=lambda s: None)
    assert summary["metrics"][0]["n_images"] == 1  # 5 frames: the last 20% held out
