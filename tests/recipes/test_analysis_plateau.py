"""experiments.analysis.plateau: the cross-encoder's matching loss split by caption and negative kind."""

import json

import pytest
import torch
import torch.nn.functional as F

from experiments.analysis.plateau import caption_kind, foil_change, main
from retrerank.build import load_system
from retrerank.data.synthetic.captions import Desc, Item
from retrerank.errors import UserInputError

RED_CIRCLE = Desc(shape=0, colour=0, size=None, cell=None)
BLUE_STAR = Desc(shape=3, colour=1, size=1, cell=None)


def test_what_a_near_miss_changed():
    placed = Item("obj", (RED_CIRCLE._replace(cell=0),))
    assert caption_kind(placed) == "obj+place" and caption_kind(Item("obj", (RED_CIRCLE,))) == "obj"
    assert foil_change(placed, Item("obj", (RED_CIRCLE._replace(cell=4),))) == "cell"
    assert foil_change(placed, Item("obj", (RED_CIRCLE._replace(cell=0, colour=2),))) == "colour"
    pair = Item("and", (RED_CIRCLE, BLUE_STAR))
    assert foil_change(pair, pair._replace(descs=(RED_CIRCLE._replace(colour=1), BLUE_STAR._replace(colour=0)))) == (
        "binding"
    )
    assert foil_change(pair, pair._replace(descs=(RED_CIRCLE, BLUE_STAR._replace(size=0)))) == "size"
    rel = Item("rel", (RED_CIRCLE, BLUE_STAR), relation="left")
    assert foil_change(rel, rel._replace(relation="right")) == "relation"


def test_the_table_of_a_run_matches_the_full_score_matrix(tiny_run, tmp_path):
    """Every t2i negative's loss is softplus(s_neg - s_pos) of the cross-encoder's full score matrix, the
    rows add up, and the file is an evidence file."""
    from retrerank.data.synthetic import load_synthetic
    from retrerank.retrieval.pipeline import RetrieveRerank

    data = str(tiny_run.parent / "data")
    out = main([str(tiny_run), "--data-root", data, "--hard", "1", "--random", "1", "--out", str(tmp_path / "p.json")])
    written = json.loads((tmp_path / "p.json").read_text())
    assert {key: written[key] for key in out} == out and "plateau" in written["command"]
    assert {"command", "commit", "date", "machine"} <= set(written)
    total = out["total"]["pairs"]
    assert total > 0 and sum(row["pairs"] for row in out["by_negative"].values()) == total
    assert sum(row["pairs"] for row in out["table"].values()) == total
    assert sum(row["loss_share"] for row in out["by_caption"].values()) == pytest.approx(100, abs=0.5)
    kinds = set(out["by_negative"])
    assert {"hard", "random"} <= kinds and any(k.startswith("foil/") for k in kinds)
    assert all(0 <= row[w] <= 100 for row in out["table"].values() for w in ("cross_wins", "bi_wins"))
    assert out["metrics"]["by_negative/hard/pairs"] == out["by_negative"]["hard"]["pairs"]
    assert out["metrics"]["total/loss"] == out["total"]["loss"]
    # one caption per image and one hard negative each: the captions' hard-negative rows recomputed here
    system, cfg = load_system(tiny_run / "checkpoints" / "best.ckpt")
    split = load_synthetic(cfg.data.synthetic, data)["val"].filter_languages(cfg.data.test_langs)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    pipeline.scoring = "cross"
    full = pipeline.score_all(split.texts, split.images)
    sims = pipeline.embed_texts(split.texts) @ pipeline.embed_images(split.images).T
    losses = []
    for q, own in enumerate(split.caption_image_index.tolist()):
        false = torch.ones(len(split.images), dtype=torch.bool)
        false[torch.as_tensor(split.caption_relevant[q], dtype=torch.long)] = False
        if false.any():
            hard = int(sims[q].masked_fill(~false, float("-inf")).argmax())
            losses.append(float(F.softplus(full[q, hard] - full[q, own])))
    assert out["by_negative"]["hard"]["pairs"] == len(losses)
    assert out["by_negative"]["hard"]["loss"] == pytest.approx(sum(losses) / len(losses), abs=2e-4)


def test_bad_arguments_are_one_line(tiny_run):
    with pytest.raises(UserInputError, match="--size"):
        main([str(tiny_run), "--size", "1"])
