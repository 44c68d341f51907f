"""What only a GPU can tell, as one prepared command: `python -m experiments.gpu_check`.

A GPU machine comes now and then, for minutes, so every check is ready in one command that fits in
about 10 minutes on one GPU. The steps, in order, each in its own process with its own time budget:

- `default_bf16`: the default recipe with bf16 mixed precision (trainer.precision=bf16-mixed);
- `gpu_yaml`: experiments/configs/gpu.yaml for one seed (a budget it outruns is reported as such);
- `bench_rerank`: `bench rerank` at 1,000 images and 5,000 captions;
- `bench_adapterdrop`: `bench adapterdrop` at batch 64;
- `bench_peers`: `bench peers` at its default sizes, its rerank_loop and machine_peak on the default_bf16 run;
- `cached_rerank`: the cached rerank bench (two runs of the default recipe, m = L/2 against m = 0).

Each step writes its evidence file `<out>/<step>.jsonl`: the JSON lines the step printed (a training
step: its run's metrics.json), then one status line with the step's `status` (ok | timeout | failed),
its seconds and budget, the return code, the tail of its stderr where it failed, and the command,
commit, date and machine (GPU name included). A step that runs out of its budget is stopped, reported
as `timeout` and the next step runs: nothing is hidden. Runs, stores and checkpoints go under `--work`,
never into the evidence folder. The exit status is 1 when any step did not finish ok.

`--smoke` runs the same steps at tiny sizes on the CPU into a fresh temporary folder (or `--out`), to
check the command itself; extra `key=value` arguments go to every step that builds a model from the
config (e.g. model.backbone=<a small local model>).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from retrerank.cli import OVERRIDES_EPILOG, argument_parser, run_main
from retrerank.provenance import record

REPO = Path(__file__).resolve().parents[1]

# tiny training for --smoke: a few steps over a few images
SMOKE_TRAIN = [
    "data.synthetic.n_train=24",
    "data.synthetic.n_val=12",
    "data.synthetic.n_test=12",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "eval.rerank_ks=[5]",
    "eval.val_methods=[rerank@5]",
    "eval.monitor=val/rerank@5/rsum",
    "eval.cross_all=false",
]


@dataclass
class Step:
    name: str
    module: str
    argv: list[str]
    budget_s: int
    run_folder: bool = False  # a training run: its metrics.json is the evidence


def plan(work: Path, smoke: bool, overrides: list[str]) -> list[Step]:
    """The steps at GPU size, or (smoke) at tiny sizes for the CPU."""
    data = f"data.root={work / 'data'}"
    run = lambda name, *extra: [*extra, data, f"output_dir={work / 'runs'}", f"name={name}"]  # noqa: E731
    train = [*SMOKE_TRAIN, *overrides] if smoke else overrides
    if smoke:
        rerank = ["--images", "6", "--captions-per-image", "2", "--k", "3", "--regions", "3", "--dim", "8"]
        rerank += ["--repeats", "1", "--device", "cpu"]
        adapterdrop = ["--batch-size", "2", "--words", "4", "--regions", "4", "--tasks", "2", "--drop", "1"]
        adapterdrop += ["--repeats", "1", "--inference-repeats", "1", "--warmup", "0", "--device", "cpu"]
        peers = ["--captions", "16", "--corpus", "500", "--queries", "20", "--repeats", "1", "--no-memory"]
        peers += ["--rerank-k", "3", "--device", "cpu"]
        cached = ["--rerank-top", "5", "--k", "3", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
        model = [o for o in train if o.startswith("model.")]
        budgets = dict.fromkeys(("default_bf16", "gpu_yaml", "rerank", "adapterdrop", "peers", "cached"), 120)
    else:
        rerank = ["--images", "1000", "--captions-per-image", "5"]
        adapterdrop = ["--batch-size", "64"]
        peers, cached, model = [], [], overrides
        # about 10 minutes in all on one GPU
        budgets = {"default_bf16": 90, "gpu_yaml": 150, "rerank": 90, "adapterdrop": 45, "peers": 75, "cached": 120}
    gpu_yaml = str(REPO / "experiments" / "configs" / "gpu.yaml")
    return [
        Step(
            "default_bf16",
            "experiments.run",
            run("default_bf16", "trainer.precision=bf16-mixed", *train),
            budgets["default_bf16"],
            True,
        ),
        Step("gpu_yaml", "experiments.run", [gpu_yaml, *run("gpu_yaml", *train)], budgets["gpu_yaml"], True),
        Step(
            "bench_rerank",
            "experiments.bench",
            ["rerank", *rerank, "--dir", str(work / "bench_rerank"), *model],
            budgets["rerank"],
        ),
        Step("bench_adapterdrop", "experiments.bench", ["adapterdrop", *adapterdrop], budgets["adapterdrop"]),
        Step(
            "bench_peers",
            "experiments.bench",
            ["peers", *peers, "--checkpoint", str(work / "runs" / "default_bf16"), "--data-root", str(work / "data")],
            budgets["peers"],
        ),
        Step(
            "cached_rerank",
            "experiments.bench",
            ["cached_rerank", *cached, "--output-dir", str(work / "cached_rerank"), data, *train],
            budgets["cached"],
        ),
    ]


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def json_lines(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def run_metrics(stdout: str) -> list[dict]:
    """A training step's evidence: its run folder's metrics.json (the folder it printed)."""
    for line in stdout.splitlines():
        if line.startswith("run folder: "):
            metrics = Path(line.removeprefix("run folder: ").strip()) / "metrics.json"
            if metrics.is_file():
                return [{"run_folder": str(metrics.parent), **json.loads(metrics.read_text())}]
    return []


def run_step(step: Step, out: Path, gpu: str | None) -> dict:
    """Run one step in its own process under its budget and write its evidence file."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", step.module, *step.argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=step.budget_s,
        )
        status = "ok" if done.returncode == 0 else "failed"
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as stopped:
        status, code = "timeout", None
        stdout = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
        stderr = stopped.stderr.decode() if isinstance(stopped.stderr, bytes) else stopped.stderr or ""
    seconds = time.perf_counter() - start
    rows = run_metrics(stdout) if step.run_folder else json_lines(stdout)
    summary = {
        "step": step.name,
        "status": status,
        "seconds": round(seconds, 1),
        "budget_seconds": step.budget_s,
        "returncode": code,
        "gpu": gpu,
        **record(step.argv, step.module),
    }
    if status != "ok":
        summary["stderr_tail"] = stderr.strip().splitlines()[-5:]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{step.name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in [*rows, summary]))
    print(json.dumps({k: summary[k] for k in ("step", "status", "seconds", "budget_seconds")}), flush=True)
    return summary


def run_checks(argv: list[str]) -> list[dict]:
    """Run the steps; each step's status line, in order."""
    parser = argument_parser("experiments.gpu_check", __doc__, OVERRIDES_EPILOG)
    parser.add_argument(
        "--out", default=None, help="evidence folder (default: docs/results/gpu; --smoke: a tmp folder)"
    )
    parser.add_argument("--work", default=None, help="runs, stores and checkpoints (default: runs/gpu_check)")
    parser.add_argument("--smoke", action="store_true", help="the same steps at tiny sizes on the CPU")
    parser.add_argument("--only", nargs="+", default=None, help="run only these steps (by name)")
    parser.add_argument("--step-budget", type=int, default=None, help="seconds each step may run (default: its own)")
    args, overrides = parser.parse_with_overrides(argv)
    gpu = gpu_name()
    if gpu is None and not args.smoke:
        parser.error("no CUDA GPU here: `--smoke` runs the same steps at tiny sizes on the CPU")
    if args.smoke:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_smoke_"))
    else:
        out = Path(args.out or REPO / "docs" / "results" / "gpu")
    work = Path(args.work) if args.work else (out / "work" if args.smoke else REPO / "runs" / "gpu_check")
    steps = plan(work.resolve() / time.strftime("%Y%m%d-%H%M%S"), args.smoke, overrides)  # a rerun never collides
    if args.step_budget is not None:
        if args.step_budget < 1:
            parser.error("--step-budget must be >= 1")
        for step in steps:
            step.budget_s = args.step_budget
    names = [step.name for step in steps]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown steps {unknown}: the steps are {', '.join(names)}")
    print(f"evidence folder: {out}", flush=True)
    results = [run_step(step, out, gpu) for step in steps if args.only is None or step.name in args.only]
    if any(r["status"] != "ok" for r in results):
        print(f"not ok: {[r['step'] for r in results if r['status'] != 'ok']}", flush=True)
    return results


def main(argv: list[str]) -> list[dict]:
    """run_checks, then exit status 1 where a step was not ok (a timeout, a failure)."""
    results = run_checks(argv)
    if any(r["status"] != "ok" for r in results):
        sys.exit(1)
    return results


if __name__ == "__main__":
    run_main(main)
