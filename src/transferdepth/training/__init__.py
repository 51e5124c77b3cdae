"""One training loop for a single process and for `torchrun` (DDP), torchvision-references style.

    train(cfg, out_dir)              # python API
    transferdepth train --config c.yaml --out runs/x [--resume | --overwrite] [--batch-size 8 ...]
    torchrun --nproc_per_node 4 -m transferdepth train ...

Modules: `config` (TrainConfig: every training key and its check; presets from `recipe`), `losses` (the
DenseDepth loss), `loop` (set-up and epochs), `step` (one optimizer step: AMP, clipping, NaN guard), `state` (out-dir
checks, checkpoints, resume, RNG), `data` (loaders, up-front data checks), `validation`, `setup` (DDP, device).

Data order: a DistributedSampler (also with one process) seeded by `cfg.seed`, reshuffled per epoch
(`shuffle: epoch`) or one seeded order every epoch (`shuffle: fixed`); augmentation depends only on (seed,
epoch, index). With B images per process and P processes, a step sees the same P*B images as one process with
batch P*B. A resumed run skips the batches already seen in its epoch, restores model, optimizer, grad scaler
and RNG states, and so continues exactly.

Outputs in `out_dir` (rank 0 only): `run.json` (resolved config, recipe, versions, git commit, seed,
`train_data_label`: the name given to a dataset object, else null),
`config.yaml`, `history.jsonl` (one line per logged step; cut back to the checkpoint on resume), `tb/`
(TensorBoard), `checkpoint/` (`model.safetensors`, `config.json`, `train_state.pt`; replaced as a whole, the
previous one kept as `checkpoint.old/`), `metrics.json` (last validation).

May import: evaluation (metrics), inference (the one inference path, checkpoints), models, data, weights
and the root conventions.
"""

from transferdepth.training.data import TENSOR_KEYS
from transferdepth.training.loop import TrainResult, build, resolve_config, train
from transferdepth.training.state import STATE_FILE, CheckpointWriteError, prepare_out_dir, run_info
from transferdepth.training.step import TrainingDiverged, TrainStep, make_optimizer, set_memory_format
from transferdepth.training.validation import validate

__all__ = ["STATE_FILE", "TENSOR_KEYS", "CheckpointWriteError", "TrainResult", "TrainStep", "TrainingDiverged",
           "build", "make_optimizer", "prepare_out_dir", "resolve_config", "run_info", "set_memory_format", "train", "validate"]
