"""Config checks and the generator: a SyntheticConfig -> the splits, in memory."""

from __future__ import annotations

import random

import numpy as np

from retrerank.config import ConfigError, SyntheticConfig
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.data.synthetic.captions import Item, foil_items, plan_captions, scenes_true_of
from retrerank.data.synthetic.language import LANGUAGES, realize, realize_plan
from retrerank.data.synthetic.paint import paint
from retrerank.data.synthetic.scenes import COLOURS, GRID, SHAPES, Prototypes, Scene, make_scenes, prototypes, render

SPLITS = ("train", "val", "test", "novel")


def parse_combos(cfg: SyntheticConfig) -> set[tuple[int, int]]:
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


def check_config(cfg: SyntheticConfig) -> None:
    """Stop with a ConfigError naming the field if the config cannot make a dataset."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"invalid config key 'synthetic.{key}': {why}")

    if cfg.seed < 0:
        raise bad("seed", f"{cfg.seed} must be >= 0")
    for key in ("n_train", "n_val", "n_test", "max_distractors", "foils_per_caption"):
        if getattr(cfg, key) < 0:
            raise bad(key, f"{getattr(cfg, key)} must be >= 0")
    for key in ("feature_dim", "captions_per_image"):
        if getattr(cfg, key) < 1:
            raise bad(key, f"{getattr(cfg, key)} must be >= 1")
    if cfg.image_size < 16:
        raise bad("image_size", f"{cfg.image_size} must be >= 16 (pixels per side)")
    if not 0 <= cfg.twin_fraction <= 1:
        raise bad("twin_fraction", f"{cfg.twin_fraction} must be between 0 and 1")
    if cfg.list_max_objects < 1:
        raise bad("list_max_objects", f"{cfg.list_max_objects} must be >= 1")
    if cfg.feature_noise < 0:
        raise bad("feature_noise", f"{cfg.feature_noise} must be >= 0")
    if not 1 <= cfg.min_objects <= cfg.max_objects <= GRID * GRID:
        raise bad(
            "max_objects",
            f"need 1 <= min_objects ({cfg.min_objects}) <= max_objects "
            f"({cfg.max_objects}) <= {GRID * GRID} (cells of the layout grid)",
        )
    unknown = [lang for lang in cfg.languages if lang not in LANGUAGES]
    if unknown or not cfg.languages or len(set(cfg.languages)) != len(cfg.languages):
        raise bad("languages", f"{cfg.languages} must be distinct languages out of {list(LANGUAGES)}")
    free = len(COLOURS) * len(SHAPES) - len(parse_combos(cfg))
    if free < cfg.max_objects:
        raise bad("held_out_combos", f"only {free} colour-shape pairs are left for {cfg.max_objects} objects")


def plan_split(
    cfg: SyntheticConfig, name: str, n: int, held_out: set
) -> tuple[list[tuple[Scene, Scene | None]], list[list[Item]]]:
    """A split's scenes (with their twins, or None) and each scene's planned caption contents."""
    rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}")  # discrete choices
    novel = name == "novel"
    scenes = make_scenes(cfg, n, rnd, held_out, novel)
    plans = [
        plan_captions(s, t, cfg.captions_per_image, rnd, held_out if novel else None, cfg.list_max_objects)
        for s, t in scenes
    ]
    return scenes, plans


def plan_foils(
    cfg: SyntheticConfig, name: str, scenes: list[tuple[Scene, Scene | None]], plans: list[list[Item]]
) -> list[list[list[Item]]]:
    """plans[i][k] -> its foils (cfg.foils_per_caption near misses false of scene i), shared by the
    caption's translations. Their own random stream: the scenes and captions stay as without foils."""
    rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}/foils")
    return [
        [foil_items(item, scene, cfg.foils_per_caption, rnd) for item in plan]
        for plan, (scene, _) in zip(plans, scenes)
    ]


def twin_rows(scenes: list[tuple[Scene, Scene | None]]) -> dict[int, int]:
    """Row -> the row of its twin, for the scenes that have one in the split."""
    rows: dict[Scene, list[int]] = {}
    for i, (scene, _) in enumerate(scenes):
        rows.setdefault(scene, []).append(i)
    # a twin's own twin is the scene it was made from (make_scenes adds both); equal scenes are rare
    return {
        i: next(j for j in rows[twin] if j != i and scenes[j][1] == scene)
        for i, (scene, twin) in enumerate(scenes)
        if twin is not None
    }


def also_true_of(plans: list[list[Item]], scenes: list[Scene]) -> list[list[tuple[int, ...]]]:
    """plans[i][k] -> the rows of the *other* scenes it is true of, ascending (exact relevance)."""
    rows = iter(scenes_true_of([item for plan in plans for item in plan], scenes))
    return [[tuple(r for r in next(rows) if r != i) for _ in plan] for i, plan in enumerate(plans)]


def _generate_split(cfg: SyntheticConfig, name: str, n: int, protos: Prototypes, held_out: set) -> RetrievalSplit:
    number = SPLITS.index(name)
    rng = np.random.default_rng([cfg.seed, number])  # continuous arrays
    paint_rng = np.random.default_rng([cfg.seed, number, 1])  # the pictures' own stream: rng stays as it was
    if name == "novel" and not held_out:
        return RetrievalSplit(name, [], [])
    scenes, plans = plan_split(cfg, name, n, held_out)
    images = []
    pixels = np.empty((len(scenes), cfg.image_size, cfg.image_size, 3), np.uint8)  # records hold views
    twins = twin_rows(scenes)
    for i, (scene, _) in enumerate(scenes):
        regions = render(scene, protos, cfg, rng)
        pixels[i] = paint(scene, regions, cfg.image_size, paint_rng)
        near = (f"syn-{name}-{twins[i]:06d}",) if i in twins else ()
        images.append(ImageRecord(f"syn-{name}-{i:06d}", regions.features, regions.boxes, pixels[i], near))
    texts, foil_texts = {}, {}
    foils = plan_foils(cfg, name, scenes, plans)
    for lang in cfg.languages:  # one stream per language: adding a language leaves the others alone
        lang_rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}/{lang}")
        texts[lang] = [realize_plan(plan, lang, lang_rnd) for plan in plans]
        lang_foil_rnd = random.Random(f"retrerank-synthetic/{cfg.seed}/{name}/{lang}/foils")
        foil_texts[lang] = [
            [tuple(realize(f, lang, lang_foil_rnd) for f in item_foils) for item_foils in plan] for plan in foils
        ]
    # one tuple per plan: a caption's translations share it
    also = [
        [tuple(images[r].image_id for r in rows) for rows in plan]
        for plan in also_true_of(plans, [scene for scene, _ in scenes])
    ]
    captions = [
        CaptionRecord(
            f"{image.image_id}-{lang}-{k}", image.image_id, texts[lang][i][k], lang, also[i][k], foil_texts[lang][i][k]
        )
        for i, image in enumerate(images)
        for lang in cfg.languages
        for k in range(cfg.captions_per_image)
    ]
    return RetrievalSplit(name, images, captions)


def generate_synthetic(cfg: SyntheticConfig) -> dict[str, RetrievalSplit]:
    """Build all splits in memory (no caching); a pure function of cfg."""
    check_config(cfg)
    protos, held_out = prototypes(cfg), parse_combos(cfg)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "novel": cfg.n_test}
    return {name: _generate_split(cfg, name, sizes[name], protos, held_out) for name in SPLITS}
