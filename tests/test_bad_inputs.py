"""Bad input at every entry point: each `python -m experiments.X` is run as a user runs it, in a subprocess,
against a table of bad inputs. Each must exit with status 1 and one line on stderr that names the file or
key at fault, print no traceback, and leave nothing behind: no run folder, no partial file, no changed file.

The cases run two at a time, all of them once (the module fixture `outcomes`), and each is then checked by its own
test. A case that needs a finished run gets its own copy of the shared tiny run (tests/conftest.py: tiny_run),
so that whatever a case writes is found in its own folder. Nothing here trains. Besides the one line, stderr
may hold progress bars (PROGRESS_BAR: transformers' "Loading weights" while a model loads, a file's while
prepare reads it), which say how far a command got, not what went wrong.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_RUN
from tests.data.test_converters import detection, write_tsv

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RETRERANK_DEBUG": "0", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}


@dataclass
class Case:
    """`python -m <module> <args>` run in the case's own folder; `names`: what its one line must contain.

    In `args` and `names`, {dir} is the case's folder, {run} its copy of the tiny run, {run2} a second
    copy, {bert} the tiny BERT, {data} the tiny run's data root and {port} a port that is taken.
    `setup(case_folder, context)` writes the bad files before the listing that must not change is taken.
    """

    id: str
    module: str
    args: list[str]
    names: list[str]
    setup: Callable[[Path, dict[str, str]], None] | None = None
    copies: tuple[str, ...] = ()  # copies of the tiny run it needs besides those its args name


def fill(text: str, context: dict[str, str]) -> str:
    for key, value in context.items():
        text = text.replace("{" + key + "}", value)
    return text


# ---------------------------------------------------------------------------------------------- the bad files


def write(path: str, text: str) -> Callable[[Path, dict], None]:
    def setup(folder: Path, context: dict) -> None:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(fill(text, context))

    return setup


def both(*setups: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    def setup(folder: Path, context: dict) -> None:
        for one in setups:
            one(folder, context)

    return setup


def cut_checkpoint(folder: Path, context: dict) -> None:
    path = folder / "run" / "checkpoints" / "best.ckpt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def pickled_checkpoint(folder: Path, context: dict) -> None:
    """A checkpoint that carries a pickled object of a class it names: unpickling builds what the file chooses."""
    import argparse

    import torch

    path = folder / "run" / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = argparse.Namespace(ran=True)
    torch.save(checkpoint, path)


def only_config(folder: Path, context: dict) -> None:
    """A run folder holding its config.yaml and nothing else: started, never checkpointed."""
    (folder / "out" / "tiny").mkdir(parents=True)
    shutil.copy(Path(context["run_source"]) / "config.yaml", folder / "out" / "tiny" / "config.yaml")


def run_in_out(folder: Path, context: dict) -> None:
    """The tiny run copied to out/tiny, where `output_dir={dir}/out name=tiny` resumes it."""
    shutil.copytree(folder / "run", folder / "out" / "tiny")
    shutil.rmtree(folder / "run")


def changed_config(which: str, key: str, value: object) -> Callable[[Path, dict], None]:
    def setup(folder: Path, context: dict) -> None:
        path = folder / which / "config.yaml"
        cfg = yaml.safe_load(path.read_text())
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        path.write_text(yaml.safe_dump(cfg))

    return setup


EVIDENCE = '{"command": "python -m experiments.run", "metrics": {"test/bi/rsum": 250.5}}\n'
STALE_BLOCK = "Rsum <!-- render {kind: value, file: docs/results/run.json, key: test/bi/rsum} -->0.0<!-- /render -->.\n"


def report_root(readme: str, page: str = "") -> Callable[[Path, dict], None]:
    """A repository to render (`--root {dir}/repo`): README.md, docs/page.md and one evidence file."""
    setups = [write("repo/README.md", readme), write("repo/docs/results/run.json", EVIDENCE)]
    if page:
        setups.append(write("repo/docs/page.md", page))
    return both(*setups)


def port_taken() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


# ---------------------------------------------------------------------------------------------- the table

OUT = ["output_dir={dir}/out", "data.root={dir}/data"]
TINY = ["model.backbone={bert}", *OUT, *TINY_RUN]  # a config that would train: only the bad key is wrong
RESUME = ["model.backbone={bert}", "output_dir={dir}/out", "data.root={data}", "name=tiny", "trainer.resume=last"]


def good_tsv(path: str, images: int = 3) -> Callable[[Path, dict], None]:
    def setup(folder: Path, context: dict) -> None:
        write_tsv(folder / path, [detection(i) for i in range(images)])

    return setup


CASES = [
    # ---- experiments.run: config errors, and bounds checked before the run folder is created
    Case("run-unknown-key", "experiments.run", [*TINY, "model.nope=1"], ["model.nope"]),
    Case("run-wrong-type", "experiments.run", [*TINY, "trainer.max_steps=many"], ["trainer.max_steps"]),
    Case(
        "run-yaml-syntax",
        "experiments.run",
        ["{dir}/bad.yaml", *TINY],
        ["bad.yaml"],
        setup=write("bad.yaml", "model:\n  pooling: [mean\n"),
    ),
    Case("run-config-missing", "experiments.run", ["{dir}/missing.yaml", *TINY], ["missing.yaml"]),
    Case("run-join-layer-beyond-depth", "experiments.run", [*TINY, "model.join_layer=99"], ["model.join_layer"]),
    Case(
        "run-adapter-drop-beyond-depth",
        "experiments.run",
        [*TINY, "adapters.enabled=true", "adapters.drop=99"],
        ["adapters.drop"],
    ),
    Case("run-backbone-missing", "experiments.run", [*TINY, "model.backbone={dir}/no-such-model"], ["no-such-model"]),
    Case(
        "run-output-dir-is-a-file",
        "experiments.run",
        [*TINY, "output_dir={dir}/a-file", "name=x"],
        ["output_dir", "a-file"],
        setup=write("a-file", "not a folder\n"),
    ),
    Case(
        "run-name-taken",
        "experiments.run",
        [*TINY, "name=taken"],
        ["name", "taken"],
        setup=write("out/taken/notes.txt", "an earlier run's file\n"),
    ),
    Case(
        "run-resume-changed-config",
        "experiments.run",
        [*RESUME, *TINY_RUN, "trainer.max_steps=8"],
        ["trainer.max_steps"],
        setup=run_in_out,
        copies=("run",),
    ),
    Case(
        "run-resume-changed-config-no-checkpoint",
        "experiments.run",
        [*RESUME, *TINY_RUN, "trainer.max_steps=1"],
        ["trainer.max_steps"],
        setup=only_config,
    ),
    Case("run-resume-checkpoint-missing", "experiments.run", [*TINY, "trainer.resume={dir}/gone.ckpt"], ["gone.ckpt"]),
    # ---- experiments.evaluate
    Case("evaluate-no-run", "experiments.evaluate", ["{dir}/nowhere", "data.root={data}"], ["nowhere"]),
    Case(
        "evaluate-no-checkpoint",
        "experiments.evaluate",
        ["{dir}/started", "data.root={data}"],
        ["started"],
        setup=write("started/config.yaml", "seed: 0\n"),
    ),
    Case(
        "evaluate-cut-checkpoint", "experiments.evaluate", ["{run}", "data.root={data}"], ["best.ckpt"], cut_checkpoint
    ),
    Case(
        "evaluate-pickled-checkpoint",
        "experiments.evaluate",
        ["{run}", "data.root={data}"],
        ["best.ckpt"],
        pickled_checkpoint,
    ),
    Case(
        "evaluate-rerank-with-missing",
        "experiments.evaluate",
        ["{run}", "data.root={data}", "--rerank-with", "{dir}/nowhere"],
        ["nowhere"],
    ),
    Case("evaluate-model-key", "experiments.evaluate", ["{run}", "model.join_layer=0"], ["model.join_layer"]),
    Case("evaluate-override-as-run", "experiments.evaluate", ["eval.ks=[1]"], ["eval.ks=[1]"]),
    # ---- experiments.search
    Case(
        "search-no-run", "experiments.search", ["{dir}/nowhere", "a red circle", "--data-root", "{data}"], ["nowhere"]
    ),
    Case("search-k-zero", "experiments.search", ["{run}", "a red circle", "--k", "0"], ["--k"]),
    Case("search-k-not-a-number", "experiments.search", ["{run}", "a red circle", "--k", "x"], ["--k"]),
    Case("search-no-query", "experiments.search", ["{run}"], ["--image"]),
    Case("search-unknown-image", "experiments.search", ["{run}", "--image", "nope", "--data-root", "{data}"], ["nope"]),
    # ---- experiments.serve: its start
    Case("serve-no-run", "experiments.serve", ["{dir}/nowhere", "--data-root", "{data}"], ["nowhere"]),
    Case("serve-port-taken", "experiments.serve", ["{run}", "--data-root", "{data}", "--port", "{port}"], ["{port}"]),
    Case(
        "serve-port-out-of-range", "experiments.serve", ["{run}", "--data-root", "{data}", "--port", "70000"], ["70000"]
    ),
    # ---- experiments.prepare
    Case(
        "prepare-input-missing",
        "experiments.prepare",
        ["regions", "--format", "tsv", "--input", "{dir}/none.tsv", "--output", "{dir}/store.h5"],
        ["none.tsv"],
    ),
    Case(
        "prepare-unknown-format",
        "experiments.prepare",
        ["regions", "--format", "csv", "--input", "{dir}/a.tsv", "--output", "{dir}/store.h5"],
        ["--format", "csv"],
        setup=good_tsv("a.tsv"),
    ),
    Case(
        "prepare-garbage-tsv",
        "experiments.prepare",
        ["regions", "--format", "tsv", "--input", "{dir}/garbage.tsv", "--output", "{dir}/store.h5"],
        ["garbage.tsv", "line 1"],
        setup=write("garbage.tsv", "this is not\ta detector file\n"),
    ),
    Case(
        "prepare-empty-npz-folder",
        "experiments.prepare",
        ["regions", "--format", "npz", "--input", "{dir}/empty", "--output", "{dir}/store.h5"],
        ["empty"],
        setup=write("empty/readme.txt", "no features here\n"),
    ),
    Case(
        "prepare-output-exists",
        "experiments.prepare",
        ["regions", "--format", "tsv", "--input", "{dir}/a.tsv", "--output", "{dir}/store.h5"],
        ["store.h5", "--overwrite"],
        setup=both(good_tsv("a.tsv"), write("store.h5", "an earlier store\n")),
    ),
    Case(
        "prepare-output-is-a-folder",
        "experiments.prepare",
        ["regions", "--format", "tsv", "--input", "{dir}/a.tsv", "--output", "{dir}/folder", "--overwrite"],
        ["folder"],
        setup=both(good_tsv("a.tsv"), write("folder/keep.txt", "\n")),
    ),
    # ---- experiments.aggregate
    Case("aggregate-no-metrics", "experiments.aggregate", ["{dir}/nowhere"], ["nowhere"]),
    Case("aggregate-same-folder-twice", "experiments.aggregate", ["{run}", "{run}"], ["{run}"]),
    Case(
        "aggregate-empty-metrics",
        "experiments.aggregate",
        ["{run}", "{run2}"],
        ["{run2}/metrics.json"],
        write("run2/metrics.json", "{}\n"),
    ),
    Case(
        "aggregate-corrupt-metrics",
        "experiments.aggregate",
        ["{run}", "{run2}"],
        ["{run2}/metrics.json"],
        write("run2/metrics.json", '{"test/bi/rsum": 1'),
    ),
    Case(
        "aggregate-different-configs",
        "experiments.aggregate",
        ["{run}", "{run2}", "--json", "{dir}/summary.json"],
        ["trainer.max_steps"],
        changed_config("run2", "trainer.max_steps", 300),
    ),
    # ---- experiments.multirun
    Case("multirun-grid-without-values", "experiments.multirun", [*OUT, "--grid", "trainer.max_steps"], ["--grid"]),
    Case("multirun-grid-unknown-key", "experiments.multirun", [*OUT, "--grid", "model.nope=1,2"], ["model.nope"]),
    Case("multirun-repeated-seed", "experiments.multirun", [*OUT, "--seeds", "0", "0"], ["--seeds"]),
    Case(
        "multirun-group-exists",
        "experiments.multirun",
        [*TINY, "--name", "group", "--seeds", "0"],
        ["group"],
        setup=write("out/group/notes.txt", "an earlier group\n"),
    ),
    Case("multirun-aggregate-only-unnamed", "experiments.multirun", [*OUT, "--aggregate-only"], ["--name"]),
    # ---- experiments.grid
    Case("grid-unknown-row", "experiments.grid", [*OUT, "--rows", "nope"], ["--rows", "nope"]),
    Case("grid-unknown-key", "experiments.grid", [*OUT, "model.nope=1"], ["model.nope"]),
    Case(
        "grid-group-exists",
        "experiments.grid",
        [*OUT, "--name", "group", "--rows", "bi", "--columns", "monolingual"],
        ["group"],
        setup=write("out/group/notes.txt", "an earlier grid\n"),
    ),
    # ---- experiments.bench
    Case("bench-unknown-benchmark", "experiments.bench", ["nope"], ["nope"]),
    Case("bench-no-benchmark", "experiments.bench", [], ["benchmark"]),
    Case("bench-unknown-option", "experiments.bench", ["search", "--nope"], ["--nope"]),
    Case("bench-search-unknown-kind", "experiments.bench", ["search", "--kinds", "hnsw"], ["--kinds", "hnsw"]),
    Case("bench-rerank-k-zero", "experiments.bench", ["rerank", "--k", "0", "--dir", "{dir}/b"], ["--k"]),
    Case(
        "bench-rerank-checkpoint-missing",
        "experiments.bench",
        ["rerank", "--checkpoint", "{dir}/nowhere", "--dir", "{dir}/b"],
        ["nowhere"],
    ),
    Case("bench-adapterdrop-no-repeats", "experiments.bench", ["adapterdrop", "--repeats", "0"], ["--repeats"]),
    Case("bench-data-no-images", "experiments.bench", ["data", "--images", "0", "--dir", "{dir}/b"], ["--images"]),
    Case("bench-eval-unknown-key", "experiments.bench", ["eval", "model.nope=1", "--dir", "{dir}/b"], ["model.nope"]),
    Case(
        "bench-eval-unknown-method",
        "experiments.bench",
        ["eval", "--methods", "rerank@x", "--dir", "{dir}/b"],
        ["--methods", "rerank@x"],
    ),
    # ---- experiments.report
    Case(
        "report-check-unknown-kind",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["README.md:1", "kind"],
        report_root("<!-- render {kind: nope} -->0<!-- /render -->\n"),
    ),
    Case(
        "report-check-block-not-yaml",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["README.md:2", "YAML"],
        report_root("Text\n<!-- render {kind: value, file: [ -->0<!-- /render -->\n"),
    ),
    Case(
        "report-check-block-not-closed",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["README.md", "/render"],
        report_root("<!-- render {kind: value, file: docs/results/run.json, key: test/bi/rsum} -->0\n"),
    ),
    Case(
        "report-check-evidence-missing",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["docs/page.md:1", "docs/results/gone.json"],
        report_root("", "<!-- render {kind: value, file: docs/results/gone.json, key: x} -->0<!-- /render -->\n"),
    ),
    Case(
        "report-check-key-missing",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["README.md:1", "test/cross/rsum"],
        report_root(
            "<!-- render {kind: value, file: docs/results/run.json, key: test/cross/rsum} -->0<!-- /render -->"
        ),
    ),
    Case(
        "report-check-spec-wrong-type",
        "experiments.report",
        ["--check", "--root", "{dir}/repo"],
        ["README.md:1", "kind value"],
        report_root("<!-- render {kind: value, file: 3, key: test/bi/rsum} -->0<!-- /render -->\n"),
    ),
    Case(
        "report-render-fails-before-writing",
        "experiments.report",
        ["--root", "{dir}/repo"],
        ["docs/page.md:1", "kind"],
        report_root(STALE_BLOCK, "<!-- render {kind: nope} -->0<!-- /render -->\n"),
    ),
    Case(
        "report-collect-not-a-run",
        "experiments.report",
        ["--collect", "{dir}/nowhere", "{dir}/evidence.json"],
        ["nowhere"],
    ),
    Case(
        "report-collect-corrupt-provenance",
        "experiments.report",
        ["--collect", "{run}", "{dir}/evidence.json"],
        ["provenance.json"],
        write("run/provenance.json", '{"command": "python -m'),
    ),
    # ---- the analyses
    Case(
        "twins-not-a-run",
        "experiments.analysis.twins",
        ["{dir}/plain", "--data-root", "{data}"],
        ["plain"],
        setup=write("plain/notes.txt", "not a run\n"),
    ),
    Case("twins-by-kind-alone", "experiments.analysis.twins", ["{run}", "--by-kind"], ["--by-kind"]),
    Case(
        "twins-out-is-a-folder",
        "experiments.analysis.twins",
        ["{run}", "--data-root", "{data}", "--out", "{dir}/results"],
        ["--out", "results"],
        setup=write("results/keep.txt", "\n"),
    ),
    Case("larger-split-size-zero", "experiments.analysis.larger_split", ["{run}", "--test-size", "0"], ["--test-size"]),
    Case(
        "larger-split-size-below-k",
        "experiments.analysis.larger_split",
        ["{run}", "--test-size", "6", "--data-root", "{data}"],
        ["--test-size 6", "eval.ks"],
    ),
    Case("fusion-weight-no-run", "experiments.analysis.fusion_weight", ["{dir}/nowhere"], ["nowhere"]),
]


# ---------------------------------------------------------------------------------------------- running them

# a progress bar (tqdm's: "Loading weights: 100%|####| 39/39 [00:00<00:00, 9.1it/s]", transformers' while a
# model loads, or a file's while it is read) is the one kind of stderr line besides the error that may show
PROGRESS_BAR = re.compile(r"^[^|]*\d+%\|.*\| \S+/\S+ \[\d+:\d+<")


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folder`, a file with its size and modification time."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        out[str(path.relative_to(folder))] = (-1, 0) if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return out


@dataclass
class Outcome:
    command: str
    returncode: int
    stdout: str
    stderr: str
    names: list[str]  # what the line must name
    before: dict[str, tuple[int, int]]  # the case's folder before the command
    after: dict[str, tuple[int, int]]  # and after it
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.command}\nexit status {self.returncode} after {self.seconds:.1f} s\n"
            f"stderr:\n{self.stderr}\nstdout (end):\n{self.stdout[-800:]}"
        )


@pytest.fixture(scope="module")
def outcomes(tiny_run, tiny_bert_dir, tmp_path_factory) -> dict[str, Outcome]:
    """Every case run once, two at a time, each in a folder of its own."""
    base = tmp_path_factory.mktemp("bad-inputs")
    holder, port = port_taken()
    data_root = yaml.safe_load((Path(tiny_run) / "config.yaml").read_text())["data"]["root"]
    prepared = {}
    for case in CASES:
        folder = base / case.id
        folder.mkdir()
        context = {"dir": str(folder), "bert": tiny_bert_dir, "data": data_root, "port": str(port)}
        named = {copy for copy in ("run", "run2") if any("{" + copy + "}" in arg for arg in case.args)}
        for copy in sorted(named | set(case.copies)):
            shutil.copytree(tiny_run, folder / copy)
            context[copy] = str(folder / copy)
        if case.setup:
            case.setup(folder, {**context, "run_source": str(tiny_run)})
        args = [fill(arg, context) for arg in case.args]
        prepared[case.id] = (case, folder, args, [fill(name, context) for name in case.names], listing(folder))

    def run(case_id: str) -> Outcome:
        case, folder, args, names, before = prepared[case_id]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", case.module, *args],
            cwd=folder,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        seconds = time.perf_counter() - start
        command = f"python -m {case.module} " + " ".join(args)
        return Outcome(command, done.returncode, done.stdout, done.stderr, names, before, listing(folder), seconds)

    try:
        with ThreadPoolExecutor(2) as pool:
            return dict(zip(prepared, pool.map(run, prepared)))
    finally:
        holder.close()


def test_the_table_covers_every_entry_point():
    modules = {case.module for case in CASES}
    assert len(CASES) >= 40 and len(modules) >= 8
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing_behind(case: Case, outcomes: dict[str, Outcome]):
    out = outcomes[case.id]
    assert "Traceback" not in out.stderr + out.stdout, out
    lines = [line for line in out.stderr.splitlines() if line.strip() and not PROGRESS_BAR.match(line)]
    assert len(lines) == 1, out
    assert out.returncode == 1, out
    missing = [name for name in out.names if name not in lines[0]]
    assert not missing, f"the line does not name {missing}\n{out}"
    new = sorted(set(out.after) - set(out.before))
    changed = sorted(p for p in set(out.after) & set(out.before) if out.after[p] != out.before[p])
    gone = sorted(set(out.before) - set(out.after))
    assert not (new or changed or gone), f"left behind: new {new}, changed {changed}, removed {gone}\n{out}"


# ---------------------------------------------------------------------------------------------- beside the table


def test_a_bad_record_after_good_ones_keeps_them_for_the_rerun_and_says_where(tmp_path):
    """The one file a failed command leaves on purpose: prepare's .partial, which a rerun goes on from."""
    write_tsv(tmp_path / "a.tsv", [detection(i) for i in range(4)])
    lines = (tmp_path / "a.tsv").read_text().splitlines()
    (tmp_path / "a.tsv").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # cut mid-line
    store = tmp_path / "store.h5"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.prepare", "regions", "--format", "tsv", "--quiet"]
        + ["--input", str(tmp_path / "a.tsv"), "--output", str(store)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"data error: {tmp_path / 'a.tsv'} line 4 (image '1003'): truncated last line (no newline at the end): "
        "field features is not valid base64 (Incorrect padding); the images before it are kept in "
        f"{store}.partial: fix the input and rerun to go on from there, or delete that file to start again"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "store.h5.partial"]


def test_the_analyses_never_write_where_a_checkpoint_says(tiny_run, tmp_path):
    """A checkpoint's stored data root is not the user's: the synthetic split is generated into --data-root."""
    import torch

    from experiments.analysis.larger_split import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["config"]["data"]["root"] = str(tmp_path / "chosen-by-the-checkpoint")
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    main([str(run), "--test-size", "12", "--data-root", str(tmp_path / "mine")])
    assert not (tmp_path / "chosen-by-the-checkpoint").exists()
    assert any((tmp_path / "mine").rglob("*"))
