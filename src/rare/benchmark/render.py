"""Draw scenes with PIL and write them as PNG files, optionally in worker processes.

Rendering is a pure function of the scene, so files are byte-identical for identical scenes
whatever the number of workers. Shapes are drawn at twice the size and box-reduced, which
keeps small shapes recognisable at 64x64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rare.benchmark.scene import Emblem, Mark, Obj, Scene
from rare.benchmark.vocab import BACKGROUNDS, CELLS, EMBLEM_COLORS, SCENE_COLORS, SIZES

SUPERSAMPLE = 2
PARALLEL_MIN_JOBS = 2000  # below this, starting processes costs more than it saves
EMBLEM_RADIUS = {"large": 24.0, "small": 10.5}


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _polygon(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(math.radians(start_deg + 360 * i / n)),
             cy + r * math.sin(math.radians(start_deg + 360 * i / n))) for i in range(n)]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rr = r if i % 2 == 0 else r * 0.45
        a = math.radians(-90 + rot + 36 * i)
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _cross(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    w = r * 0.36
    base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _shield(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + 0.15 * r), (cx, cy + r), (cx - r, cy + 0.15 * r)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float,
               fill: tuple[int, int, int], outline: tuple[int, int, int] | None = None, width: int = 0) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        return
    pts = {
        "square": lambda: _polygon(cx, cy, r * 1.2, 4, 45 + rot),
        "diamond": lambda: _polygon(cx, cy, r * 1.15, 4, rot),
        "triangle": lambda: _polygon(cx, cy + r * 0.15, r * 1.15, 3, -90 + rot),
        "hexagon": lambda: _polygon(cx, cy, r * 1.05, 6, rot),
        "star": lambda: _star(cx, cy, r * 1.25, rot),
        "cross": lambda: _cross(cx, cy, r * 1.1, rot),
        "shield": lambda: _shield(cx, cy, r),
    }[shape]()
    draw.polygon(pts, fill=fill, outline=outline, width=width)


def _shaded(rgb: tuple[int, int, int], delta: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + d)) for c, d in zip(rgb, delta))  # type: ignore[return-value]


def _cell_center(cell: str) -> tuple[float, float]:
    col, row = CELLS[cell]
    return (col + 0.5) * 64 / 3, (row + 0.5) * 64 / 3


def _draw_emblem(draw: ImageDraw.ImageDraw, mark: Mark, k: float, shift: tuple[float, float]) -> None:
    e: Emblem = mark.emblem
    r = EMBLEM_RADIUS[mark.size]
    cx, cy = (32.0, 32.0) if mark.size == "large" else _cell_center(mark.cell)
    cx, cy, r = (cx + shift[0]) * k, (cy + shift[1]) * k, r * k
    body = EMBLEM_COLORS[e.color]
    border = EMBLEM_COLORS[e.border] if e.border else None
    draw_shape(draw, e.shape, cx, cy, r, 0.0, body, border, max(1, round(r * 0.14)) if border else 0)
    sr, sym = r * 0.45, EMBLEM_COLORS[e.symbol_color]
    if e.symbol == "crescent":
        draw.ellipse((cx - sr, cy - sr, cx + sr, cy + sr), fill=sym)
        o = sr * 0.45
        draw.ellipse((cx - sr + o, cy - sr - o * 0.3, cx + sr + o, cy + sr - o * 0.3), fill=body)
    elif e.symbol == "bar":
        draw.rectangle((cx - r * 0.7, cy - sr * 0.35, cx + r * 0.7, cy + sr * 0.35), fill=sym)
    elif e.symbol == "ring":
        draw.ellipse((cx - sr, cy - sr, cx + sr, cy + sr), outline=sym, width=max(1, round(sr * 0.3)))
    else:
        draw_shape(draw, e.symbol, cx, cy, sr, 0.0, sym)


def _draw_object(draw: ImageDraw.ImageDraw, o: Obj, k: float, shift: tuple[float, float]) -> None:
    cx, cy = _cell_center(o.cell)
    r = SIZES[o.size] * o.scale
    draw_shape(draw, o.shape, (cx + o.dx + shift[0]) * k, (cy + o.dy + shift[1]) * k, r * k, o.rot,
               _shaded(SCENE_COLORS[o.color], o.shade))


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image."""
    k = size * SUPERSAMPLE / 64
    img = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    if scene.mark is not None:
        _draw_emblem(draw, scene.mark, k, scene.shift)
    for obj in scene.objects:
        _draw_object(draw, obj, k, scene.shift)
    for word in scene.words:
        cx, cy = _cell_center(word.cell)
        draw.text(((cx + scene.shift[0]) * k, (cy + scene.shift[1]) * k), word.text,
                  fill=SCENE_COLORS[word.color], font=_font(round(10 * k)), anchor="mm")
    img = img.reduce(SUPERSAMPLE)
    if scene.brightness != 1.0:
        img = img.point(lambda v: min(255, round(v * scene.brightness)))
    return img


def _write(job: tuple[Path, Scene, int]) -> None:
    path, scene, size = job
    render(scene, size).save(path, format="PNG", compress_level=6)


def render_all(jobs: Sequence[tuple[Path, Scene]], size: int, workers: int = 0) -> int:
    """Write every (path, scene) as PNG; ``workers`` > 1 uses processes (0 = one per core, at most 4)."""
    for parent in {path.parent for path, _ in jobs}:
        parent.mkdir(parents=True, exist_ok=True)
    work = [(path, scene, size) for path, scene in jobs]
    n = workers or min(4, os.cpu_count() or 1)
    if n <= 1 or len(work) < PARALLEL_MIN_JOBS:
        for job in work:
            _write(job)
    else:
        with ProcessPoolExecutor(max_workers=n) as pool:
            for _ in pool.map(_write, work, chunksize=256):
                pass
    return len(work)
