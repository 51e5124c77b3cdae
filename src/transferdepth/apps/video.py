"""Depth for videos: decode frames (PyAV, extra `video`), predict in batches, write depth video, npz, PNGs.

For an input `<stem>.<ext>` (any container FFmpeg reads) the outputs beside the stem `out/<stem>` are:

- `<stem>.depth.mp4`: colourised depth (H.264, same frame rate and frame count) with one colour scale for
  the whole clip (`range_m`, or the clip's own min..max depth), so colours do not flicker; audio copied.
- `<stem>.depth.npz`: `depth` float16 metres (frames x H x W), `fps` (scalar), `timestamps` (seconds, each
  frame's presentation time), `intrinsics` (3x3, pixels), `intrinsics_source` (text). float16 keeps about
  3 significant digits: the storage error is at most depth * 2**-11 (0.5 mm at 1 m, 4.9 mm at 10 m).
- `<stem>.depth_mm/<frame:06d>.png` (with png16): 16-bit PNG per frame, millimetres (predict.write_png16),
  written into a temporary folder renamed into place after the last frame (a failed clip leaves none).
- `<stem>.stereo.mp4` (with stereo): left/right views rendered by `stereo.py`, audio copied.

The colour video is encoded in a second pass over the float16 depth (kept in a temporary file beside the
outputs), so memory holds one batch of frames whatever the clip's length. Frames whose width or height is
odd are padded by one replicated column / row for H.264's 4:2:0 chroma. A phone video's rotation (the
display matrix side data, or an old-style `rotate` tag) is applied to every frame before prediction
(`orientation`, `orient`), so every output is upright, as a player shows the clip; rotations that are not
a multiple of 90 degrees are left as stored (with a note).

With `temporal` (a strength in [0, 0.95]) each frame's depth passes through `temporal.ScaleStabiliser`
(per-frame scale alignment to a running reference) before it is written: steadier depth over time.

Any object with `predict_rgb(list of uint8 HxWx3) -> list of HxW float32 metres` can predict (a
`DepthEstimator`, or the ONNX engine `DepthEstimator.from_onnx`, as `predict --engine onnx` passes).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transferdepth.api.estimator import batch_size_for
from transferdepth.api.predict import Failure, colorize, write_png16
from transferdepth.apps.temporal import ScaleStabiliser, check_strength
from transferdepth.geometry.camera import Intrinsics, IntrinsicsError, IntrinsicsSpec, resolve
from transferdepth.geometry.stereo import StereoOptions, convergence_for, stereo_image
from transferdepth.utils import atomic_folder, atomic_write

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv")
# audio codecs that go into an MP4 as they are; others are left out (with a note)
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


class VideoError(ValueError):
    """A video that cannot be used; `str()` is `"<file>: <reason>"`."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class FramePredictor(Protocol):
    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class VideoOptions:
    """What to write per video. range_m: fixed colour range (metres), None = the clip's own min..max."""

    cmap: str = "plasma"
    range_m: tuple[float, float] | None = None
    png16: bool = False
    stereo: StereoOptions | None = None
    intrinsics: IntrinsicsSpec | tuple[float, float, float, float] | None = None
    batch_size: int | None = None  # frames per forward pass; None: by the predictor's device (1 CPU, 4 GPU)
    temporal: float | None = None  # ScaleStabiliser strength in [0, 0.95]; None = per-frame depth as predicted

    def __post_init__(self) -> None:
        if self.temporal is not None:
            self.temporal = check_strength(self.temporal, "temporal")


@dataclass
class VideoResult:
    """What `predict_video` did: frames, fps, size, intrinsics, colour range, files, seconds per stage."""

    frames: int
    fps: float
    width: int
    height: int
    intrinsics: Intrinsics
    range_m: tuple[float, float]
    written: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # decode, predict, write
    notes: list[str] = field(default_factory=list)


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def require_av(name: str = "video") -> Any:
    """Import PyAV or raise VideoError saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError(name, "reading videos needs PyAV: pip install 'transferdepth[video]'") from None
    return av


def sniff(path: str | os.PathLike) -> str | None:
    """'image' or 'video' by content for a file of unknown extension; None if neither PIL nor PyAV reads it."""
    from PIL import Image

    try:
        with Image.open(path):
            return "image"
    except Exception:  # noqa: BLE001 - not an image PIL knows
        pass
    try:
        av = require_av(str(path))
        with av.open(str(path)) as c:
            return "video" if c.streams.video else None
    except Exception:  # noqa: BLE001 - not a container FFmpeg knows
        return None


def _open(path: str | os.PathLike):
    av = require_av(str(path))
    name = str(path)
    if os.path.isdir(path):
        raise VideoError(name, "is a folder, not a video file")
    try:
        if os.path.getsize(path) == 0:
            raise VideoError(name, "empty file (0 bytes)")
        container = av.open(name)
    except FileNotFoundError:
        raise VideoError(name, "no such file") from None
    except PermissionError:
        raise VideoError(name, "permission denied") from None
    except av.error.FFmpegError as e:
        raise VideoError(name, f"not a video FFmpeg can read (truncated or corrupt?): {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(name, "no video stream (audio only or another kind of file)")
    return container


# --- orientation (phone videos) ---------------------------------------------------------------------

# (transpose, flip rows, flip columns), applied in that order -> what it does to the stored frame
ORIENTATIONS = {(False, False, False): "as stored", (True, False, True): "rotated 90 degrees clockwise",
                (True, True, False): "rotated 90 degrees counter-clockwise", (False, True, True): "rotated 180 degrees",
                (False, False, True): "mirrored left-right", (False, True, False): "mirrored top-bottom",
                (True, False, False): "transposed", (True, True, True): "transposed and rotated 180 degrees"}
Orientation = tuple[bool, bool, bool]


def orientation(matrix: Sequence[float]) -> Orientation | None:
    """FFmpeg's display matrix (9 numbers, row-major [a b u; c d v; x y w], AV_PKT_DATA_DISPLAYMATRIX; only
    the signs and sizes of a, b, c, d matter) -> (transpose, flip rows, flip columns) that turn a stored
    frame into the displayed one, as `ffmpeg`'s autorotate does: a displayed pixel (x', y') comes from
    the stored (x, y) with x' = a x + c y, y' = b x + d y (image axes, y down). None when the matrix is not
    a multiple of 90 degrees (with or without a mirror), or is degenerate."""
    if len(matrix) != 9:
        raise ValueError(f"display matrix: expected 9 numbers, got {len(matrix)}")
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if not scale > 0:
        return None
    a, b, c, d = (v / scale for v in (a, b, c, d))
    if all(abs(v) < 1e-3 for v in (b, c)) and all(abs(abs(v) - 1) < 1e-3 for v in (a, d)):
        return False, d < 0, a < 0
    if all(abs(v) < 1e-3 for v in (a, d)) and all(abs(abs(v) - 1) < 1e-3 for v in (b, c)):
        return True, b < 0, c < 0
    return None


def rotate_tag_matrix(degrees_clockwise: float) -> list[float]:
    """The display matrix of an old-style `rotate` stream tag (degrees clockwise, as players apply it)."""
    r = math.radians(degrees_clockwise)
    cos, sin = round(math.cos(r), 9), round(math.sin(r), 9)
    return [cos, sin, 0.0, -sin, cos, 0.0, 0.0, 0.0, 1.0]


def orient(rgb: np.ndarray, how: Orientation | None) -> np.ndarray:
    """A stored frame (HxWxC) as displayed: transposed, then rows / columns reversed (`orientation`)."""
    if how is None or how == (False, False, False):
        return rgb
    transpose, flip_rows, flip_cols = how
    out = rgb.swapaxes(0, 1) if transpose else rgb
    out = out[::-1] if flip_rows else out
    out = out[:, ::-1] if flip_cols else out
    return np.ascontiguousarray(out)


def frame_display_matrix(frame: Any, stream: Any) -> list[float] | None:
    """The display matrix of a decoded PyAV frame (its DISPLAYMATRIX side data), else of the stream's
    `rotate` tag; None when neither says anything."""
    try:
        for sd in frame.side_data:
            if getattr(getattr(sd, "type", None), "name", "") == "DISPLAYMATRIX":
                return [float(v) for v in np.frombuffer(bytes(sd), "=i4", count=9)]
    except Exception:  # noqa: BLE001 - a PyAV without frame side data: try the tag
        pass
    tag = (stream.metadata or {}).get("rotate")
    try:
        return rotate_tag_matrix(float(tag)) if tag not in (None, "", "0") else None
    except ValueError:
        return None


def _frame_orientation(frame: Any, stream: Any) -> tuple[Orientation | None, str]:
    """(orientation to apply, a note for the user or '') for the clip whose first frame is `frame`."""
    matrix = frame_display_matrix(frame, stream)
    if matrix is None:
        return None, ""
    how = orientation(matrix)
    if how is None:
        angle = getattr(frame, "rotation", None)
        return None, (f"display rotation of {angle} degrees is not a multiple of 90: frames used as stored"
                      if angle is not None else "display matrix not a 90-degree rotation: frames used as stored")
    return how, ("" if how == (False, False, False) else f"frames {ORIENTATIONS[how]} (display matrix)")


def video_orientation(path: str | os.PathLike) -> tuple[Orientation | None, str]:
    """The orientation `read_frames` applies to the video `path` (from its first frame) and a note ('' for
    none or no rotation). A first frame that cannot be decoded gives (None, ''): `read_frames` names it."""
    av = require_av(str(path))
    container = _open(path)
    try:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            return _frame_orientation(frame, stream)
    except av.error.FFmpegError:
        pass
    finally:
        container.close()
    return None, ""


def read_frames(path: str | os.PathLike, upright: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Decode a video's first video stream: yields (timestamp seconds, uint8 HxWx3 RGB) per frame; with
    `upright` each frame turned as the first frame's display matrix says (a phone's portrait clip comes out
    portrait), else as stored.

    Raises VideoError for no video stream, zero frames, a decoding error, or fewer frames than the
    container announces (a truncated file)."""
    av = require_av(str(path))
    container = _open(path)
    name, n, how = str(path), 0, None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = stream.frames  # 0 where the container does not say
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        try:
            for frame in container.decode(stream):
                if n == 0 and upright:
                    how = _frame_orientation(frame, stream)[0]
                t = frame.time if frame.time is not None else n / float(rate)
                yield float(t), orient(frame.to_ndarray(format="rgb24"), how)
                n += 1
        except av.error.FFmpegError as e:
            raise VideoError(name, f"cannot decode frame {n} (truncated or corrupt?): {e}") from None
    finally:
        container.close()
    if n == 0:
        raise VideoError(name, "the video stream has no frames")
    if expected and n < expected:
        raise VideoError(name, f"truncated: decoded {n} of the {expected} frames the container announces")


def frame_rate(path: str | os.PathLike) -> Fraction:
    """The first video stream's average frame rate (frames per second)."""
    container = _open(path)
    try:
        s = container.streams.video[0]
        return Fraction(s.average_rate or s.guessed_rate or 30)
    finally:
        container.close()


def iter_depth(path: str | os.PathLike, predictor: FramePredictor, batch_size: int | None = None,
               timings: dict[str, float] | None = None
               ) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
    """Yields (index, timestamp s, rgb uint8 HxWx3, depth float32 HxW metres) per frame, predicted in
    batches of `batch_size` frames (None: `api.estimator.batch_size_for(predictor)`, 1 on the CPU); `timings`
    (if given) accumulates decode and predict seconds."""
    timings = timings if timings is not None else {}
    batch_size = batch_size or batch_size_for(predictor)
    batch: list[tuple[float, np.ndarray]] = []
    index = 0

    def run() -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
        nonlocal index
        t0 = time.perf_counter()
        depths = predictor.predict_rgb([rgb for _, rgb in batch])
        timings["predict"] = timings.get("predict", 0.0) + time.perf_counter() - t0
        for (t, rgb), depth in zip(batch, depths):
            yield index, t, rgb, np.asarray(depth, np.float32)
            index += 1
        batch.clear()

    frames = read_frames(path)
    while True:
        t0 = time.perf_counter()
        item = next(frames, None)
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        if item is None:
            break
        batch.append(item)
        if len(batch) >= batch_size:
            yield from run()
    if batch:
        yield from run()


# --- writing -------------------------------------------------------------------------------------


def _even(img: np.ndarray) -> np.ndarray:
    """Pad to even height and width by replicating the last row / column (H.264 4:2:0 needs even sizes)."""
    ph, pw = img.shape[0] % 2, img.shape[1] % 2
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else img


class _Encoder:
    """An MP4 (H.264) writer at a constant frame rate, with the source's audio stream copied at the end."""

    def __init__(self, path: Path, fps: Fraction, width: int, height: int, audio_from: str | None):
        av = require_av()
        self.av, self.path = av, path
        self.out = av.open(str(path), mode="w", format="mp4")
        try:
            self.stream = self.out.add_stream("libx264", rate=fps, options={"crf": "17", "preset": "fast"})
        except Exception:  # noqa: BLE001 - an FFmpeg build without x264
            self.stream = self.out.add_stream("mpeg4", rate=fps)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        self.n, self.audio_in, self.audio_out, self.note = 0, None, None, ""
        if audio_from is not None:
            self._add_audio(audio_from)

    def _add_audio(self, source: str) -> None:
        src = self.av.open(source)
        if not src.streams.audio:
            src.close()
            return
        a = src.streams.audio[0]
        if a.codec_context.name not in _MP4_AUDIO:
            self.note = f"audio ({a.codec_context.name}) not copied: it does not go into MP4 as it is"
            src.close()
            return
        self.audio_in, self.audio_src = a, src
        self.audio_out = self.out.add_stream_from_template(a)

    def write(self, rgb: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(rgb)), format="rgb24")
        frame.pts = self.n
        self.n += 1
        for p in self.stream.encode(frame):
            self.out.mux(p)

    def close(self) -> None:
        for p in self.stream.encode(None):
            self.out.mux(p)
        if self.audio_out is not None:
            for p in self.audio_src.demux(self.audio_in):
                if p.dts is None:  # the demuxer's empty flush packet
                    continue
                p.stream = self.audio_out
                self.out.mux(p)
            self.audio_src.close()
        self.out.close()

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - closing a half-written file while another error is raised
            pass
        if self.audio_out is not None:
            self.audio_src.close()


def _write_npz(path: Path, depth_f16_file: Path, shape: tuple[int, int, int], arrays: dict[str, np.ndarray]) -> None:
    """An .npz (as np.savez, uncompressed) whose `depth` array is streamed from raw float16 bytes on disk."""
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("depth.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                     "shape": shape})
            with open(depth_f16_file, "rb") as src:
                while chunk := src.read(1 << 24):
                    f.write(chunk)
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)


def output_paths(base: Path, opts: VideoOptions) -> dict[str, Path]:
    """The files (and PNG folder) a video's outputs go to, for the output stem `base`."""
    paths = {"color": base.with_name(base.name + ".depth.mp4"), "npz": base.with_name(base.name + ".depth.npz")}
    if opts.png16:
        paths["png16"] = base.with_name(base.name + ".depth_mm")
    if opts.stereo is not None:
        paths["stereo"] = base.with_name(base.name + ".stereo.mp4")
    return paths


class _FrameSink:
    """Where each predicted frame goes while the video is read: float16 depth to the raw file, PNG16 frames,
    the stereo video; keeps the camera (from the first frame), timestamps and the depth range seen."""

    def __init__(self, path: str | os.PathLike, paths: dict[str, Path], opts: VideoOptions, fps: Fraction, raw: Any,
                 frames_dir: Path | None = None):
        self.path, self.paths, self.opts, self.fps, self.raw = path, paths, opts, fps, raw
        self.frames_dir = frames_dir  # the PNG16 frames go here: a temporary folder renamed into place at the end
        self.k: Intrinsics | None = None
        self.stereo_enc: _Encoder | None = None
        self.zc: float | None = None
        self.timestamps: list[float] = []
        self.lo, self.hi = math.inf, -math.inf

    def add(self, i: int, t: float, rgb: np.ndarray, depth: np.ndarray) -> None:
        opts, k = self.opts, self.k
        h, w = depth.shape
        if k is None:
            k = self.k = resolve(opts.intrinsics, w, h, None)  # frames carry no EXIF: auto = the default lens
            if opts.stereo is not None:
                self.zc = convergence_for(depth, opts.stereo.convergence_m)
                stereo = self.paths["stereo"]
                self.stereo_enc = _Encoder(stereo.with_name(f".{stereo.name}.tmp"), self.fps,
                                           *_stereo_size(w, h, opts), str(self.path))
        elif depth.shape != (k.height, k.width):
            raise VideoError(str(self.path), f"frame {i} is {w}x{h}, the first frame {k.width}x{k.height}")
        self.timestamps.append(t)
        self.raw.write(depth.astype(np.float16).tobytes())
        finite = depth[np.isfinite(depth)]
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        if self.frames_dir is not None:
            write_png16(self.frames_dir / f"{i:06d}.png", depth)
        if self.stereo_enc is not None:
            self.stereo_enc.write(stereo_image(rgb, depth, k.fx, opts.stereo, self.zc))

    def close_stereo(self) -> list[Path]:
        """Finish the stereo video (renamed into place); the paths written."""
        if self.stereo_enc is None:
            return []
        self.stereo_enc.close()
        os.replace(self.stereo_enc.path, self.paths["stereo"])
        self.stereo_enc = None
        return [self.paths["stereo"]]

    def abort(self) -> None:
        if self.stereo_enc is not None:
            self.stereo_enc.abort()
            Path(self.stereo_enc.path).unlink(missing_ok=True)


def predict_video(path: str | os.PathLike, predictor: FramePredictor, base: str | os.PathLike,
                  opts: VideoOptions | None = None,
                  on_frames: Callable[[int], None] | None = None) -> VideoResult:
    """Predict every frame of the video `path` and write its outputs next to the stem `base`.

    Raises VideoError (bad input), OSError (cannot write), RuntimeError (prediction). `on_frames(n)` is
    called after each batch with the number of frames it held (progress bars). Nothing is left of a video
    that fails: the PNG16 frames go to a temporary folder renamed into place after the last frame (an
    earlier folder of that name is replaced only then), the other files are written atomically at the end."""
    opts = opts or VideoOptions()
    base = Path(base)
    paths = output_paths(base, opts)
    base.parent.mkdir(parents=True, exist_ok=True)
    fps = frame_rate(path)
    note = video_orientation(path)[1]
    with ExitStack() as stack:
        frames_dir = stack.enter_context(atomic_folder(paths["png16"])) if opts.png16 else None
        result = _predict_video(path, predictor, base, paths, opts, fps, frames_dir, on_frames)
    if note:
        result.notes.insert(0, note)
    return result


def _predict_video(path: str | os.PathLike, predictor: FramePredictor, base: Path, paths: dict[str, Path],
                   opts: VideoOptions, fps: Fraction, frames_dir: Path | None,
                   on_frames: Callable[[int], None] | None) -> VideoResult:
    """predict_video's work, the PNG16 frames into `frames_dir` (renamed into place by the caller)."""
    timings: dict[str, float] = {"decode": 0.0, "predict": 0.0, "write": 0.0}
    batch_size = opts.batch_size or batch_size_for(predictor)
    raw = tempfile.NamedTemporaryFile(dir=base.parent, prefix=f".{base.name}.", suffix=".f16", delete=False)
    raw_path = Path(raw.name)
    sink = _FrameSink(path, paths, opts, fps, raw, frames_dir)
    steady = ScaleStabiliser(opts.temporal) if opts.temporal is not None else None
    try:
        with raw:
            pending = 0
            for i, t, rgb, depth in iter_depth(path, predictor, batch_size, timings):
                t0 = time.perf_counter()
                sink.add(i, t, rgb, depth if steady is None else steady(depth, rgb))
                timings["write"] += time.perf_counter() - t0
                pending += 1
                if on_frames is not None and pending >= batch_size:
                    on_frames(pending)
                    pending = 0
            if on_frames is not None and pending:
                on_frames(pending)
        t0 = time.perf_counter()
        result = _finish(path, sink, raw_path, timings)
        timings["write"] += time.perf_counter() - t0
        return result
    finally:
        sink.abort()
        raw_path.unlink(missing_ok=True)


def _finish(path: str | os.PathLike, sink: _FrameSink, raw_path: Path, timings: dict[str, float]) -> VideoResult:
    """After the last frame: the stereo video closed, the colour video (one range for every frame) and the
    npz written from the raw float16 file."""
    k, opts, paths, fps = sink.k, sink.opts, sink.paths, sink.fps
    assert k is not None  # read_frames raises for zero frames
    n = len(sink.timestamps)
    range_m = opts.range_m or ((sink.lo, sink.hi) if sink.lo <= sink.hi else (0.0, 1.0))
    notes: list[str] = []
    written = sink.close_stereo()
    with atomic_write(paths["color"]) as tmp:
        enc = _Encoder(tmp, fps, k.width, k.height, str(path))
        try:
            frame_bytes = k.width * k.height * 2
            with open(raw_path, "rb") as f:
                for _ in range(n):
                    d = np.frombuffer(f.read(frame_bytes), np.float16).reshape(k.height, k.width)
                    enc.write(colorize(d.astype(np.float32), opts.cmap, range_m)[0])
            enc.close()
        except BaseException:
            enc.abort()
            raise
        if enc.note:
            notes.append(enc.note)
    written.append(paths["color"])
    _write_npz(paths["npz"], raw_path, (n, k.height, k.width), {
        "fps": np.float64(float(fps)), "timestamps": np.asarray(sink.timestamps, np.float64),
        "intrinsics": k.matrix(), "intrinsics_source": np.str_(k.source)})
    written.append(paths["npz"])
    if opts.png16:
        written.append(paths["png16"])
    return VideoResult(n, float(fps), k.width, k.height, k, range_m, written, timings, notes)


def _stereo_size(w: int, h: int, opts: VideoOptions) -> tuple[int, int]:
    layout = opts.stereo.layout if opts.stereo is not None else "sbs"
    return {"sbs": (2 * w, h), "tab": (w, 2 * h)}.get(layout, (w, h))


def predict_videos(predictor: FramePredictor, files: list[tuple[Path, Path]], out_dir: Path, opts: VideoOptions,
                   on_done: Callable[[Path, Failure | None], None] | None = None,
                   on_frames: Callable[[int], None] | None = None) -> list[Failure]:
    """Predict each video (file, relative output stem) into `out_dir`; returns the failures (others go on)."""
    failures: list[Failure] = []
    for path, stem in files:
        failure = None
        try:
            result = predict_video(path, predictor, out_dir / stem, opts, on_frames)
            for note in result.notes:
                print(f"transferdepth: note: {path}: {note}")
        except VideoError as e:
            failure = Failure(e.name, e.reason)
        except IntrinsicsError as e:  # --intrinsics exif: video frames have no EXIF
            failure = Failure(str(path), f"{e} (a video's frames carry none)")
        except OSError as e:
            failure = Failure(str(path), f"cannot write {e.filename or out_dir}: {e.strerror or e}")
        except RuntimeError as e:
            failure = Failure(str(path), f"prediction failed: {str(e).splitlines()[0]}")
        if failure is not None:
            failures.append(failure)
        if on_done is not None:
            on_done(path, failure)
    return failures


def split_inputs(files: list[tuple[Path, Path]]
                 ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]], list[Failure]]:
    """(image files, video files, failures) by extension; a file with neither an image nor a video
    extension is opened to see which it is, and fails when it is neither (missing and empty files are
    left with the images, whose reader names the problem)."""
    from transferdepth.inference.imageio import IMAGE_EXTENSIONS

    images, videos, failures = [], [], []
    for path, stem in files:
        ext = path.suffix.lower()
        kind = "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None
        if kind is None and path.is_file() and path.stat().st_size > 0:
            kind = sniff(path)
            if kind is None:
                failures.append(Failure(str(path), "neither an image nor a video (unknown format)"))
                continue
        (videos if kind == "video" else images).append((path, stem))
    return images, videos, failures


def video_options(opts: Any, batch_size: int | None, formats_given: Sequence[str] | None,
                  temporal: float | None = None) -> VideoOptions:
    """VideoOptions from predict's OutputOptions: depth video and npz always; per-frame 16-bit PNGs when
    png16 was asked for explicitly (not png16 as the default format); stereo video with the stereo format;
    `temporal`: the stabiliser's strength (None: off)."""
    return VideoOptions(cmap=opts.cmap, range_m=opts.range_m, png16=bool(formats_given) and "png16" in opts.formats,
                        stereo=(opts.stereo or StereoOptions()) if "stereo" in opts.formats else None,
                        intrinsics=opts.intrinsics, batch_size=batch_size, temporal=temporal)
