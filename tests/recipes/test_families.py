"""Each backbone family's shipped config runs `experiments.run` end to end on a tiny local model
of that family (the config's real checkpoint swapped for it), and the trained checkpoint serves
the search API."""

import json
from pathlib import Path

import pytest

from experiments.run import main
from retrerank.build import load_system
from retrerank.data.synthetic import load_synthetic
from retrerank.search import Searcher
from tests.test_run import SMALL as TINY_BERT_SMALL

# the towers families join after their towers (their configs say join_layer 0)
SMALL = [s for s in TINY_BERT_SMALL if not s.startswith("model.join_layer")]

CONFIGS = Path(__file__).parents[2] / "experiments" / "configs"


@pytest.fixture
def family_dirs(tiny_clip_dir, tiny_siglip_dir, tiny_visualbert_dir, tiny_blip_dir):
    return {"clip": tiny_clip_dir, "siglip": tiny_siglip_dir, "visual_bert": tiny_visualbert_dir, "blip": tiny_blip_dir}


@pytest.mark.parametrize(
    "family, extra",
    [
        (
            "clip",
            [
                "adapters.enabled=true",
                "sweep.enabled=true",
                "sweep.methods=[bi,rerank@3]",
                "sweep.layers=[1]",
                "sweep.parallel_sets=[2]",
                "sweep.repeats=1",
                "sweep.warmup=0",
            ],
        ),
        ("siglip", []),
        # late interaction (join at block 1) with adapters that also train VisualBERT's visual embeddings
        (
            "visual_bert",
            [
                "model.join_layer=1",
                "adapters.enabled=true",
                "adapters.train=[adapters,heads,visual]",
                "sweep.enabled=true",
                "sweep.methods=[bi,rerank@3]",
                "sweep.layers=[1]",
                "sweep.parallel_sets=[2]",
                "sweep.repeats=1",
                "sweep.warmup=0",
            ],
        ),
        (
            "blip",
            [
                "eval.scoring=cross+bi",
                "adapters.enabled=true",
                "sweep.enabled=true",
                "sweep.methods=[bi,rerank@3]",
                "sweep.layers=[1]",
                "sweep.parallel_sets=[2]",
                "sweep.repeats=1",
                "sweep.warmup=0",
            ],
        ),
    ],
)
def test_family_config_runs_end_to_end_and_serves_search(family, extra, family_dirs, tmp_path):
    args = (
        [
            str(CONFIGS / f"{family}.yaml"),
            f"output_dir={tmp_path}",
            "name=run",
            f"data.root={tmp_path / 'data'}",
            f"model.backbone={family_dirs[family]}",
            "data.synthetic.image_size=32",
        ]
        + SMALL
        + extra
    )
    run = main(args)
    metrics = json.loads((run / "metrics.json").read_text())
    for method in ("bi", "rerank@3", "rerank@5", "cross_all"):
        assert 0 <= metrics[f"test/{method}/rsum"] <= 600
    assert metrics["train/loss_cross"] > 0 and metrics["train/loss_bi"] > 0
    if family == "siglip":  # trained with its own sigmoid loss, whose bias (from the checkpoint) learns
        assert "train/sigmoid_bias" in metrics
    if "adapters.enabled=true" in extra:
        assert (run / "adapters.safetensors").is_file() and (run / "sweep.csv").is_file()
        rows = (run / "sweep.csv").read_text().splitlines()
        assert rows[0].startswith("n,") and len(rows) == 3  # n = 0 and 1
    if family == "visual_bert":  # its own visual embeddings were trained, so the adapter file holds them
        from safetensors import safe_open

        with safe_open(str(run / "adapters.safetensors"), framework="pt") as f:
            assert any(".embeddings.visual_projection." in k for k in f.keys())

    system, cfg = load_system(run / "checkpoints" / "best.ckpt")
    if family == "visual_bert":
        assert system.cross_encoder.late and system.cross_encoder.eval_join == 1
    split = load_synthetic(cfg.data.synthetic, cfg.data.root)["test"].filter_languages(["en"])
    searcher = Searcher(system, cfg.eval)
    searcher.index_images(split.images)
    hits = searcher.search_text(split.texts[:4], k=5, rerank_top=3)
    assert len(hits) == 4 and all(len(h) == 5 and h[0].score >= h[1].score for h in hits)


@pytest.mark.parametrize("family", ["clip", "siglip", "visual_bert", "blip"])
@pytest.mark.parametrize("adapters", [False, True], ids=["full", "adapters"])
def test_every_trainable_parameter_gets_a_gradient(family, adapters, family_dirs, tmp_path):
    """What DDP requires (it refuses trainable parameters that no loss reaches): one joint step of
    each family reaches every parameter it trains."""
    from retrerank import build
    from retrerank.config import load

    cfg = load(
        CONFIGS / f"{family}.yaml",
        [
            f"data.root={tmp_path}",
            f"model.backbone={family_dirs[family]}",
            "data.synthetic.image_size=32",
            *SMALL[:4],
            f"adapters.enabled={str(adapters).lower()}",
        ]
        + (["model.join_layer=1"] if family == "visual_bert" else []),
    )  # the tiny one has 2 blocks
    system = build.build_system(cfg)
    datamodule = build.build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("fit")
    system.losses(next(iter(datamodule.val_dataloader())), ["bi", "cross"])["loss"].backward()
    unused = [name for name, p in system.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused[:5]
