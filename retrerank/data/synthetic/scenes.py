"""Scenes of the synthetic dataset: objects on the layout grid, their twins, their region features.

An image holds `min_objects..max_objects` objects on a 3x3 layout grid, at most one object per
cell; no two objects of a scene share a colour *and* a shape. A twin is a copy of a scene with
the colours, the positions or the sizes of two objects swapped. Region features are a sum of
fixed random prototypes (shape + colour + size) plus noise, with background regions mixed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from retrerank.config import SyntheticConfig

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
SIZES = ("small", "large")
RELATIONS = ("left", "right", "above", "below")
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}  # a R b == b INVERSE[R] a

# Part of the dataset's definition, not tunable knobs: changing them changes the data, so they
# enter the cache key through store._FORMAT_VERSION.
GRID = 3  # layout grid is GRID x GRID cells
# which attribute a twin swaps between two objects: binding (colour) swaps are the point
_TWIN_SWAPS = ("colour",) * 4 + ("cell",) * 2 + ("size",)
_N_BACKGROUND = 8  # distinct background prototypes for distractor regions


class Obj(NamedTuple):
    shape: int
    colour: int
    size: int
    cell: int  # row * GRID + col


Scene = tuple[Obj, ...]


def relation_holds(a: Obj, b: Obj, relation: str) -> bool:
    """Whether `a <relation> b` on the grid ("left": a's column is left of b's, ...)."""
    (ra, ca), (rb, cb) = divmod(a.cell, GRID), divmod(b.cell, GRID)
    return {"left": ca < cb, "right": ca > cb, "above": ra < rb, "below": ra > rb}[relation]


def _make_scene(cfg: SyntheticConfig, rnd: random.Random, held_out: set, novel: bool) -> Scene:
    n = rnd.randint(cfg.min_objects, cfg.max_objects)
    everything = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    if novel:  # one held-out combo for sure, the rest from anything
        first = rnd.choice(sorted(held_out))
        pairs = [first] + rnd.sample([p for p in everything if p != first], n - 1)
    else:
        pairs = rnd.sample([p for p in everything if p not in held_out], n)
    cells = rnd.sample(range(GRID * GRID), n)
    return tuple(Obj(shape=s, colour=c, size=rnd.randint(0, 1), cell=cell) for (c, s), cell in zip(pairs, cells))


def _make_twin(scene: Scene, rnd: random.Random, allowed: Callable[[Scene], bool]) -> Scene | None:
    """The scene with the colours (most often), positions or sizes of two objects swapped."""
    for _ in range(10):
        field = rnd.choice(_TWIN_SWAPS)
        pairs = [
            (i, j)
            for i in range(len(scene))
            for j in range(i + 1, len(scene))
            if getattr(scene[i], field) != getattr(scene[j], field)
            and (field != "colour" or scene[i].shape != scene[j].shape)
        ]  # else it is a position swap
        rnd.shuffle(pairs)
        for i, j in pairs:
            a, b = scene[i], scene[j]
            twin = list(scene)
            twin[i], twin[j] = a._replace(**{field: getattr(b, field)}), b._replace(**{field: getattr(a, field)})
            if len({(o.colour, o.shape) for o in twin}) == len(twin) and allowed(tuple(twin)):
                return tuple(twin)
    return None


def make_scenes(
    cfg: SyntheticConfig, n: int, rnd: random.Random, held_out: set, novel: bool
) -> list[tuple[Scene, Scene | None]]:
    """n scenes, each with its twin (or None), in random order."""

    def allowed(scene: Scene) -> bool:
        has = any((o.colour, o.shape) in held_out for o in scene)
        return has if novel else not has

    out: list[tuple[Scene, Scene | None]] = []
    while len(out) < n:
        scene = _make_scene(cfg, rnd, held_out, novel)
        twin = None
        if len(out) + 1 < n and len(scene) > 1 and rnd.random() < cfg.twin_fraction:
            twin = _make_twin(scene, rnd, allowed)
        out.append((scene, twin))
        if twin is not None:
            out.append((twin, scene))
    rnd.shuffle(out)  # twins must not sit next to each other
    return out


class Prototypes(NamedTuple):
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    background: np.ndarray


def prototypes(cfg: SyntheticConfig) -> Prototypes:
    """The fixed random vectors that region features are built from, a function of cfg.seed."""
    rng = np.random.default_rng([cfg.seed, 1000])
    d = cfg.feature_dim
    part = 1 / np.sqrt(3)  # three parts sum to about unit variance per dimension, like a background region
    return Prototypes(
        rng.normal(0, part, (len(SHAPES), d)),
        rng.normal(0, part, (len(COLOURS), d)),
        rng.normal(0, part, (len(SIZES), d)),
        rng.normal(0, 1, (_N_BACKGROUND, d)),
    )


class Regions(NamedTuple):
    """One scene's regions: what the records hold, and the layout that paint.py draws."""

    features: np.ndarray  # [R, D] float32, regions in random order
    boxes: np.ndarray  # [R, 4] float32, the same order
    object_boxes: np.ndarray  # [n, 4] the boxes of scene[0..n-1], in scene order (float64)
    background_boxes: np.ndarray  # [m, 4] the distractor regions' boxes (float64)
    background_kinds: np.ndarray  # [m] which background prototype each distractor region is built from


def render(scene: Scene, protos: Prototypes, cfg: SyntheticConfig, rng: np.random.Generator) -> Regions:
    """Region features [R, D] and boxes [R, 4] of one scene, regions in random order, + the layout."""
    n = len(scene)
    shape, colour, size, cell = (np.array(v) for v in zip(*scene))
    side = np.where(size == 1, rng.uniform(0.22, 0.30, n), rng.uniform(0.10, 0.15, n))
    wh = np.minimum(side[:, None] * rng.uniform(0.85, 1.15, (n, 2)), 1 / GRID - 0.02)
    corner = np.stack([cell % GRID, cell // GRID], 1) / GRID + 0.01  # (x, y) of the cell, inset
    xy = corner + rng.uniform(0, 1, (n, 2)) * (1 / GRID - 0.02 - wh)  # the box stays inside its cell
    features = protos.shape[shape] + protos.colour[colour] + protos.size[size]

    m = int(rng.integers(0, cfg.max_distractors + 1))
    bg_wh = rng.uniform(0.25, 1.0, (m, 2))
    bg_xy = rng.uniform(0, 1, (m, 2)) * (1 - bg_wh)
    kinds = rng.integers(0, _N_BACKGROUND, m)
    bg = protos.background[kinds]

    features = np.concatenate([features, bg]) + rng.normal(0, cfg.feature_noise, (n + m, cfg.feature_dim))
    object_boxes, background_boxes = np.hstack([xy, xy + wh]), np.hstack([bg_xy, bg_xy + bg_wh])
    boxes = np.concatenate([object_boxes, background_boxes])
    order = rng.permutation(n + m)
    return Regions(
        features[order].astype(np.float32), boxes[order].astype(np.float32), object_boxes, background_boxes, kinds
    )
