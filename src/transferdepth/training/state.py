"""A run folder's state: out-dir checks, replacing a run safely, checkpoints (atomic, finite), resume, RNG.

checkpoint/ holds the latest step (`model.safetensors`, `config.json`, `train_state.pt`), checkpoint.old/ the
one before it; each is written as checkpoint.new/ and swapped in whole, so a crash or a full disk never
leaves neither intact.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from transferdepth.inference.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_checkpoint
from transferdepth.models import DepthNet
from transferdepth.training.config import ARCHITECTURE_KEYS, ConfigError, TrainConfig
from transferdepth.training.step import TrainingDiverged
from transferdepth.utils import UserFileError, atomic_write, read_user_text

STATE_FILE = "train_state.pt"
RUN_MARKERS = ("run.json", "checkpoint", "checkpoint.old", "history.jsonl")


class CheckpointWriteError(RuntimeError):
    """A checkpoint file could not be written (disk full, permissions); the previous checkpoint is intact."""


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(cfg: TrainConfig, world: int, device: torch.device) -> dict[str, Any]:
    """run.json: versions, git commit, seed, world size, device and the resolved config."""
    import torchvision

    from transferdepth._version import __version__

    return {"transferdepth": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "git_commit": _git_commit(),
            "seed": cfg.seed, "world_size": world, "device": str(device),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "recipe": cfg.recipe, "config": cfg.to_dict()}


def _holds_run(out: Path) -> bool:
    return any((out / m).exists() for m in RUN_MARKERS)


def prepare_out_dir(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> bool:
    """Check that `out` may receive this run; changes nothing. True when --overwrite must replace a run there.

    An existing run needs --resume (same architecture) or --overwrite; a non-empty folder that holds no run
    is refused either way (--overwrite replaces runs only).
    """
    if resume:
        _check_resumable(out, cfg)
        return False
    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"output folder {out} is a file")
    if not any(out.iterdir()):
        return False
    if not _holds_run(out):
        names = sorted(p.name for p in out.iterdir())
        raise ConfigError(f"output folder {out} is not empty and holds no training run ({', '.join(names[:5])}"
                          f"{', ...' if len(names) > 5 else ''}); choose a new or empty folder")
    if not overwrite:
        raise ConfigError(f"output folder {out} already holds another run; pass --resume to continue it or "
                          "--overwrite to replace it")
    aside = replaced_path(out)
    if aside.exists():
        raise ConfigError(f"{aside} exists: an earlier --overwrite of {out} was interrupted and it holds the "
                          "replaced run; move or delete it first")
    return True


def recorded_run(out: Path) -> dict[str, Any]:
    """`out`/run.json's content (read under the size cap of user files), or {} when it is missing or is not
    a JSON object."""
    try:
        info = json.loads(read_user_text(out / "run.json", "run.json"))
    except (OSError, ValueError):  # UserFileError is a ValueError
        return {}
    return info if isinstance(info, dict) else {}


def _check_resumable(out: Path, cfg: TrainConfig) -> None:
    if not any((out / d / STATE_FILE).exists() for d in ("checkpoint", "checkpoint.old")):
        raise ConfigError(f"--resume: {out} holds no checkpoint to resume from")
    try:
        saved = (json.loads(read_user_text(out / "run.json", "run.json"))["config"]
                 if (out / "run.json").exists() else {})
    except (ValueError, KeyError, TypeError, UserFileError):
        raise ConfigError(f"--resume: {out / 'run.json'} is not a run.json of transferdepth") from None
    for key in ARCHITECTURE_KEYS:
        if key in saved and saved[key] != getattr(cfg, key):
            raise ConfigError(f"--resume: {out} was trained with {key}={saved[key]!r}, but this run asks for "
                              f"{key}={getattr(cfg, key)!r}")


def replaced_path(out: Path) -> Path:
    """Where --overwrite keeps the replaced run until the new run's first checkpoint exists."""
    return out.parent / f".{out.name}.replaced"


class RunReplacement:
    """--overwrite without data loss: `begin` moves the old run aside, `commit` (after the new run's first
    checkpoint) deletes it, `rollback` (the new run failed first) puts it back."""

    def __init__(self, out: Path):
        self.out, self.aside, self.active = out, replaced_path(out), False

    def begin(self) -> None:
        os.replace(self.out, self.aside)
        self.out.mkdir()
        self.active = True

    def commit(self) -> None:
        if self.active:
            shutil.rmtree(self.aside)
            self.active = False

    def rollback(self) -> None:
        if self.active:
            shutil.rmtree(self.out, ignore_errors=True)
            os.replace(self.aside, self.out)
            self.active = False


def _first_non_finite(model: DepthNet) -> str | None:
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def save_state(out: Path, model: DepthNet, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               state: dict[str, Any], cfg: TrainConfig) -> None:
    """Write checkpoint/ (model, config, train_state with optimizer, scaler and RNG states) as a whole.

    Refuses (TrainingDiverged) a model with a non-finite tensor; a failed write (CheckpointWriteError) leaves
    the previous checkpoint intact.
    """
    bad = _first_non_finite(model)
    if bad is not None:
        raise TrainingDiverged(f"step {state['step']}: tensor '{bad}' is not finite; the checkpoint was not "
                               f"written (the last one in {out / 'checkpoint'} is intact)")
    new, cur, old = out / "checkpoint.new", out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(new, ignore_errors=True)
    target = new / WEIGHTS_FILE
    try:
        save_checkpoint(model, new, meta={"step": state["step"], "train_config": cfg.to_dict()})
        target = new / STATE_FILE
        torch.save({**state, "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), **rng_state()}, target)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its writer
        shutil.rmtree(new, ignore_errors=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        kept = f"the previous checkpoint in {cur} is intact" if cur.exists() else "no checkpoint was written yet"
        raise CheckpointWriteError(f"could not write {target} (checkpoint of step {state['step']}): {reason}; "
                                   f"{kept}") from None
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(new, cur)


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python RNG states (for train_state.pt)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)},
            "rng_python": list(random.getstate()[1]), "rng_python_pos": random.getstate()[2]}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng_torch"])
    if torch.cuda.is_available() and state["rng_cuda"]:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    s = state["rng_numpy"]
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
    random.setstate((3, tuple(state["rng_python"]), state["rng_python_pos"]))


def _read_checkpoint(d: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    for name in (STATE_FILE, WEIGHTS_FILE, CONFIG_FILE):
        if not (d / name).exists():
            raise ValueError(f"{d / name} is missing")
    try:
        state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or corrupt pickle/zip: any error of torch.load
        raise ValueError(f"{d / STATE_FILE} is unreadable ({type(e).__name__})") from None
    try:
        weights = load_file(d / WEIGHTS_FILE)
    except Exception as e:
        raise ValueError(f"{d / WEIGHTS_FILE} is unreadable ({type(e).__name__})") from None
    if not isinstance(state, dict) or "step" not in state or "optimizer" not in state:
        raise ValueError(f"{d / STATE_FILE} is not a transferdepth training state")
    return state, weights


def load_state(out: Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """(checkpoint folder, train state, model weights) of the newest intact checkpoint in `out`.

    Falls back to checkpoint.old/ (with a warning) when checkpoint/ is missing or corrupt.
    """
    problems = []
    for d in (out / "checkpoint", out / "checkpoint.old"):
        try:
            state, weights = _read_checkpoint(d)
        except ValueError as e:
            problems.append(str(e))
            continue
        if problems:
            print(f"warning: {problems[0]}; resuming from {d} (step {state['step']})", file=sys.stderr)
        return d, state, weights
    raise ConfigError(f"--resume: no intact checkpoint in {out}: {'; '.join(problems)}")


def truncate_history(path: Path, step: int) -> None:
    """Cut history.jsonl back to the records of steps <= `step` (those after a checkpoint are replayed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    with atomic_write(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))
