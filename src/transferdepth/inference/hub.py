"""Checkpoints by name: `org/name` (or `org/name@revision`) on the Hugging Face Hub -> a local folder.

`resolve_checkpoint` is the one place a checkpoint name becomes a folder: `checkpoint.load_checkpoint` and
`read_config` (so every command's `--checkpoint`, `--init-checkpoint` and `DepthEstimator.from_pretrained`)
and the ONNX engine's checkpoint case go through it. A local path that exists always wins; otherwise a name
of the form `org/name` is fetched with `huggingface_hub.snapshot_download`, only the files a checkpoint holds
(`CHECKPOINT_FILES`), into the Hub's own cache (`HF_HUB_CACHE` / `HF_HOME`), which also serves it offline
(`HF_HUB_OFFLINE=1`). huggingface_hub is the optional extra `transferdepth[hub]`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# The files of a checkpoint folder (inference/checkpoint.py: WEIGHTS_FILE, CONFIG_FILE) and its model card.
CHECKPOINT_FILES = ("model.safetensors", "config.json", "README.md")
FORMAT_PREFIX = "transferdepth-model/"  # config.json "format" of our checkpoints (checkpoint.FORMAT)
HUB_EXTRA = "pip install 'transferdepth[hub]'"
# org/name as the Hub allows it (letters, digits, - _ .), optionally @revision (branch, tag or commit)
_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[^\s@]+))?$")


class HubError(ValueError):
    """A checkpoint name that is neither a local folder nor a usable Hub model (one line)."""


def parse_name(text: str) -> tuple[str, str | None] | None:
    """`org/name[@rev]` -> (repo id, revision or None); None when `text` is not such a name."""
    m = _NAME.match(str(text))
    if m is None or ".." in m["repo"] or "--" in m["repo"] or m["repo"].endswith((".", "-")):
        return None
    return m["repo"], m["rev"]


def is_hub_name(path: str | os.PathLike) -> bool:
    """True when `path` does not exist locally and reads as `org/name[@rev]` (so it is looked up on the Hub)."""
    return not Path(path).exists() and parse_name(os.fspath(path)) is not None


def resolve_checkpoint(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder (or file) for a checkpoint path or Hub name.

    An existing local path is returned as it is (it wins over a Hub model of the same name). `org/name`,
    `org/name@rev` or `org/name` with `revision` (branch, tag or commit) is downloaded (or found in the Hub
    cache; offline with HF_HUB_OFFLINE=1) and its snapshot folder returned. Raises HubError (one line) for a
    name that is neither, saying both tries; for a Hub repo without config.json, or whose config.json is not a
    transferdepth checkpoint's; and when huggingface_hub is not installed.
    """
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise HubError(f"{path}: a local folder has no revisions (revision={revision!r} is for Hub names)")
        return path
    parsed = parse_name(os.fspath(name_or_path))
    if parsed is None:
        raise HubError(f"{path}: no such checkpoint (not a folder here, nor a Hub name of the form org/name)")
    repo, rev = parsed
    if rev is not None and revision is not None and rev != revision:
        raise HubError(f"{name_or_path}: two revisions given ({rev!r} in the name, revision={revision!r})")
    rev = rev or revision
    where = f"{repo}@{rev}" if rev else repo
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HubError(f"{name_or_path}: no such folder here; to load {repo} from the Hugging Face Hub install "
                       f"huggingface_hub: {HUB_EXTRA}") from None
    try:
        folder = Path(snapshot_download(repo, revision=rev, allow_patterns=list(CHECKPOINT_FILES)))
    except Exception as e:  # huggingface_hub's own errors (not found, offline and not cached, HTTP, ...)
        raise HubError(f"{name_or_path}: no such folder here, and the Hugging Face Hub model {where} could not "
                       f"be loaded: {_reason(e)}") from None
    _check_snapshot(folder, where)
    return folder


def _reason(e: Exception) -> str:
    """A Hub error in one line, with what to do for the usual cases."""
    from huggingface_hub import constants

    name = type(e).__name__
    if constants.HF_HUB_OFFLINE:
        return f"offline (HF_HUB_OFFLINE=1) and not in the Hub cache {constants.HF_HUB_CACHE} ({name})"
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"no such model, or a private one you have no access to ({name}; log in: `hf auth login` or HF_TOKEN)"
    if name == "RevisionNotFoundError":
        return "no such revision (branch, tag or commit)"
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{name}: {first}"


def _check_snapshot(folder: Path, where: str) -> None:
    """A downloaded snapshot must hold our config.json (and the weights) to be a checkpoint."""
    cfg_path = folder / CHECKPOINT_FILES[1]
    if not cfg_path.is_file():
        raise HubError(f"{where}: the Hub model has no {CHECKPOINT_FILES[1]}; not a transferdepth checkpoint")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise HubError(f"{where}: the Hub model's {CHECKPOINT_FILES[1]} is not valid JSON ({e})") from None
    fmt = cfg.get("format") if isinstance(cfg, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(FORMAT_PREFIX):
        found = (f"format {fmt!r}" if fmt is not None else
                 f"model_type {cfg.get('model_type')!r}" if isinstance(cfg, dict) and "model_type" in cfg else
                 "no 'format' field")
        raise HubError(f"{where}: the Hub model's {CHECKPOINT_FILES[1]} is not a transferdepth checkpoint's "
                       f"({found}; expected format {FORMAT_PREFIX}N)")
    if not (folder / CHECKPOINT_FILES[0]).is_file():
        raise HubError(f"{where}: the Hub model has no {CHECKPOINT_FILES[0]}")
