"""Pixels of the synthetic dataset: each scene drawn as a small RGB picture of its regions.

The picture shows what the region features encode, in the same boxes: a light background; the
distractor regions as faint grey striped rectangles (clutter; the stripes' direction and spacing
follow the background prototype, so equal clutter features look alike), drawn first and half
see-through; then every object as its shape in its colour, filling its box (so sizes and
positions are visible). An object's shape is drawn as a mask at `_SUPERSAMPLE` times the size
and averaged down: edges are anti-aliased, the inside of a shape has its colour.

Randomness (the background's shade, the distractors' grey and stripe phase, a slight jitter of
each object's colour) comes from a generator of its own, so painting leaves the regions and
captions exactly as they are without it.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

from retrerank.data.synthetic.scenes import COLOURS, SHAPES, Regions, Scene

# Part of the dataset's definition (see store._FORMAT_VERSION)
RGB = {  # distinct, saturated, far from the greys of the background and clutter
    "red": (220, 30, 30),
    "blue": (30, 70, 225),
    "green": (30, 165, 55),
    "yellow": (240, 205, 0),
    "purple": (145, 45, 185),
    "orange": (250, 130, 10),
}
_SUPERSAMPLE = 4
_COLOUR_JITTER = 10  # max change per channel of an object's colour
_CLUTTER_ALPHA = 0.6  # a distractor region's opacity over what lies below it
_CROSS_BAR = 0.36  # a cross's bar width, as a fraction of its box


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points  # first point straight up
    radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)


# polygons in unit coordinates; each is stretched so that its bounding box is the object's box
_POLYGONS = {"triangle": np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]]), "star": _star()}


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, box: np.ndarray) -> None:
    """Fill `shape` into `box` (x1, y1, x2, y2 in pixels of the mask, x2/y2 exclusive) with 255."""
    x1, y1, x2, y2 = box
    if shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=255)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=255)
    elif shape == "cross":
        half_w, half_h = (x2 - x1) * _CROSS_BAR / 2, (y2 - y1) * _CROSS_BAR / 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        draw.rectangle([x1, round(cy - half_h), x2 - 1, round(cy + half_h) - 1], fill=255)
        draw.rectangle([round(cx - half_w), y1, round(cx + half_w) - 1, y2 - 1], fill=255)
    else:
        unit = _POLYGONS[shape]
        unit = (unit - unit.min(0)) / (unit.max(0) - unit.min(0))
        corners = np.array([x1, y1]) + unit * np.array([x2 - x1 - 1, y2 - y1 - 1])
        draw.polygon([tuple(p) for p in corners], fill=255)


def _coverage(shape: str, box: np.ndarray, size: int) -> tuple[slice, slice, np.ndarray]:
    """The pixels the object's box touches and how much of each the shape covers ([h, w, 1] in [0, 1]),
    drawn at `_SUPERSAMPLE` times the size and averaged down."""
    x1, y1 = np.floor(box[:2] * size).astype(int)
    x2, y2 = np.ceil(box[2:] * size).astype(int)
    x2, y2 = min(max(x2, x1 + 1), size), min(max(y2, y1 + 1), size)
    mask = Image.new("L", ((x2 - x1) * _SUPERSAMPLE, (y2 - y1) * _SUPERSAMPLE), 0)
    origin = np.array([x1, y1, x1, y1]) * _SUPERSAMPLE
    _draw_object(ImageDraw.Draw(mask), shape, np.rint(box * size * _SUPERSAMPLE).astype(int) - origin)
    alpha = np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float64)[..., None] / 255
    return slice(y1, y2), slice(x1, x2), alpha


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.mgrid[0:size, 0:size])


def _clutter(canvas: np.ndarray, boxes: np.ndarray, kinds: np.ndarray, rng: np.random.Generator) -> None:
    """Distractor regions as faint grey striped rectangles, blended into canvas [S, S, 3] float."""
    size = canvas.shape[0]
    yy, xx = _grid(size)
    for box, kind in zip(boxes, kinds):
        x1, y1, x2, y2 = np.clip(np.rint(box * size).astype(int), 0, size)
        if x2 <= x1 or y2 <= y1:
            continue
        grey = rng.uniform(195, 230)
        direction, period = int(kind) % 4, 3 + int(kind) // 4 % 2
        ys, xs = yy[y1:y2, x1:x2], xx[y1:y2, x1:x2]
        along = (ys, xs, xs + ys, xs - ys)[direction] + int(rng.integers(0, period))
        patch = np.where(along % period == 0, grey - 25, grey)[..., None]
        canvas[y1:y2, x1:x2] = _CLUTTER_ALPHA * patch + (1 - _CLUTTER_ALPHA) * canvas[y1:y2, x1:x2]


def paint(scene: Scene, regions: Regions, size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as [size, size, 3] uint8: background, clutter, then the objects in their boxes."""
    shade = rng.uniform(238, 255) + rng.uniform(-4, 4, 3)
    canvas = np.empty((size, size, 3))
    canvas[...] = np.minimum(shade, 255)
    _clutter(canvas, regions.background_boxes, regions.background_kinds, rng)
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, (len(scene), 3))
    for obj, box, shift in zip(scene, regions.object_boxes, jitter):
        colour = np.clip(np.array(RGB[COLOURS[obj.colour]]) + shift, 0, 255)
        rows, cols, alpha = _coverage(SHAPES[obj.shape], box, size)
        canvas[rows, cols] = alpha * colour + (1 - alpha) * canvas[rows, cols]
    return np.rint(canvas).astype(np.uint8)
