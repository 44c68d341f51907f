"""The joint system's losses with a batch's mined negatives: extra contrastive columns/rows, and
matching pairs added to or replacing the in-batch sampled ones."""

import numpy as np
import pytest
import torch

from retrerank.config import MiningConfig
from retrerank.data.collate import collate_images
from retrerank.data.records import ImageRecord
from tests.systems.test_joint import make_batch, make_system


def with_mined(system, batch):
    """One mined image (rows 4, 5: not in the batch) and one mined caption per item."""
    rng = np.random.default_rng(1)
    images = [
        ImageRecord(
            f"neg{i}", rng.normal(size=(2 + i, 8)).astype(np.float32), rng.uniform(size=(2 + i, 4)).astype(np.float32)
        )
        for i in range(4)
    ]
    return {
        **batch,
        "neg_image": collate_images(images),
        "neg_image_index": torch.tensor([[4], [5], [4], [5]]),
        "neg_text": system.bi_encoder.tokenize(["a large purple diamond", "green", "a big star", "a circle"]),
        "neg_text_index": torch.tensor([[1], [2], [3], [0]]),
    }


def scored(system, batch):
    """(loss_cross, the cross-encoder's text and image inputs) of one call."""
    seen, original = [], system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append((t, i)) or original(t, i)
    torch.manual_seed(1)
    loss = system.losses(batch, ["cross"])["loss_cross"]
    return loss, seen[0]


def test_contrastive_loss_takes_the_mined_negatives_as_extra_columns(tiny_bert_dir):
    system = make_system(tiny_bert_dir, mining=MiningConfig(enabled=True)).eval()
    batch = make_batch(system)
    mined = with_mined(system, batch)
    plain, extra = system.losses(batch, ["bi"])["loss_bi"], system.losses(mined, ["bi"])["loss_bi"]
    assert extra > plain  # more negatives in every softmax
    calls, original = [], system.contrastive.forward
    system.contrastive.forward = lambda *a, **k: calls.append(k) or original(*a, **k)
    system.losses(mined, ["bi"])["loss_bi"].backward()
    assert calls[0]["neg_image"].shape == (4, system.bi_encoder.embed_texts(batch["text"]).shape[1])
    assert torch.equal(calls[0]["neg_text_index"], torch.tensor([1, 2, 3, 0]))
    off = make_system(tiny_bert_dir, mining=MiningConfig(enabled=True, contrastive=False)).eval()
    assert off.losses(mined, ["bi"])["loss_bi"].item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("matching, negatives", [("add", 4 * 2 + 4 * 2), ("replace", 4 * 2), ("none", 4 * 2)])
def test_matching_loss_adds_or_replaces_the_sampled_negatives(tiny_bert_dir, matching, negatives):
    system = make_system(tiny_bert_dir, mining=MiningConfig(enabled=True, matching=matching)).eval()
    batch = make_batch(system)
    mined = with_mined(system, batch)
    loss, (text, image) = scored(system, mined)
    assert len(text["input_ids"]) == len(image["features"]) == 4 + negatives
    assert torch.equal(image["features"][:4, :3], batch["image"]["features"])  # positives first
    if matching == "none":
        assert loss.item() == pytest.approx(scored(system, batch)[0].item(), rel=1e-6)
        return
    # the mined pairs come last: (text j, mined image j), then (mined caption j, image j)
    tail = image["features"][-8:-4]
    assert torch.equal(tail[:, : mined["neg_image"]["features"].shape[1]], mined["neg_image"]["features"])
    assert not tail[:, mined["neg_image"]["features"].shape[1] :].any()  # padding
    width = mined["neg_text"]["input_ids"].shape[1]
    assert torch.equal(text["input_ids"][-4:, :width], mined["neg_text"]["input_ids"])
    assert torch.equal(text["input_ids"][-8:-4, : batch["text"]["input_ids"].shape[1]], batch["text"]["input_ids"])
