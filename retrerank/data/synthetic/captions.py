"""What captions say, independent of language: caption contents, their truth, and planning them.

Kinds: a list of all objects, a spatial relation ("a red circle left of a blue square"), a
conjunction ("a small red circle and a large blue square") and a single object, optionally
with its position. A scene's planned captions are true of it and, where the scene allows,
false of its twin; scenes_true_of finds every scene of a split a caption is true of (exact
relevance); foil_items makes a caption's near misses that are false of its scene (hard negative
captions). language.realize turns a planned Item into text.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import NamedTuple

from retrerank.data.synthetic.scenes import COLOURS, GRID, INVERSE, RELATIONS, Obj, Scene, relation_holds

# Part of the dataset's definition (see store._FORMAT_VERSION)
_KINDS = ("rel",) * 10 + ("and",) * 4 + ("obj",) * 3 + ("list",) * 3  # caption kind weights
_PART_KINDS = tuple(kind for kind in _KINDS if kind != "list")  # captions about a part of a busy scene
_TRIES = 40  # sampled caption candidates before searching all of them


class Desc(NamedTuple):
    """An object as a caption describes it: size and cell are None when not mentioned."""

    shape: int
    colour: int
    size: int | None
    cell: int | None


class Item(NamedTuple):
    """The language-independent content of one caption."""

    kind: str  # obj | rel | and | list
    descs: tuple[Desc, ...]
    relation: str | None = None  # for rel: descs[0] <relation> descs[1]


def holds(item: Item, scene: Scene) -> bool:
    """Whether a caption's content is true of a scene (colour + shape name one object)."""
    found = []
    for d in item.descs:
        for o in scene:  # a plain scan: scenes_true_of calls this ~10^5 times per split
            if o.colour == d.colour and o.shape == d.shape:
                break
        else:
            return False
        if d.size not in (None, o.size) or d.cell not in (None, o.cell):
            return False
        found.append(o)
    if item.kind == "list":
        return len(scene) == len(item.descs)
    if item.kind == "rel":
        return relation_holds(found[0], found[1], item.relation)
    return True


def scenes_true_of(items: Sequence[Item], scenes: Sequence[Scene]) -> list[tuple[int, ...]]:
    """For each item, the rows of the scenes it holds for, ascending (exact relevance).

    `holds` decides, but runs only on the scenes that have an object for each of the item's descs:
    the scenes are indexed by what a desc can name (colour and shape, with or without size and
    cell), which keeps a split of thousands of scenes and captions to ~10^5 `holds` calls."""
    by_desc: dict[tuple, set[int]] = {}
    for row, scene in enumerate(scenes):
        for o in scene:
            for size, cell in itertools.product((None, o.size), (None, o.cell)):
                by_desc.setdefault((o.colour, o.shape, size, cell), set()).add(row)
    done: dict[Item, tuple[int, ...]] = {}  # the same caption content recurs ("a red circle")
    out = []
    for item in items:
        if item not in done:
            pools = sorted((by_desc.get((d.colour, d.shape, d.size, d.cell), set()) for d in item.descs), key=len)
            candidates = set.intersection(*pools) if pools else set(range(len(scenes)))
            done[item] = tuple(sorted(r for r in candidates if holds(item, scenes[r])))
        out.append(done[item])
    return out


def _sample_item(scene: Scene, rnd: random.Random, kind: str | None = None, lists: bool = True) -> Item:
    if kind is None:
        kind = "obj" if len(scene) == 1 else rnd.choice(_KINDS if lists else _PART_KINDS)

    def desc(o: Obj, cell: int | None = None) -> Desc:
        return Desc(o.shape, o.colour, o.size if rnd.random() < 0.5 else None, cell)

    if kind == "obj":
        o = rnd.choice(scene)
        return Item("obj", (desc(o, o.cell if rnd.random() < 0.6 else None),))
    if kind == "list":
        return Item("list", tuple(desc(o) for o in scene))
    a, b = rnd.sample(scene, 2)
    if kind == "and":
        return Item("and", (desc(a), desc(b)))
    return Item("rel", (desc(a), desc(b)), rnd.choice([r for r in RELATIONS if relation_holds(a, b, r)]))


def _all_items(scene: Scene, lists: bool = True) -> list[Item]:
    """Every caption content that is true of the scene (a few hundred at most)."""

    def sized(o: Obj) -> tuple[Desc, Desc]:
        return Desc(o.shape, o.colour, None, None), Desc(o.shape, o.colour, o.size, None)

    items = [Item("obj", (d._replace(cell=cell),)) for o in scene for d in sized(o) for cell in (None, o.cell)]
    for a, b in itertools.permutations(scene, 2):
        for da, db in itertools.product(sized(a), sized(b)):
            items.append(Item("and", (da, db)))
            items += [Item("rel", (da, db), r) for r in RELATIONS if relation_holds(a, b, r)]
    if len(scene) > 1 and lists:
        items += [Item("list", descs) for descs in itertools.product(*map(sized, scene))]
    return items


def plan_captions(
    scene: Scene,
    twin: Scene | None,
    k: int,
    rnd: random.Random,
    must_mention: set | None = None,
    list_max_objects: int = 9,
) -> list[Item]:
    """k caption contents for a scene, each naming a must_mention combo (if given), false for the
    twin (whenever the scene allows both) and, where sampling finds one, not a repeat. A scene of
    more than `list_max_objects` objects gets no caption listing them all: its captions speak
    about a part of it, as captions of busy photos do."""
    lists = len(scene) <= list_max_objects

    def mentions(item: Item) -> bool:
        return must_mention is None or any((d.colour, d.shape) in must_mention for d in item.descs)

    def tells_apart(item: Item) -> bool:
        return twin is None or not holds(item, twin)

    items: list[Item] = []
    for slot in range(k):
        # the first caption of a multi-object scene tries to name every object
        first = "list" if slot == 0 and len(scene) > 1 and lists else None
        for attempt in range(_TRIES):
            item = _sample_item(scene, rnd, first if attempt < 5 else None, lists)
            if item not in items and mentions(item) and tells_apart(item):
                break
        else:  # rare: search all captions, giving up telling the twin apart only if nothing can
            candidates = [it for it in _all_items(scene, lists) if mentions(it)]
            candidates = [it for it in candidates if tells_apart(it)] or candidates
            kind = rnd.choice(sorted({it.kind for it in candidates}))  # else the many lists would win
            item = rnd.choice([it for it in candidates if it.kind == kind])
        items.append(item)
    rnd.shuffle(items)
    return items


def _foil_families(item: Item) -> dict[str, list[Item]]:
    """Near misses of a caption, by what they change: `binding` swaps the colours (or the sizes) of
    two named objects, `relation` inverts the relation, `attribute` names another colour, size or
    position for one object. Not checked against any scene here."""
    descs, out = item.descs, {"binding": [], "relation": [], "attribute": []}
    for i, j in itertools.combinations(range(len(descs)), 2):
        a, b = descs[i], descs[j]
        for key in ("colour", "size"):
            if getattr(a, key) is not None and getattr(b, key) is not None and getattr(a, key) != getattr(b, key):
                swapped = list(descs)
                swapped[i], swapped[j] = a._replace(**{key: getattr(b, key)}), b._replace(**{key: getattr(a, key)})
                out["binding"].append(item._replace(descs=tuple(swapped)))
    if item.kind == "rel":
        out["relation"].append(item._replace(relation=INVERSE[item.relation]))
    for i, d in enumerate(descs):
        changes = [{"colour": c} for c in range(len(COLOURS)) if c != d.colour]
        changes += [{"size": 1 - d.size}] if d.size is not None else []
        changes += [{"cell": c} for c in range(GRID * GRID) if c != d.cell] if d.cell is not None else []
        for change in changes:
            changed = list(descs)
            changed[i] = d._replace(**change)
            out["attribute"].append(item._replace(descs=tuple(changed)))
    return out


def foil_items(item: Item, scene: Scene, n: int, rnd: random.Random) -> list[Item]:
    """Up to n distinct near misses of a caption that are false of its scene (`holds` decides).

    Why: a twin differs from its scene by two objects' swapped colours, positions or sizes, so the
    twin's captions are near misses of the scene's own. A training batch rarely holds a scene's
    twin, so its sampled negative captions seldom are near misses; foils are (NegCLIP's swapped
    hard negative captions, Yuksekgonul et al. 2023). Each foil draws a family first (binding,
    relation, attribute: see _foil_families), so that the few binding swaps are not outnumbered by
    the many attribute changes."""
    families = {name: [f for f in items if not holds(f, scene)] for name, items in _foil_families(item).items()}
    foils: list[Item] = []
    while len(foils) < n:
        open_ = [name for name in sorted(families) if any(f not in foils for f in families[name])]
        if not open_:
            break
        name = rnd.choice(open_)
        foils.append(rnd.choice([f for f in families[name] if f not in foils]))
    return foils
