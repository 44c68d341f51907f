import json

import pytest
import torch

from experiments import gpu_check
from retrerank.errors import UsageError

STEPS = ["default_bf16", "gpu_yaml", "bench_rerank", "bench_adapterdrop", "bench_peers", "cached_rerank"]


def evidence(folder, step) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{step}.jsonl").read_text().splitlines()]


def test_smoke_runs_every_step_and_writes_its_evidence(tiny_bert_dir, tmp_path, capsys):
    out, work = tmp_path / "evidence", tmp_path / "work"
    argv = ["--smoke", "--out", str(out), "--work", str(work), f"model.backbone={tiny_bert_dir}", "model.join_layer=1"]
    results = gpu_check.run_checks(argv)
    assert [r["step"] for r in results] == STEPS
    assert all(r["status"] == "ok" for r in results), [(r["step"], r.get("stderr_tail")) for r in results]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{step}.jsonl" for step in STEPS)  # runs stay in --work
    for step in STEPS:
        *rows, status = evidence(out, step)
        assert rows, step  # what the step measured, not only that it ran
        assert status["step"] == step and status["status"] == "ok" and status["returncode"] == 0
        assert {"command", "commit", "date", "machine", "gpu"} <= set(status)
        assert status["command"].startswith("python -m experiments.")
    assert "trainer.precision=bf16-mixed" in evidence(out, "default_bf16")[-1]["command"]
    assert "gpu.yaml" in evidence(out, "gpu_yaml")[-1]["command"]
    for step in ("default_bf16", "gpu_yaml"):  # a training step's evidence is its run's metrics
        assert "test/rerank@5/rsum" in evidence(out, step)[0]
    measured = {r["measurement"] for r in evidence(out, "bench_peers")[:-1]}
    assert measured == {"text_embed", "exact_search", "rerank_loop", "machine_peak"}
    assert evidence(out, "bench_rerank")[0]["benchmark"] == "rerank"
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [p["step"] for p in printed] == STEPS


def test_a_step_that_outruns_its_budget_is_reported(tmp_path):
    out = tmp_path / "evidence"
    argv = ["--smoke", "--out", str(out), "--work", str(tmp_path / "work"), "--only", "bench_adapterdrop"]
    (result,) = gpu_check.run_checks([*argv, "--step-budget", "1"])  # importing torch alone takes longer
    assert (result["step"], result["status"], result["returncode"], result["budget_seconds"]) == (
        "bench_adapterdrop",
        "timeout",
        None,
        1,
    )
    assert evidence(out, "bench_adapterdrop") == [json.loads(json.dumps(result))]
    with pytest.raises(SystemExit) as done:  # and the command's exit status says so
        gpu_check.main([*argv, "--step-budget", "1"])
    assert done.value.code == 1


def test_bad_step_names_and_a_missing_gpu_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="unknown steps \\['nope'\\]"):
        gpu_check.main(["--smoke", "--out", str(tmp_path), "--only", "nope"])
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU here"):
            gpu_check.main(["--out", str(tmp_path)])
