"""`transferdepth import densedepth FILE.h5 --out DIR --dataset nyu|kitti [--max-depth M]`.

Converts DenseDepth's released Keras model (nyu.h5 / kitti.h5, downloaded by the user) into an ordinary
checkpoint folder (model.safetensors + config.json) that predict, evaluate, export and the API read.
"""

from __future__ import annotations

import argparse

from transferdepth.cli import COMMANDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help=COMMANDS["import"],
                       description=__doc__.splitlines()[0])
    isub = p.add_subparsers(dest="import_format", required=True)
    d = isub.add_parser("densedepth", help="DenseDepth's released Keras model (nyu.h5, kitti.h5)",
                        description="Read a DenseDepth Keras HDF5 with h5py (no TensorFlow needed) and write a "
                                    "checkpoint folder. The depth range is not in the file: --dataset sets it.")
    d.add_argument("file", help="the .h5 file (e.g. nyu.h5 from DenseDepth's README)")
    d.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors + config.json); "
                   "a new or empty folder, or one holding a checkpoint with --overwrite")
    d.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint in --out (a folder holding other files is never written into)")
    d.add_argument("--dataset", required=True, choices=("nyu", "kitti"),
                   help="what the model was trained on: nyu = 0.1-10 m, kitti = 0.1-80 m")
    d.add_argument("--max-depth", type=float, default=None,
                   help="override the depth range's maximum (metres; finite, above the minimum)")
    d.add_argument("--min-depth", type=float, default=None,
                   help="override the depth range's minimum (metres; finite, > 0)")
    d.set_defaults(func=_densedepth)


def _densedepth(args: argparse.Namespace) -> int:
    from transferdepth.importers import import_densedepth
    from transferdepth.importers.densedepth import DATASET_RANGES
    from transferdepth.inference.checkpoint import check_checkpoint_out, save_checkpoint
    from transferdepth.recipe import check_depth_range
    from transferdepth.utils import atomic_folder

    lo, hi = DATASET_RANGES[args.dataset]
    check_depth_range(lo if args.min_depth is None else args.min_depth,
                      hi if args.max_depth is None else args.max_depth, "--min-depth/--max-depth")
    check_checkpoint_out(args.out, "--out", args.overwrite)  # before the (slow) import: nothing is read yet
    model, meta = import_densedepth(args.file, dataset=args.dataset, min_depth=args.min_depth,
                                    max_depth=args.max_depth)
    with atomic_folder(args.out) as tmp:  # the old checkpoint stays whole until the new one is complete
        save_checkpoint(model, tmp, meta=meta)
    out = args.out
    src = meta["imported_from"]
    print(f"wrote {out}: densenet169, decoder width {model.decoder_width:g} ({src['decoder_filters']} filters), "
          f"LeakyReLU after convA: {'yes' if model.decoder_act_a else 'no'}, "
          f"depth {model.min_depth:g}-{model.max_depth:g} m, input RGB/255; source sha256 {src['sha256']}")
    return 0
