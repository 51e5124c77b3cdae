"""Quiet logs: long work writes a redrawn bar to a terminal, but to a file (CI, nohup) a plain line every 10 %
of the work or 30 s (`--progress auto|bar|plain|none`, one home: `utils.progress`)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import tqdm.std
from PIL import Image

from transferdepth.cli import main
from transferdepth.utils import progress, set_progress

TRAIN = ["train", "--encoder", "mobilenetv2", "--pretrained", "false", "--height", "32", "--width", "32",
         "--train-data", "procedural:n=8&seed=0&height=32&width=32", "--batch-size", "2", "--max-steps", "30",
         "--num-workers", "0", "--tensorboard", "false", "--log-every", "1"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if needle in line]


def test_plain_lines_at_each_tenth_and_the_end():
    out = io.StringIO()
    with progress(total=1000, desc="work", unit="step", file=out) as bar:  # auto: not a terminal -> plain
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss=0.5)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [int(line.split("%")[0].split()[-1]) for line in lines] == list(range(0, 101, 10)), lines
    assert lines[-1].startswith("work: 100% 1000/1000") and "loss=0.5" in lines[-1]


def test_plain_lines_every_30_s_when_tenths_are_slow(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    out = io.StringIO()
    bar = progress(total=10_000, desc="slow", file=out, mode="plain")
    for _ in range(20):  # 20 updates, 10 s apart: 0.2 % of the work, 200 s
        clock[0] += 10.0
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 6 + 1, lines  # the first, every 30 s (200 s: 6), the last (at 20)
    assert lines[-1].startswith("slow:   0% 20/10000")
    out = io.StringIO()
    with progress(desc="frames", unit="frame", file=out, mode="plain") as bar:  # no total: time only
        for _ in range(7):
            clock[0] += 10.0
            bar.update(5)
    assert len(out.getvalue().splitlines()) == 1 + 2 + 1


def test_auto_is_a_bar_on_a_terminal_and_none_is_silent():
    term = Terminal()
    with progress(total=50, desc="work", file=term) as bar:
        for _ in range(50):
            bar.update(1)
    assert "\r" in term.getvalue()
    quiet = io.StringIO()
    with progress(total=50, desc="work", file=quiet, mode="none") as bar:
        bar.update(50)
    assert quiet.getvalue() == ""
    set_progress("none")  # a command's --progress: the default of every bar it makes
    try:
        with progress(total=5, file=quiet) as bar:
            bar.update(5)
        assert quiet.getvalue() == ""
    finally:
        set_progress("auto")
    with pytest.raises(ValueError, match="progress mode: expected one of auto, bar, plain, none"):
        progress(total=5, mode="fancy")


def _run_logged(args: list[str], log, tmp_path) -> subprocess.CompletedProcess:
    with open(log, "w") as err:  # stderr is a file, as under nohup or in CI
        return subprocess.run([sys.executable, "-m", "transferdepth", *args], stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=600, cwd=tmp_path)


def test_training_to_a_log_file_writes_a_line_per_tenth_not_per_step(tmp_path):
    plain = _run_logged([*TRAIN, "--out", "plain"], tmp_path / "plain.log", tmp_path)
    assert plain.returncode == 0, (tmp_path / "plain.log").read_text()
    text = (tmp_path / "plain.log").read_text()
    assert "\r" not in text
    assert len(_lines(text, "train mobilenetv2")) == 11, text  # 0 %, 10 %, ..., 100 %
    bar = _run_logged([*TRAIN, "--out", "bar", "--progress", "bar"], tmp_path / "bar.log", tmp_path)
    assert bar.returncode == 0
    assert len(_lines((tmp_path / "bar.log").read_text(), "train mobilenetv2")) > 30  # redrawn each step


def test_predict_to_a_log_file_writes_plain_lines(tmp_path):
    from helpers import tiny_model

    from transferdepth.inference.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tiny_model(), tmp_path / "ckpt")
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    r = _run_logged(["predict", *(f"im{i}.png" for i in range(3)), "--checkpoint", str(ckpt), "--out", "o"],
                    tmp_path / "p.log", tmp_path)
    text = (tmp_path / "p.log").read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and [line.split("[")[0] for line in _lines(text, "predict")] == [
        "predict:   0% 0/3 ", "predict:  33% 1/3 ", "predict:  67% 2/3 ", "predict: 100% 3/3 "], text
    with pytest.raises(SystemExit) as e:
        main(["predict", str(tmp_path / "im0.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "q"),
              "--progress", "fancy"])
    assert e.value.code == 2
