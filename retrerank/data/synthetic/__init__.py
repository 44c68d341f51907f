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

Pixels. Every scene is also drawn as an `image_size` x `image_size` RGB picture
(`ImageRecord.pixels`, [S, S, 3] uint8), so pixel-input backbones (CLIP, SigLIP, BLIP) train on
the same scenes and captions: a light background, the distractor regions as faint grey striped
rectangles (clutter, like their features), and each object as its shape in its colour filling its
box, the same box as its region's, so sizes and positions are visible. Painting has a random
stream of its own (seeded from seed and split): the features, boxes and captions are the same
with or without it. docs/results/synthetic_pixels.png shows examples.

Captions. `captions_per_image` captions per image and language (en, de, fr, cs), from several
templates per language with synonyms and word-order variants. The captions of one image are
parallel across languages (caption k states the same facts in every language). Kinds: a
list of all objects ("three shapes: ..."), a spatial relation ("a red circle left of a blue
square"), a conjunction ("a small red circle and a large blue square") and a single object,
optionally with its position ("a green star in the top left").

Exact relevance. A caption is often true of more scenes than the one it was written for ("a red
circle" of every scene with a red circle); counting those as misses would punish correct rankings,
the false negatives ECCV Caption (Chun et al. 2022) annotated for COCO. The generator knows every
scene, so each CaptionRecord's `also` lists the ids of the other images of its split the caption
holds for (`holds`; found by `scenes_true_of`, the same tuple for all translations of a caption).
RetrievalSplit turns it into the evaluation ground truth (caption_relevant, image_captions).

Foils. Each caption also stores `foils_per_caption` near misses of it that are false of its image
(`foil_items`: two named objects' colours or sizes swapped, the relation inverted, or one object's
colour, size or position changed; `holds` checks each is false), realised in the caption's
language. Twins differ from their scenes the same ways, so a twin's captions are near misses of its
scene's; training batches rarely hold both, and the foils give every image such hard negative
captions (NegCLIP's swapped captions, Yuksekgonul et al. 2023; objective.foil_negatives).

Splits. train / val / test never contain the `held_out_combos` (colour + shape pairs); the
"novel" split (n_test images) has at least one of them in every image, and each of its
captions mentions one. Everything is a function of the SyntheticConfig: it is generated once
into `<root>/synthetic/<hash of the config>/` and read from there afterwards.

Modules: scenes (objects, layout, twins, region features), paint (the pictures), captions (what a caption says,
whether it holds, which scenes it holds for, planning an image's captions, foils), language (word tables, inflection,
templates, realize), generate (config checks, the splits in memory), store (the cache).
"""

from retrerank.data.synthetic.captions import Desc, Item, foil_items, holds, plan_captions, scenes_true_of
from retrerank.data.synthetic.generate import SPLITS, check_config, generate_synthetic
from retrerank.data.synthetic.language import LANGS, LANGUAGES, Language, realize
from retrerank.data.synthetic.scenes import COLOURS, RELATIONS, SHAPES, SIZES, Obj, Scene
from retrerank.data.synthetic.store import cache_dir, ensure_synthetic, load_synthetic

__all__ = [
    "COLOURS",
    "LANGS",
    "LANGUAGES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Desc",
    "Item",
    "Language",
    "Obj",
    "Scene",
    "cache_dir",
    "check_config",
    "ensure_synthetic",
    "foil_items",
    "generate_synthetic",
    "holds",
    "load_synthetic",
    "plan_captions",
    "realize",
    "scenes_true_of",
]
