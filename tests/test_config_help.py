"""`python -m experiments.run --help` lists the whole schema with defaults and comments; `--cfg`
prints the resolved config and runs nothing."""
from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from experiments.run import main
from retrerank.config import Config, ConfigError, load

GPU = str(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "gpu.yaml")


def leaves(section, prefix=""):
    """(dotted key, default) of every non-section field, walked here, not by the module under test."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value


def test_help_lists_every_key_with_its_default_and_comment(capsys):
    assert main(["--help"]) is None
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    keys = list(leaves(Config()))
    assert len(keys) > 100
    for key, value in keys:
        assert key in lines, f"--help misses {key}"
        assert f"= {json.dumps(value)}" in lines[key], lines[key]
    assert "negatives per positive and direction for the matching loss" in lines["objective.hard_negatives"]
    assert "csv | wandb | tensorboard" in lines["logger"]
    assert "width of a region feature vector" in lines["data.synthetic.feature_dim"]  # inline comment
    assert "[data.synthetic]  The embedded synthetic scenes" in out  # the section's docstring
    assert "[objective.mining]  ANCE-style hard negatives" in out
    assert out.startswith("Train, evaluate and report")
    assert main(["-h"]) is None and capsys.readouterr().out == out


def test_cfg_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run would create ./runs here
    args = ["seed=3", f"output_dir={tmp_path / 'runs'}", "eval.rerank_ks=[3,5]"]
    assert main([GPU] + args + ["--cfg"]) is None
    printed = capsys.readouterr().out
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert load(saved) == load(GPU, args)
    assert yaml.safe_load(printed)["seed"] == 3
    assert list(tmp_path.iterdir()) == [saved], "--cfg must not create a run folder"


def test_an_unknown_option_is_a_config_error_not_a_missing_file():
    with pytest.raises(ConfigError, match="unknown option '--hlep'"):
        main(["--hlep"])
