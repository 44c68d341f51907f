"""Resuming an interrupted run from its last checkpoint continues where it stopped: a run stopped
mid-epoch and resumed ends with the weights of an uninterrupted one (CPU, tiny model, dropout on)."""
import json

import lightning.pytorch as pl
import pytest
import torch

from experiments.run import main
from retrerank import build

# 12 images x 5 captions, batches of 8: 7 steps an epoch. 16 steps cross two epoch ends; the run
# is stopped after step 8, in the middle of epoch 1, and a validation follows that checkpoint.
ARGS = ["model.join_layer=1", "data.synthetic.n_train=12", "data.synthetic.n_val=6", "data.synthetic.n_test=6", "data.batch_size=8",
        "trainer.max_steps=16", "trainer.val_check_interval=4", "trainer.checkpoint_every_n_steps=4",
        "eval.ks=[1,3]", "eval.rerank_ks=[3]", "eval.val_methods=[rerank@3]", "eval.monitor=val/rerank@3/rsum",
        "eval.cross_all=false", "trainer.log_every_n_steps=4"]
STOP = 8


class Interrupted(Exception):
    pass


class StopAt(pl.Callback):
    """Kills the run after step `STOP`, once its checkpoint is written (like a preempted job)."""

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == STOP:
            raise Interrupted


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def run_until_stopped(args, monkeypatch):
    """Run `args` and kill it after step STOP, once that step's checkpoint is written."""
    real = build.build_trainer

    def interrupted_trainer(cfg, run_dir):
        trainer, evaluation, checkpoint = real(cfg, run_dir)
        trainer.callbacks.append(StopAt())  # after the checkpoint callbacks: the step-8 checkpoint exists
        return trainer, evaluation, checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(build, "build_trainer", interrupted_trainer)
        with pytest.raises(Interrupted):
            main(args)


def assert_same_weights(a_path, b_path):
    a, b = weights(a_path), weights(b_path)
    assert a["global_step"] == b["global_step"] == 16
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name  # bit for bit, on one CPU


def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights(tiny_bert_dir, tmp_path, monkeypatch):
    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    whole = main(common + ["name=whole"])
    run_until_stopped(common + ["name=resumed"], monkeypatch)
    stopped = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert stopped["global_step"] == STOP and stopped["epoch"] == 1  # mid-epoch: step 1 of epoch 1
    assert stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]

    resumed = main(common + ["name=resumed", "trainer.resume=last"])
    assert (resumed / "logs" / "metrics.0.csv").is_file() and (resumed / "logs" / "metrics.csv").is_file()
    assert_same_weights(whole / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")


def test_a_mining_run_resumes_with_the_lists_it_had(tiny_bert_dir, tmp_path, monkeypatch):
    """Hard-negative lists travel in the checkpoint: the run mined before epoch 1, is stopped in
    epoch 1 and resumed; it trains on those lists (not new ones mined with later weights), mines
    again before epoch 2, and ends with the uninterrupted run's weights."""
    mining = ["objective.mining.enabled=true", "objective.mining.start_epoch=1", "objective.mining.top_k=3"]
    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    whole = main(common + mining + ["name=whole"])
    run_until_stopped(common + mining + ["name=resumed"], monkeypatch)
    state = next(v for k, v in weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["callbacks"].items()
                 if k.startswith("HardNegativeMining"))
    assert state["epochs"] == [1] and state["rounds"] == 1 and state["images"].shape == (60, 3)
    resumed = main(common + mining + ["name=resumed", "trainer.resume=last"])
    assert_same_weights(whole / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["train/mining_rounds"] == 2  # epoch 1's, restored, and epoch 2's


def test_resume_from_a_missing_checkpoint_is_a_config_error(tmp_path):
    from retrerank.config import ConfigError, load

    cfg = load(None, ["trainer.resume=nowhere/last.ckpt"])
    with pytest.raises(ConfigError, match="trainer.resume"):
        build.resume_path(cfg, tmp_path)
    assert build.resume_path(load(None, ["trainer.resume=last"]), tmp_path) is None  # nothing yet: start afresh
    with pytest.raises(ConfigError, match="trainer.checkpoint_every_n_steps"):
        load(None, ["trainer.checkpoint_every_n_steps=-5"])


def test_a_resumed_run_continues_its_wandb_run(tiny_bert_dir, tmp_path, monkeypatch):
    """A requeued job (trainer.resume=last) logs into the W&B run its folder started: one run on the
    dashboard per job, however often it is preempted; a fresh run folder starts another."""
    import wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}",
              "logger=wandb"] + ARGS
    run_until_stopped(common + ["name=job", "trainer.max_steps=10"], monkeypatch)
    wandb.finish(exit_code=1)  # the preempted process is gone: nothing of its run stays in memory
    run_id = (tmp_path / "job" / "wandb_run_id").read_text()
    resumed = main(common + ["name=job", "trainer.max_steps=10", "trainer.resume=last"])
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs), runs
    other = main(common + ["name=other", "trainer.max_steps=2"])
    assert (other / "wandb_run_id").read_text() != run_id
