"""Figures and pages: loss curves, prediction grids, a point-cloud view, HTML tables.

All figures are written atomically as PNG (matplotlib, Agg backend); depth colour scales are in metres.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transferdepth.evaluation.metrics import METRIC_KEYS, RMSE_POOLING  # noqa: E402
from transferdepth.utils import atomic_write  # noqa: E402

CMAP = "plasma"


def _save_loss_plot(fig: Any, ax: Any, title: str, path: str | os.PathLike) -> Path:
    """Label a loss-curve axis (step, the DenseDepth loss in DepthNorm), add the legend, save."""
    ax.set_xlabel("step")
    ax.set_ylabel("loss (0.1 L1 + L1 grad + (1-SSIM)/2, DepthNorm)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_loss_curves(histories: dict[str, list[dict[str, Any]]], path: str | os.PathLike,
                     title: str = "Training loss") -> Path:
    """One line per run: total loss against step (history.jsonl records), plus a smoothed trend."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, recs in histories.items():
        if not recs:
            continue
        steps = np.array([r["step"] for r in recs])
        loss = np.array([r["loss"] for r in recs])
        line, = ax.plot(steps, loss, alpha=0.35, linewidth=1)
        k = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color=line.get_color(), linewidth=2, label=label)
    return _save_loss_plot(fig, ax, title, path)


def plot_prediction_grid(rgbs: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                         preds: dict[str, Sequence[np.ndarray]], path: str | os.PathLike,
                         valids: Sequence[np.ndarray] | None = None, vmax: float | None = None) -> Path:
    """Rows = images; columns = RGB, ground truth, then each model's prediction (metres, shared scale)."""
    n, cols = len(rgbs), 2 + len(preds)
    if vmax is None:
        vals = np.concatenate([g[g > 0].ravel() for g in gts]) if gts else np.array([10.0])
        vmax = float(np.percentile(vals, 99)) if vals.size else 10.0
    fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.1 * n + 0.4), squeeze=False)
    titles = ["RGB", "ground truth", *preds.keys()]
    for i in range(n):
        gt = np.where(valids[i], gts[i], np.nan) if valids is not None else gts[i]
        row = [rgbs[i], gt, *(p[i] for p in preds.values())]
        for j, img in enumerate(row):
            ax = axes[i, j]
            if j == 0:
                ax.imshow(img)
            else:
                im = ax.imshow(img, cmap=CMAP, vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="depth (m)")
    return _save(fig, path)


def render_point_cloud(xyz: np.ndarray, colors: np.ndarray, path: str | os.PathLike, max_points: int = 20000,
                       title: str = "point cloud (m)") -> Path:
    """A 3D view of camera-frame points (x right, y down, z forward; metres), coloured (uint8 RGB)."""
    step = max(1, len(xyz) // max_points)
    x, y, z = xyz[::step].T
    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(x, z, -y, c=colors[::step] / 255.0, s=1.5, depthshade=False)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z, forward (m)")
    ax.set_zlabel("up (m)")
    ax.view_init(elev=20, azim=-60)
    ax.set_title(title)
    return _save(fig, path)


# --- tables: the one formatter of metric tables (Markdown for the CLI and comparison.md, HTML for pages) ---

METRIC_COLUMNS = METRIC_KEYS  # one list of metric names: `transferdepth.evaluation.metrics.METRIC_KEYS`
METRIC_LABELS = {"d1": "δ1 ↑", "d2": "δ2 ↑", "d3": "δ3 ↑", "abs_rel": "AbsRel ↓", "sq_rel": "SqRel ↓",
                 "rmse": "RMSE ↓", "rmse_log": "RMSElog ↓", "log10": "log10 ↓", "silog": "SILog ↓",
                 "rmse_per_image": "RMSE/img ↓"}
_LEFT = ("protocol", "encoder", "data", "how", "device")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _default_columns(records: list[dict[str, Any]]) -> list[str]:
    """Extra keys first (e.g. encoder), then protocol, n_images and the metrics."""
    fixed = ("protocol", "n_images", *METRIC_KEYS)
    return [*(k for k in dict.fromkeys(k for r in records for k in r) if k not in fixed), *fixed]


def rmse_note(records: list[dict[str, Any]]) -> str:
    """Which RMSE the table's `rmse` column is: from each record's `protocol` (or its `how` text)."""
    kinds = []
    for r in records:
        text = f"{r.get('protocol') or ''} {r.get('how') or ''}"  # e.g. training validation's "val: eigen ..."
        proto = (r.get("protocol") if r.get("protocol") in RMSE_POOLING
                 else next((p for p in RMSE_POOLING if f"protocol {p}" in text or f": {p} " in text), None))
        kinds.append(f"{proto}: {RMSE_POOLING[proto]}" if proto in RMSE_POOLING else "unknown protocol")
    return ("RMSE = " + "; ".join(dict.fromkeys(kinds)) +
            ". RMSE/img = mean of per-image RMSE (DenseDepth before fdcef58, the paper's).")


def table_rows(records: list[dict[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    return [[_fmt(r.get(c)) for c in columns] for r in records]


def markdown_table(records: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Markdown table of metric records (default columns: extra keys, protocol, n_images, METRIC_KEYS),
    followed by a line naming which RMSE it shows (when it shows one)."""
    if not records and columns is None:
        raise ValueError("markdown_table: no records and no columns given")
    cols = list(columns) if columns is not None else _default_columns(records)
    lines = ["| " + " | ".join(METRIC_LABELS.get(c, c) for c in cols) + " |",
             "|" + "|".join("---" if c in _LEFT else "---:" for c in cols) + "|"]
    # a cell's own "|" (grid cells are named ENCODER|key=value) is escaped, or it would split the column
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(records, cols)]
    text = "\n".join(lines) + "\n"
    return text + "\n" + rmse_note(records) + "\n" if "rmse" in cols and records else text


def html_table(records: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The same table as `markdown_table`, as HTML (the RMSE note as a caption)."""
    if not records and columns is None:
        raise ValueError("html_table: no records and no columns given")
    cols = list(columns) if columns is not None else _default_columns(records)
    head = "".join(f"<th>{html.escape(METRIC_LABELS.get(c, c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                   for row in table_rows(records, cols))
    caption = f"<caption>{html.escape(rmse_note(records))}</caption>" if "rmse" in cols and records else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page; sections are (heading, HTML body); images referenced by relative path."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f4f4f4}img{max-width:100%}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def plot_loss_bands(histories: dict[str, list[list[dict[str, Any]]]], path: str | os.PathLike,
                    title: str = "Training loss (mean over seeds, band = ±1 sd)") -> Path:
    """Per variant, several runs (seeds): the mean loss over runs at each logged step they all reached, a
    ±1 sd band around it (the spread over seeds), and a smoothed trend of the mean."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in histories.items():
        curves = [{r["step"]: r["loss"] for r in recs} for recs in runs if recs]
        if not curves:
            continue
        steps = np.array(sorted(set.intersection(*(set(c) for c in curves))))
        if steps.size == 0:
            continue
        loss = np.array([[c[s] for s in steps] for c in curves])
        mean = loss.mean(axis=0)
        sd = loss.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
        k = max(1, len(mean) // 20)
        smooth = np.convolve(mean, np.ones(k) / k, mode="valid")
        line, = ax.plot(steps[k - 1:], smooth, linewidth=2, label=f"{label} (n={len(curves)})")
        ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    return _save_loss_plot(fig, ax, title, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, quality) no other point beats: none has cost <= and quality >= with one
    of them strictly better. Lower cost and higher quality are better."""
    front = []
    for i, (c, q) in enumerate(points):
        if not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for j, (c2, q2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot_pareto(rows: list[dict[str, Any]], path: str | os.PathLike, quality: str = "d1",
                costs: Sequence[tuple[str, str]] = (("latency_ms", "CPU latency (ms)"), ("params_M", "parameters (M)")),
                label: str = "encoder") -> Path:
    """`quality` (higher is better) against each cost, one panel per cost; the Pareto-optimal cells are joined
    and their names written, the others are grey."""
    fig, axes = plt.subplots(1, len(costs), figsize=(6 * len(costs), 4.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], costs):
        pts = [(float(r[key]), float(r[quality])) for r in rows]
        front = sorted(pareto_front(pts), key=lambda i: pts[i][0])
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="0.6", zorder=2)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "o-", color="C0", zorder=3)
        for i, r in enumerate(rows):
            ax.annotate(str(r[label]), pts[i], fontsize=7, xytext=(3, 3), textcoords="offset points",
                        color="black" if i in front else "0.45")
        ax.set_xlabel(title)
        ax.set_ylabel(quality)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{quality} against cost (blue: Pareto front)")
    return _save(fig, path)
