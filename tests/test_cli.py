"""Entry points: a config or data error is one line on stderr, not a traceback, unless debugging
(`--debug` or RETRERANK_DEBUG=1); every `python -m experiments...` goes through retrerank.cli.run_main."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrerank.cli import run_main
from retrerank.config import ConfigError
from retrerank.data.errors import DataError
from tests.data.sources import fixtures
from tests.data.test_real_datasets import write_store

ROOT = Path(__file__).resolve().parents[1]


def failing(error: Exception, seen: list | None = None):
    def main(argv: list[str]) -> None:
        if seen is not None:
            seen.append(argv)
        try:
            raise OSError("the low-level cause")
        except OSError:
            raise error from None

    return main


def test_a_user_input_error_is_one_labelled_line(monkeypatch) -> None:
    monkeypatch.delenv("RETRERANK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as caught:
        run_main(failing(DataError("x.tsv line 4: bad\nskipped 2 record(s)")), ["a=1"])
    assert caught.value.code == "data error: x.tsv line 4: bad; skipped 2 record(s)"
    with pytest.raises(SystemExit) as caught:
        run_main(failing(ConfigError("invalid config key 'seed'")), [])
    assert caught.value.code == "config error: invalid config key 'seed'"
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_main(failing(RuntimeError("ours")), [])


def test_an_error_from_a_dataloader_worker_is_its_own_message(monkeypatch) -> None:
    from torch.utils.data import DataLoader

    class Damaged:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            raise DataError(
                f"region store r.h5 is corrupt: the features of image 'im{i}' (row {i}) fail their checksum"
            )

    monkeypatch.delenv("RETRERANK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as caught:
        run_main(lambda argv: list(DataLoader(Damaged(), num_workers=1)), [])
    assert (
        caught.value.code == "data error: region store r.h5 is corrupt: the features of image 'im0' (row 0) "
        "fail their checksum"
    )


def test_debug_flag_or_variable_lets_the_traceback_through(monkeypatch) -> None:
    monkeypatch.delenv("RETRERANK_DEBUG", raising=False)
    seen: list = []
    with pytest.raises(DataError) as caught:
        run_main(failing(DataError("bad"), seen), ["exp.yaml", "--debug", "seed=1"])
    assert seen == [["exp.yaml", "seed=1"]]  # the flag never reaches the config parser
    assert isinstance(caught.value.__context__, OSError) and not caught.value.__suppress_context__
    monkeypatch.setenv("RETRERANK_DEBUG", "1")
    with pytest.raises(DataError):
        run_main(failing(DataError("bad")), [])
    monkeypatch.setenv("RETRERANK_DEBUG", "0")
    with pytest.raises(SystemExit):
        run_main(failing(DataError("bad")), [])


def test_every_entry_point_goes_through_run_main() -> None:
    entry_points = [p for p in (ROOT / "experiments").rglob("*.py") if '__name__ == "__main__"' in p.read_text()]
    assert len(entry_points) >= 5
    for path in entry_points:
        after = path.read_text().split('if __name__ == "__main__":', 1)[1]
        assert after.strip().startswith("run_main("), f"{path} does not call run_main"


def test_help_is_never_wider_than_the_help_width_whatever_the_terminal(monkeypatch, capsys) -> None:
    from retrerank.cli import HELP_WIDTH, argument_parser

    monkeypatch.setenv("COLUMNS", "300")
    # run_main caps the width argparse reads when help is asked for (parsers it did not build too) ...
    assert run_main(lambda argv: os.environ["COLUMNS"], ["--help"]) == str(HELP_WIDTH + 2)
    monkeypatch.setenv("COLUMNS", "300")
    assert run_main(lambda argv: os.environ["COLUMNS"], ["seed=1"]) == "300"  # ... and only then
    # ... and HelpFormatter wraps to it whatever COLUMNS says
    parser = argument_parser("experiments.x", "What x does.\n\nA docstring paragraph kept as written.")
    parser.add_argument("--long", help="an option's help " * 20)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m experiments.x") and "What x does.\n\nA docstring" in out
    assert max(map(len, out.splitlines())) <= HELP_WIDTH


def test_purpose_is_the_docstring_before_its_usage_read_without_importing() -> None:
    from retrerank.cli import purpose

    assert purpose("experiments.run") == "Train, evaluate and report"
    assert purpose("experiments.bench.__main__").startswith("Benchmarks of speed and memory")
    # reading never imports the module (a fresh process: torch stays unloaded)
    code = "import sys; from retrerank.cli import purpose; purpose('experiments.serve'); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr


def test_a_run_on_a_bad_caption_file_prints_one_line_and_debug_the_traceback(tmp_path, tiny_bert_dir) -> None:
    data = fixtures.karpathy_coco_data()
    data["images"][6]["sentences"][0]["raw"] = "   "
    captions = tmp_path / "coco" / "dataset_coco.json"
    captions.parent.mkdir()
    captions.write_text(json.dumps(data))
    write_store(tmp_path / "coco" / "regions.h5", [str(cocoid) for cocoid, _, _ in fixtures.COCO_IMAGES])
    args = [
        sys.executable,
        "-m",
        "experiments.run",
        f"output_dir={tmp_path / 'runs'}",
        f"data.root={tmp_path}",
        "data.dataset=coco",
        f"model.backbone={tiny_bert_dir}",
        "model.join_layer=1",
        "trainer.max_steps=1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RETRERANK_DEBUG"}
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    line = f"data error: {captions}: images[6] (image 391895): sentid 8 has an empty caption"
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == line
    debug = subprocess.run(args + ["--debug"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert re.search(r"DataError: " + re.escape(line.removeprefix("data error: ")), debug.stderr)
