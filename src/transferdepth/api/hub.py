"""Sharing a checkpoint on the Hugging Face Hub: its model card and the upload.

`model_card(checkpoint)` writes the card (README.md with the Hub's YAML header: library_name, pipeline_tag,
license, datasets, metrics, tags) from the checkpoint's own metadata: config.json (encoder, decoder, depth
range, and `meta`: the training config or the DenseDepth import's provenance), and for a training run the
run folder's run.json (versions, recipe) and metrics.json (the last validation), plus any evaluation
metrics.json files given. `push_checkpoint` loads the checkpoint first (nothing is uploaded from one that
fails to load), then uploads model.safetensors, config.json and the card (never train_state.pt) with
`huggingface_hub.HfApi`. Loading by name is `inference.hub`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from transferdepth._version import __version__
from transferdepth.evaluation.evaluate import describe
from transferdepth.evaluation.metrics import METRIC_KEYS
from transferdepth.evaluation.report import markdown_table
from transferdepth.inference.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
)
from transferdepth.inference.hub import HUB_EXTRA

CARD_FILE = "README.md"
UPLOADED_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)  # what a pushed checkpoint holds (never train_state.pt)
LOGIN_HINT = "log in with `hf auth login` (huggingface_hub before 1.0: `huggingface-cli login`), or set HF_TOKEN"
# data source (the dataset spec's prefix) -> (Hub dataset id for the card's header or None, words for the body)
DATASETS = {"nyu": ("sayakpaul/nyu_depth_v2", "NYU Depth v2"), "kitti": (None, "KITTI"),
            "procedural": (None, "procedural rooms (synthetic, made by transferdepth)"),
            "rgbd": (None, "RGB-D scenes (7-Scenes style)"), "folder": (None, "an image/depth folder")}
CARD_METRICS = ("d1", "d2", "d3", "abs_rel", "rmse", "log10")


class PushError(ValueError):
    """A push that cannot start (no token, no huggingface_hub) or that the Hub refused; one line."""


def run_folder(checkpoint: str | os.PathLike) -> tuple[Path, Path | None]:
    """(checkpoint folder, training run folder or None) for a checkpoint folder or a run folder."""
    p = Path(checkpoint)
    if (p / "run.json").is_file() and (p / "checkpoint" / CONFIG_FILE).is_file():
        return p / "checkpoint", p
    if (p.parent / "run.json").is_file():
        return p, p.parent
    return p, None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _dataset(spec: str | None) -> tuple[str | None, str]:
    """(Hub dataset id or None, words) for a dataset spec like 'nyu_zip:/data/nyu.zip' or 'procedural:n=8'."""
    if not spec:
        return None, "not recorded"
    kind = spec.split(":", 1)[0].lower()
    for prefix, (hub_id, words) in DATASETS.items():
        if kind.startswith(prefix):
            return hub_id, f"{words} (`{spec}`)"
    return None, f"`{spec}`"


def card_facts(checkpoint: str | os.PathLike, evaluations: list[str | os.PathLike] = ()) -> dict[str, Any]:
    """Everything the card says, read from the checkpoint (and its run folder, and `evaluations`: metrics.json
    files written by `transferdepth evaluate --out`)."""
    ckpt, run = run_folder(checkpoint)
    cfg = read_config(ckpt)
    meta = cfg.get("meta") if isinstance(cfg.get("meta"), dict) else {}
    run_info = _read_json(run / "run.json") if run else None
    records = []
    if run and (val := _read_json(run / "metrics.json")):
        records.append({"data": "validation (training run)", **val})
    for path in evaluations:
        ev = _read_json(Path(path))
        if ev is None:
            raise PushError(f"--metrics {path}: not a metrics.json written by `transferdepth evaluate --out`")
        records.append({"data": ev.get("data", Path(path).parent.name), **ev})
    return {"checkpoint": ckpt, "config": cfg, "meta": meta, "run": run_info, "records": records,
            "train_config": meta.get("train_config") or (run_info or {}).get("config"),
            "imported": meta.get("imported_from")}


def _header(facts: dict[str, Any], license: str) -> str:
    datasets = []
    if facts["imported"]:
        datasets.append(_dataset(facts["imported"].get("dataset"))[0])
    elif facts["train_config"]:
        datasets.append(_dataset(facts["train_config"].get("train_data"))[0])
    metrics = sorted({k for r in facts["records"] for k in CARD_METRICS if k in r})
    head = {"library_name": "transferdepth", "pipeline_tag": "depth-estimation", "license": license,
            "tags": ["depth-estimation", "monocular-depth", "metric-depth", "transferdepth"]}
    if any(datasets):
        head["datasets"] = [d for d in datasets if d]
    if metrics:
        head["metrics"] = metrics
    return "---\n" + yaml.safe_dump(head, sort_keys=False) + "---\n"


def _decoder_row(cfg: dict[str, Any]) -> str:
    """The card's decoder line: DenseDepth's with its switches, or another registered decoder, and what the
    network regresses (`output_space`; checkpoints before the keys: DenseDepth's, DepthNorm)."""
    name, space = cfg.get("decoder", "densedepth"), cfg.get("output_space", "depthnorm")
    if name == "densedepth":
        what = (f"DenseDepth's upsampling decoder, width {cfg['decoder_width']:g} x the encoder's last channels "
                f"(LeakyReLU after convA: {'yes' if cfg.get('decoder_act_a', True) else 'no'}; ReLU on the "
                f"bottleneck: {'yes' if cfg.get('bottleneck_relu') else 'no'})")
    else:
        what = f"`{name}` (transferdepth.models.decoders), width {cfg['decoder_width']:g} x its reference's channels"
    return f"| decoder | {what}; regresses {space} |"


def _model_rows(cfg: dict[str, Any], n_params: int) -> list[str]:
    lo, hi = cfg.get("min_depth", 0.1), cfg.get("max_depth", 10.0)
    return ["| | |", "|---|---|", f"| encoder | `{cfg['encoder']}` |",
            _decoder_row(cfg),
            f"| input | RGB, normalisation `{cfg.get('input_norm', 'imagenet')}`, any size |",
            f"| output | depth in metres, clamped to {lo:g}-{hi:g} m |",
            f"| parameters | {n_params / 1e6:.1f} M |", f"| format | `{cfg.get('format')}` (model.safetensors + "
            "config.json) |"]


def _provenance(facts: dict[str, Any]) -> list[str]:
    imp, tc, run = facts["imported"], facts["train_config"], facts["run"] or {}
    if imp:
        return ["## Provenance", "",
                f"Imported with `transferdepth import densedepth` from DenseDepth's released Keras model "
                f"`{imp.get('file')}` (sha256 `{imp.get('sha256')}`, Keras {imp.get('keras_version')}); trained "
                f"by DenseDepth's authors (Alhashim & Wonka, 2018, github.com/ialhashim/DenseDepth) on "
                f"{_dataset(imp.get('dataset'))[1]}. The weights are theirs: check DenseDepth's terms before "
                f"reuse. Decoder {imp.get('decoder_filters')} filters; input {imp.get('input')}; upsampling "
                f"{imp.get('upsampling')}; BatchNorm epsilon {imp.get('bn_eps')}.", ""]
    if not tc:
        return ["## Provenance", "", "Not recorded in the checkpoint.", ""]
    steps = facts["meta"].get("step", tc.get("max_steps"))
    lines = ["## Training", "", "| | |", "|---|---|",
             f"| recipe (preset) | `{tc.get('recipe')}` |",
             f"| training data | {_dataset(tc.get('train_data'))[1]}"
             + (f", split `{tc['train_split']}`" if tc.get("train_split") else "") + " |",
             f"| steps | {steps} (batch {tc.get('batch_size')}, {tc.get('width')}x{tc.get('height')} px) |",
             f"| optimiser | Adam, lr {tc.get('lr')}, seed {tc.get('seed')} |",
             f"| started from | {('checkpoint `' + tc['init_checkpoint'] + '`') if tc.get('init_checkpoint') else 'ImageNet weights' if tc.get('pretrained') else 'random weights'} |"]
    if run:
        lines.append(f"| software | transferdepth {run.get('transferdepth')}, torch {run.get('torch')}, "
                     f"{run.get('world_size', 1)} process(es) on {run.get('device')} |")
    return lines + [""]


def _evaluation(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return ["## Evaluation", "", "No evaluation is recorded with this checkpoint (`transferdepth evaluate "
                "--out DIR`, then `transferdepth push ... --metrics DIR/metrics.json`).", ""]
    rows = [{k: v for k, v in r.items() if k in ("data", "protocol", "n_images", *METRIC_KEYS)} for r in records]
    table = markdown_table(rows, ["data", "n_images", *[k for k in CARD_METRICS if any(k in r for r in rows)]])
    how = [f"- {r['data']}: {describe(r) if 'crop' in r else 'protocol ' + str(r['protocol'])}"
           for r in records if "protocol" in r]
    return ["## Evaluation", "", "Depth in metres; d1-d3: share of pixels within 1.25^k of the truth (higher is "
            "better); abs_rel, rmse (m), log10: errors (lower is better).", "", table.rstrip(), "", *how, ""]


def _usage(repo_id: str) -> list[str]:
    return ["## How to load it", "", "```bash", "pip install 'transferdepth[hub]'",
            f"transferdepth predict room.jpg --checkpoint {repo_id} --out depth/   # 16-bit PNG, millimetres",
            "```", "", "```python", "from transferdepth import DepthEstimator", "",
            f'est = DepthEstimator.from_pretrained("{repo_id}")   # revision="..." pins a commit',
            'depth = est.predict("room.jpg")   # HxW float32, metres', "```", "",
            f'torch.hub: `torch.hub.load("<owner>/transferdepth", "depth_estimator", checkpoint="{repo_id}")`.', ""]


def model_card(checkpoint: str | os.PathLike, repo_id: str = "ORG/NAME", *, license: str | None = None,
               evaluations: list[str | os.PathLike] = ()) -> str:
    """The model card (README.md text) of a checkpoint folder (or training run folder). license: the Hub's
    license id (default "mit" for a model trained with transferdepth, "other" for an imported one, whose
    weights are another project's). Raises CheckpointError for a checkpoint that does not load."""
    facts = card_facts(checkpoint, evaluations)
    model = load_checkpoint(facts["checkpoint"])
    license = license or ("other" if facts["imported"] else "mit")
    cfg = facts["config"] | {"min_depth": model.min_depth, "max_depth": model.max_depth}
    what = "imported from DenseDepth" if facts["imported"] else "trained with transferdepth"
    body = [f"# {repo_id.split('/')[-1]}", "",
            f"Monocular depth estimation: one RGB image in, depth in metres out ({cfg['encoder']} encoder, "
            f"{what}; card written by transferdepth {__version__}).", "", "## Model", "",
            *_model_rows(cfg, sum(p.numel() for p in model.parameters())), "",
            *_provenance(facts), *_evaluation(facts["records"]), *_usage(repo_id)]
    return _header(facts, license) + "\n" + "\n".join(body)


def push_checkpoint(checkpoint: str | os.PathLike, repo_id: str, *, private: bool = False,
                    token: str | None = None, license: str | None = None,
                    evaluations: list[str | os.PathLike] = (), commit_message: str | None = None) -> str:
    """Upload a checkpoint folder (or a training run's) to the Hub model repo `repo_id` (created if missing;
    private with `private`) with a generated model card; returns the repo's URL. The checkpoint is loaded
    first: one that fails raises CheckpointError and nothing is uploaded. No token (argument, HF_TOKEN or a
    login) raises PushError saying how to log in."""
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError:
        raise PushError(f"push needs huggingface_hub: {HUB_EXTRA}") from None
    from transferdepth.inference.hub import parse_name

    if parse_name(repo_id) is None or "@" in repo_id:
        raise PushError(f"repo {repo_id!r}: expected a Hub model name ORG/NAME")
    card = model_card(checkpoint, repo_id, license=license, evaluations=evaluations)  # loads it: fails first
    token = token or get_token()
    if not token:
        raise PushError(f"no Hugging Face token: {LOGIN_HINT}")
    ckpt = run_folder(checkpoint)[0]
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="transferdepth-push-") as tmp:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copyfile(ckpt / name, Path(tmp) / name)  # the files themselves, not train_state.pt
        (Path(tmp) / CARD_FILE).write_text(card)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=tmp,
                              commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (transferdepth "
                                                               f"{__version__})")
        except Exception as e:  # huggingface_hub's HTTP errors (401, 403, conflicts, network): one line
            raise PushError(f"push to {repo_id} failed: {type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or [''])[0][:200]}") from None
    return f"https://huggingface.co/{repo_id}"


__all__ = ["CheckpointError", "PushError", "model_card", "push_checkpoint", "card_facts"]
