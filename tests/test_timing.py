import pytest

from retrerank import timing


def test_measure_runs_warmup_then_repeats_and_returns_the_median(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # three timed runs: 1 s, 3 s, 2 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    assert timing.measure(lambda: calls.append(1), "cpu", warmup=2, repeats=3) == pytest.approx(2.0)
    assert len(calls) == 5
