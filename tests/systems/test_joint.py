import numpy as np
import pytest
import torch

from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import ObjectiveConfig, OptimConfig
from retrerank.data.collate import collate_images, pad_cat
from retrerank.data.records import ImageRecord
from retrerank.encoders.bi import BiEncoder
from retrerank.encoders.cross import CrossEncoder
from retrerank.objectives.cross_objective import take
from retrerank.systems.joint import JointRetrievalSystem

TEXTS = ["a red circle", "a blue square", "a green star", "a yellow triangle"]


def make_system(tiny_bert_dir, **objective) -> JointRetrievalSystem:
    # the pair counts these tests work out are for one hard negative and pointwise BCE
    objective = {"hard_negatives": 1, "cross_loss": "bce", **objective}
    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8, dropout=0.0)
    return JointRetrievalSystem(
        BiEncoder(backbone), CrossEncoder(backbone, dropout=0.0), ObjectiveConfig(**objective), OptimConfig()
    )


def make_batch(system, image_index=(0, 1, 2, 3)):
    rng = np.random.default_rng(0)
    images = {
        i: ImageRecord(
            f"im{i}",
            rng.normal(size=(3, 8)).astype(np.float32),
            np.tile(np.array([[0.1, 0.1, 0.4, 0.4]], np.float32), (3, 1)),
        )
        for i in set(image_index)
    }
    return {
        "text": system.bi_encoder.tokenize([TEXTS[i] for i in image_index]),
        "image": collate_images([images[i] for i in image_index]),
        "image_index": torch.tensor(image_index),
    }


def test_joint_loss_is_weighted_sum_and_both_objectives_reach_shared_weights(tiny_bert_dir):
    system = make_system(tiny_bert_dir, bi_weight=0.3, cross_weight=2.0)
    batch = make_batch(system)
    torch.manual_seed(1)
    losses = system.losses(batch, ["bi", "cross"])
    assert losses["loss"].item() == pytest.approx(
        0.3 * losses["loss_bi"].item() + 2.0 * losses["loss_cross"].item(), rel=1e-5
    )
    shared = system.backbone.layers[0].attention.self.query.weight
    for name in ("loss_bi", "loss_cross"):
        system.zero_grad()
        losses = system.losses(batch, ["bi", "cross"])
        losses[name].backward()
        assert shared.grad is not None and shared.grad.abs().sum() > 0, name
    assert system.contrastive.log_scale.grad is None or name == "loss_cross"


def test_alternate_schedule_runs_one_objective_per_step(tiny_bert_dir):
    system = make_system(tiny_bert_dir, schedule="alternate")
    assert [system.objectives_for_step(s) for s in range(3)] == [["bi"], ["cross"], ["bi"]]
    assert make_system(tiny_bert_dir, mode="cross").objectives_for_step(0) == ["cross"]
    assert make_system(tiny_bert_dir).objectives_for_step(5) == ["bi", "cross"]


def test_cross_loss_scores_positives_and_hard_negatives_of_other_images(tiny_bert_dir):
    system = make_system(tiny_bert_dir, hard_negatives=2)
    batch = make_batch(system, image_index=(0, 0, 1, 2))
    seen = []
    original = system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append((t, i)) or original(t, i)
    system.losses(batch, ["cross"])
    text, image = seen[0]
    assert len(text["input_ids"]) == 4 + 4 * 2 * 2  # positives + 2 negatives per row and direction
    # the first four pairs are the positives, in batch order
    assert torch.equal(text["input_ids"][:4], batch["text"]["input_ids"])
    assert torch.equal(image["features"][:4], batch["image"]["features"])


def test_training_overfits_a_batch(tiny_bert_dir):
    system = make_system(tiny_bert_dir)
    batch = make_batch(system)
    optimizer = torch.optim.AdamW(system.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = system.losses(batch, ["bi", "cross"])["loss"].item()
    for _ in range(30):
        optimizer.zero_grad()
        system.losses(batch, ["bi", "cross"])["loss"].backward()
        optimizer.step()
    last = system.losses(batch, ["bi", "cross"])["loss"].item()
    assert last < 0.5 * first


def test_systems_need_one_shared_backbone(tiny_bert_dir):
    a = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8)
    b = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8)
    with pytest.raises(ValueError, match="one backbone"):
        JointRetrievalSystem(BiEncoder(a), CrossEncoder(b), ObjectiveConfig(), OptimConfig())


@pytest.mark.parametrize("hard, uniform", [(0, 1), (1, 1)])
def test_random_negatives_add_pairs_of_other_images(tiny_bert_dir, hard, uniform):
    system = make_system(tiny_bert_dir, hard_negatives=hard, random_negatives=uniform)
    batch = make_batch(system)
    seen = []
    original = system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append((t, i)) or original(t, i)
    system.losses(batch, ["cross"])
    text, image = seen[0]
    num = hard + uniform
    assert len(text["input_ids"]) == 4 + 4 * 2 * num
    # every negative pair joins a text and an image of different scenes
    texts = [tuple(row.tolist()) for row in text["input_ids"][4:]]
    feats = image["features"][4:]
    own = {tuple(batch["text"]["input_ids"][i].tolist()): batch["image"]["features"][i] for i in range(4)}
    assert all(not torch.equal(own[t], f) for t, f in zip(texts, feats))


def test_listwise_cross_loss_groups_each_positive_with_its_own_negatives(tiny_bert_dir):
    system = make_system(tiny_bert_dir, hard_negatives=2, cross_loss="listwise")
    batch = make_batch(system, image_index=(0, 1, 2, 3))
    seen = []
    original = system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append(original(t, i)) or seen[-1]
    system.eval()
    torch.manual_seed(3)
    loss = system.losses(batch, ["cross"])["loss_cross"]
    scores = seen[0]
    # positives, then 4 rows x 2 (text, negative image), then 4 rows x 2 (negative text, image)
    positive, t2i, i2t = scores[:4], scores[4:12].view(4, 2), scores[12:].view(4, 2)
    target = torch.zeros(4, dtype=torch.long)
    expected = (
        sum(torch.nn.functional.cross_entropy(torch.cat([positive[:, None], g], 1), target) for g in (t2i, i2t)) / 2
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_exact_relevance_keeps_true_matches_out_of_the_cross_negatives(tiny_bert_dir):
    system = make_system(tiny_bert_dir, hard_negatives=1)
    batch = make_batch(system, image_index=(0, 1, 2))
    batch["relevant"] = torch.tensor([[0, 1, 2], [1, -1, -1], [2, -1, -1]])  # caption 0 is true of every image
    seen = []
    original = system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append((t, i)) or original(t, i)
    system.losses(batch, ["cross"])
    text, image = seen[0]
    # caption 0 has no negative image and images 1 and 2 keep caption 0 out of their negatives:
    # rows 1 and 2 are kept (image 1: caption 2; image 2: caption 1), row 0 is not (no negative image)
    assert len(text["input_ids"]) == 3 + 2 * 2
    negatives = [
        (tuple(t.tolist()), tuple(f.flatten().tolist())) for t, f in zip(text["input_ids"][3:], image["features"][3:])
    ]
    pos = {
        i: (tuple(batch["text"]["input_ids"][i].tolist()), tuple(batch["image"]["features"][i].flatten().tolist()))
        for i in range(3)
    }
    caption0 = pos[0][0]
    assert all(t != caption0 for t, _ in negatives)
    system.objective.exact_relevance = False  # the ablation: only the own image is a match
    seen.clear()
    system.losses(batch, ["cross"])
    assert len(seen[0][0]["input_ids"]) == 3 + 3 * 2


def test_late_interaction_training_scores_each_item_once_and_equals_scoring_every_pair(tiny_bert_dir):
    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8, dropout=0.0)
    cross = CrossEncoder(backbone, dropout=0.0, join_layer=1)
    system = JointRetrievalSystem(BiEncoder(backbone), cross, ObjectiveConfig(hard_negatives=2), OptimConfig()).eval()
    batch = make_batch(system, image_index=(0, 1, 2, 3))
    rows = torch.tensor([0, 0, 2, 3, 1])
    others = torch.tensor([1, 3, 0, 0, 2])
    blocks = [(batch["text"], rows, batch["image"], others), (batch["text"], others, batch["image"], rows)]
    calls = []
    original = cross.lower_text
    cross.lower_text = lambda inputs: calls.append(len(inputs["input_ids"])) or original(inputs)
    fast = system.score_blocks(blocks)
    assert calls == [4]  # the batch's 4 texts once, not one run per pair
    whole = cross.score(
        pad_cat([take(batch["text"], rows), take(batch["text"], others)]),
        pad_cat([take(batch["image"], others), take(batch["image"], rows)]),
    )
    assert torch.allclose(fast, whole, atol=1e-5)


def late_system(tiny_bert_dir, **objective) -> JointRetrievalSystem:
    torch.manual_seed(0)
    backbone = SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8, dropout=0.0)
    cross = CrossEncoder(backbone, dropout=0.0, join_layer=1)
    return JointRetrievalSystem(BiEncoder(backbone), cross, ObjectiveConfig(**objective), OptimConfig()).eval()


def test_late_training_takes_the_bi_encoders_lower_states_with_the_same_losses_and_gradients(tiny_bert_dir):
    """The late cross-encoder reads the bi-encoder's layer-m states of the batch (one run of the
    lower blocks for both objectives): losses and gradients equal those of two separate runs."""
    system = late_system(tiny_bert_dir, hard_negatives=2, cross_loss="listwise")
    batch = make_batch(system)
    calls = []
    original = system.cross_encoder.lower_text
    system.cross_encoder.lower_text = lambda inputs: calls.append(1) or original(inputs)
    results = {}
    for share in (True, False):
        system.shares_lower_states = lambda *args, share=share: share
        system.zero_grad()
        torch.manual_seed(1)  # the same sampled negatives
        losses = system.losses(batch, ["bi", "cross"])
        losses["loss_cross"].backward()  # through the shared states, the cross loss alone reaches block 0
        grads = {n: p.grad.clone() for n, p in system.named_parameters() if p.grad is not None}
        results[share] = losses, grads
    assert len(calls) == 1  # only the unshared run computed the cross-encoder's own lower states
    (shared, g_shared), (separate, g_separate) = results[True], results[False]
    for key in ("loss_bi", "loss_cross"):
        assert shared[key].item() == pytest.approx(separate[key].item(), rel=1e-5)
    assert g_shared.keys() == g_separate.keys()
    assert any("layer.0." in n and g.abs().sum() > 0 for n, g in g_shared.items())  # below join_layer=1
    for name in g_shared:
        assert torch.allclose(g_shared[name], g_separate[name], atol=1e-5), name


def test_residual_cross_loss_scores_pairs_by_cross_plus_the_bi_logit(tiny_bert_dir):
    """objective.cross_residual: the listwise loss reads cross logit + scale x cosine (detached),
    the score that eval.scoring=cross+bi reranks by."""
    from retrerank.objectives import cross_objective, listwise

    system = late_system(tiny_bert_dir, hard_negatives=1, cross_loss="listwise", cross_residual=True)
    batch = make_batch(system)
    seen = {}
    original = listwise.listwise_loss

    def spy(positive, t2i, i2t):
        seen["positive"] = positive
        return original(positive, t2i, i2t)

    cross_objective.listwise_loss, cross_only = spy, None
    try:
        torch.manual_seed(1)
        system.losses(batch, ["bi", "cross"])
        residual = seen["positive"].detach()
        system.objective.cross_residual = False
        torch.manual_seed(1)
        system.losses(batch, ["bi", "cross"])
        cross_only = seen["positive"].detach()
    finally:
        cross_objective.listwise_loss = original
    with torch.no_grad():
        cosine = (system.bi_encoder.embed_texts(batch["text"]) * system.bi_encoder.embed_images(batch["image"])).sum(-1)
    assert torch.allclose(residual, cross_only + system.contrastive.scale * cosine, atol=1e-5)


def test_foils_are_each_images_extra_i2t_negatives_in_the_listwise_loss(tiny_bert_dir):
    """objective.foil_negatives: each row's first n foil captions are scored against the row's image
    and join its i2t group, after the sampled negatives; the t2i group is unchanged."""
    system = make_system(tiny_bert_dir, hard_negatives=1, cross_loss="listwise", foil_negatives=1)
    batch = make_batch(system, image_index=(0, 1, 2, 3))
    foils = [
        ["a blue circle", "a red star"],
        ["a red square", "a blue star"],
        ["a green cross", "a red star"],
        ["a red triangle", "a yellow star"],
    ]
    batch["foil_text"] = system.bi_encoder.tokenize([t for own in foils for t in own])  # 2 per row, item-major
    seen = []
    original = system.cross_encoder.score
    system.cross_encoder.score = lambda t, i: seen.append((t, i, original(t, i))) or seen[-1][2]
    system.eval()
    torch.manual_seed(3)
    loss = system.losses(batch, ["cross"])["loss_cross"]
    text, image, scores = seen[0]
    assert len(scores) == 4 + 4 + 4 + 4  # positives, t2i, i2t sampled, then one foil per row
    first_foils = system.bi_encoder.tokenize([own[0] for own in foils])["input_ids"]
    width = first_foils.shape[1]
    assert torch.equal(text["input_ids"][12:, :width], first_foils)
    assert torch.equal(image["features"][12:], batch["image"]["features"])  # each foil with its own row's image
    positive, t2i, i2t = scores[:4], scores[4:8].view(4, 1), torch.stack([scores[8:12], scores[12:]], 1)
    target = torch.zeros(4, dtype=torch.long)
    expected = (
        sum(torch.nn.functional.cross_entropy(torch.cat([positive[:, None], g], 1), target) for g in (t2i, i2t)) / 2
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    system.objective.foil_negatives = 2  # both foils of each row
    seen.clear()
    torch.manual_seed(3)
    system.losses(batch, ["cross"])
    assert len(seen[0][2]) == 4 + 4 + 4 + 8
    system.objective.foil_negatives = 0  # off: the batch's foils are ignored
    seen.clear()
    system.losses(batch, ["cross"])
    assert len(seen[0][2]) == 12


def test_foils_with_the_residual_loss_and_late_interaction_read_their_own_bi_logits(tiny_bert_dir):
    """cross_residual adds each pair's bi-encoder logit, foils included (embedded for it); the late
    cross-encoder scores the foil block as it scores every other (equal to scoring pairs whole)."""
    system = late_system(tiny_bert_dir, hard_negatives=1, cross_loss="listwise", cross_residual=True, foil_negatives=1)
    batch = make_batch(system)
    batch["foil_text"] = system.bi_encoder.tokenize(["a blue circle", "a red square", "a green cross", "a red star"])
    seen = {}
    original = system.cross_objective.pairs
    system.cross_objective.pairs = lambda *a, **k: seen.setdefault("pairs", original(*a, **k))
    torch.manual_seed(1)
    system.losses(batch, ["bi", "cross"])
    pairs = seen["pairs"]
    foil_scores = pairs.scores[-4:]
    with torch.no_grad():
        cross = system.cross_encoder.score(batch["foil_text"], batch["image"])
        cosine = (
            system.bi_encoder.embed_texts(batch["foil_text"]) * system.bi_encoder.embed_images(batch["image"])
        ).sum(-1)
    assert torch.allclose(foil_scores, cross + system.contrastive.scale * cosine, atol=1e-5)


def test_foil_contrastive_gives_the_contrastive_loss_each_images_own_foils(tiny_bert_dir):
    system = make_system(tiny_bert_dir, foil_negatives=1, foil_contrastive=True).eval()
    batch = make_batch(system)
    batch["foil_text"] = system.bi_encoder.tokenize(["a blue circle", "a red square", "a green cross", "a red star"])
    loss = system.losses(batch, ["bi"])["loss_bi"]
    bi = system.bi_encoder
    with torch.no_grad():
        text, image, foils = (
            bi.embed_texts(batch["text"]),
            bi.embed_images(batch["image"]),
            bi.embed_texts(batch["foil_text"]),
        )
        expected = system.contrastive(text, image, batch["image_index"], own_text=foils[:, None, :])
        plain = system.contrastive(text, image, batch["image_index"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and expected.item() > plain.item()
    system.objective.foil_contrastive = False
    assert system.losses(batch, ["bi"])["loss_bi"].item() == pytest.approx(plain.item(), rel=1e-5)


@pytest.mark.parametrize("foils", [0, 1])
def test_the_built_datamodule_tokenises_the_foils_the_objective_reads(tiny_bert_dir, tmp_path, foils):
    """objective.foil_negatives reaches the loaders: the batches carry that many foils per caption,
    and none at 0 (the default), so the loader tokenises nothing that no loss reads."""
    from retrerank.build import build_datamodule, build_system
    from retrerank.config import load

    cfg = load(
        None,
        [
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            f"data.root={tmp_path}",
            "data.synthetic.n_train=12",
            "data.synthetic.n_val=6",
            "data.synthetic.n_test=6",
            "data.batch_size=4",
            f"objective.foil_negatives={foils}",
        ],
    )
    system = build_system(cfg)
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert ("foil_text" in batch) == bool(foils)
    if foils:
        assert batch["foil_text"]["input_ids"].shape[0] == 4
        assert system.cross_objective.foils(batch)[1] == 1
