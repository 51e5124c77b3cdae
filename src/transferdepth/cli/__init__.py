"""`transferdepth` command line: a thin layer over the Python API.

Each subcommand lives in `transferdepth/cli/<command>.py` with `add_parser(subparsers)`; it parses its
arguments and calls the API. Errors a user can fix are printed as one line (`transferdepth: error: ...`)
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "train", "evaluate", "compare", "predict", "export", "weights", "serve")


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferdepth", description=__doc__.splitlines()[0])
    from transferdepth import __version__

    p.add_argument("--version", action="version", version=f"transferdepth {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for name in COMMANDS:
        module = importlib.import_module(f"transferdepth.cli.{name}")
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from transferdepth.data.base import DatasetError
    from transferdepth.train import TrainingDiverged
    from transferdepth.weights import WeightsUnavailable

    try:
        return int(args.func(args) or 0)
    except (UserError, WeightsUnavailable, DatasetError, TrainingDiverged, ValueError, FileNotFoundError,
            PermissionError) as e:
        print(f"transferdepth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferdepth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
