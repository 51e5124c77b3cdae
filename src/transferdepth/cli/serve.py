"""`transferdepth serve --checkpoint DIR [--engine torch|onnx] [--host 127.0.0.1] [--port 8000]`.

An HTTP server for depth (metres): POST /v1/depth, GET /v1/model, GET /healthz, a page at / and the
OpenAPI docs at /docs. Needs the optional extra: pip install 'transferdepth[serve]'.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from transferdepth.cli import COMMANDS, UserError

API_KEY_ENV = "TRANSFERDEPTH_API_KEY"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help=COMMANDS["serve"],
                       description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory (or, with --engine onnx, a .onnx file from `transferdepth export`)")
    p.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                   help="torch (DepthEstimator) or onnx (onnxruntime; the checkpoint is exported at start)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help=f"require this key on every endpoint but /healthz (default: ${API_KEY_ENV} if set)")
    p.add_argument("--device", default=None, help="torch engine: auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger images (default: 40,000,000)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="refuse larger request bodies (default: 20)")
    p.add_argument("--queue-size", type=int, default=16,
                   help="depth requests admitted at once; more get 503 + Retry-After (default: 16)")
    p.set_defaults(func=_run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from transferdepth.apps.serve.app import Settings, create_app
    except ImportError as e:
        raise UserError(f"serve needs the optional [serve] extra ({e.name} is missing): "
                        "pip install 'transferdepth[serve]'") from None
    from transferdepth.api.estimator import DEFAULT_MAX_PIXELS
    from transferdepth.apps.serve.engine import load_engine
    from transferdepth.utils import resolve_device

    for option, value in (("--queue-size", args.queue_size), ("--max-pixels", args.max_pixels or 1),
                          ("--max-body-mb", args.max_body_mb)):
        if value <= 0:
            raise UserError(f"{option} must be positive, got {value}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    if not os.path.exists(args.checkpoint):
        raise UserError(f"--checkpoint {args.checkpoint}: no such file or folder")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host):
        print(f"transferdepth: warning: serving on {args.host}, reachable from other machines; "
              + ("the API key is required on every endpoint but /healthz" if api_key else
                 f"anyone who can reach it can use it (set --api-key or ${API_KEY_ENV})"), file=sys.stderr)
    device = str(resolve_device(args.device)) if args.engine == "torch" else None
    engine = load_engine(args.engine, args.checkpoint, device=device,
                         max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    settings = Settings(max_body_bytes=int(args.max_body_mb * 2**20), queue_size=args.queue_size,
                        api_key=api_key)
    app = create_app(engine, settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"transferdepth serve: {args.engine} engine, {args.checkpoint}; http://{shown}:{args.port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
