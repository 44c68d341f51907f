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
ARGS = [
    "model.join_layer=1",
    "data.synthetic.n_train=12",
    "data.synthetic.n_val=6",
    "data.synthetic.n_test=6",
    "data.batch_size=8",
    "trainer.max_steps=16",
    "trainer.val_check_interval=4",
    "trainer.checkpoint_every_n_steps=4",
    "eval.ks=[1,3]",
    "eval.rerank_ks=[3]",
    "eval.val_methods=[rerank@3]",
    "eval.monitor=val/rerank@3/rsum",
    "eval.cross_all=false",
    "trainer.log_every_n_steps=4",
]
STOP = 8


class Interrupted(Exception):
    pass


class StopAt(pl.Callback):
    """Kills the run after step `STOP`, once its checkpoint is written (like a preempted job). Step 8
    validates, and its checkpoint is written after that validation."""

    def on_validation_end(self, trainer, *args):
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


def curves(run_dir):
    from retrerank.plots import read_curves

    return read_curves(run_dir / "logs" / "metrics.csv")


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
    assert_same_weights(whole / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    # the curves go on in one file, step for step those of the uninterrupted run
    assert not list((resumed / "logs").glob("metrics.*.csv"))
    assert curves(resumed)["train/loss"] == curves(whole)["train/loss"]
    assert (resumed / "command.txt").read_text().count("python -m experiments.run") == 2


def test_a_mining_run_resumes_with_the_lists_it_had(tiny_bert_dir, tmp_path, monkeypatch):
    """Hard-negative lists travel in the checkpoint: the run mined before epoch 1, is stopped in
    epoch 1 and resumed; it trains on those lists (not new ones mined with later weights), mines
    again before epoch 2, and ends with the uninterrupted run's weights."""
    mining = ["objective.mining.enabled=true", "objective.mining.start_epoch=1", "objective.mining.top_k=3"]
    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    whole = main(common + mining + ["name=whole"])
    run_until_stopped(common + mining + ["name=resumed"], monkeypatch)
    state = next(
        v
        for k, v in weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["callbacks"].items()
        if k.startswith("HardNegativeMining")
    )
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
    common = [
        f"output_dir={tmp_path}",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        "logger=wandb",
    ] + ARGS
    run_until_stopped(common + ["name=job", "trainer.max_steps=10"], monkeypatch)
    wandb.finish(exit_code=1)  # the preempted process is gone: nothing of its run stays in memory
    run_id = (tmp_path / "job" / "wandb_run_id").read_text()
    resumed = main(common + ["name=job", "trainer.max_steps=10", "trainer.resume=last"])
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(f"-{run_id}") for name in runs), runs
    other = main(common + ["name=other", "trainer.max_steps=2"])
    assert (other / "wandb_run_id").read_text() != run_id


class SigtermInValidation(pl.Callback):
    """What Lightning does when SIGTERM arrives during a validation: SIGTERMException from inside it
    (here after the metrics are computed, before any checkpoint of that step is written)."""

    def on_validation_epoch_end(self, trainer, *args):
        if trainer.global_step == STOP:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException


def test_sigterm_during_validation_exits_non_zero_and_the_resume_equals_the_uninterrupted_run(
    tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    whole = main(common + ["name=whole"])
    real = build.build_trainer

    def sigterm_trainer(cfg, run_dir):
        trainer, evaluation, checkpoint = real(cfg, run_dir)
        trainer.callbacks.append(SigtermInValidation())
        return trainer, evaluation, checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(build, "build_trainer", sigterm_trainer)
        with pytest.raises(SystemExit) as stopped:
            main(common + ["name=cut"])
    message = str(stopped.value.code)  # sys.exit(message): status 1, never 0
    assert message.startswith(f"interrupted by SIGTERM at step {STOP}") and "trainer.resume=last" in message
    assert "name=cut" in message and not (tmp_path / "cut" / "metrics.json").exists()
    # the step-8 validation never finished, so the resume point is the step before it, not step 8
    assert weights(tmp_path / "cut" / "checkpoints" / "last.ckpt")["global_step"] == 4
    resumed = main(common + ["name=cut", "trainer.resume=last"])
    assert "resuming from" in capsys.readouterr().out
    assert_same_weights(whole / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    assert curves(resumed)["val/rerank@3/rsum"] == curves(whole)["val/rerank@3/rsum"]  # step 8 validated too
    ends = [json.loads((run / "metrics.json").read_text()) for run in (whole, resumed)]
    assert {k: v for k, v in ends[0].items() if "ms" not in k and "seconds" not in k} == {
        k: v for k, v in ends[1].items() if "ms" not in k and "seconds" not in k
    }


def test_a_resume_with_another_config_is_refused_before_anything_is_written(tiny_bert_dir, tmp_path, monkeypatch):
    from retrerank.config import ConfigError

    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    run_until_stopped(common + ["name=job"], monkeypatch)
    saved = (tmp_path / "job" / "config.yaml").read_bytes()
    with pytest.raises(ConfigError) as refused:
        main(common + ["name=job", "trainer.resume=last", "optim.lr=0.001", "data.batch_size=4"])
    assert "data.batch_size: 8 -> 4" in str(refused.value) and "optim.lr: 0.0001 -> 0.001" in str(refused.value)
    assert (tmp_path / "job" / "config.yaml").read_bytes() == saved
    main(common + ["name=job", "trainer.resume=last", "num_threads=1"])  # where it runs may change


def test_checkpoints_are_atomic_and_a_damaged_one_falls_back_to_the_newest_that_loads(
    tiny_bert_dir, tmp_path, monkeypatch, capsys
):
    import errno

    from retrerank import checkpointing

    common = [f"output_dir={tmp_path}", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"] + ARGS
    run_until_stopped(common + ["name=job"], monkeypatch)
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()

    def full_disk(checkpoint, f):  # half the bytes, then the disk is full
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", full_disk)
    with pytest.raises(OSError):
        checkpointing.AtomicCheckpointIO().save_checkpoint({"global_step": 9}, last)
    monkeypatch.undo()
    assert last.read_bytes() == good and not list(last.parent.glob(".last.ckpt.*"))  # no temp left either

    last.write_bytes(good[: len(good) // 2])  # damaged on disk some other way
    from retrerank.config import load

    point = build.resume_point(load(None, common + ["name=job", "trainer.resume=last"]), tmp_path / "job")
    assert point.path.endswith("best.ckpt") and "last.ckpt does not load" in point.skipped[0]
    main(common + ["name=job", "trainer.resume=last"])
    out = capsys.readouterr().out
    assert "skipped: " in out and "last.ckpt does not load" in out and "resuming from" in out


def test_ctrl_c_after_the_first_checkpoint_exits_1_with_the_resume_command(tiny_bert_dir, tmp_path):
    """Ctrl-C (SIGINT) in a running `python -m experiments.run`: Lightning catches KeyboardInterrupt inside
    fit and exits 1; the run says, as for SIGTERM, how to go on from its last checkpoint."""
    import os
    import shlex
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    endless = ["trainer.max_steps=100000", "trainer.max_epochs=-1"]  # still training when the signal comes
    args = [f"output_dir={tmp_path}", "name=job", f"data.root={tmp_path / 'data'}", f"model.backbone={tiny_bert_dir}"]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "RETRERANK_DEBUG": "0"}
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        job = subprocess.Popen(
            [sys.executable, "-m", "experiments.run", *args, *ARGS, *endless], cwd=root, env=env, stdout=out, stderr=err
        )
        try:
            deadline = time.monotonic() + 240
            while not last.is_file() and job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert last.is_file(), (tmp_path / "err.txt").read_text()[-2000:]
            job.send_signal(signal.SIGINT)
            code = job.wait(timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
    lines = [line for line in (tmp_path / "err.txt").read_text().replace("\r", "\n").splitlines() if line.strip()]
    assert code == 1 and lines[-1].startswith("interrupted by Ctrl-C (SIGINT) at step "), lines[-5:]
    resume = shlex.join([*args[2:], *ARGS, *endless, f"output_dir={tmp_path}", "name=job", "trainer.resume=last"])
    assert lines[-1].endswith(
        f"nothing tested, no metrics.json. Go on from the last checkpoint with: python -m experiments.run {resume}"
    ), lines[-1]
    assert last.is_file() and not (tmp_path / "job" / "metrics.json").exists()
