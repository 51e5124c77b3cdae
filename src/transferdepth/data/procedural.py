"""Procedural indoor rooms with exact depth, ray-cast in numpy: a dataset that needs no download.

A scene is a box room (floor, walls, ceiling) with furniture built from boxes (tables, chairs, cabinets,
shelves with books, beds, sofas, rugs, doors, windows, pictures, a ceiling lamp), textured procedurally
(wood planks, tiles, carpet, paint, wallpaper with a skirting board, wood grain, fabric), lit by a point
light with Lambertian shading, 1/r^2 falloff, ambient light, contact shadows under furniture and darkening
in room corners. The camera is NYU's Kinect (intrinsics scaled to the requested size) at 1.0-1.8 m height
with random yaw and small pitch/roll. Depth is the exact z-depth (metres, along the optical axis) of the
first surface hit by each pixel-centre ray, clipped to [0.5, 10] m; `valid` is False where it was outside.

Every sample is a pure function of (seed, index), so it does not depend on access order or worker.
Ray casting is vectorised over pixels with the slab method; each object is tested against its bounding
box first and its parts only on the pixels that hit it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from transferdepth.data.base import DatasetError, Sample
from transferdepth.data.registry import no_split, opt_int, register_source
from transferdepth.recipe import nyu_intrinsics

MIN_DEPTH_M, MAX_DEPTH_M = 0.5, 10.0
SOURCE = "procedural"


class ProceduralScenes:
    """`n` generated rooms; `scenes[i]` is a Sample (rgb uint8 HxWx3, depth float32 metres HxW, valid, K)."""

    def __init__(self, n: int, seed: int = 0, height: int = 240, width: int = 320):
        for field_name, value, low in (("n", n, 0), ("seed", seed, 0), ("height", height, 8), ("width", width, 8)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise DatasetError(SOURCE, f"{field_name} must be an integer >= {low}, got {value!r}")
        self.n, self.seed, self.height, self.width = int(n), int(seed), int(height), int(width)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        i = int(index) + (self.n if index < 0 else 0)
        if not 0 <= i < self.n:
            raise IndexError(f"{SOURCE}: index {index} out of range for {self.n} scenes")
        rgb, z = render_scene(np.random.default_rng((self.seed, i)), self.height, self.width)
        valid = (z >= MIN_DEPTH_M) & (z <= MAX_DEPTH_M)
        depth = np.clip(z, MIN_DEPTH_M, MAX_DEPTH_M).astype(np.float32)
        return {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": nyu_intrinsics(self.height, self.width),
                "name": f"{SOURCE}/seed{self.seed}/{i:06d}"}


# ----------------------------------------------------------------------------------------------- scene model
@dataclass
class _Mat:
    kind: str                 # key of _TEXTURES
    colour: np.ndarray        # (3,) base albedo in [0, 1]
    colour2: np.ndarray       # (3,) second colour (stripes, skirting, grout, ...)
    a: float = 0.2            # kind-specific size in metres (plank width, tile size, stripe period, ...)
    b: float = 1.0            # second size (plank length, skirting height, ...)


@dataclass
class _Part:
    """Axis-aligned box in its object's frame (x across, y up, z towards the room), metres."""
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    mat: int
    faces: dict[int, int] = field(default_factory=dict)  # face id (axis*2 + side) -> material override


@dataclass
class _Object:
    x: float                  # origin on the floor, world metres
    z: float
    yaw: float                # rotation about the vertical axis, radians
    parts: list[_Part]
    shadow: bool = True       # stands on the floor: darkens the floor around its footprint

    def __post_init__(self) -> None:
        self.lo = np.min([p.lo for p in self.parts], axis=0)
        self.hi = np.max([p.hi for p in self.parts], axis=0)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        self.rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # local -> world
        hx, hz = (self.hi[0] - self.lo[0]) / 2, (self.hi[2] - self.lo[2]) / 2
        mx, mz = self.rot[0, 0] * (self.hi[0] + self.lo[0]) / 2 + self.rot[0, 2] * (self.hi[2] + self.lo[2]) / 2, \
            self.rot[2, 0] * (self.hi[0] + self.lo[0]) / 2 + self.rot[2, 2] * (self.hi[2] + self.lo[2]) / 2
        ex, ez = abs(c) * hx + abs(s) * hz, abs(s) * hx + abs(c) * hz
        self.aabb = (self.x + mx - ex, self.x + mx + ex, self.z + mz - ez, self.z + mz + ez)  # world x0 x1 z0 z1


def _overlaps(a: tuple, b: tuple, gap: float = 0.05) -> bool:
    return a[0] < b[1] + gap and b[0] < a[1] + gap and a[2] < b[3] + gap and b[2] < a[3] + gap


def _box(w: float, h: float, d: float, mat: int, x: float = 0.0, y: float = 0.0, z: float = 0.0,
         faces: dict[int, int] | None = None) -> _Part:
    """Box of size w x h x d centred at (x, z) across/depth, from height y to y + h."""
    return _Part((x - w / 2, y, z - d / 2), (x + w / 2, y + h, z + d / 2), mat, faces or {})


# ------------------------------------------------------------------------------------------------- textures
def _noise(tab: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] on a 64x64 periodic lattice; u, v in lattice units."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = iu.astype(np.int64) & 63, iv.astype(np.int64) & 63
    i1, j1 = (i0 + 1) & 63, (j0 + 1) & 63
    flat = tab.ravel()
    a, b, c, d = flat[i0 * 64 + j0], flat[i1 * 64 + j0], flat[i0 * 64 + j1], flat[i1 * 64 + j1]
    return a + (b - a) * fu + (c - a) * fv + (a - b - c + d) * fu * fv


def _cell(tab: np.ndarray, i: np.ndarray, j: np.ndarray | int) -> np.ndarray:
    """A random value in [0, 1] per integer cell (i, j)."""
    return tab.ravel()[(np.asarray(i, np.int64) & 63) * 64 + (np.asarray(j, np.int64) & 63)]


def _near_edge(frac: np.ndarray, size: float, width: float) -> np.ndarray:
    return np.minimum(frac, 1 - frac) * size < width


def _planks(u, v, su, sv, m, tab):
    k = np.floor(v / m.a)
    s = (u + _cell(tab, k, 7) * m.b) / m.b
    seg = np.floor(s)
    shade = (1 + 0.35 * (_cell(tab, k, seg) - 0.5)) * (0.8 + 0.35 * _noise(tab, u * 2, v * 60))
    shade[_near_edge(v / m.a - k, m.a, 0.004) | _near_edge(s - seg, m.b, 0.004)] *= 0.45
    return m.colour * shade[:, None]


def _tiles(u, v, su, sv, m, tab):
    i, j = np.floor(u / m.a), np.floor(v / m.a)
    shade = (1 + 0.15 * (_cell(tab, i, j) - 0.5)) * (0.92 + 0.16 * _noise(tab, u * 4, v * 4))
    out = m.colour * shade[:, None]
    out[_near_edge(u / m.a - i, m.a, 0.005) | _near_edge(v / m.a - j, m.a, 0.005)] = m.colour2
    return out


def _carpet(u, v, su, sv, m, tab):
    return m.colour * (0.75 + 0.25 * _noise(tab, u * 5, v * 5) + 0.2 * _noise(tab, u * 50, v * 50))[:, None]


def _skirting(out, v, m):
    out[v < m.b] = m.colour2
    out[(v >= m.b) & (v < m.b + 0.01)] *= 0.8
    return out


def _paint(u, v, su, sv, m, tab):
    return _skirting(m.colour * (0.95 + 0.08 * _noise(tab, u * 2, v * 2))[:, None], v, m)


def _paper(u, v, su, sv, m, tab):
    stripe = (np.floor(u / m.a) % 2)[:, None]
    out = (m.colour * (1 - stripe) + m.colour * 0.82 * stripe) * (0.96 + 0.06 * _noise(tab, u * 8, v * 8))[:, None]
    return _skirting(out, v, m)


def _plain(u, v, su, sv, m, tab):
    return m.colour * (0.95 + 0.08 * _noise(tab, u * 5, v * 5))[:, None]


def _wood(u, v, su, sv, m, tab):
    return m.colour * (0.78 + 0.3 * _noise(tab, u * 1.5, v * 40) + 0.08 * _noise(tab, u * 9, v * 9))[:, None]


def _fabric(u, v, su, sv, m, tab):
    return m.colour * (0.8 + 0.2 * _noise(tab, u * 10, v * 10) + 0.1 * _noise(tab, u * 60, v * 60))[:, None]


def _drawers(u, v, su, sv, m, tab):
    out = _wood(u, v, su, sv, m, tab)
    row = np.floor(v / m.a)
    frac = v / m.a - row
    out[_near_edge(frac, m.a, 0.006) | _near_edge(u / su, su, 0.01)] *= 0.45
    out[(np.abs(u - su / 2) < 0.07) & (np.abs(frac - 0.5) * m.a < 0.012)] = m.colour2
    return out


def _books(u, v, su, sv, m, tab):
    i = np.floor(u / m.a)
    shelf = np.floor(v / m.b)
    top = (0.5 + 0.4 * _cell(tab, i, shelf + 11)) * m.b
    pal = _PALETTE[(_cell(tab, i, shelf) * len(_PALETTE)).astype(np.int64) % len(_PALETTE)]
    out = pal * (0.75 + 0.35 * _cell(tab, i, shelf + 3))[:, None]
    out[_near_edge(u / m.a - i, m.a, 0.002)] *= 0.5
    out[(v - shelf * m.b) > top] = m.colour * 0.35  # the dark back of the shelf above the books
    return out


def _door(u, v, su, sv, m, tab):
    out = _wood(u, v, su, sv, m, tab)
    inset = (np.minimum(u, su - u) > 0.1) & (np.minimum(v, sv - v) > 0.12) & (np.abs(v - sv * 0.45) > 0.08)
    out[inset] *= 0.85
    out[(np.abs(u - su + 0.1) < 0.03) & (np.abs(v - 1.0) < 0.02)] = m.colour2
    return out


def _window(u, v, su, sv, m, tab):
    sky = m.colour * (1.05 - 0.25 * (v / sv))[:, None]  # brighter towards the top
    frame = (np.minimum(u, su - u) < 0.05) | (np.minimum(v, sv - v) < 0.05) | (np.abs(u - su / 2) < 0.025) \
        | (np.abs(v - sv * 0.6) < 0.025)
    sky[frame] = m.colour2
    return sky


def _picture(u, v, su, sv, m, tab):
    t = _noise(tab, u * 6 + 17, v * 6 + 5)[:, None]
    out = m.colour * t + m.colour2 * (1 - t)
    out[(np.minimum(u, su - u) < 0.03) | (np.minimum(v, sv - v) < 0.03)] = 0.15
    return out


def _screen(u, v, su, sv, m, tab):
    out = np.empty((u.size, 3), np.float32)
    out[:] = 0.05 + 0.06 * (u / su)[:, None]
    out[(np.minimum(u, su - u) < 0.02) | (np.minimum(v, sv - v) < 0.02)] = 0.02
    return out


def _lamp(u, v, su, sv, m, tab):
    return np.broadcast_to(m.colour, (u.size, 3)).copy()


_PALETTE = np.array([[0.6, 0.1, 0.1], [0.1, 0.25, 0.5], [0.15, 0.4, 0.2], [0.85, 0.75, 0.5], [0.9, 0.9, 0.85],
                     [0.2, 0.2, 0.2], [0.7, 0.4, 0.1], [0.45, 0.2, 0.45]], np.float32)
_TEXTURES: dict[str, Callable] = {
    "planks": _planks, "tiles": _tiles, "carpet": _carpet, "paint": _paint, "paper": _paper, "plain": _plain,
    "wood": _wood, "fabric": _fabric, "drawers": _drawers, "books": _books, "door": _door, "window": _window,
    "picture": _picture, "screen": _screen, "lamp": _lamp,
}
_EMISSIVE = {"window", "lamp", "screen"}


# ---------------------------------------------------------------------------------------------- scene layout
class _Builder:
    """Draws one room's materials, objects, lights and camera from `rng`."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.mats: list[_Mat] = []
        self.room = np.array([rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.0), rng.uniform(3.0, 8.0)])
        self.objects: list[_Object] = []
        self.reserved: list[tuple] = []  # floor areas kept free (in front of the door), world AABBs

    def mat(self, kind: str, colour, colour2=(0.9, 0.9, 0.88), a: float = 0.2, b: float = 1.0) -> int:
        self.mats.append(_Mat(kind, np.asarray(colour, np.float32), np.asarray(colour2, np.float32), a, b))
        return len(self.mats) - 1

    def jitter(self, colour, amount: float = 0.08) -> np.ndarray:
        return np.clip(np.asarray(colour) * (1 + self.rng.uniform(-amount, amount, 3)), 0, 1)

    def wood_colour(self) -> np.ndarray:
        base = [(0.55, 0.36, 0.2), (0.7, 0.52, 0.32), (0.35, 0.22, 0.12), (0.8, 0.68, 0.5), (0.45, 0.3, 0.2)]
        return self.jitter(base[self.rng.integers(len(base))])

    def muted(self, saturation: float = 0.4) -> np.ndarray:
        grey = self.rng.uniform(0.25, 0.75)
        return np.clip(grey + saturation * (self.rng.uniform(0.0, 1.0, 3) - 0.5), 0, 1)

    def paint_colour(self) -> np.ndarray:
        base = [(0.88, 0.86, 0.8), (0.8, 0.82, 0.85), (0.85, 0.78, 0.65), (0.7, 0.78, 0.7), (0.9, 0.9, 0.9),
                (0.75, 0.65, 0.6), (0.6, 0.68, 0.78), (0.92, 0.85, 0.7)]
        return self.jitter(base[self.rng.integers(len(base))], 0.05)

    def room_part(self) -> _Part:
        rng, W, H, D = self.rng, *self.room
        floor_kind = rng.choice(["planks", "tiles", "carpet"], p=[0.5, 0.25, 0.25])
        if floor_kind == "planks":
            floor = self.mat("planks", self.wood_colour(), a=rng.uniform(0.1, 0.25), b=rng.uniform(0.9, 2.0))
        elif floor_kind == "tiles":
            floor = self.mat("tiles", self.jitter(rng.choice([(0.8, 0.78, 0.72), (0.55, 0.5, 0.45),
                                                              (0.9, 0.9, 0.9), (0.4, 0.42, 0.45)])),
                             colour2=(0.7, 0.7, 0.68), a=rng.uniform(0.3, 0.6))
        else:
            floor = self.mat("carpet", self.jitter(rng.choice([(0.45, 0.4, 0.35), (0.3, 0.32, 0.4),
                                                               (0.6, 0.55, 0.45), (0.45, 0.25, 0.2)])))
        skirting, height = self.jitter((0.95, 0.95, 0.92), 0.03), rng.uniform(0.06, 0.12)
        walls = [self.mat(str(rng.choice(["paint", "paint", "paper"])), self.paint_colour(), skirting,
                          a=rng.uniform(0.08, 0.3), b=height)]
        if rng.random() < 0.4:  # an accent wall
            walls.append(self.mat("paint", self.paint_colour(), skirting, b=height))
        ceiling = self.mat("plain", self.jitter((0.93, 0.93, 0.9), 0.03))
        wall = [walls[rng.integers(len(walls))] for _ in range(4)]
        return _Part((0.0, 0.0, 0.0), (W, H, D), floor, {0: wall[0], 1: wall[1], 4: wall[2], 5: wall[3], 3: ceiling})

    def wall_pose(self, wall: int, along: float, depth: float) -> tuple[float, float, float]:
        """Origin and yaw of an object with its back on `wall` (0: z=0, 1: z=D, 2: x=0, 3: x=W)."""
        W, _, D = self.room
        return [(along, depth / 2, 0.0), (along, D - depth / 2, math.pi), (depth / 2, along, math.pi / 2),
                (W - depth / 2, along, -math.pi / 2)][wall]

    def place(self, parts: list[_Part], wall: int | None, shadow: bool = True, tries: int = 20,
              check: bool = True) -> _Object | None:
        """Put an object against a wall (or free-standing if wall is None) where it overlaps nothing."""
        rng, (W, _, D) = self.rng, self.room
        probe = _Object(0, 0, 0, parts)
        width, depth = probe.hi[0] - probe.lo[0], probe.hi[2] - probe.lo[2]
        for _ in range(tries):
            if wall is None:
                yaw = rng.integers(4) * math.pi / 2 + rng.normal(0, 0.15) * (rng.random() < 0.5)
                x, z = rng.uniform(0.6, W - 0.6), rng.uniform(0.6, D - 0.6)
            else:
                length = W if wall < 2 else D
                if length < width + 0.1:
                    return None
                x, z, yaw = self.wall_pose(wall, rng.uniform(width / 2 + 0.05, length - width / 2 - 0.05), depth)
            obj = _Object(x, z, yaw, parts, shadow)
            x0, x1, z0, z1 = obj.aabb
            inside = x0 > -1e-6 and z0 > -1e-6 and x1 < W + 1e-6 and z1 < D + 1e-6
            taken = [o.aabb for o in self.objects if o.shadow] + self.reserved
            if inside and not (check and any(_overlaps(obj.aabb, b) for b in taken)):
                self.objects.append(obj)
                return obj
        return None

    # ---- furniture, each in its local frame: x across, y up, z towards the room, origin at floor centre
    def table(self, w: float, d: float, h: float, mat: int) -> list[_Part]:
        leg, top = 0.05, 0.04
        parts = [_box(w, top, d, mat, y=h - top)]
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(_box(leg, h - top, leg, mat, x=sx * (w / 2 - 0.06), z=sz * (d / 2 - 0.06)))
        return parts

    def chair(self, mat: int) -> list[_Part]:
        parts = self.table(0.44, 0.44, 0.46, mat)
        return parts + [_box(0.44, 0.45, 0.04, mat, y=0.46, z=-0.2)]

    def cabinet(self) -> list[_Part]:
        rng = self.rng
        w, h, d = rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6)
        colour = self.wood_colour() if rng.random() < 0.6 else self.paint_colour()
        body = self.mat("wood", colour)
        front = self.mat("drawers", colour, colour2=(0.75, 0.75, 0.7), a=h / rng.integers(2, 5))
        parts = [_box(w, h, d, body, faces={5: front})]
        if h < 0.85 and w > 0.9 and rng.random() < 0.6:  # a television on top
            tw = min(w - 0.1, rng.uniform(0.8, 1.3))
            parts.append(_box(tw, tw * 0.58, 0.06, self.mat("plain", (0.08, 0.08, 0.08)), y=h + 0.06,
                              faces={5: self.mat("screen", (0.05, 0.05, 0.05))}))
            parts.append(_box(0.3, 0.06, 0.2, self.mat("plain", (0.1, 0.1, 0.1)), y=h))
        return parts

    def bookshelf(self) -> list[_Part]:
        rng = self.rng
        w, h, d, t = rng.uniform(0.6, 1.4), rng.uniform(1.4, 2.1), rng.uniform(0.28, 0.38), 0.025
        shelves = int(rng.integers(3, 6))
        pitch = (h - t) / shelves
        wood = self.mat("wood", self.wood_colour())
        books = self.mat("books", self.mats[wood].colour, a=rng.uniform(0.025, 0.05), b=pitch)
        parts = [_box(t, h, d, wood, x=-w / 2 + t / 2), _box(t, h, d, wood, x=w / 2 - t / 2),
                 _box(w, h, 0.02, wood, z=-d / 2 + 0.01, faces={5: books})]
        parts += [_box(w - 2 * t, t, d, wood, y=k * pitch) for k in range(shelves + 1)]
        return parts

    def bed(self) -> list[_Part]:
        rng = self.rng
        w, length = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.1)
        wood, cover = self.mat("wood", self.wood_colour()), self.mat("fabric", self.jitter(
            rng.choice([(0.85, 0.85, 0.82), (0.4, 0.5, 0.65), (0.7, 0.6, 0.5), (0.6, 0.3, 0.3)]), 0.1))
        pillow = self.mat("fabric", (0.92, 0.92, 0.9))
        zc = length / 2 - 0.06  # local z from the wall side; origin is the footprint centre
        return [_box(w, 0.3, length, wood, z=0.0), _box(w - 0.04, 0.22, length - 0.1, cover, y=0.3, z=0.03),
                _box(w + 0.04, rng.uniform(0.8, 1.1), 0.06, wood, z=-zc),
                _box(min(0.6, w - 0.2), 0.12, 0.35, pillow, y=0.52, z=-zc + 0.3)]

    def sofa(self) -> list[_Part]:
        rng = self.rng
        w, d = rng.uniform(1.5, 2.4), rng.uniform(0.85, 0.95)
        cloth = self.mat("fabric", self.jitter(rng.choice([(0.35, 0.35, 0.38), (0.55, 0.45, 0.35),
                                                           (0.25, 0.35, 0.5), (0.6, 0.2, 0.2)]), 0.1))
        return [_box(w, 0.42, d, cloth), _box(w, 0.4, 0.22, cloth, y=0.42, z=-d / 2 + 0.11),
                _box(0.2, 0.2, d, cloth, x=-w / 2 + 0.1, y=0.42), _box(0.2, 0.2, d, cloth, x=w / 2 - 0.1, y=0.42)]

    def build(self) -> tuple[_Part, list[_Object]]:
        rng, (W, H, D) = self.rng, self.room
        room = self.room_part()
        # wall fixtures first (the door keeps a free zone in front of it), then furniture
        door = self.place([_box(rng.uniform(0.8, 0.95), 2.05, 0.04,
                                self.mat("door", self.wood_colour(), (0.8, 0.75, 0.5)))], int(rng.integers(4)))
        if door is not None:
            self.reserved.append(_Object(door.x + door.rot[0, 2] * 0.45, door.z + door.rot[2, 2] * 0.45, door.yaw,
                                         [_box(1.0, 0.01, 0.9, 0)]).aabb)
        for _ in range(rng.integers(0, 3)):
            ww, wh = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.4)
            self.place([_box(ww, wh, 0.03, self.mat("window", self.jitter((0.85, 0.92, 1.0), 0.05),
                                                     (0.93, 0.93, 0.9)), y=rng.uniform(0.8, 1.0))],
                       int(rng.integers(4)), shadow=False, check=False)
        builders = [self.cabinet, self.bookshelf, self.bed, self.sofa, self.cabinet, self.bookshelf]
        for _ in range(rng.integers(3, 8)):
            self.place(builders[rng.integers(len(builders))](), int(rng.integers(4)))
        for _ in range(rng.integers(0, 4)):
            pw, ph = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
            self.place([_box(pw, ph, 0.025, self.mat("picture", self.muted(0.6), self.muted(0.6)),
                             y=rng.uniform(1.2, H - ph - 0.1))], int(rng.integers(4)), shadow=False, check=False)
        if rng.random() < 0.5:
            self.place([_box(rng.uniform(1.2, 2.5), 0.012, rng.uniform(0.9, 1.8),
                             self.mat("carpet", self.muted()))], None, shadow=False, check=False)
        if rng.random() < 0.75:  # a table, maybe with chairs around it facing it
            wood = self.mat("wood", self.wood_colour())
            w, d = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
            table = self.place(self.table(w, d, rng.uniform(0.72, 0.78), wood), None)
            for side in [(0, -1), (0, 1), (-1, 0), (1, 0)][: rng.integers(0, 5) if table else 0]:
                lx, lz = side[0] * (w / 2 + 0.3), side[1] * (d / 2 + 0.3)
                chair = _Object(table.x + table.rot[0, 0] * lx + table.rot[0, 2] * lz,
                                table.z + table.rot[2, 0] * lx + table.rot[2, 2] * lz,
                                table.yaw + math.atan2(-side[0], -side[1]), self.chair(wood))
                x0, x1, z0, z1 = chair.aabb
                others = [o.aabb for o in self.objects if o.shadow and o is not table] + self.reserved
                if 0 < x0 and x1 < W and 0 < z0 and z1 < D and not any(_overlaps(chair.aabb, b, 0) for b in others):
                    self.objects.append(chair)
        lamp = self.mat("lamp", (1.0, 0.97, 0.9))
        self.light = np.array([rng.uniform(0.3, 0.7) * W, H - 0.12, rng.uniform(0.3, 0.7) * D])
        self.objects.append(_Object(self.light[0], self.light[2], 0.0,
                                    [_box(0.35, 0.06, 0.35, lamp, y=H - 0.07)], shadow=False))
        return room, self.objects

    def camera(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (world, metres) and camera-to-world rotation (camera: x right, y down, z forward)."""
        rng, (W, _, D) = self.rng, self.room
        blockers = [o.aabb for o in self.objects if o.shadow]
        for _ in range(50):  # stand near a wall, looking into the room
            wall, off = int(rng.integers(4)), rng.uniform(0.4, 1.4)
            along = rng.uniform(0.4, (W if wall < 2 else D) - 0.4)
            x, z = [(along, off), (along, D - off), (off, along), (W - off, along)][wall]
            x, z = min(max(x, 0.4), W - 0.4), min(max(z, 0.4), D - 0.4)
            if not any(_overlaps((x, x, z, z), b, gap=0.3) for b in blockers):
                break
        else:  # no free spot: drop the furniture that is in the way
            self.objects = [o for o in self.objects if not (o.shadow and _overlaps((x, x, z, z), o.aabb, 0.3))]
        targets = [((o.aabb[0] + o.aabb[1]) / 2, (o.aabb[2] + o.aabb[3]) / 2) for o in self.objects if o.shadow]
        targets = [p for p in targets if math.hypot(p[0] - x, p[1] - z) > 1.2]
        for _ in range(20):  # a piece of furniture, or a point across the room
            if targets and rng.random() < 0.5:
                tx, tz = targets[rng.integers(len(targets))]
            else:
                tx, tz = rng.uniform(0, W), rng.uniform(0, D)
            if math.hypot(tx - x, tz - z) > 0.4 * math.hypot(W, D):
                break
        yaw = math.atan2(tx - x, tz - z) + rng.normal(0, 0.15)
        pitch = math.radians(float(np.clip(rng.normal(-10, 7), -25, 8)))  # negative: looking down
        roll = math.radians(float(np.clip(rng.normal(0, 2), -5, 5)))
        cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), \
            math.sin(roll)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        flip = np.diag([-1.0, -1.0, 1.0])  # camera (x right, y down, z fwd) -> world axes (y up) when yaw=0
        return np.array([x, rng.uniform(1.0, 1.8), z]), r_yaw @ r_pitch @ r_roll @ flip


# ------------------------------------------------------------------------------------------------ rendering
@lru_cache(maxsize=8)
def _camera_rays(height: int, width: int) -> np.ndarray:
    """(3, H*W) float32 ray directions in camera coordinates with z = 1 (so the ray parameter is z-depth)."""
    k = nyu_intrinsics(height, width)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)]).reshape(3, -1)
    rays[np.abs(rays) < 1e-7] = 1e-7  # keep slab divisions finite
    return rays.astype(np.float32)


@lru_cache(maxsize=8)
def _vignette(height: int, width: int) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((u - width / 2) / (width / 2)) ** 2 + ((v - height / 2) / (height / 2)) ** 2
    return (1 - 0.12 * r2).reshape(-1, 1)


def _slab(o: np.ndarray, d: list[np.ndarray], lo, hi) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Entry/exit ray parameters of an axis-aligned box for rays o + t d; also each axis's entry values."""
    near, far = [], []
    for a in range(3):
        t0, t1 = (lo[a] - o[a]) / d[a], (hi[a] - o[a]) / d[a]
        near.append(np.minimum(t0, t1))
        far.append(np.maximum(t0, t1))
    tmin = np.maximum(np.maximum(near[0], near[1]), near[2])
    tmax = np.minimum(np.minimum(far[0], far[1]), far[2])
    return tmin, tmax, near


def _screen_rect(obj: _Object, origin: np.ndarray, rot: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """Flat indices of the pixels inside the screen rectangle of the object's projected bounding box;
    empty if it is entirely behind the camera or off screen; None (all pixels) if it crosses the camera plane."""
    corners = np.array([[x, y, z] for x in (obj.lo[0], obj.hi[0]) for y in (obj.lo[1], obj.hi[1])
                        for z in (obj.lo[2], obj.hi[2])])
    cam = (corners @ obj.rot.T + np.array([obj.x, 0.0, obj.z]) - origin) @ rot  # world -> camera coordinates
    if np.all(cam[:, 2] <= 0):
        return np.empty(0, np.int64)
    if np.any(cam[:, 2] < 1e-3):
        return None
    k = nyu_intrinsics(height, width)
    u = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2]
    v = k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 1, width - 1)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 1, height - 1)
    if u0 > u1 or v0 > v1:
        return np.empty(0, np.int64)
    return (np.arange(v0, v1 + 1)[:, None] * width + np.arange(u0, u1 + 1)).ravel()


def _local(obj: _Object, origin: np.ndarray, dirs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ray origin and directions in the object's frame."""
    rt = obj.rot.T
    o = rt @ (origin - np.array([obj.x, 0.0, obj.z]))
    if obj.yaw == 0.0:
        return o, dirs
    return o, [rt[0, 0] * dirs[0] + rt[0, 2] * dirs[2], dirs[1], rt[2, 0] * dirs[0] + rt[2, 2] * dirs[2]]


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw and render one room: (rgb uint8 HxWx3, z-depth float32 HxW metres, unclipped)."""
    builder = _Builder(rng)
    room, _ = builder.build()
    origin, rot = builder.camera()
    tab = rng.random((64, 64)).astype(np.float32)
    t, face, parts, dirs = _cast(room, builder.objects, origin, rot, height, width)
    colour = _shade(builder, parts, origin, dirs, t, face, tab)
    colour *= _vignette(height, width)
    colour += rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(0.012)
    rgb = (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return rgb, t.reshape(height, width)


def _cast(room: _Part, objects: list[_Object], origin: np.ndarray, rot: np.ndarray, height: int, width: int):
    """First hit of every pixel's ray from camera centre `origin` with camera-to-world rotation `rot`.

    Returns t (N,) float32 z-depth in metres, face (N,) int16 = part index * 6 + axis * 2 + side (side 1: the
    box's upper plane on that axis), the (part, object) list that indexes faces (the room is part 0, object
    None), and the world ray directions (3, N).
    """
    dirs_all = rot.astype(np.float32) @ _camera_rays(height, width)
    tiny = np.abs(dirs_all) < 1e-7  # an exact 0 (float32 rounding near the horizon) would give 0/0 = NaN
    dirs_all[tiny] = np.where(dirs_all[tiny] < 0, -1e-7, 1e-7)
    dirs = [dirs_all[0], dirs_all[1], dirs_all[2]]
    t = np.full(height * width, np.inf, np.float32)
    face = np.zeros(height * width, np.int16)
    for a in range(3):  # the room: the ray leaves the box through the first plane it meets
        ta = (np.where(dirs[a] > 0, np.float32(room.hi[a]), np.float32(room.lo[a])) - np.float32(origin[a])) / dirs[a]
        closer = ta < t
        t = np.where(closer, ta, t)
        face[closer] = a * 2 + (dirs[a][closer] > 0)
    parts: list[tuple[_Part, _Object | None]] = [(room, None)]
    for obj in objects:  # objects: bounding box on the pixels of its screen rectangle, then parts on its hits
        pixels = _screen_rect(obj, origin, rot, height, width)
        if pixels is not None and pixels.size == 0:
            parts.extend((p, obj) for p in obj.parts)
            continue
        o, d = _local(obj, origin, dirs if pixels is None else [x[pixels] for x in dirs])
        tmin, tmax, _ = _slab(o, d, obj.lo, obj.hi)
        t_here = t if pixels is None else t[pixels]
        sel = np.flatnonzero((tmax >= tmin) & (tmin < t_here) & (tmax > 0))
        idx = sel if pixels is None else pixels[sel]
        ts, fs, ds = t[idx], face[idx], [x[sel] for x in d]
        for part in obj.parts:
            pmin, pmax, near = _slab(o, ds, part.lo, part.hi)
            hit = np.flatnonzero((pmax >= pmin) & (pmin > 0) & (pmin < ts))
            if hit.size:
                axis = np.where(near[0][hit] >= pmin[hit], 0, np.where(near[1][hit] >= pmin[hit], 1, 2))
                enter_lo = np.choose(axis, [ds[0][hit], ds[1][hit], ds[2][hit]]) > 0
                ts[hit] = pmin[hit]
                fs[hit] = len(parts) * 6 + axis * 2 + (~enter_lo)
            parts.append((part, obj))
        t[idx], face[idx] = ts, fs
    return t, face, parts, dirs_all


def _shade(builder: _Builder, parts: list, origin: np.ndarray, dirs: np.ndarray,
           t: np.ndarray, face: np.ndarray, tab: np.ndarray) -> np.ndarray:
    """Albedo x (ambient + Lambertian point light with 1/r^2 falloff) x shadows, per surface, (N, 3) float32."""
    rng = builder.rng
    ambient, power, light = rng.uniform(0.25, 0.4), rng.uniform(3.0, 6.0), builder.light
    footprints = [o for o in builder.objects if o.shadow]
    colour = np.empty((t.size, 3), np.float32)
    order = np.argsort(face, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(face, minlength=len(parts) * 6))])
    for s in np.flatnonzero(np.diff(bounds)):
        idx = order[bounds[s]:bounds[s + 1]]
        part, obj = parts[s // 6]
        axis, side = (s % 6) // 2, s % 2
        world = origin.astype(np.float32) + t[idx, None] * dirs[:, idx].T
        if obj is None:  # the room: normals point inwards
            local, normal = world, -np.eye(3)[axis] * (1 if side else -1)
        else:
            local = (world - np.array([obj.x, 0, obj.z], np.float32)) @ obj.rot.T.astype(np.float32).T
            normal = obj.rot @ (np.eye(3)[axis] * (1 if side else -1))
        ua, va = [(2, 1), (0, 2), (0, 1)][axis]
        u, v = local[:, ua] - part.lo[ua], local[:, va] - part.lo[va]
        mat = builder.mats[part.faces.get(axis * 2 + side, part.mat)]
        albedo = _TEXTURES[mat.kind](u, v, part.hi[ua] - part.lo[ua], part.hi[va] - part.lo[va], mat, tab)
        if mat.kind in _EMISSIVE:
            colour[idx] = albedo
            continue
        to_light = light.astype(np.float32) - world
        r2 = np.einsum("ij,ij->i", to_light, to_light)
        cos = to_light @ normal.astype(np.float32) / np.sqrt(r2)
        shade = ambient + power * np.maximum(cos, 0) / (r2 + 0.5)
        if obj is None:  # darken room edges and corners: distance to the two other axes' planes
            a, b = [(1, 2), (0, 2), (0, 1)][axis]
            gap = np.minimum(np.minimum(world[:, a], builder.room[a] - world[:, a]),
                             np.minimum(world[:, b], builder.room[b] - world[:, b]))
            shade *= 1 - 0.3 * np.exp(-gap / 0.25)
        if obj is None and axis == 1 and side == 0:  # floor: soft contact shadows of furniture
            fx, fz = world[:, 0], world[:, 2]
            for o in footprints:
                x0, x1, z0, z1 = o.aabb
                dx = np.maximum(np.maximum(x0 - fx, fx - x1), 0)
                dz = np.maximum(np.maximum(z0 - fz, fz - z1), 0)
                d2 = dx * dx + dz * dz
                near = np.flatnonzero(d2 < 0.36)  # beyond 0.6 m the shadow is < 0.3 %
                shade[near] *= 1 - 0.45 * np.exp(-np.sqrt(d2[near]) / 0.12)
        colour[idx] = albedo * shade[:, None]
    return colour


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> ProceduralScenes:
    no_split(spec, split, "use another seed for a different set")
    if "n" not in opts:
        raise DatasetError(spec, "procedural needs n=COUNT")
    return ProceduralScenes(**opts)


register_source("procedural", _open, {"n": opt_int, "seed": opt_int, "height": opt_int, "width": opt_int},
                takes_path=False)
