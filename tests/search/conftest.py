"""A tiny trained run folder (tiny local BERT, synthetic data, a few steps) shared by the search tests."""
import pytest
import torch

from experiments.run import main

# late interaction (join at block 1 of 2): reranking reads cached layer-1 states
TINY = ["model.join_layer=1", "data.synthetic.n_train=32", "data.synthetic.n_val=10", "data.synthetic.n_test=12",
        "data.batch_size=8", "trainer.max_steps=4", "trainer.val_check_interval=4", "eval.rerank_ks=[5]",
        "eval.val_methods=[rerank@5]", "eval.monitor=val/rerank@5/rsum", "eval.cross_all=false"]


@pytest.fixture(scope="package")
def run(tiny_bert_dir, tmp_path_factory):
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and leaves the CPU to others
    root = tmp_path_factory.mktemp("runs")
    return main([f"output_dir={root}", "name=tiny", f"data.root={root / 'data'}", f"model.backbone={tiny_bert_dir}"]
                + TINY)
