import json

import pytest
import torch
from safetensors import safe_open

from experiments.run import main
from retrerank.build import build_system, load_system
from retrerank.config import load

SMALL = [
    "model.join_layer=1",
    "data.synthetic.n_train=48",
    "data.synthetic.n_val=12",
    "data.synthetic.n_test=12",
    "data.batch_size=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "eval.rerank_ks=[5]",
    "eval.val_methods=[rerank@5]",
    "eval.monitor=val/rerank@5/rsum",
    "eval.cross_all=false",
    "adapters.enabled=true",
    "adapters.reduction_factor=4",
]


def config(tiny_bert_dir, tmp_path, *extra):
    return load(None, [f"model.backbone={tiny_bert_dir}", f"data.root={tmp_path}"] + SMALL + list(extra))


def test_only_the_selected_parts_train(tiny_bert_dir, tmp_path):
    system = build_system(config(tiny_bert_dir, tmp_path, "adapters.train=[adapters]"))
    trainable = [n for n, p in system.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters." in n for n in trainable)
    system = build_system(config(tiny_bert_dir, tmp_path, "adapters.train=[adapters,heads,visual]"))
    parts = {
        n.split(".")[0] if ".visual." not in n else "visual" for n, p in system.named_parameters() if p.requires_grad
    }
    assert parts == {"bi_encoder", "visual", "cross_encoder", "contrastive"}


def test_separate_sets_keep_the_objectives_apart(tiny_bert_dir, tmp_path):
    system = build_system(config(tiny_bert_dir, tmp_path, "adapters.shared=false"))
    assert (system.bi_encoder.adapter_set, system.cross_encoder.adapter_set) == ("bi", "cross")
    text = system.bi_encoder.tokenize(["a red circle"])
    from retrerank.data.collate import collate_images
    from retrerank.data.synthetic import load_synthetic

    image = collate_images(load_synthetic(config(tiny_bert_dir, tmp_path).data.synthetic, tmp_path)["test"].images[:1])
    system.bi_encoder.embed_texts(text).sum().backward()
    grads = {n: p.grad is not None for n, p in system.named_parameters() if ".adapters." in n}
    assert any(g for n, g in grads.items() if ".adapters.bi." in n)
    assert not any(g for n, g in grads.items() if ".adapters.cross." in n)
    assert system.cross_encoder.score(text, image).shape == (1,)


def test_robust_drop_draws_n_per_batch_and_evaluates_at_eval_drop(tiny_bert_dir, tmp_path):
    system = build_system(config(tiny_bert_dir, tmp_path, "adapters.robust=true"))
    switch = system.backbone.adapter_switch
    seen = set()
    torch.manual_seed(0)
    for _ in range(30):
        system.on_train_batch_start(None, 0)
        seen.add(switch.drop)
    assert seen == {0, 1}  # 0..L-1 for the 2-block tiny model
    system.on_validation_start()
    assert switch.drop == 0
    static = build_system(config(tiny_bert_dir, tmp_path, "adapters.drop=1", "adapters.eval_drop=2"))
    static.on_train_batch_start(None, 0)
    assert static.backbone.adapter_switch.drop == 1
    static.on_test_start()
    assert static.backbone.adapter_switch.drop == 2


def test_drop_outside_the_model_is_a_clear_error(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="adapters.drop=5 is outside 0..2"):
        build_system(config(tiny_bert_dir, tmp_path, "adapters.drop=5"))


def test_adapter_run_writes_adapter_only_checkpoints_that_reload(tiny_bert_dir, tmp_path):
    run = main(
        [f"output_dir={tmp_path}", "name=ad", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"]
        + SMALL
    )
    metrics = json.loads((run / "metrics.json").read_text())
    system, cfg = load_system(run / "checkpoints" / "best.ckpt")
    trained = {n for n, p in system.named_parameters() if p.requires_grad}
    assert metrics["model/trainable_params"] == sum(p.numel() for p in system.parameters() if p.requires_grad)
    with safe_open(str(run / "adapters.safetensors"), framework="pt") as f:
        assert set(f.keys()) == trained and "retrerank_config" in f.metadata()
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    assert set(ckpt["state_dict"]) == trained
    # the trained weights only (plus the config as metadata), not the frozen backbone
    trained_bytes = sum(p.numel() * 4 for p in system.parameters() if p.requires_grad)
    assert metrics["model/adapter_checkpoint_bytes"] < trained_bytes + 32_000
    assert metrics["model/adapter_checkpoint_bytes"] < sum(p.numel() * 4 for p in system.parameters())
    # the reloaded model gives the evaluation's numbers again, through the same pipeline
    from retrerank.data.synthetic import load_synthetic
    from retrerank.retrieval.pipeline import RetrieveRerank

    split = load_synthetic(cfg.data.synthetic, cfg.data.root)["test"].filter_languages(["en"])
    again = RetrieveRerank.from_config(system, cfg.eval, progress=False).evaluate(
        split, ["bi", "rerank@5"], cfg.eval.ks
    )
    for key in ("test/bi/rsum", "test/rerank@5/rsum"):
        assert again[key] == pytest.approx(metrics[key])
