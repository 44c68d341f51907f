"""Every entry point answers --help: `retrerank --help` lists every command with what it does, and each
command's help, as `python -m experiments.<module> --help` and as `retrerank <command> --help`, exits 0
with a usage text that says what the command does, no line wider than 120 columns on any terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bench.__main__ import BENCHMARKS
from retrerank.cli import purpose
from retrerank.console import COMMANDS, python_m

ROOT = Path(__file__).resolve().parents[1]
# a wide terminal: help must stay within 120 columns even where argparse could use more
ENV = {**os.environ, "COLUMNS": "250", "RETRERANK_DEBUG": "0"}
RETRERANK = shutil.which("retrerank", path=str(Path(sys.executable).parent)) or shutil.which("retrerank")


def words(text: str) -> str:
    return " ".join(text.split())


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)


def check_help(done: subprocess.CompletedProcess, module: str) -> None:
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "usage" in out.lower()
    assert purpose(module) and words(purpose(module)) in words(out), f"the help does not say what {module} does"
    wide = [line for line in out.splitlines() if len(line) > 120]
    assert not wide, f"{len(wide)} lines over 120 columns, e.g. {wide[0]!r}"


def test_every_command_has_a_module_with_a_main():
    for module in COMMANDS.values():
        path = ROOT / (module.replace(".", "/") + ".py")
        if module == "experiments.report" and not path.is_file():
            continue  # written beside this file; present wherever the whole suite runs
        assert path.is_file(), module
        assert "def main(" in path.read_text(), f"{module} has no main(argv)"
    # every `python -m experiments...` entry point is a command (a benchmark is one through `bench <name>`)
    entry_points = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "experiments").rglob("*.py")
        if 'if __name__ == "__main__":' in p.read_text() and p.parent.name != "bench"
    }
    assert entry_points <= {python_m(m) for m in COMMANDS.values()}


@pytest.mark.skipif(RETRERANK is None, reason="the retrerank script is installed by pip install -e .")
def test_retrerank_help_lists_every_command_with_what_it_does():
    done = run(RETRERANK, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: retrerank"), done.stderr
    listing = words(done.stdout)
    for name, module in COMMANDS.items():
        assert f" {name} " in listing, name
        if module != "experiments.report" or (ROOT / "experiments" / "report.py").is_file():
            assert words(purpose(module)) in listing, name
    assert max(map(len, done.stdout.splitlines())) <= 120
    bare = run(RETRERANK)  # no command: the same list, on stderr, and a usage error
    assert bare.returncode == 2 and bare.stderr == done.stdout and bare.stdout == ""
    unknown = run(RETRERANK, "trian")
    assert unknown.returncode == 2 and "unknown command 'trian'" in unknown.stderr


@pytest.mark.skipif(RETRERANK is None, reason="the retrerank script is installed by pip install -e .")
def test_a_command_behaves_as_its_module(tmp_path):
    """The same main(argv) through the same run_main: the same output and exit status, errors included."""
    args = [str(tmp_path / "no-run")]
    direct = run(sys.executable, "-m", "experiments.aggregate", *args)
    console = run(RETRERANK, "aggregate", *args)
    assert direct.returncode == console.returncode == 1 and "no metrics.json" in direct.stderr
    assert (console.stdout, console.stderr) == (direct.stdout, direct.stderr)
    direct, console = run(sys.executable, "-m", "experiments.bench", "nosuch"), run(RETRERANK, "bench", "nosuch")
    assert direct.returncode == console.returncode == 1 and console.stderr == direct.stderr
    assert direct.stderr.startswith("usage error: python -m experiments.bench: unknown benchmark 'nosuch'")


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("how", ["python -m", "retrerank"])
def test_every_command_prints_its_help(command, how):
    module = COMMANDS[command]
    if module == "experiments.report" and not (ROOT / "experiments" / "report.py").is_file():
        pytest.skip("experiments/report.py is not written yet")
    if how == "retrerank":
        if RETRERANK is None:
            pytest.skip("the retrerank script is installed by pip install -e .")
        check_help(run(RETRERANK, command, "--help"), module)
    else:
        check_help(run(sys.executable, "-m", python_m(module), "--help"), module)


def test_short_help_flag_is_the_same_help():
    assert (
        run(sys.executable, "-m", "experiments.aggregate", "-h").stdout
        == run(sys.executable, "-m", "experiments.aggregate", "--help").stdout
    )


def test_bench_help_lists_every_benchmark_and_each_has_its_own_help(capsys, monkeypatch):
    from experiments.bench.__main__ import main

    monkeypatch.setenv("COLUMNS", "250")
    main(["--help"])
    listing = capsys.readouterr().out
    for name, module in BENCHMARKS.items():
        assert f"  {name} " in listing and words(purpose(module)) in words(listing), name
    for name, module in BENCHMARKS.items():  # in-process: torch is imported once, not once per benchmark
        for flag in ("--help", "-h"):
            with pytest.raises(SystemExit) as done:
                main([name, flag])
            assert done.value.code == 0
            out = capsys.readouterr().out
            assert out.startswith(f"usage: python -m experiments.bench {name}")
            assert words(purpose(module)) in words(out), name
            assert max(map(len, out.splitlines())) <= 120, name


def test_bench_without_a_benchmark_is_a_usage_error(capsys):
    from experiments.bench.__main__ import main
    from retrerank.cli import run_main

    for argv in ([], ["nosuch"]):
        with pytest.raises(SystemExit) as done:
            run_main(main, argv)
        assert done.value.code.startswith("usage error: python -m experiments.bench: ")
        assert "--help shows the usage" in done.value.code and "\n" not in done.value.code


def test_the_larger_split_tool_tests_a_run_on_a_larger_synthetic_split(tiny_run, tmp_path):
    from experiments.analysis.larger_split import main
    from experiments.analysis.twins import main as twins

    out = main(
        [
            str(tiny_run),
            "--data-root",
            str(tiny_run.parent / "data"),
            "--test-size",
            "12",
            "--out",
            str(tmp_path / "big.json"),
        ]
    )
    written = json.loads((tmp_path / "big.json").read_text())
    assert {key: written[key] for key in out} == out and {"command", "commit", "date", "machine"} <= set(written)
    assert out["images"] == 12 and out["checkpoint"] == "best"
    # R@1 on 12 images moves in steps of 100/12: the split has the size asked for
    assert abs(out["larger_test/bi/i2t_r1"] * 12 / 100 - round(out["larger_test/bi/i2t_r1"] * 12 / 100)) < 0.01
    # the same split and checkpoint as the twins tool's --test-size
    other = twins([str(tiny_run), "--data-root", str(tiny_run.parent / "data"), "--test-size", "12"])["larger_test"]
    assert {key: value for key, value in out.items() if key.startswith("larger_test/")} == {
        key: value for key, value in other.items() if key.startswith("larger_test/")
    }
