"""experiments.report: pages rendered from evidence files, and --check naming what drifted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import report
from retrerank.evidence import EvidenceError

REPO = Path(__file__).resolve().parents[2]
PROVENANCE = {
    "command": "python -m experiments.run seed=0",
    "commit": "abc1234",
    "date": "2026-12-07T10:00:00+0000",
    "machine": {"cpu": "AMD EPYC", "cores": 2, "threads": 2, "gpu": None, "torch": "2.13.0+cpu"},
}


def write_run(path: Path, bi: float, rerank: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {
        "test/bi/rsum": bi,
        "test/rerank@20/rsum": rerank,
        "test/bi/i2t_r1": 80.0,
        "test/rerank@20/i2t_r1": 90.0,
        "test/bi/t2i_r1": 60.0,
        "test/rerank@20/t2i_r1": 70.0,
    }
    path.write_text(json.dumps({**PROVENANCE, "metrics": metrics}))


PAGE = """# results
<!-- render {kind: seeds, files: docs/results/runs/seed*.json, columns: [rsum]} -->
<!-- /render -->

The lead is <!-- render {kind: value, files: docs/results/runs/seed*.json, mean: true, key: test/rerank@20/rsum,
minus: {files: docs/results/runs/seed*.json, mean: true, key: test/bi/rsum}} --><!-- /render --> rsum.

<!-- render
kind: table
files: docs/results/bench.jsonl
columns: [{k: k}, {speedup: speed-up}, {machine: machine}]
format: {speedup: .2f}
-->
<!-- /render -->

<!-- render {kind: source, file: docs/results/runs/seed0.json} -->
<!-- /render -->
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_run(tmp_path / "docs/results/runs/seed0.json", 540.0, 560.0)
    write_run(tmp_path / "docs/results/runs/seed1.json", 550.0, 575.0)
    lines = [
        {**PROVENANCE, "k": 20, "speedup": 4.137},
        {**PROVENANCE, "k": 10, "speedup": 3.0, "machine": {"gpu": "NVIDIA H100 80GB HBM3"}},
    ]
    (tmp_path / "docs/results/bench.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "README.md").write_text(PAGE)
    assert report.main(["--root", str(tmp_path)]) == 0
    return tmp_path


def test_blocks_render_numbers_worked_out_by_hand(tree: Path):
    text = (tree / "README.md").read_text()
    # means 545.0 and 567.5; sample std of (540, 550) is 7.07, of (560, 575) 10.61
    assert "| bi | 545.0 ± 7.1 |" in text and "| rerank@20 | 567.5 ± 10.6 |" in text
    assert "The lead is <!-- render" in text and "-->22.5<!-- /render --> rsum." in text
    assert "| 20 | 4.14 | AMD EPYC, 2 threads |" in text and "| 10 | 3.00 | NVIDIA H100 80GB HBM3 |" in text
    assert "`python -m experiments.run seed=0`; commit abc1234, 2026-12-07, AMD EPYC, 2 threads" in text
    assert report.check(tree) == []
    assert report.main(["--root", str(tree)]) == 0  # a second render changes nothing
    assert (tree / "README.md").read_text() == text


def test_check_names_the_page_line_and_number_of_an_edited_metric(tree: Path):
    path = tree / "docs/results/runs/seed1.json"
    record = json.loads(path.read_text())
    record["metrics"]["test/bi/rsum"] = 560.0
    path.write_text(json.dumps(record))
    problems = report.check(tree)
    assert any(
        re.match(r"README.md:5: the page says 545.0 where docs/results/runs/seed\*.json renders 550.0", p)
        for p in problems
    ), problems
    assert any("README.md:10: the page says 22.5" in p and "renders 17.5" in p for p in problems), problems


def test_a_number_typed_into_a_table_is_refused(tree: Path):
    page = tree / "README.md"
    page.write_text(page.read_text() + "\n| method | rsum |\n|---|---|\n| bi | 549.6 |\n| `lr=1.5` | n/a |\n")
    line = page.read_text().splitlines().index("| bi | 549.6 |") + 1
    assert report.check(tree) == [f"README.md:{line}: 549.6 is typed into a table; render it from its evidence file"]


def test_bad_blocks_are_one_line_naming_page_and_line(tree: Path):
    page = tree / "docs/guide.md"
    page.parent.mkdir(exist_ok=True)
    page.write_text("x\n<!-- render {kind: run, file: docs/results/missing.json} -->\n<!-- /render -->\n")
    with pytest.raises(EvidenceError, match=r"docs/guide.md:2: no evidence file matches docs/results/missing.json"):
        report.check(tree)
    page.write_text("<!-- render {kind: plot} -->\n")
    with pytest.raises(EvidenceError, match="not closed"):
        report.check(tree)
    page.write_text("<!-- render {kind: plot} --><!-- /render -->\n")
    with pytest.raises(EvidenceError, match="needs a kind, one of run, seeds"):
        report.check(tree)


def test_the_committed_pages_match_their_evidence_and_an_edit_is_caught(tmp_path: Path):
    """The repository's own README: copied with its evidence, one metric of its headline edited."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    assert report.check(tmp_path) == []
    text = (tmp_path / "README.md").read_text()
    match = next(
        m for m in report.BLOCK.finditer(text) if "kind: run" in m.group("spec") or "kind: seeds" in m.group("spec")
    )
    spec = report.yaml.safe_load(match.group("spec"))
    first = sorted(tmp_path.glob(spec.get("file") or spec["files"]))[0]
    record = json.loads(first.read_text())
    key = next(k for k in record["metrics"] if k.endswith("/rsum") and "/bi/" in k)
    record["metrics"][key] += 10.0
    first.write_text(json.dumps(record))
    done = subprocess.run(
        [sys.executable, "-m", "experiments.report", "--check", "--root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[0]
    assert line.startswith("README.md:") and "the page says" in line and "renders" in line, done.stderr
    assert "Traceback" not in done.stderr


def test_collect_turns_a_finished_run_folder_into_an_evidence_file(tmp_path: Path):
    run = tmp_path / "runs/seed0"
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps(PROVENANCE))
    (run / "metrics.json").write_text(json.dumps({"test/bi/rsum": 540.0}))
    out = tmp_path / "docs/results/run.json"
    assert report.main(["--collect", str(run), str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["metrics"] == {"test/bi/rsum": 540.0} and record["commit"] == "abc1234"
    assert record["command"] == PROVENANCE["command"] and "wall_seconds" in record
    (run / "metrics.json").unlink()
    with pytest.raises(EvidenceError, match="not a finished run"):
        report.main(["--collect", str(run), str(out)])


def test_a_table_column_missing_from_a_record_is_an_error_unless_the_block_names_a_filler(tree: Path):
    page = tree / "docs/bench.md"
    page.parent.mkdir(exist_ok=True)
    spec = "kind: table\nfiles: docs/results/bench.jsonl\ncolumns: [{k: k}, {peak_mb: MB}]\n"
    page.write_text(f"<!-- render\n{spec}-->\n<!-- /render -->\n")
    with pytest.raises(EvidenceError, match=r"docs/results/bench.jsonl record 1: no key 'peak_mb'"):
        report.check(tree)
    page.write_text(f"<!-- render\n{spec}missing: n/a\n-->\n<!-- /render -->\n")
    assert report.main(["--root", str(tree)]) == 0
    assert "| 20 | n/a |\n| 10 | n/a |" in page.read_text()
