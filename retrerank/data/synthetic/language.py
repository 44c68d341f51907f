"""Captions as text: per-language word tables, noun-phrase inflection and caption templates.

Every language (en, de, fr, cs) has several templates per caption kind, with synonyms and
word-order variants; a Language knows how to inflect an indefinite noun phrase ("a large
orange star") in the cases its templates use. realize turns one caption content into text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import NamedTuple

from retrerank.data.synthetic.captions import Desc, Item
from retrerank.data.synthetic.scenes import COLOURS, INVERSE, SHAPES, SIZES

LANGUAGES = ("en", "de", "fr", "cs")


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
_FR_COLOURS = (
    ("rouge", "rouge"),
    ("bleu", "bleue"),
    ("vert", "verte"),
    ("jaune", "jaune"),
    ("violet", "violette"),
    ("orange", "orange"),
)
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
_CS_ENDINGS = {
    "m": {"nom": "ý", "acc": "ý", "gen": "ého", "ins": "ým"},  # masculine inanimate
    "f": {"nom": "á", "acc": "ou", "gen": "é", "ins": "ou"},
}


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
        cases=("nom",),
        np=_np_en,
        relations={
            "left": ("left of {B_nom}", "to the left of {B_nom}"),
            "right": ("right of {B_nom}", "to the right of {B_nom}"),
            "above": ("above {B_nom}", "over {B_nom}"),
            "below": ("below {B_nom}", "under {B_nom}", "beneath {B_nom}"),
        },
        templates={
            "obj": ("{A_nom}", "there is {A_nom}", "a picture of {A_nom}", "an image showing {A_nom}"),
            "obj_pos": ("{A_nom} {P}", "there is {A_nom} {P}", "{P} there is {A_nom}"),
            "rel": ("{A_nom} {R}", "there is {A_nom} {R}", "{A_nom} is {R}", "{A_nom} placed {R}"),
            "and": (
                "{A_nom} and {B_nom}",
                "{A_nom} together with {B_nom}",
                "there is {A_nom} and {B_nom}",
                "a picture of {A_nom} and {B_nom}",
            ),
            "list": ("{N}: {L}", "there are {N}: {L}", "{L}", "a picture with {N}: {L}"),
        },
        positions=(
            "in the top left",
            "at the top",
            "in the top right",
            "on the left",
            "in the centre",
            "on the right",
            "in the bottom left",
            "at the bottom",
            "in the bottom right",
        ),
        count=lambda n: f"{_EN_NUM[n]} shapes",
        conj="and",
        fixups=((re.compile(r"\ba (?=[aeiou])"), "an "),),
    ),
    "de": Language(
        cases=("nom", "acc", "dat"),
        np=_np_de,
        relations={
            "left": ("links von {B_dat}", "links neben {B_dat}"),
            "right": ("rechts von {B_dat}", "rechts neben {B_dat}"),
            "above": ("über {B_dat}", "oberhalb von {B_dat}"),
            "below": ("unter {B_dat}", "unterhalb von {B_dat}"),
        },
        templates={
            "obj": ("{A_nom}", "es gibt {A_acc}", "ein Bild mit {A_dat}"),
            "obj_pos": ("{A_nom} {P}", "{P} ist {A_nom}", "es gibt {A_acc} {P}"),
            "rel": ("{A_nom} {R}", "es gibt {A_acc} {R}", "{A_nom} befindet sich {R}", "{R} ist {A_nom}"),
            "and": (
                "{A_nom} und {B_nom}",
                "{A_nom} zusammen mit {B_dat}",
                "es gibt {A_acc} und {B_acc}",
                "ein Bild mit {A_dat} und {B_dat}",
            ),
            "list": ("{N}: {L}", "es gibt {N}: {L}", "{L}", "ein Bild mit {N}: {L}"),
        },
        positions=(
            "oben links",
            "oben",
            "oben rechts",
            "links",
            "in der Mitte",
            "rechts",
            "unten links",
            "unten",
            "unten rechts",
        ),
        count=lambda n: f"{_DE_NUM[n]} Formen",
        conj="und",
    ),
    "fr": Language(
        cases=("nom",),
        np=_np_fr,
        relations={
            "left": ("à gauche de {B_nom}",),
            "right": ("à droite de {B_nom}",),
            "above": ("au-dessus de {B_nom}",),
            "below": ("en dessous de {B_nom}", "sous {B_nom}"),
        },
        templates={
            "obj": ("{A_nom}", "il y a {A_nom}", "une image avec {A_nom}"),
            "obj_pos": ("{A_nom} {P}", "il y a {A_nom} {P}", "{P}, {A_nom}"),
            "rel": ("{A_nom} {R}", "il y a {A_nom} {R}", "{A_nom} se trouve {R}", "{R} se trouve {A_nom}"),
            "and": (
                "{A_nom} et {B_nom}",
                "{A_nom} avec {B_nom}",
                "il y a {A_nom} et {B_nom}",
                "une image avec {A_nom} et {B_nom}",
            ),
            "list": ("{N} : {L}", "il y a {N} : {L}", "{L}", "une image avec {N} : {L}"),
        },
        positions=(
            "en haut à gauche",
            "en haut",
            "en haut à droite",
            "à gauche",
            "au centre",
            "à droite",
            "en bas à gauche",
            "en bas",
            "en bas à droite",
        ),
        count=lambda n: f"{_FR_NUM[n]} formes",
        conj="et",
        fixups=((re.compile(r"\bde (une?)\b"), r"d'\1"),),
    ),
    "cs": Language(
        cases=_CS_CASES,
        np=_np_cs,
        relations={
            "left": ("vlevo od {B_gen}", "nalevo od {B_gen}"),
            "right": ("vpravo od {B_gen}", "napravo od {B_gen}"),
            "above": ("nad {B_ins}",),
            "below": ("pod {B_ins}",),
        },
        templates={
            "obj": ("{A_nom}", "na obrázku je {A_nom}", "obrázek s {A_ins}"),
            "obj_pos": ("{A_nom} {P}", "{P} je {A_nom}", "na obrázku je {A_nom} {P}"),
            "rel": ("{A_nom} {R}", "{A_nom} je {R}", "{R} je {A_nom}", "na obrázku je {A_nom} {R}"),
            "and": (
                "{A_nom} a {B_nom}",
                "{A_nom} spolu s {B_ins}",
                "na obrázku jsou {A_nom} a {B_nom}",
                "obrázek s {A_ins} a {B_ins}",
            ),
            "list": ("{N}: {L}", "celkem {N}: {L}", "{L}"),
        },
        positions=(
            "vlevo nahoře",
            "nahoře",
            "vpravo nahoře",
            "vlevo",
            "uprostřed",
            "vpravo",
            "vlevo dole",
            "dole",
            "vpravo dole",
        ),
        count=lambda n: f"{_CS_NUM[n]} {'tvary' if n <= 4 else 'tvarů'}",
        conj="a",
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
            a, b, relation = b, a, relation and INVERSE[relation]
        values = slots("A", a) | slots("B", b)
        if item.kind == "rel":
            values["R"] = rnd.choice(language.relations[relation]).format(**values)
        text = rnd.choice(language.templates[item.kind]).format(**values)
    for pattern, replacement in language.fixups:
        text = pattern.sub(replacement, text)
    return text


def realize_plan(plan: list[Item], lang: str, rnd: random.Random) -> list[str]:
    """The captions of one image in one language, avoiding verbatim repeats where a retry helps."""
    texts: list[str] = []
    for item in plan:
        for _ in range(5):
            text = realize(item, lang, rnd)
            if text not in texts:
                break
        texts.append(text)
    return texts
