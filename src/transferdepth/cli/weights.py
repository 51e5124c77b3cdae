"""`transferdepth weights list|fetch`: the ImageNet weights cache."""

from __future__ import annotations

import argparse

from transferdepth.cli import COMMANDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("weights", help=COMMANDS["weights"])
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wl = wsub.add_parser("list", help="what is cached and where each encoder's weights come from")
    wl.set_defaults(func=_weights_list)
    wf = wsub.add_parser("fetch", help="fetch weights into the cache (hub, registry mirror or --file)")
    wf.add_argument("names", nargs="+", help="encoder names (see `weights list`)")
    wf.add_argument("--file", default=None, help="a checkpoint you downloaded yourself (.pth/.safetensors)")
    wf.set_defaults(func=_weights_fetch)


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
