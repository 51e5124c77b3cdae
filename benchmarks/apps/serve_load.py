"""Load test for `transferdepth serve`: a bounded number of requests from concurrent clients on 127.0.0.1.

    python benchmarks/apps/serve_load.py [--engine torch|onnx] [--requests 300] [--clients 8] [--checkpoint DIR]

Starts `transferdepth serve` as a subprocess (MobileNetV2, decoder width 0.5; random weights unless
--checkpoint: speed does not depend on them), sends --requests POST /v1/depth (default options and format,
480x640 JPEGs: 7-Scenes frames from ../shared/data/rgbd when present, else generated) from --clients
threads, and prints a Markdown row: p50/p95/p99 latency, requests/s, errors (503s are counted apart and
retried after Retry-After: they are the queue's deliberate answer), and the server's RSS after a warm-up
and at the end. Then the same images through `DepthEstimator.predict` in this process, one after the other,
for the throughput ratio. Prints the load average: on a shared machine the numbers are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FRAMES = REPO.parent / "shared" / "data" / "rgbd" / "7scenes-redkitchen"


def images(n: int, folder: Path) -> list[Path]:
    """Up to n 480x640 JPEG files: 7-Scenes colour frames, or generated ones in `folder`."""
    real = sorted(FRAMES.glob("frame-*.color.jpg"))[:n] if FRAMES.is_dir() else []
    if real:
        return real
    rng = np.random.default_rng(0)
    out = []
    for i in range(min(n, 20)):
        yy, xx = np.mgrid[0:480, 0:640]
        rgb = np.stack([(xx + 7 * i) % 256, (yy * 2) % 256, rng.integers(0, 256, (480, 640))], 2).astype(np.uint8)
        path = folder / f"gen-{i:02d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        out.append(path)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: bytes, timeout: float = 600) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/depth", body=body, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def load(port: int, bodies: list[bytes], requests: int, clients: int) -> dict:
    lock = threading.Lock()
    next_i = [0]
    latencies: list[float] = []
    errors: list[str] = []
    busy = [0]

    def client() -> None:
        while True:
            with lock:
                i = next_i[0]
                if i >= requests:
                    return
                next_i[0] += 1
            body = bodies[i % len(bodies)]
            while True:
                t = time.perf_counter()
                try:
                    status, headers, raw = post(port, body)
                except OSError as e:
                    status, headers, raw = -1, {}, str(e).encode()
                if status == 503:
                    with lock:
                        busy[0] += 1
                    time.sleep(float(headers.get("retry-after", "1")))
                    continue
                with lock:
                    if status == 200:
                        latencies.append((time.perf_counter() - t) * 1e3)
                    else:
                        errors.append(f"{status}: {raw[:200]!r}")
                break

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "busy": busy[0], "wall_s": wall}


def baseline(est, files: list[Path], start: int, n: int) -> float:
    """Seconds for images start..start+n through `DepthEstimator.predict`, one after the other."""
    t = time.perf_counter()
    for i in range(start, start + n):
        est.predict(files[i % len(files)])
    return time.perf_counter() - t


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--checkpoint", default=None, help="default: MobileNetV2 width 0.5, random weights")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queue-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=4, help="requests before the RSS 'before' reading")
    ap.add_argument("--baseline", type=int, default=None,
                    help="images through DepthEstimator.predict (default: as many as --requests)")
    args = ap.parse_args()

    from transferdepth.api.estimator import DepthEstimator
    from transferdepth.inference.checkpoint import save_checkpoint
    from transferdepth.weights.build import build_model

    load_avg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; load average (1/5/15 min) at start: {load_avg}")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = str(save_checkpoint(build_model("mobilenetv2", 0.5, pretrained=False), Path(tmp) / "ckpt"))
        files = images(args.requests, Path(tmp))
        bodies = [f.read_bytes() for f in files]
        print(f"{len(files)} distinct 480x640 JPEGs ({'7-Scenes' if FRAMES.is_dir() else 'generated'}), "
              f"{args.requests} requests from {args.clients} clients, engine {args.engine}, queue {args.queue_size}")

        n_base = args.baseline or args.requests
        est = DepthEstimator.from_pretrained(ckpt, device="cpu")
        est.predict(files[0])  # warm-up
        base_s = [baseline(est, files, 0, n_base // 2)]  # half before the server runs, half after (drift)
        del est

        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, "-m", "transferdepth", "serve", "--checkpoint", ckpt,
                                 "--engine", args.engine, "--port", str(port), "--device", "cpu",
                                 "--queue-size", str(args.queue_size)], env=env)
        try:
            wait_ready(proc, port)
            for i in range(args.warmup):
                assert post(port, bodies[i % len(bodies)])[0] == 200
            rss_before = rss_mb(proc.pid)
            result = load(port, bodies, args.requests, args.clients)
            rss_after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)

        est = DepthEstimator.from_pretrained(ckpt, device="cpu")
        est.predict(files[0])
        base_s.append(baseline(est, files, n_base // 2, n_base - n_base // 2))
        base_ips = n_base / sum(base_s)

    lat = result["latencies"]
    rps = len(lat) / result["wall_s"]
    growth = 100 * (rss_after - rss_before) / rss_before
    print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| engine | ok | errors | 503 (retried) | p50 ms | p95 ms | p99 ms | req/s | predict() img/s | "
          "ratio | RSS before MB | RSS after MB | RSS growth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.engine} | {len(lat)} | {len(result['errors'])} | {result['busy']} | {percentile(lat, 50):.0f} | "
          f"{percentile(lat, 95):.0f} | {percentile(lat, 99):.0f} | {rps:.2f} | {base_ips:.2f} | "
          f"{rps / base_ips:.2f} | {rss_before:.0f} | {rss_after:.0f} | {growth:+.1f}% |")
    for e in result["errors"][:5]:
        print(f"error: {e}")
    if lat:
        print(f"\nmean latency {statistics.mean(lat):.0f} ms over {len(lat)} requests in {result['wall_s']:.1f} s; "
              f"baseline: {n_base} images through DepthEstimator.predict (default options, JPEG decoding included), "
              f"{n_base // 2} before the server ran ({(n_base // 2) / base_s[0]:.2f} img/s), the rest after "
              f"({(n_base - n_base // 2) / base_s[1]:.2f} img/s)")


if __name__ == "__main__":
    main()
