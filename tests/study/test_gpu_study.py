"""benchmarks/study/gpu_study.py at toy scale on the CPU: the GPU study (issue 14) must run end to end before a
session spends lent GPU minutes on it. Numbers are not checked here (2 steps); the table's shape is."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO


def test_gpu_study_runs_end_to_end_at_toy_scale(rgbd_root, tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "study" / "gpu_study.py"), "--device", "cpu", "--encoders",
           "mobilenetv2", "--seeds", "0,1", "--steps", "2", "--size", "64x96", "--batch-size", "2",
           "--eval-limit", "2", "--out", str(tmp_path / "study")]
    env = {"PYTHONPATH": str(REPO / "src"), "TRANSFERDEPTH_RGBD": str(rgbd_root), "OMP_NUM_THREADS": "2"}
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| mobilenetv2")]
    assert [r.split("|")[1].strip() for r in rows] == ["mobilenetv2", "mobilenetv2:scratch", "mobilenetv2"]
    assert rows[0].split("|")[2].strip() == "2"  # two seeds per row
    assert "±" in rows[2]  # the paired difference has a spread over the two seeds
    again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert "0 of 4 runs trained now" in again.stdout  # finished runs are reused


def test_gpu_study_takes_the_grid_axes(rgbd_root, tmp_path):
    """The same script with --decoders / --losses (issue 21): every cell x init is a run, pretrained - scratch
    is paired per cell."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "study" / "gpu_study.py"), "--device", "cpu", "--encoders",
           "mobilenetv2", "--seeds", "0", "--steps", "1", "--size", "64x96", "--batch-size", "2", "--eval-limit",
           "1", "--decoders", "densedepth,fastdepth", "--losses", "silog", "--out", str(tmp_path / "study")]
    env = {"PYTHONPATH": str(REPO / "src"), "TRANSFERDEPTH_RGBD": str(rgbd_root), "OMP_NUM_THREADS": "2"}
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split(" | ")[0][2:].replace("\\|", "|") for line in out.stdout.splitlines()
            if line.startswith("| mobilenetv2")]
    assert rows == ["mobilenetv2|decoder=densedepth", "mobilenetv2|decoder=fastdepth",
                    "mobilenetv2:scratch|decoder=densedepth", "mobilenetv2:scratch|decoder=fastdepth",
                    "mobilenetv2|decoder=densedepth", "mobilenetv2|decoder=fastdepth"]
    assert "4 of 4 runs trained now" in out.stdout
