"""The encoder comparison study: train (or load) one model per encoder variant and seed under one config,
evaluate every run on one or more named test sets, and write the table and figures.

`run_grid` is the one code path of a study's (variant x seed) grid (`compare` and the real-data CI test call
it): each run trains (or is reused), is evaluated on each named test set, and records its metrics, training
time and loss curve in `<run folder>/eval.json`. Rerunning a study reuses every finished run whose config
matches (so adding seeds trains only the new ones) and every evaluation whose test set and options match.

A variant is an encoder name with an optional `:scratch` / `:pretrained` suffix (`mobilenetv2:scratch`), so
the transfer effect itself is a row of the table.

Outputs of `compare` in `out_dir`: `comparison.md`, `comparison.csv`, `comparison.html` (metrics, parameters,
GFLOPs at the training resolution, training time, inference latency; with several seeds, per metric the mean,
sd and 95% t-interval over seeds, and each variant's paired difference from the baseline), `loss_curves.png`
(loss per step per variant; mean over seeds with a +-1 sd band), `predictions.png` (rows = test images;
columns = RGB, ground truth, each variant's first seed), and the run folders: `<out_dir>/<variant>/` for a
single-seed study without `seeds`, else `<out_dir>/<variant>/seed_<n>/`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode

from transferdepth.data import open_dataset
from transferdepth.evaluation import report
from transferdepth.evaluation.evaluate import describe, evaluate, predict_dataset
from transferdepth.evaluation.stats import paired_difference, summarize
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.models import DepthNet
from transferdepth.recipe import PRESETS
from transferdepth.training import train
from transferdepth.training.config import ConfigError, TrainConfig, resolve_output_init, with_recipe
from transferdepth.training.state import recorded_run
from transferdepth.utils import atomic_write, check_output_folder

COLUMNS = ("encoder", "d1", "d2", "d3", "abs_rel", "rmse", "log10", "sq_rel", "rmse_log", "silog", "params_M",
           "gflops", "gflops_480x640", "train_min", "latency_ms")
SEED_COLUMNS = ("encoder", "seeds", "d1", "d2", "d3", "abs_rel", "rmse", "log10", "sq_rel", "rmse_log", "silog",
                "params_M", "gflops", "gflops_480x640", "train_min", "latency_ms")
EVAL_FILE = "eval.json"
VARIANT_SUFFIXES = {"scratch": False, "pretrained": True}
# config keys that do not change what a run learns (not compared when deciding whether a run can be reused;
# channels_last: the memory layout, the same maths with other rounding)
_IRRELEVANT = ("progress", "num_workers", "tensorboard", "ckpt_every", "channels_last")


def model_gflops(model: DepthNet, height: int, width: int) -> float:
    """GFLOPs of one forward pass of a 1x3xHxW input (torch.utils.flop_counter; multiply-add = 2)."""
    counter = FlopCounterMode(display=False)
    model = model.eval()
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, height, width, device=next(model.parameters()).device))
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def forward_latency_ms(model: DepthNet, height: int, width: int, repeats: int = 5) -> float:
    """Median wall time of a batch-1 forward pass after one warm-up, on the model's device."""
    device = next(model.parameters()).device
    x = torch.randn(1, 3, height, width, device=device)
    model.eval()
    model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


STUDY_FILES = ("comparison.md", "comparison.csv", "comparison.html", "runs.csv")


def is_study_folder(path: Path) -> bool:
    """True for a folder a study wrote (its tables, or a run folder with run.json / eval.json, per seed too)."""
    def holds_run(d: Path) -> bool:
        return d.is_dir() and ((d / "run.json").exists() or (d / EVAL_FILE).exists()
                               or any((s / "run.json").exists() for s in d.glob("seed_*")))

    return any((path / f).exists() for f in STUDY_FILES) or any(holds_run(d) for d in path.iterdir())


def check_study_out(out_dir: str | Path) -> None:
    """`out_dir` may receive a study: new, empty, or a study's own folder (continued: finished runs are reused);
    a non-empty folder of other files is refused (`utils.check_output_folder`), before anything is written."""
    check_output_folder(out_dir, flag="--out", what="a study folder (comparison.md, run folders)",
                        holds=is_study_folder, reuse=True)


def run_folder_name(encoder: str) -> str:
    """A safe single folder name for an encoder's run: letters, digits, '-', '_' and '.' only, never '.' or '..'
    (e.g. 'timm:x/../../victim' -> 'timm_x_.._.._victim' is one name inside the study folder)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder).strip(".") or "_"
    return name


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a study: `name` (the label, e.g. 'mobilenetv2:scratch@finetune'), the encoder, whether its
    encoder starts from ImageNet weights (None = the base config's `pretrained`) and its training recipe
    (None = the base config's; otherwise `config.with_recipe`: keys the user set explicitly stay)."""

    name: str
    encoder: str
    pretrained: bool | None = None
    recipe: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # training keys this cell sets (decoder, loss, any --vary key)


def grid_axes(decoders: str | None = None, losses: str | None = None, vary: Sequence[str] = (),
              study: dict[str, Any] | None = None, source: str = "config") -> dict[str, list[Any]]:
    """The grid's axes (training key -> values) from `--decoders a,b`, `--losses p,q` and `--vary KEY=V1,V2`
    (repeatable), or a study YAML's `decoders`, `losses` and `vary: {key: [values]}` (flags win). Values are
    coerced as the training config reads that key; a key that cannot vary raises ValueError naming it."""
    from transferdepth.training.config import FIELDS, coerce

    study = study or {}

    def items(flag_value: str | None, yaml_value: Any) -> list[Any] | None:
        if flag_value is not None:
            return [v.strip() for v in flag_value.split(",") if v.strip()]
        if yaml_value is None:
            return None
        return list(yaml_value) if isinstance(yaml_value, list) else [yaml_value]

    axes: dict[str, list[Any]] = {}
    for key, flag_value, yaml_key in (("decoder", decoders, "decoders"), ("loss", losses, "losses")):
        values = items(flag_value, study.get(yaml_key))
        if values is not None:
            axes[key] = values
    if not isinstance(study.get("vary") or {}, dict):
        raise ValueError(f"{source}: 'vary' must map training keys to lists of values")
    varied = dict(study.get("vary") or {})
    for item in vary:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise ValueError(f"--vary expects KEY=V1,V2 (e.g. batch_size=4,16), got '{item}'")
        varied[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    for key, values in varied.items():
        if key not in FIELDS or key in ("seed", "encoder"):
            raise ValueError(f"--vary {key}: not a training key that can vary (seeds: --seeds; encoders: --encoders)")
        if key in axes:
            raise ValueError(f"--vary {key}: already an axis of the grid")
        axes[key] = [coerce(key, v, "--vary") for v in (values if isinstance(values, list) else [values])]
    return axes


def grid_variants(encoders: Sequence[str], axes: dict[str, Sequence[Any]] | None = None) -> list[Variant]:
    """Every cell of encoders x each axis (training key -> values, e.g. {"decoder": ["densedepth", "unet"],
    "loss": ["silog"], "batch_size": [4, 16]}), encoder-major. A cell's name is its encoder text plus
    `|key=value` for each axis with more than one value (`mobilenetv2|decoder=unet`); one-value axes apply
    to every cell without naming it. A duplicate value on an axis raises ValueError (one line)."""
    axes = {k: list(v) for k, v in (axes or {}).items()}
    for key, values in axes.items():
        if not values:
            raise ValueError(f"grid axis '{key}' has no values")
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"grid axis '{key}' repeats {', '.join(dup)}: every cell must be distinct")
    cells: list[Variant] = []
    for text in encoders:
        base = parse_variant(text)
        for combo in itertools.product(*axes.values()):
            over = tuple(zip(axes, combo))
            tag = "".join(f"|{k}={v}" for k, v in over if len(axes[k]) > 1)
            cells.append(dataclasses.replace(base, name=base.name + tag, overrides=over))
    return cells


def parse_variant(text: str) -> Variant:
    """'ENCODER[:scratch|:pretrained][@RECIPE]': 'mobilenetv2' -> the base config's pretrained and recipe;
    ':scratch' / ':pretrained' force the initialisation; '@finetune' trains that row with another preset."""
    name = text.strip()
    rest, at, recipe = name.rpartition("@") if "@" in name else (name, "", "")
    if at and recipe not in PRESETS:
        raise ValueError(f"--encoders: '{name}': unknown recipe '{recipe}' after '@' (one of {', '.join(PRESETS)})")
    head, sep, tail = rest.rpartition(":")
    if sep and tail in VARIANT_SUFFIXES:
        if not head:
            raise ValueError(f"--encoders: '{name}' names no encoder before ':{tail}'")
        return Variant(name, head, VARIANT_SUFFIXES[tail], recipe or None)
    if not rest:
        raise ValueError(f"--encoders: '{name}' names no encoder before '@{recipe}'")
    return Variant(name, rest, None, recipe or None)


@dataclasses.dataclass
class EvalSet:
    """A named evaluation of every run: `data` is a dataset spec (opened once) or a ready dataset; `key` names
    the data in the reuse check (default: the spec, else the name)."""

    name: str
    data: str | Dataset
    protocol: str = "eigen"
    crop: Any = None
    median_scaling: bool = False
    split: str | None = None
    limit: int | None = None
    key: str | None = None

    def fingerprint(self, size: tuple[int, int]) -> dict[str, Any]:
        data = self.key or (self.data if isinstance(self.data, str) else self.name)
        return {"data": data, "split": self.split, "protocol": self.protocol,
                "crop": list(self.crop) if isinstance(self.crop, tuple) else self.crop,
                "median_scaling": self.median_scaling, "limit": self.limit, "size": list(size)}


@dataclasses.dataclass
class Run:
    """One (variant, seed) of a study: its folder, the metrics per test set name, training seconds and the
    loss curve (history.jsonl records)."""

    variant: Variant
    seed: int
    run_dir: Path
    metrics: dict[str, dict[str, Any]]
    seconds: float
    history: list[dict[str, Any]]
    trained: bool  # False when a finished run was reused (or a given checkpoint evaluated)


def _fingerprint(cfg: TrainConfig, data_key: str | None) -> dict[str, Any]:
    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    for k in _IRRELEVANT:
        d.pop(k, None)
    return {"config": d, "train_data": data_key}


def _same_config(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a saved run's config (JSON form) equals `current`'s. A key the saved run lacks (added to
    TrainConfig since) counts as its dataclass default, which new keys keep behaviour-neutral, so adding a key
    does not invalidate finished runs; a key the saved run has and `current` lacks is ignored. `output_init`
    is compared resolved (auto = reference for densedepth); a run saved before it existed is reused for the
    densedepth decoder only."""
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig()), default=str))
    if "output_init" not in saved and saved.get("decoder", "densedepth") != "densedepth":
        return False  # saved before `output_init`: other decoders then started elsewhere (and had BN momentum 0.01)
    saved = {**defaults, **saved, "output_init": _start(saved)}
    current = {**current, "output_init": _start(current)}
    return all(saved.get(k) == v for k, v in current.items() if k not in _IRRELEVANT)


def _start(cfg: dict[str, Any]) -> str:
    """A config's `output_init` with auto resolved (a config saved before the key had the reference start)."""
    return resolve_output_init(cfg.get("decoder", "densedepth"), cfg.get("output_init", "reference"))


def _read_eval(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / EVAL_FILE).read_text())
    except (OSError, ValueError):
        return None


def _plain(obj: Any) -> Any:
    """A JSON round trip (numpy scalars -> Python numbers, tuples -> lists): a fresh record equals a reused one."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_plain(obj), indent=1))


def _open_tests(tests: Sequence[EvalSet]) -> dict[str, Dataset]:
    names = [t.name for t in tests]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"test sets need distinct names, got {names}")
    return {t.name: open_dataset(t.data, t.split) if isinstance(t.data, str) else t.data for t in tests}


def run_grid(variants: Sequence[Variant], seeds: Sequence[int] | None, base: TrainConfig, out_dir: str | Path,
             tests: Sequence[EvalSet], *, train_dataset: Callable[[TrainConfig], Dataset] | None = None,
             data_key: str | None = None, checkpoints: dict[str, str] | None = None, overwrite: bool = False,
             device: str | None = None, log: Callable[[str], None] | None = None) -> list[Run]:
    """Train (or reuse) every (variant, seed) run under `base` and evaluate each on every test set.

    seeds: None = one run per variant at `base.seed` in `<out_dir>/<variant>/`; else `<out_dir>/<variant>/
    seed_<n>/` per seed (seeds pair runs: same initialisation seed, data order and augmentation).
    train_dataset: optional `cfg -> dataset of transformed samples` (see `train`); `data_key` then names that
    data in the reuse check. checkpoints: variant name -> run/checkpoint folder evaluated instead of trained
    (one seed only; nothing is written there). A finished run (its eval.json's config matches) is reused; an
    interrupted one with the same config is resumed; a different run in the folder needs `overwrite`.
    Evaluation is at the training resolution (base.height x base.width). Returns runs variant-major.
    """
    out = Path(out_dir)
    checkpoints = checkpoints or {}
    names = [v.name for v in variants]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--encoders: expected distinct names, got {', '.join(names) or 'none'}")
    unknown = set(checkpoints) - set(names)
    if unknown:
        raise ValueError(f"--checkpoints names encoders not in --encoders: {', '.join(sorted(unknown))}")
    seed_list = [base.seed] if seeds is None else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list) or any(s < 0 for s in seed_list):
        raise ValueError(f"--seeds: expected distinct integers >= 0, got {seed_list}")
    if checkpoints and len(seed_list) > 1:
        raise ValueError("--checkpoints evaluates one given run per encoder; it cannot be combined with several "
                         "--seeds")
    cfgs = {(v.name, seed): _cell_config(v, base, seed) for v in variants for seed in seed_list}  # all checked first
    folders = {v.name: out / run_folder_name(v.name) for v in variants if v.name not in checkpoints}
    clash = len(set(folders.values())) < len(folders)
    check_study_out(out)
    out.mkdir(parents=True, exist_ok=True)
    if clash or any(f.resolve().parent != out.resolve() for f in folders.values()):
        raise ValueError(f"--encoders {', '.join(names)}: the run folders must be distinct names inside {out}")
    datasets = _open_tests(tests)
    size = (base.height, base.width)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    say = log or (lambda msg: None)
    runs = []
    for v in variants:
        for seed in seed_list:
            cfg = cfgs[(v.name, seed)]
            if v.name in checkpoints:
                runs.append(_evaluate_given(v, seed, Path(checkpoints[v.name]), tests, datasets, size, dev))
                continue
            run_dir = folders[v.name] if seeds is None else folders[v.name] / f"seed_{seed}"
            runs.append(_train_and_evaluate(v, cfg, run_dir, tests, datasets, size, dev, train_dataset, data_key,
                                            overwrite, say))
    return runs


def _cell_config(v: Variant, base: TrainConfig, seed: int) -> TrainConfig:
    """The training config of one cell and seed (its recipe, encoder, initialisation and axis keys); a value a
    key does not accept raises ConfigError naming the cell, before any run starts."""
    cfg = base if v.recipe is None else with_recipe(base, v.recipe)
    keys = {"encoder": v.encoder, "seed": seed, **({} if v.pretrained is None else {"pretrained": v.pretrained}),
            **dict(v.overrides)}
    try:
        return dataclasses.replace(cfg, **keys)
    except TypeError as e:  # a key TrainConfig does not have
        raise ConfigError(f"grid cell {v.name}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"grid cell {v.name}: {e}") from None


def _evaluate_given(v: Variant, seed: int, path: Path, tests, datasets, size, dev) -> Run:
    run_dir = path.parent if path.name == "checkpoint" else path
    model = load_checkpoint(run_dir / "checkpoint" if (run_dir / "checkpoint").is_dir() else run_dir).to(dev)
    metrics = {t.name: evaluate(model, datasets[t.name], t.protocol, crop=t.crop, median_scaling=t.median_scaling,
                                size=size, device=dev, limit=t.limit) for t in tests}
    hist = _history(run_dir)
    return Run(v, seed, run_dir, metrics, hist[-1]["time_s"] if hist else math.nan, hist, False)


def _train_and_evaluate(v: Variant, cfg: TrainConfig, run_dir: Path, tests, datasets, size, dev,
                        train_dataset, data_key, overwrite: bool, say) -> Run:
    fp = _fingerprint(cfg, data_key)
    saved = _read_eval(run_dir)
    old = saved.get("fingerprint", {}) if saved is not None else {}
    finished = (saved is not None and old.get("train_data") == fp["train_data"]
                and _same_config(old.get("config", {}), fp["config"]) and (run_dir / "checkpoint").is_dir())
    trained = False
    if finished:
        seconds = float(saved["train_s"])
        say(f"{v.name} seed {cfg.seed}: reusing the finished run in {run_dir}")
    else:
        resume = False
        if (run_dir / "run.json").exists() and not overwrite:
            info = recorded_run(run_dir)
            same = _same_config(json.loads(json.dumps(info.get("config", {}), default=str)), fp["config"])
            # a given dataset is known only by data_key, which train records in run.json as train_data_label
            resume = same and saved is None and info.get("train_data_label") == data_key
        say(f"{v.name} seed {cfg.seed}: {'resuming' if resume else 'training'} in {run_dir}")
        result = train(cfg, run_dir, resume=resume, overwrite=overwrite and not resume,
                       train_dataset=None if train_dataset is None else train_dataset(cfg), data_label=data_key)
        seconds, trained, saved = float(result.seconds), True, None
    evals = dict(saved.get("evals", {})) if saved else {}
    model = None
    metrics = {}
    for t in tests:
        key = t.fingerprint(size)
        if t.name in evals and evals[t.name].get("key") == key:
            metrics[t.name] = evals[t.name]["metrics"]
            continue
        if model is None:
            model = load_checkpoint(run_dir / "checkpoint").to(dev)
        metrics[t.name] = _plain(evaluate(model, datasets[t.name], t.protocol, crop=t.crop,
                                          median_scaling=t.median_scaling, size=size, device=dev, limit=t.limit))
        evals[t.name] = {"key": key, "metrics": metrics[t.name]}
    _write_json(run_dir / EVAL_FILE, {"fingerprint": fp, "train_s": seconds, "evals": evals})
    return Run(v, cfg.seed, run_dir, metrics, seconds, _history(run_dir), trained)


def compare(encoders: list[str], base: TrainConfig, out_dir: str | Path, test_data: str, *,
            test_split: str | None = None, protocol: str = "eigen", crop: Any = None,
            median_scaling: bool = False, checkpoints: dict[str, str] | None = None, overwrite: bool = False,
            eval_limit: int | None = None, n_images: int = 4, latency_repeats: int = 5,
            seeds: Sequence[int] | None = None, baseline: str | None = None,
            axes: dict[str, Sequence[Any]] | None = None,
            log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train/evaluate each encoder variant (per seed) and write the comparison (see module docstring).

    encoders: names, each optionally ':scratch' / ':pretrained' (`parse_variant`). seeds: None = one run per
    variant at base.seed (folder `<out>/<variant>/`); else every variant trains once per seed and the table
    gives mean, sd and 95% interval over seeds, and the paired difference from `baseline` (default: the
    first variant). axes: training key -> values crossed with the encoders (`grid_variants`: --decoders,
    --losses, --vary). Returns one row per cell (metrics: the mean over seeds)."""
    variants = grid_variants(encoders, axes)
    names = [v.name for v in variants]
    baseline = names[0] if baseline is None and names else baseline
    if baseline not in names:
        raise ValueError(f"--baseline {baseline!r} is not one of the cells ({', '.join(names)})")
    test = EvalSet("test", test_data, protocol, crop, median_scaling, test_split, eval_limit)
    runs = run_grid(variants, seeds, base, out_dir, [test], checkpoints=checkpoints, overwrite=overwrite, log=log)
    out = Path(out_dir)
    test_ds = open_dataset(test_data, test_split)
    size = (base.height, base.width)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    multi = seeds is not None and len(seeds) > 1
    rows, histories, grid_preds = [], {}, {}
    shown = None
    for v in variants:
        mine = [r for r in runs if r.variant.name == v.name]
        first = mine[0]
        ckpt = first.run_dir / "checkpoint"
        model = load_checkpoint(ckpt if ckpt.is_dir() else first.run_dir).to(device)
        metrics = first.metrics["test"]
        row: dict[str, Any] = {"encoder": v.name}
        if multi:
            row["seeds"] = len(mine)
            for m in report.METRIC_COLUMNS:
                s = summarize([r.metrics["test"][m] for r in mine])
                row.update({m: s.mean, **s.as_dict(f"{m}_")})
                row.pop(f"{m}_mean")
                row.pop(f"{m}_n")
        else:
            row.update({m: metrics[m] for m in report.METRIC_COLUMNS})
        row.update({"params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                    "gflops": model_gflops(model, *size), "gflops_480x640": model_gflops(model, 480, 640),
                    "train_min": statistics.fmean(r.seconds for r in mine) / 60,
                    "latency_ms": forward_latency_ms(model, *size, repeats=latency_repeats),
                    "n_images": metrics["n_images"], "how": describe(metrics), "device": device})
        rows.append(row)
        histories[v.name] = [r.history for r in mine]
        preds = predict_dataset(model, test_ds, size=size, device=device, limit=n_images)
        k = min(n_images, len(preds.pred))
        grid_preds[v.name] = list(preds.pred[:k])
        if shown is None:
            shown = ([test_ds[i]["rgb"] for i in range(k)], list(preds.gt[:k]), list(preds.valid[:k]))
        del model
    diffs = []
    if multi:
        base_runs = {r.seed: r for r in runs if r.variant.name == baseline}
        for row in rows:
            if row["encoder"] == baseline:
                continue
            mine = {r.seed: r for r in runs if r.variant.name == row["encoder"]}
            seeds_ = sorted(mine)
            diff = {"encoder": f"{row['encoder']} - {baseline}", "seeds": len(seeds_), "how": row["how"]}
            for m in report.METRIC_COLUMNS:
                s = paired_difference([mine[k].metrics["test"][m] for k in seeds_],
                                      [base_runs[k].metrics["test"][m] for k in seeds_])
                diff[m] = s
                row.update({f"diff_{m}_mean": s.mean, f"diff_{m}_ci_lo": s.lo, f"diff_{m}_ci_hi": s.hi})
            diff["verdict"] = verdict(diff["d1"], diff["abs_rel"])
            row["verdict"] = diff["verdict"]
            diffs.append(diff)
    _write(out, rows, runs, histories, grid_preds, shown, base, multi, baseline, diffs)
    return rows


def verdict(d1: Any, abs_rel: Any) -> str:
    """Whether a paired difference is resolved: its 95% interval excludes 0 ("real") or not ("noise"), for
    delta1 and abs rel."""
    def one(name: str, s: Any) -> str:
        if not (math.isfinite(s.lo) and math.isfinite(s.hi)):
            return f"{name}: n/a"
        return f"{name}: {'real' if s.lo > 0 or s.hi < 0 else 'noise'}"

    return f"{one('d1', d1)}; {one('abs_rel', abs_rel)}"


def _seed_note(runs: list[Run], baseline: str) -> str:
    seeds = sorted({r.seed for r in runs})
    return (f"Seeds {', '.join(map(str, seeds))}: each cell is mean ± sd [95% t-interval of the mean] over seeds. "
            f"Paired differences: each variant minus {baseline}, run by run with the same seed (same "
            "initialisation seed, data order and augmentation), mean ± sd [95% interval].")


def _text_rows(rows: list[dict[str, Any]], runs: list[Run], columns: Sequence[str]) -> list[dict[str, Any]]:
    shown = []
    for row in rows:
        r = dict(row)
        for m in report.METRIC_COLUMNS:
            vals = [x.metrics["test"][m] for x in runs if x.variant.name == row["encoder"]]
            r[m] = summarize(vals).text()
        shown.append(r)
    return shown


def _write(out: Path, rows, runs, histories, grid_preds, shown, base: TrainConfig, multi: bool, baseline: str,
           diffs) -> None:
    how = rows[0]["how"] if rows else ""
    note = (f"Evaluation: {how}; {rows[0]['n_images'] if rows else 0} images. Training: {base.train_data}, "
            f"{base.height}x{base.width}, batch {base.batch_size}, "
            f"{base.max_steps or str(base.epochs) + ' epochs'} steps, lr {base.lr}. GFLOPs and latency: batch 1 "
            f"at {base.height}x{base.width} on {rows[0]['device'] if rows else '-'}, latency median of repeats.")
    columns = SEED_COLUMNS if multi else COLUMNS
    csv_columns = list(COLUMNS)
    md = "# Encoder comparison\n\n" + note + "\n\n"
    sections = []
    if multi:
        shown_rows = _text_rows(rows, runs, columns)
        diff_rows = [{**d, **{m: d[m].text() for m in report.METRIC_COLUMNS}} for d in diffs]
        diff_cols = ["encoder", "seeds", *report.METRIC_COLUMNS, "verdict"]
        seed_note = _seed_note(runs, baseline)
        md += seed_note + "\n\n" + report.markdown_table(shown_rows, columns)
        md += f"\n## Paired difference from {baseline}\n\n" + report.markdown_table(diff_rows, diff_cols)
        sections.append(("Results", f"<p>{note}</p><p>{seed_note}</p>" + report.html_table(shown_rows, columns)))
        sections.append((f"Paired difference from {baseline}", report.html_table(diff_rows, diff_cols)))
        csv_columns = ["encoder", "seeds"] + [f"{m}{s}" for m in report.METRIC_COLUMNS
                                              for s in ("", "_sd", "_ci_lo", "_ci_hi")] + \
            [f"diff_{m}_{s}" for m in report.METRIC_COLUMNS for s in ("mean", "ci_lo", "ci_hi")] + \
            ["verdict", "params_M", "gflops", "gflops_480x640", "train_min", "latency_ms"]
        report.plot_loss_bands(histories, out / "loss_curves.png")
        _write_runs_csv(out, runs)
    else:
        md += report.markdown_table(rows, columns)
        sections.append(("Results", f"<p>{note}</p>" + report.html_table(rows, columns)))
        report.plot_loss_curves({k: h[0] for k, h in histories.items()}, out / "loss_curves.png")
    report.plot_pareto(rows, out / "pareto.png")
    report.write_text(out / "comparison.md", md + "\n![Pareto](pareto.png)\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*csv_columns, "n_images", "how", "device"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    report.write_text(out / "comparison.csv", buf.getvalue())
    if shown is not None:
        rgbs, gts, valids = shown
        report.plot_prediction_grid(rgbs, gts, grid_preds, out / "predictions.png", valids=valids)
    page = report.html_page("Encoder comparison", [
        *sections,
        ("Pareto: delta1 against latency and parameters", "<img src='pareto.png'>"),
        ("Loss curves", "<img src='loss_curves.png'>"),
        ("Predictions", "<img src='predictions.png'>"),
    ])
    report.write_text(out / "comparison.html", page)


def _write_runs_csv(out: Path, runs: list[Run]) -> None:
    """runs.csv: one row per (variant, seed) with its metrics and training time."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["encoder", "seed", *report.METRIC_COLUMNS, "train_min", "run_dir"])
    writer.writeheader()
    for r in runs:
        writer.writerow({"encoder": r.variant.name, "seed": r.seed,
                         **{m: r.metrics["test"][m] for m in report.METRIC_COLUMNS},
                         "train_min": r.seconds / 60, "run_dir": r.run_dir.name})
    report.write_text(out / "runs.csv", buf.getvalue())
