"""`transferdepth` command line: a thin layer over the Python API.

Each subcommand parses its arguments and calls one function; errors a user can fix are printed as one
line (`transferdepth: error: ...`) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


def _weights_list(args: argparse.Namespace) -> int:
    from transferdepth.models import available_encoders, get_spec
    from transferdepth.weights import cache_dir, cached

    records = {r["encoder"]: r for r in cached()}
    print(f"cache: {cache_dir()}")
    print(f"{'encoder':<20} {'cached':<7} {'size MB':>8}  source / where to get it")
    for name in available_encoders():
        spec = get_spec(name)
        rec = records.get(name)
        if rec:
            print(f"{name:<20} {'yes':<7} {rec['size_mb']:>8}  {rec['source']}")
        else:
            where = f"mirror {spec.mirror.package}" if spec.mirror else f"hub {spec.hub} (or --encoder-weights)"
            print(f"{name:<20} {'no':<7} {'':>8}  {where}")
    for name, rec in records.items():
        if name.startswith("timm:"):
            print(f"{name:<20} {'yes':<7} {rec['size_mb']:>8}  {rec['source']}")
    return 0


def _weights_fetch(args: argparse.Namespace) -> int:
    from transferdepth.weights import load_imagenet_state

    for name in args.names:
        _, origin = load_imagenet_state(name, args.file)
        print(f"{name}: {origin}")
    return 0


def _not_yet(what: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"transferdepth {what}: not yet available in this version")
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferdepth", description=__doc__.splitlines()[0])
    from transferdepth import __version__

    p.add_argument("--version", action="version", version=f"transferdepth {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("weights", help="ImageNet encoder weights: list the cache, fetch")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wl = wsub.add_parser("list", help="what is cached and where each encoder's weights come from")
    wl.set_defaults(func=_weights_list)
    wf = wsub.add_parser("fetch", help="fetch weights into the cache (hub, registry mirror or --file)")
    wf.add_argument("names", nargs="+", help="encoder names (see `weights list`)")
    wf.add_argument("--file", default=None, help="a checkpoint you downloaded yourself (.pth/.safetensors)")
    wf.set_defaults(func=_weights_fetch)

    for name in ("demo", "train", "evaluate", "compare", "predict", "export"):
        s = sub.add_parser(name, help=f"{name} (coming soon)")
        s.set_defaults(func=_not_yet(name))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from transferdepth.data.base import DatasetError
    from transferdepth.weights import WeightsUnavailable

    try:
        return int(args.func(args) or 0)
    except (UserError, WeightsUnavailable, DatasetError, ValueError, FileNotFoundError) as e:
        print(f"transferdepth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferdepth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
