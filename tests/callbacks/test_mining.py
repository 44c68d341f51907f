"""ANCE-style mining: the lists are the pipeline's own top-k without the positives, training items
draw from them, mining happens on schedule inside a fit, a run with mining goes end to end, and
bad settings name their key."""

import json
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch

from retrerank.build import build_datamodule, build_system
from retrerank.callbacks.mining import HardNegativeMining
from retrerank.config import ConfigError, load
from retrerank.data.datamodule import CaptionCollate, CaptionDataset
from retrerank.data.mining import MinedNegatives
from retrerank.retrieval.pipeline import RetrieveRerank

SMALL = [
    "model.join_layer=1",
    "data.synthetic.n_train=12",
    "data.synthetic.n_val=6",
    "data.synthetic.n_test=6",
    "data.batch_size=4",
    "objective.mining.enabled=true",
    "objective.mining.top_k=3",
    "objective.mining.negatives=2",
]


def config(tiny_bert_dir, root, *extra):
    return load(None, [f"model.backbone={tiny_bert_dir}", f"data.root={root}"] + SMALL + list(extra))


def built(cfg):
    torch.manual_seed(0)
    system = build_system(cfg)
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return system, datamodule


@pytest.fixture(scope="module")
def mined(tiny_bert_dir, tmp_path_factory):
    """(config, system, datamodule, callback) after one mining, outside a Trainer."""
    cfg = config(tiny_bert_dir, tmp_path_factory.mktemp("data"))
    system, datamodule = built(cfg)
    trainer = SimpleNamespace(
        datamodule=datamodule, progress_bar_callback=None, current_epoch=0, global_step=0, loggers=[]
    )
    mining = HardNegativeMining(cfg.objective.mining, cfg.eval)
    mining.setup(trainer, system, "fit")
    assert datamodule.mined is mining.table and mining.table.rounds == 0
    mining.mine(trainer, system)
    return cfg, system, datamodule, mining


def test_mined_lists_are_the_pipelines_top_k_without_the_positive(mined):
    """Without the true matches: with the synthetic data's exact relevance, every image a caption is
    true of (not only its own) is left out, as is every caption true of an image."""
    cfg, system, datamodule, mining = mined
    split, k = datamodule.train_split, cfg.objective.mining.top_k
    true = {(j, int(i)) for j, rows in enumerate(split.caption_relevant) for i in rows}
    assert any(len(rows) > 1 for rows in split.caption_relevant)  # the case this test is about
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    pipeline.index_images(split.images)
    by_text = pipeline.text_to_image(split.texts, k=len(split.images)).indices.tolist()  # full rankings
    pipeline.index_texts(split.texts)
    by_image = pipeline.image_to_text(split.images, k=len(split.texts)).indices.tolist()
    assert mining.table.images.tolist() == [[i for i in row if (j, i) not in true][:k] for j, row in enumerate(by_text)]
    assert mining.table.captions.tolist() == [
        [c for c in row if (c, i) not in true][:k] for i, row in enumerate(by_image)
    ]
    assert mining.table.rounds == 1 and mining.seconds[0] > 0


def test_training_items_draw_from_their_lists_and_batches_carry_them(mined):
    cfg, system, datamodule, mining = mined
    split, table = datamodule.train_split, mining.table
    dataset = datamodule.train_dataloader().dataset
    for j in range(len(dataset)):
        text, image, row, (images, image_rows, texts, text_rows), relevant, _ = dataset[j]
        assert len(set(image_rows)) == 2 and set(image_rows) <= set(table.images[j].tolist()) and row not in image_rows
        assert [im.image_id for im in images] == [split.images[r].image_id for r in image_rows]
        allowed = {split.captions[c].text for c in table.captions[row].tolist()}
        assert set(texts) <= allowed and row not in text_rows
    batch = CaptionCollate(system.bi_encoder.tokenize)([dataset[j] for j in range(4)])
    assert batch["neg_image_index"].shape == batch["neg_text_index"].shape == (4, 2)
    assert batch["neg_image"]["features"].shape[0] == batch["neg_text"]["input_ids"].shape[0] == 8
    assert (batch["neg_image_index"] != batch["image_index"][:, None]).all()
    assert (batch["neg_text_index"] != batch["image_index"][:, None]).all()
    # before any mining: today's batch, no negatives
    fresh = CaptionDataset(split, MinedNegatives(len(split.captions), len(split.images), 3, 2))
    plain = CaptionCollate(system.bi_encoder.tokenize)([fresh[j] for j in range(4)])
    assert set(plain) == {"text", "image", "image_index", "relevant"}  # the synthetic data's relevance


def test_draws_follow_seed_round_and_epoch_not_the_global_generator():
    """A resumed run must draw what the interrupted one would have, although the loader's prefetch
    advanced torch's global generator past the checkpoint: draws depend on (seed, round, epoch,
    caption) only, and the training sampler tells the table each epoch."""
    from retrerank.data.samplers import ResumableSampler

    def table(seed=0):
        t = MinedNegatives(4, 4, 6, 2, seed=seed)
        t.fill(torch.arange(24).view(4, 6) % 5, torch.arange(24).view(4, 6) % 7)
        return t

    a, b = table(), table()
    draws = lambda t: [t.draw(j, j) for j in range(4)]  # noqa: E731
    torch.manual_seed(1)
    first = draws(a)
    torch.manual_seed(2)
    assert draws(b) == first  # the global generator does not matter
    sampler = ResumableSampler(list(range(4)), seed=0)
    sampler.epoch_listeners.append(a.set_epoch)
    sampler.set_epoch(1)
    assert draws(a) != first and draws(a) == draws(a)  # a new epoch draws anew, the same each time
    b.set_epoch(1)
    assert draws(b) == draws(a)
    assert draws(table(seed=5)) != first
    a.fill(a.images, a.captions)  # a new mining round draws anew from its lists
    assert draws(a) != draws(b)


class Seen(pl.Callback):
    """Per epoch: whether each training batch carried mined negatives."""

    def __init__(self):
        self.epochs: dict[int, list[bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs.setdefault(trainer.current_epoch, []).append("neg_image" in batch)


@pytest.mark.parametrize("start, every, mined_at", [(0, 2, [0, 2]), (1, 1, [1, 2])])
def test_mining_runs_on_schedule_and_batches_use_it_from_the_start_epoch(
    tiny_bert_dir, tmp_path, start, every, mined_at
):
    cfg = config(
        tiny_bert_dir, tmp_path, f"objective.mining.start_epoch={start}", f"objective.mining.every_epochs={every}"
    )
    system, datamodule = built(cfg)
    mining, seen = HardNegativeMining(cfg.objective.mining, cfg.eval), Seen()
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[mining, seen],
    )
    trainer.fit(system, datamodule=datamodule)
    assert mining.epochs == mined_at and mining.table.rounds == len(mined_at)
    # every batch of an epoch from start_epoch on (the first, fetched ahead, too) carries negatives
    assert seen.epochs == {epoch: [epoch >= start] * 2 for epoch in range(3)}


def test_a_run_with_mining_goes_end_to_end(tiny_bert_dir, tmp_path):
    from experiments.run import main
    from tests.test_run import SMALL as RUN

    args = [
        f"output_dir={tmp_path}",
        "name=mined",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        *RUN,
        "eval.cross_all=false",
        "objective.mining.enabled=true",
        "objective.mining.top_k=4",
        "objective.mining.matching=replace",
        "trainer.limit_train_batches=3",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
    ]  # two epochs of three steps: mined before each
    metrics = json.loads((main(args) / "metrics.json").read_text())
    assert metrics["train/mining_rounds"] == 2.0 and metrics["train/mining_seconds"] > 0
    assert 0 <= metrics["test/rerank@5/rsum"] <= 600 and "train/loss_cross" in metrics


@pytest.mark.parametrize(
    "override, key",
    [
        (["objective.mining.top_k=0"], "objective.mining.top_k"),
        (["objective.mining.every_epochs=0"], "objective.mining.every_epochs"),
        (["objective.mining.start_epoch=-1"], "objective.mining.start_epoch"),
        (["objective.mining.top_k=2", "objective.mining.negatives=3"], "objective.mining.negatives"),
        (["objective.mining.matching=sometimes"], "objective.mining.matching"),
        (
            ["objective.mining.enabled=true", "objective.mining.contrastive=false", "objective.mining.matching=none"],
            "objective.mining.enabled",
        ),
        (["objective.global_negatives=maybe"], "objective.global_negatives"),
    ],
)
def test_bad_mining_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(None, override)


def test_a_top_k_larger_than_the_split_names_the_key(mined, tiny_bert_dir, tmp_path):
    cfg = config(tiny_bert_dir, tmp_path, "objective.mining.top_k=12")  # 12 images: 11 others at most
    system, datamodule = built(cfg)
    trainer = SimpleNamespace(datamodule=datamodule)
    with pytest.raises(ConfigError, match=r"objective\.mining\.top_k"):
        HardNegativeMining(cfg.objective.mining, cfg.eval).setup(trainer, system, "fit")
