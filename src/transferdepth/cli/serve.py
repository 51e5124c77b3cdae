"""`transferdepth serve --checkpoint DIR [--engine torch|compile|onnx|openvino|auto] [--host 127.0.0.1] [--port 8000]`.

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
                   help="checkpoint directory (or, with --engine onnx or openvino, a .onnx file from `transferdepth "
                        "export`; openvino also an IR .xml)")
    from transferdepth.deploy.engines import CHOICES  # imports no torch

    p.add_argument("--engine", choices=CHOICES, default="torch",
                   help="torch (DepthEstimator), compile (torch.compile), onnx (onnxruntime), openvino, openvino-bf16 "
                        "(CPU engines; a checkpoint is exported at start), or auto (the fastest here, measured once "
                        "and cached; docs/using.md \"Engines\")")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0..65535 (0: any free port; default 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"require this key on every endpoint but /healthz (default: ${API_KEY_ENV} if set)")
    p.add_argument("--device", default=None, help="torch engine: auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse larger images, 1..1,000,000,000 (default: 40,000,000)")
    p.add_argument("--max-body-mb", type=float, default=20.0,
                   help="refuse larger request bodies, MB, more than 0 and at most 4096 (default: 20)")
    p.add_argument("--queue-size", type=int, default=16,
                   help="depth requests admitted at once, 1..10000; more get 503 + Retry-After (default: 16)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a request body not received within this gets 408, more than 0 and at most 3600 s "
                        "(default: 30)")
    p.add_argument("--keep-alive", type=float, default=5.0, metavar="SECONDS",
                   help="close an idle connection after this, more than 0 and at most 3600 s (default: 5)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning",
                   help="one line per failed request at warning/error; tracebacks only at debug (default: warning)")
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

    check_numbers(args)
    from transferdepth.inference.hub import is_hub_name

    if not os.path.exists(args.checkpoint) and not is_hub_name(args.checkpoint):  # org/name: the Hub
        raise UserError(f"--checkpoint {args.checkpoint}: no such file or folder (nor a Hub name org/name)")
    check_port_free(args.host, args.port)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host):
        print(f"transferdepth: warning: serving on {args.host}, reachable from other machines; "
              + ("the API key is required on every endpoint but /healthz" if api_key else
                 f"anyone who can reach it can use it (set --api-key or ${API_KEY_ENV})"), file=sys.stderr)
    device = str(resolve_device(args.device)) if args.engine in ("torch", "auto") else None
    engine = load_engine(args.engine, args.checkpoint, device=device,
                         max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    settings = Settings(max_body_bytes=int(args.max_body_mb * 2**20), queue_size=args.queue_size,
                        api_key=api_key, body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive)
    app = create_app(engine, settings)
    _log_to_stderr(args.log_level)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"transferdepth serve: {engine.name} engine, {args.checkpoint}; http://{shown}:{args.port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=args.keep_alive)
    return 0


# every numeric flag: (name, attribute, lowest, highest, lowest allowed itself); checked before any work
RANGES = (("--port", "port", 0, 65535, True), ("--queue-size", "queue_size", 1, 10_000, True),
          ("--max-pixels", "max_pixels", 1, 1_000_000_000, True), ("--max-body-mb", "max_body_mb", 0, 4096, False),
          ("--body-timeout", "body_timeout", 0, 3600, False), ("--keep-alive", "keep_alive", 0, 3600, False))


def check_numbers(args: argparse.Namespace) -> None:
    """Each numeric flag within its documented range (RANGES; NaN and inf are outside every range)."""
    for flag, attr, lo, hi, closed in RANGES:
        value = getattr(args, attr)
        if value is None:
            continue
        if not ((lo <= value if closed else lo < value) and value <= hi):  # NaN fails every comparison
            low = f"{lo:,}" if closed else f"more than {lo:,}"
            raise UserError(f"{flag}: expected {low} to {hi:,}, got {value:g}")


def check_port_free(host: str, port: int) -> None:
    """UserError (exit 2, one line) when `host`:`port` cannot be bound, e.g. another server holds the port."""
    import socket

    if port == 0:
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind((host, port))
    except OSError as e:
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                        "is another server running there? choose another --port") from None


def _log_to_stderr(level: str) -> None:
    """The server's own log (`transferdepth.serve`: one line per failed request) to stderr at `level`."""
    import logging

    log = logging.getLogger("transferdepth.serve")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("transferdepth serve: %(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level.upper())
