"""The torchrun path of the cluster recipes: Lightning DDP over 2 CPU processes (gloo), one run
folder written by rank 0; evaluation sharded over the ranks, and the rank-0-only AdapterDrop
sweep runs alone without waiting on the other rank."""

import json
import subprocess
import sys

from tests.adapters.test_adapter_system import SMALL

TOWERS = [s for s in SMALL if not s.startswith("model.join_layer")]  # pixel families: no late interaction


def test_torchrun_ddp_on_two_cpu_processes(tiny_bert_dir, tmp_path):
    args = [
        f"output_dir={tmp_path}",
        "name=ddp",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "sweep.enabled=true",
        "sweep.methods=[bi,rerank@5]",
        "sweep.repeats=1",
        "sweep.warmup=0",
        "sweep.parallel_sets=[2]",
    ]
    args += SMALL
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "experiments.run",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("rsum") == 1  # one results table: rank 0 reports
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["trainer/world_size"] == 2.0 and 0 <= metrics["test/rerank@5/rsum"] <= 600
    assert (tmp_path / "ddp" / "sweep.csv").read_text().count("\n") == 4  # header + n = 0, 1, 2


def test_torchrun_ddp_with_mining_and_global_negatives(tiny_bert_dir, tmp_path):
    """Every rank mines together (before epoch 0 and 1) and draws matching negatives from both ranks' items."""
    args = [
        f"output_dir={tmp_path}",
        "name=ddp",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_bert_dir}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *SMALL,
        "adapters.enabled=false",
        "objective.global_negatives=true",
        "objective.mining.enabled=true",
        "objective.mining.top_k=3",
        "trainer.limit_train_batches=3",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "experiments.run",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["trainer/world_size"] == 2.0 and metrics["train/mining_rounds"] == 2.0
    assert 0 <= metrics["test/rerank@5/rsum"] <= 600


def test_torchrun_ddp_with_a_pixel_family(tiny_clip_dir, tmp_path):
    """A CLIP model under DDP: pixels all-gathered for the cross-device matching negatives, GradCache chunks."""
    args = [
        "experiments/configs/clip.yaml",
        f"output_dir={tmp_path}",
        "name=ddp",
        f"data.root={tmp_path / 'data'}",
        f"model.backbone={tiny_clip_dir}",
        "data.synthetic.image_size=32",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *TOWERS,
        "adapters.enabled=false",
        "objective.global_negatives=true",
        "objective.grad_cache_chunk=3",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "experiments.run",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["trainer/world_size"] == 2.0 and 0 <= metrics["test/rerank@5/rsum"] <= 600
    assert metrics["train/loss_cross"] > 0
