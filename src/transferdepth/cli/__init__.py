"""`transferdepth` command line: a thin layer over the Python API.

Each subcommand lives in `transferdepth/cli/<command>.py` with `add_parser(subparsers)`; it parses its
arguments and calls the API. Errors a user can fix are printed as one line (`transferdepth: error: ...`)
with exit status 2, never as a traceback; exit status 1 means only "some inputs failed" (predict); a bug
prints its traceback and exits 3.

May import every stage; nothing imports `cli` (only `__main__`). `--help` and `--version` import no torch:
a command module is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from transferdepth.utils import PROGRESS_MODES, set_progress, tune_cpu_allocator

# Exit status (README "Errors and exit codes"): 0 done; 1 only `predict`'s "some inputs failed" (the others
# were written); 2 a usage or input error, one line, nothing done; 3 a bug (traceback); 130 Ctrl-C.
EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# name -> one-line help, in `transferdepth --help` order. `transferdepth --help` / `--version` list these
# without importing any command module (so without torch); tests/cli/test_layering.py checks each module's own
# help line is the same.
COMMANDS = {
    "demo": "offline demo: fine-tune MobileNetV2 on procedural rooms, write a report",
    "train": "train a depth network (single process or under torchrun)",
    "evaluate": "evaluate a checkpoint under a named protocol (densedepth | eigen | kitti)",
    "compare": "train/evaluate several encoders under one config; write the comparison",
    "predict": "predict depth (metres) for images: 16-bit PNG mm, .npy, colour, PLY",
    "export": "export a checkpoint to ONNX, TorchScript or OpenVINO IR (dynamic height and width)",
    "weights": "ImageNet encoder weights: list the cache, fetch",
    "import": "convert another project's trained model into a checkpoint",
    "serve": "serve a checkpoint: HTTP API and a web page with a 3D view",
    "push": "share a checkpoint on the Hugging Face Hub, with a generated model card",
    "fuse": "fuse a posed RGB-D sequence's depth (model or sensor) into one mesh (TSDF)",
    "evaluate-3d": "compare a mesh with a reference: accuracy, completeness, chamfer, F-score",
}
# Commands whose module name differs from the command (`import` is a Python keyword).
MODULES = {"import": "import_", "evaluate-3d": "evaluate_3d"}


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The argument parser. command: "*" = every subcommand in full; a name = that one in full and the
    others as one-line entries; None = one-line entries only (no command module imported)."""
    p = argparse.ArgumentParser(prog="transferdepth", description=__doc__.splitlines()[0])
    from transferdepth._version import __version__

    p.add_argument("--version", action="version", version=f"transferdepth {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, help_line in COMMANDS.items():
        if command in ("*", name):
            module = importlib.import_module(f"transferdepth.cli.{MODULES.get(name, name)}")
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
    return p


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    """--progress auto|bar|plain|none for a command with long work (read by `main`: `utils.set_progress`)."""
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="auto (default): a redrawn bar on a terminal, else a plain line every 10%% or 30 s (logs); "
                        "bar; plain; none")


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """'HEIGHTxWIDTH' (two positive integers) -> (H, W); None stays None. Errors name `option`."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{option} must be HEIGHTxWIDTH, e.g. 240x320; got '{text}'") from None
    if h < 1 or w < 1:
        raise UserError(f"{option} must be two positive integers HEIGHTxWIDTH, e.g. 240x320; got '{text}'")
    return h, w


# Errors of the user's input or environment (exit 2, one line). ValueError covers ImageError,
# CheckpointError, DatasetError, ConfigError. WeightsUnavailable and TrainingDiverged are RuntimeErrors in
# modules that import torch (CheckpointWriteError: disk full, the previous checkpoint intact): matched by
# class name (within this package) so that importing the CLI
# imports neither.
USER_ERRORS = (UserError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError)
USER_ERROR_NAMES = ("WeightsUnavailable", "TrainingDiverged", "CheckpointWriteError")


def is_user_error(e: BaseException) -> bool:
    """True for an error the user can fix (printed as one line, exit 2); False for a bug (traceback)."""
    return isinstance(e, USER_ERRORS) or any(
        c.__name__ in USER_ERROR_NAMES and c.__module__.startswith("transferdepth.") for c in type(e).__mro__)


def _command(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first word not starting with '-'), if it is one of COMMANDS."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))  # only the command asked for is imported
    args = parser.parse_args(argv)
    tune_cpu_allocator()  # reuse freed tensor memory (glibc); TRANSFERDEPTH_MALLOC=0 leaves it alone
    set_progress(getattr(args, "progress", None) or "auto")  # --progress (train/compare: their config key)
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if not is_user_error(e):  # a bug: the traceback is what a bug report needs; exit 3, not 1 or 2
            traceback.print_exc()
            print(f"transferdepth: internal error ({type(e).__name__}); please report it with the traceback "
                  "above", file=sys.stderr)
            return EXIT_BUG
        print(f"transferdepth: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("transferdepth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
