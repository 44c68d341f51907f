"""The embedded synthetic dataset: coloured shapes, detector-like regions, multilingual captions.

Scenes. An image holds `min_objects..max_objects` objects on a 3x3 layout grid, at most one
object per cell. An object has a shape (circle, square, triangle, star, cross), a colour (red,
blue, green, yellow, purple, orange) and a size (small, large); no two objects of a scene share
a colour *and* a shape, so a caption's "red circle" names exactly one object. Objects in
different columns (rows) never overlap horizontally (vertically), so "left of", "right of",
"above" and "below" are unambiguous whenever a caption uses them.

Confusers. About half of the multi-object scenes get a *twin* in the same split: a copy with
the colours, the positions or the sizes of two objects swapped. A twin has the same bag of
words as its original but a different binding ("red circle + blue square" vs "blue circle +
red square"), so models that pool words or regions into a bag cannot tell the two apart.
Each caption of a twin is chosen to be false for the other twin (in the novel split, where
the need to name a held-out combo allows).

Features. Each object is one region: a fixed random prototype for its shape + one for its
colour + one for its size, plus Gaussian noise of std `feature_noise` (float32, width
`feature_dim`). Each image also gets 0..max_distractors background regions built from
prototypes that match no word. Boxes are normalised (x1, y1, x2, y2), y grows downwards;
region order is shuffled. Up to noise and background regions, the sum of the regions of a
scene equals that of its colour-swapped twin: only per-region binding separates them.

Captions. `captions_per_image` captions per image and language (en, de, fr, cs), from several
templates per language with synonyms and word-order variants. The captions of one image are
parallel across languages (caption k states the same facts in every language). Kinds: a
list of all objects ("three shapes: ..."), a spatial relation ("a red circle left of a blue
square"), a conjunction ("a small red circle and a large blue square") and a single object,
optionally with its position ("a green star in the top left").

Splits. train / val / test never contain the `held_out_combos` (colour + shape pairs); the
"novel" split (n_test images) has at least one of them in every image, and each of its
captions mentions one. Everything is a function of the SyntheticConfig: it is generated once
into `<root>/synthetic/<hash of the config>/` and read from there afterwards.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from retrerank.config import ConfigError, SyntheticConfig
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.io import write_json_atomic, write_text_atomic

SPLITS = ("train", "val", "test", "novel")
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
SIZES = ("small", "large")
LANGUAGES = ("en", "de", "fr", "cs")
RELATIONS = ("left", "right", "above", "below")
_INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}

# Part of the dataset's definition, not tunable knobs: changing them changes the data, so they
# enter the cache key through _FORMAT_VERSION.
_FORMAT_VERSION = 1
_GRID = 3  # layout grid is _GRID x _GRID cells
_TWIN_FRACTION = 0.5  # chance that a multi-object scene gets an attribute/position-swapped twin
# which attribute a twin swaps between two objects: binding (colour) swaps are the point
_TWIN_SWAPS = ("colour",) * 4 + ("cell",) * 2 + ("size",)
_N_BACKGROUND = 8  # distinct background prototypes for distractor regions
_KINDS = ("rel",) * 10 + ("and",) * 4 + ("obj",) * 3 + ("list",) * 3  # caption kind weights
_TRIES = 40  # sampled caption candidates before searching all of them


class Obj(NamedTuple):
    shape: int
    colour: int
    size: int
    cell: int  # row * _GRID + col


class Desc(NamedTuple):
    """An object as a caption describes it: size and cell are None when not mentioned."""

    shape: int
    colour: int
    size: Optional[int]
    cell: Optional[int]


class Item(NamedTuple):
    """The language-independent content of one caption."""

    kind: str  # obj | rel | and | list
    descs: tuple[Desc, ...]
    relation: Optional[str] = None  # for rel: descs[0] <relation> descs[1]


Scene = tuple[Obj, ...]


# ----------------------------------------------------------------------------- languages


class Language(NamedTuple):
    cases: tuple[str, ...]  # the noun-phrase cases the templates use, e.g. A_nom, B_dat
    np: Callable[[Desc, str], str]  # indefinite noun phrase in a case
    relations: dict[str, tuple[str, ...]]  # relation -> phrases with a {B_<case>} slot
    templates: dict[str, tuple[str, ...]]  # kind (obj, obj_pos, rel, and, list) -> templates
    positions: tuple[str, ...]  # one phrase per grid cell, row-major
    count: Callable[[int], str]  # "three shapes"
    conj: str  # "and", for lists
    fixups: tuple[tuple[re.Pattern, str], ...] = ()  # a -> an, de un -> d'un, s -> se


def _np_en(d: Desc, case: str) -> str:
    size = [SIZES[d.size]] if d.size is not None else []
    return " ".join(["a", *size, COLOURS[d.colour], SHAPES[d.shape]])


_DE_NOUNS = (("Kreis", "m"), ("Quadrat", "n"), ("Dreieck", "n"), ("Stern", "m"), ("Kreuz", "n"))
_DE_COLOURS = ("rot", "blau", "grün", "gelb", "violett", "orangefarben")
_DE_SIZES = ("klein", "groß")
_DE_ARTICLE = {  # indefinite article and the mixed-declension adjective ending after it
    "nom": {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")},
    "acc": {"m": ("einen", "en"), "n": ("ein", "es"), "f": ("eine", "e")},
    "dat": {"m": ("einem", "en"), "n": ("einem", "en"), "f": ("einer", "en")},
}


def _np_de(d: Desc, case: str) -> str:
    noun, gender = _DE_NOUNS[d.shape]
    article, ending = _DE_ARTICLE[case][gender]
    stems = ([_DE_SIZES[d.size]] if d.size is not None else []) + [_DE_COLOURS[d.colour]]
    return " ".join([article, *(stem + ending for stem in stems), noun])


_FR_NOUNS = (("cercle", "m"), ("carré", "m"), ("triangle", "m"), ("étoile", "f"), ("croix", "f"))
_FR_COLOURS = (("rouge", "rouge"), ("bleu", "bleue"), ("vert", "verte"), ("jaune", "jaune"),
               ("violet", "violette"), ("orange", "orange"))
_FR_SIZES = (("petit", "petite"), ("grand", "grande"))  # placed before the noun


def _np_fr(d: Desc, case: str) -> str:
    noun, gender = _FR_NOUNS[d.shape]
    g = 0 if gender == "m" else 1
    size = [_FR_SIZES[d.size][g]] if d.size is not None else []
    return " ".join([("un", "une")[g], *size, noun, _FR_COLOURS[d.colour][g]])


_CS_CASES = ("nom", "acc", "gen", "ins")
_CS_NOUNS = (  # gender, then the forms in _CS_CASES order
    ("m", "kruh", "kruh", "kruhu", "kruhem"),
    ("m", "čtverec", "čtverec", "čtverce", "čtvercem"),
    ("m", "trojúhelník", "trojúhelník", "trojúhelníku", "trojúhelníkem"),
    ("f", "hvězda", "hvězdu", "hvězdy", "hvězdou"),
    ("m", "kříž", "kříž", "kříže", "křížem"),
)
_CS_COLOURS = ("červen", "modr", "zelen", "žlut", "fialov", "oranžov")  # hard adjective stems
_CS_SIZES = ("mal", "velk")
_CS_ENDINGS = {"m": {"nom": "ý", "acc": "ý", "gen": "ého", "ins": "ým"},  # masculine inanimate
               "f": {"nom": "á", "acc": "ou", "gen": "é", "ins": "ou"}}


def _np_cs(d: Desc, case: str) -> str:
    gender, *forms = _CS_NOUNS[d.shape]
    ending = _CS_ENDINGS[gender][case]
    stems = ([_CS_SIZES[d.size]] if d.size is not None else []) + [_CS_COLOURS[d.colour]]
    return " ".join([*(stem + ending for stem in stems), forms[_CS_CASES.index(case)]])


def _numbers(words: str) -> dict[int, str]:
    return dict(enumerate(words.split(), start=2))


_EN_NUM = _numbers("two three four five six seven eight nine")
_DE_NUM = _numbers("zwei drei vier fünf sechs sieben acht neun")
_FR_NUM = _numbers("deux trois quatre cinq six sept huit neuf")
_CS_NUM = _numbers("dva tři čtyři pět šest sedm osm devět")

LANGS: dict[str, Language] = {
    "en": Language(
        cases=("nom",), np=_np_en,
        relations={"left": ("left of {B_nom}", "to the left of {B_nom}"),
                   "right": ("right of {B_nom}", "to the right of {B_nom}"),
                   "above": ("above {B_nom}", "over {B_nom}"),
                   "below": ("below {B_nom}", "under {B_nom}", "beneath {B_nom}")},
        templates={
            "obj": ("{A_nom}", "there is {A_nom}", "a picture of {A_nom}", "an image showing {A_nom}"),
            "obj_pos": ("{A_nom} {P}", "there is {A_nom} {P}", "{P} there is {A_nom}"),
            "rel": ("{A_nom} {R}", "there is {A_nom} {R}", "{A_nom} is {R}", "{A_nom} placed {R}"),
            "and": ("{A_nom} and {B_nom}", "{A_nom} together with {B_nom}",
                    "there is {A_nom} and {B_nom}", "a picture of {A_nom} and {B_nom}"),
            "list": ("{N}: {L}", "there are {N}: {L}", "{L}", "a picture with {N}: {L}"),
        },
        positions=("in the top left", "at the top", "in the top right", "on the left", "in the centre",
                   "on the right", "in the bottom left", "at the bottom", "in the bottom right"),
        count=lambda n: f"{_EN_NUM[n]} shapes", conj="and",
        fixups=((re.compile(r"\ba (?=[aeiou])"), "an "),),
    ),
    "de": Language(
        cases=("nom", "acc", "dat"), np=_np_de,
        relations={"left": ("links von {B_dat}", "links neben {B_dat}"),
                   "right": ("rechts von {B_dat}", "rechts neben {B_dat}"),
                   "above": ("über {B_dat}", "oberhalb von {B_dat}"),
                   "below": ("unter {B_dat}", "unterhalb von {B_dat}")},
        templates={
            "obj": ("{A_nom}", "es gibt {A_acc}", "ein Bild mit {A_dat}"),
            "obj_pos": ("{A_nom} {P}", "{P} ist {A_nom}", "es gibt {A_acc} {P}"),
            "rel": ("{A_nom} {R}", "es gibt {A_acc} {R}", "{A_nom} befindet sich {R}", "{R} ist {A_nom}"),
            "and": ("{A_nom} und {B_nom}", "{A_nom} zusammen mit {B_dat}", "es gibt {A_acc} und {B_acc}",
                    "ein Bild mit {A_dat} und {B_dat}"),
            "list": ("{N}: {L}", "es gibt {N}: {L}", "{L}", "ein Bild mit {N}: {L}"),
        },
        positions=("oben links", "oben", "oben rechts", "links", "in der Mitte", "rechts",
                   "unten links", "unten", "unten rechts"),
        count=lambda n: f"{_DE_NUM[n]} Formen", conj="und",
    ),
    "fr": Language(
        cases=("nom",), np=_np_fr,
        relations={"left": ("à gauche de {B_nom}",), "right": ("à droite de {B_nom}",),
                   "above": ("au-dessus de {B_nom}",), "below": ("en dessous de {B_nom}", "sous {B_nom}")},
        templates={
            "obj": ("{A_nom}", "il y a {A_nom}", "une image avec {A_nom}"),
            "obj_pos": ("{A_nom} {P}", "il y a {A_nom} {P}", "{P}, {A_nom}"),
            "rel": ("{A_nom} {R}", "il y a {A_nom} {R}", "{A_nom} se trouve {R}", "{R} se trouve {A_nom}"),
            "and": ("{A_nom} et {B_nom}", "{A_nom} avec {B_nom}", "il y a {A_nom} et {B_nom}",
                    "une image avec {A_nom} et {B_nom}"),
            "list": ("{N} : {L}", "il y a {N} : {L}", "{L}", "une image avec {N} : {L}"),
        },
        positions=("en haut à gauche", "en haut", "en haut à droite", "à gauche", "au centre",
                   "à droite", "en bas à gauche", "en bas", "en bas à droite"),
        count=lambda n: f"{_FR_NUM[n]} formes", conj="et",
        fixups=((re.compile(r"\bde (une?)\b"), r"d'\1"),),
    ),
    "cs": Language(
        cases=_CS_CASES, np=_np_cs,
        relations={"left": ("vlevo od {B_gen}", "nalevo od {B_gen}"),
                   "right": ("vpravo od {B_gen}", "napravo od {B_gen}"),
                   "above": ("nad {B_ins}",), "below": ("pod {B_ins}",)},
        templates={
            "obj": ("{A_nom}", "na obrázku je {A_nom}", "obrázek s {A_ins}"),
            "obj_pos": ("{A_nom} {P}", "{P} je {A_nom}", "na obrázku je {A_nom} {P}"),
            "rel": ("{A_nom} {R}", "{A_nom} je {R}", "{R} je {A_nom}", "na obrázku je {A_nom} {R}"),
            "and": ("{A_nom} a {B_nom}", "{A_nom} spolu s {B_ins}", "na obrázku jsou {A_nom} a {B_nom}",
                    "obrázek s {A_ins} a {B_ins}"),
            "list": ("{N}: {L}", "celkem {N}: {L}", "{L}"),
        },
        positions=("vlevo nahoře", "nahoře", "vpravo nahoře", "vlevo", "uprostřed", "vpravo",
                   "vlevo dole", "dole", "vpravo dole"),
        count=lambda n: f"{_CS_NUM[n]} {'tvary' if n <= 4 else 'tvarů'}", conj="a",
        fixups=((re.compile(r"\bs (?=[szšž])"), "se "),),
    ),
}


def realize(item: Item, lang: str, rnd: random.Random) -> str:
    """One caption for `item` in `lang`; `rnd` picks templates, synonyms and word order."""
    language = LANGS[lang]

    def slots(name: str, d: Desc) -> dict[str, str]:
        return {f"{name}_{case}": language.np(d, case) for case in language.cases}

    if item.kind == "obj":
        (d,) = item.descs
        if d.cell is None:
            text = rnd.choice(language.templates["obj"]).format(**slots("A", d))
        else:
            text = rnd.choice(language.templates["obj_pos"]).format(P=language.positions[d.cell], **slots("A", d))
    elif item.kind == "list":
        names = [language.np(d, "nom") for d in rnd.sample(item.descs, len(item.descs))]
        listed = ", ".join(names[:-1]) + f" {language.conj} {names[-1]}"
        text = rnd.choice(language.templates["list"]).format(N=language.count(len(names)), L=listed)
    else:
        a, b = item.descs
        relation = item.relation
        if rnd.random() < 0.5:  # "A left of B" == "B right of A": a free paraphrase
            a, b, relation = b, a, relation and _INVERSE[relation]
        values = slots("A", a) | slots("B", b)
        if item.kind == "rel":
            values["R"] = rnd.choice(language.relations[relation]).format(**values)
        text = rnd.choice(language.templates[item.kind]).format(**values)
    for pattern, replacement in language.fixups:
        text = pattern.sub(replacement, text)
    return text


# ----------------------------------------------------------------------------- scenes


def _relation_holds(a: Obj, b: Obj, relation: str) -> bool:
    (ra, ca), (rb, cb) = divmod(a.cell, _GRID), divmod(b.cell, _GRID)
    return {"left": ca < cb, "right": ca > cb, "above": ra < rb, "below": ra > rb}[relation]


def holds(item: Item, scene: Scene) -> bool:
    """Whether a caption's content is true of a scene (colour + shape name one object)."""
    by_pair = {(o.colour, o.shape): o for o in scene}
    found = []
    for d in item.descs:
        o = by_pair.get((d.colour, d.shape))
        if o is None or d.size not in (None, o.size) or d.cell not in (None, o.cell):
            return False
        found.append(o)
    if item.kind == "list":
        return len(scene) == len(item.descs)
    if item.kind == "rel":
        return _relation_holds(found[0], found[1], item.relation)
    return True


def _parse_combos(cfg: SyntheticConfig) -> set[tuple[int, int]]:
    """held_out_combos as (colour, shape) index pairs."""
    combos = set()
    for combo in cfg.held_out_combos:
        words = combo.split()
        if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise ConfigError(
                f"invalid config key 'synthetic.held_out_combos': {combo!r} is not '<colour> <shape>' "
                f"with a colour in {list(COLOURS)} and a shape in {list(SHAPES)}"
            )
        combos.add((COLOURS.index(words[0]), SHAPES.index(words[1])))
    return combos


def _make_scene(cfg: SyntheticConfig, rnd: random.Random, held_out: set, novel: bool) -> Scene:
    n = rnd.randint(cfg.min_objects, cfg.max_objects)
    everything = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    if novel:  # one held-out combo for sure, the rest from anything
        first = rnd.choice(sorted(held_out))
        pairs = [first] + rnd.sample([p for p in everything if p != first], n - 1)
    else:
        pairs = rnd.sample([p for p in everything if p not in held_out], n)
    cells = rnd.sample(range(_GRID * _GRID), n)
    return tuple(Obj(shape=s, colour=c, size=rnd.randint(0, 1), cell=cell) for (c, s), cell in zip(pairs, cells))


def _make_twin(scene: Scene, rnd: random.Random, allowed: Callable[[Scene], bool]) -> Optional[Scene]:
    """The scene with the colours (most often), positions or sizes of two objects swapped."""
    for _ in range(10):
        field = rnd.choice(_TWIN_SWAPS)
        pairs = [(i, j) for i in range(len(scene)) for j in range(i + 1, len(scene))
                 if getattr(scene[i], field) != getattr(scene[j], field)
                 and (field != "colour" or scene[i].shape != scene[j].shape)]  # else it is a position swap
        rnd.shuffle(pairs)
        for i, j in pairs:
            a, b = scene[i], scene[j]
            twin = list(scene)
            twin[i], twin[j] = a._replace(**{field: getattr(b, field)}), b._replace(**{field: getattr(a, field)})
            if len({(o.colour, o.shape) for o in twin}) == len(twin) and allowed(tuple(twin)):
                return tuple(twin)
    return None


def _make_scenes(cfg: SyntheticConfig, n: int, rnd: random.Random, held_out: set,
                 novel: bool) -> list[tuple[Scene, Optional[Scene]]]:
    """n scenes, each with its twin (or None), in random order."""
    def allowed(scene: Scene) -> bool:
        has = any((o.colour, o.shape) in held_out for o in scene)
        return has if novel else not has

    out: list[tuple[Scene, Optional[Scene]]] = []
    while len(out) < n:
        scene = _make_scene(cfg, rnd, held_out, novel)
        twin = None
        if len(out) + 1 < n and len(scene) > 1 and rnd.random() < _TWIN_FRACTION:
            twin = _make_twin(scene, rnd, allowed)
        out.append((scene, twin))
        if twin is not None:
            out.append((twin, scene))
    rnd.shuffle(out)  # twins must not sit next to each other
    return out


def _sample_item(scene: Scene, rnd: random.Random, kind: Optional[str] = None) -> Item:
    if kind is None:
        kind = "obj" if len(scene) == 1 else rnd.choice(_KINDS)

    def desc(o: Obj, cell: Optional[int] = None) -> Desc:
        return Desc(o.shape, o.colour, o.size if rnd.random() < 0.5 else None, cell)

    if kind == "obj":
        o = rnd.choice(scene)
        return Item("obj", (desc(o, o.cell if rnd.random() < 0.6 else None),))
    if kind == "list":
        return Item("list", tuple(desc(o) for o in scene))
    a, b = rnd.sample(scene, 2)
    if kind == "and":
        return Item("and", (desc(a), desc(b)))
    return Item("rel", (desc(a), desc(b)), rnd.choice([r for r in RELATIONS if _relation_holds(a, b, r)]))


def _all_items(scene: Scene) -> list[Item]:
    """Every caption content that is true of the scene (a few hundred at most)."""
    def sized(o: Obj) -> tuple[Desc, Desc]:
        return Desc(o.shape, o.colour, None, None), Desc(o.shape, o.colour, o.size, None)

    items = [Item("obj", (d._replace(cell=cell),)) for o in scene for d in sized(o) for cell in (None, o.cell)]
    for a, b in itertools.permutations(scene, 2):
        for da, db in itertools.product(sized(a), sized(b)):
            items.append(Item("and", (da, db)))
            items += [Item("rel", (da, db), r) for r in RELATIONS if _relation_holds(a, b, r)]
    if len(scene) > 1:
        items += [Item("list", descs) for descs in itertools.product(*map(sized, scene))]
    return items


def plan_captions(scene: Scene, twin: Optional[Scene], k: int, rnd: random.Random,
                  must_mention: Optional[set] = None) -> list[Item]:
    """k caption contents for a scene, each naming a must_mention combo (if given), false for the
    twin (whenever the scene allows both) and, where sampling finds one, not a repeat."""
    def mentions(item: Item) -> bool:
        return must_mention is None or any((d.colour, d.shape) in must_mention for d in item.descs)

    def tells_apart(item: Item) -> bool:
        return twin is None or not holds(item, twin)

    items: list[Item] = []
    for slot in range(k):
        # the first caption of a multi-object scene tries to name every object
        first = "list" if slot == 0 and len(scene) > 1 else None
        for attempt in range(_TRIES):
            item = _sample_item(scene, rnd, first if attempt < 5 else None)
            if item not in items and mentions(item) and tells_apart(item):
                break
        else:  # rare: search all captions, giving up telling the twin apart only if nothing can
            candidates = [it for it in _all_items(scene) if mentions(it)]
            candidates = [it for it in candidates if tells_apart(it)] or candidates
            kind = rnd.choice(sorted({it.kind for it in candidates}))  # else the many lists would win
            item = rnd.choice([it for it in candidates if it.kind == kind])
        items.append(item)
    rnd.shuffle(items)
    return items


class _Prototypes(NamedTuple):
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    background: np.ndarray


def _prototypes(cfg: SyntheticConfig) -> _Prototypes:
    rng = np.random.default_rng([cfg.seed, 1000])
    d = cfg.feature_dim
    part = 1 / np.sqrt(3)  # three parts sum to about unit variance per dimension, like a background region
    return _Prototypes(rng.normal(0, part, (len(SHAPES), d)), rng.normal(0, part, (len(COLOURS), d)),
                       rng.normal(0, part, (len(SIZES), d)), rng.normal(0, 1, (_N_BACKGROUND, d)))


def _render(scene: Scene, protos: _Prototypes, cfg: SyntheticConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Region features [R, D] and boxes [R, 4] of one scene, regions in random order."""
    n = len(scene)
    shape, colour, size, cell = (np.array(v) for v in zip(*scene))
    side = np.where(size == 1, rng.uniform(0.22, 0.30, n), rng.uniform(0.10, 0.15, n))
    wh = np.minimum(side[:, None] * rng.uniform(0.85, 1.15, (n, 2)), 1 / _GRID - 0.02)
    corner = np.stack([cell % _GRID, cell // _GRID], 1) / _GRID + 0.01  # (x, y) of the cell, inset
    xy = corner + rng.uniform(0, 1, (n, 2)) * (1 / _GRID - 0.02 - wh)  # the box stays inside its cell
    features = protos.shape[shape] + protos.colour[colour] + protos.size[size]

    m = int(rng.integers(0, cfg.max_distractors + 1))
    bg_wh = rng.uniform(0.25, 1.0, (m, 2))
    bg_xy = rng.uniform(0, 1, (m, 2)) * (1 - bg_wh)
    bg = protos.background[rng.integers(0, _N_BACKGROUND, m)]

    features = np.concatenate([features, bg]) + rng.normal(0, cfg.feature_noise, (n + m, cfg.feature_dim))
    boxes = np.concatenate([np.hstack([xy, xy + wh]), np.hstack([bg_xy, bg_xy + bg_wh])])
    order = rng.permutation(n + m)
    return features[order].astype(np.float32), boxes[order].astype(np.float32)


def _realize_plan(plan: list[Item], lang: str, rnd: random.Random) -> list[str]:
    """The captions of one image in one language, avoiding verbatim repeats where a retry helps."""
    texts: list[str] = []
    for item in plan:
        for _ in range(5):
            text = realize(item, lang, rnd)
            if text not in texts:
                break
        texts.append(text)
    return texts


def _generate_split(cfg: SyntheticConfig, name: str, n: int, protos: _Prototypes,
                    held_out: set) -> RetrievalSplit:
    number = SPLITS.index(name)
    rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}")  # discrete choices
    rng = np.random.default_rng([cfg.seed, number])  # continuous arrays
    novel = name == "novel"
    if novel and not held_out:
        return RetrievalSplit(name, [], [])
    scenes = _make_scenes(cfg, n, rnd, held_out, novel)
    plans = [plan_captions(s, t, cfg.captions_per_image, rnd, held_out if novel else None) for s, t in scenes]
    images = []
    for i, (scene, _) in enumerate(scenes):
        features, boxes = _render(scene, protos, cfg, rng)
        images.append(ImageRecord(f"syn-{name}-{i:06d}", features, boxes))
    texts = {}
    for lang in cfg.languages:  # one stream per language: adding a language leaves the others alone
        lang_rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}/{lang}")
        texts[lang] = [_realize_plan(plan, lang, lang_rnd) for plan in plans]
    captions = [
        CaptionRecord(f"{image.image_id}-{lang}-{k}", image.image_id, texts[lang][i][k], lang)
        for i, image in enumerate(images) for lang in cfg.languages for k in range(cfg.captions_per_image)
    ]
    return RetrievalSplit(name, images, captions)


def check_config(cfg: SyntheticConfig) -> None:
    """Stop with a ConfigError naming the field if the config cannot make a dataset."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"invalid config key 'synthetic.{key}': {why}")

    if cfg.seed < 0:
        raise bad("seed", f"{cfg.seed} must be >= 0")
    for key in ("n_train", "n_val", "n_test", "max_distractors"):
        if getattr(cfg, key) < 0:
            raise bad(key, f"{getattr(cfg, key)} must be >= 0")
    for key in ("feature_dim", "captions_per_image"):
        if getattr(cfg, key) < 1:
            raise bad(key, f"{getattr(cfg, key)} must be >= 1")
    if cfg.feature_noise < 0:
        raise bad("feature_noise", f"{cfg.feature_noise} must be >= 0")
    if not 1 <= cfg.min_objects <= cfg.max_objects <= _GRID * _GRID:
        raise bad("max_objects", f"need 1 <= min_objects ({cfg.min_objects}) <= max_objects "
                                 f"({cfg.max_objects}) <= {_GRID * _GRID} (cells of the layout grid)")
    unknown = [lang for lang in cfg.languages if lang not in LANGUAGES]
    if unknown or not cfg.languages or len(set(cfg.languages)) != len(cfg.languages):
        raise bad("languages", f"{cfg.languages} must be distinct languages out of {list(LANGUAGES)}")
    free = len(COLOURS) * len(SHAPES) - len(_parse_combos(cfg))
    if free < cfg.max_objects:
        raise bad("held_out_combos", f"only {free} colour-shape pairs are left for {cfg.max_objects} objects")


def generate_synthetic(cfg: SyntheticConfig) -> dict[str, RetrievalSplit]:
    """Build all splits in memory (no caching); a pure function of cfg."""
    check_config(cfg)
    protos, held_out = _prototypes(cfg), _parse_combos(cfg)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "novel": cfg.n_test}
    return {name: _generate_split(cfg, name, sizes[name], protos, held_out) for name in SPLITS}


# ----------------------------------------------------------------------------- cache


def cache_dir(cfg: SyntheticConfig, root: str | Path) -> Path:
    """`<root>/synthetic/<hash>`: the hash covers every config field and the generator version."""
    fields = {"format": _FORMAT_VERSION, **dataclasses.asdict(cfg)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / "synthetic" / digest


def _files(name: str) -> tuple[str, str]:
    return f"{name}.npz", f"{name}.captions.jsonl"


def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_split(folder: Path, split: RetrievalSplit, feature_dim: int) -> None:
    arrays, captions = _files(split.name)
    counts = [len(im.features) for im in split.images]
    _write_npz_atomic(
        folder / arrays,
        features=np.concatenate([im.features for im in split.images] or [np.zeros((0, feature_dim), np.float32)]),
        boxes=np.concatenate([im.boxes for im in split.images] or [np.zeros((0, 4), np.float32)]),
        offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
        image_ids=np.array([im.image_id for im in split.images], dtype=str),
    )
    lines = (json.dumps(dataclasses.asdict(c), ensure_ascii=False) + "\n" for c in split.captions)
    write_text_atomic(folder / captions, "".join(lines))


def _read_split(folder: Path, name: str) -> RetrievalSplit:
    arrays, captions = _files(name)
    path = folder / arrays
    try:
        with np.load(path) as data:
            features, boxes, offsets, ids = data["features"], data["boxes"], data["offsets"], data["image_ids"]
        images = [ImageRecord(str(ids[i]), features[offsets[i]:offsets[i + 1]], boxes[offsets[i]:offsets[i + 1]])
                  for i in range(len(ids))]
        path = folder / captions
        with path.open(encoding="utf-8") as f:
            records = [CaptionRecord(**json.loads(line)) for line in f]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise ValueError(f"corrupt synthetic cache file {path}: {err}; delete {folder} to regenerate") from None
    return RetrievalSplit(name, images, records)


def ensure_synthetic(cfg: SyntheticConfig, root: str | Path) -> Path:
    """Generate the dataset into its cache folder unless it is already there; return the folder."""
    check_config(cfg)
    folder = cache_dir(cfg, root)
    if all((folder / f).is_file() for name in SPLITS for f in _files(name)):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    splits = generate_synthetic(cfg)
    for split in splits.values():
        _write_split(folder, split, cfg.feature_dim)
    write_json_atomic(folder / "config.json", dataclasses.asdict(cfg))  # for humans: what this folder holds
    return folder


def load_synthetic(cfg: SyntheticConfig, root: str | Path) -> dict[str, RetrievalSplit]:
    """The splits "train", "val", "test", "novel" (captions in every language), generated on first use."""
    folder = ensure_synthetic(cfg, root)
    return {name: _read_split(folder, name) for name in SPLITS}
