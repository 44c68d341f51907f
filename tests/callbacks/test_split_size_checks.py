"""Settings that only the loaded splits can refute stop the run before its first training step,
as the one-line ConfigError that experiments.run prints, not at the first validation or after training."""

import pytest

from experiments.run import main
from retrerank.config import ConfigError

# 6 val and 6 test images with 5 English captions each: every k and rerank depth must be <= 6
TINY = [
    "model.join_layer=1",
    "data.synthetic.n_train=12",
    "data.synthetic.n_val=6",
    "data.synthetic.n_test=6",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "eval.ks=[1,3]",
    "eval.rerank_ks=[3]",
    "eval.val_methods=[bi,rerank@3]",
    "eval.monitor=val/bi/rsum",
    "eval.cross_all=false",
]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            ["eval.ks=[1,10]"],
            r"^invalid config key 'eval\.ks': k=10, but the 'val' split has only 6 images and 30 "
            r"captions; every k must be <= 6$",
        ),
        (
            ["eval.rerank_ks=[3,1000]"],
            r"^invalid config key 'eval\.rerank_ks': rerank@1000 reranks the top 1000, but the "
            r"'test' split has only 6 images and 30 captions; the depth must be <= 6",
        ),
        (
            ["eval.val_methods=[bi,rerank@7]"],
            r"^invalid config key 'eval\.val_methods': rerank@7 .* 'val' split has only 6 images",
        ),
        (
            ["sweep.join=true", "sweep.methods=[bi,rerank@50]"],
            r"^invalid config key 'sweep\.methods': rerank@50 .* 'test' split",
        ),
    ],
    ids=["eval.ks", "eval.rerank_ks", "eval.val_methods", "sweep.methods"],
)
def test_a_split_too_small_for_the_evaluation_stops_before_training(tiny_bert_dir, tmp_path, override, message):
    args = (
        [f"output_dir={tmp_path}", "name=small", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"]
        + TINY
        + override
    )
    with pytest.raises(ConfigError, match=message) as err:
        main(args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "small" / "checkpoints").exists()  # not one training step: nothing saved
