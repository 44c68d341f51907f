"""`python -m experiments.run --help` lists the whole schema with defaults and comments; `--cfg`
prints the resolved config and runs nothing."""

from __future__ import annotations

import json
import re
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


def key_help(out: str) -> dict[str, list[str]]:
    """Dotted key -> its lines in --help: `  key: type = default[  # comment]`, then any wrapped comment lines."""
    keys: dict[str, list[str]] = {}
    key = ""
    for line in out.split("config keys", 1)[1].splitlines():
        if line.startswith("      "):
            keys[key].append(line)
        elif line.startswith("  ") and not line.startswith("   "):
            key = line.split(":")[0].strip()
            keys[key] = [line]
    return keys


def test_help_lists_every_key_with_its_default_and_comment(capsys):
    assert main(["--help"]) is None
    out = capsys.readouterr().out
    helps = key_help(out)
    lines = {key: " ".join(part.strip() for part in block) for key, block in helps.items()}
    keys = list(leaves(Config()))
    assert len(keys) > 100
    for key, value in keys:
        assert key in lines, f"--help misses {key}"
        assert f"= {json.dumps(value)}" in helps[key][0], helps[key][0]
        # every key says what it does, in one or two lines
        assert "#" in helps[key][0] or len(helps[key]) > 1, f"{key} has no help"
        assert len(helps[key]) <= 3, f"{key}: {len(helps[key]) - 1} lines of help"
        # what and why, never the history: no development rounds, no measurements
        assert not re.search(r"\bsessions?\b|\bround \d|\br\d{1,2}\b|\btook\b|slowest machine", lines[key]), lines[key]
    assert "negatives per positive and direction for the matching loss" in lines["objective.hard_negatives"]
    assert "csv | wandb | tensorboard" in lines["logger"]
    assert "width of a region feature vector" in lines["data.synthetic.feature_dim"]  # inline comment
    assert "null | relu | gelu | swish | tanh = null" in lines["adapters.non_linearity"]
    assert "[data.synthetic]  The embedded synthetic scenes" in out  # the section's docstring
    assert "[objective.mining]  ANCE-style hard negatives" in out
    assert out.startswith("usage: python -m experiments.run [config.yaml] [key=value ...]")
    assert "\n\nTrain, evaluate and report" in out  # what it does, from the module's docstring
    assert max(map(len, out.splitlines())) <= 120
    assert main(["-h"]) is None and capsys.readouterr().out == out


def test_keys_text_lists_the_keys_asked_for():
    from retrerank.config_help import keys_text

    text = keys_text(("eval.", "data.test_langs"))
    assert "[eval]" in text and "[data]" in text and "[trainer]" not in text
    assert "  data.test_langs: list[str]" in text and "data.train_langs" not in text


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
