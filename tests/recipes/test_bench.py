import json

from experiments.bench import adapterdrop


def test_adapterdrop_bench_prints_three_measurements_with_baselines(capsys):
    adapterdrop.main(["--batch-size", "1", "--words", "2", "--regions", "2", "--tasks", "2", "--repeats", "1",
                      "--warmup", "0", "--device", "cpu"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["measurement"] for r in rows] == [
        "train_step_drop5_vs_drop0", "parallel_2_tasks_shared5_vs_shared0", "inference_adapters_vs_plain"]
    for r in rows:
        assert r["baseline_ms"] > 0 and r["candidate_ms"] > 0
        assert r["ratio"] == round(r["candidate_ms"] / r["baseline_ms"], 4) or abs(
            r["ratio"] - r["candidate_ms"] / r["baseline_ms"]) < 0.01
        assert r["layers"] == 12 and r["hidden"] == 768
