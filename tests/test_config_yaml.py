"""A config file that is not valid YAML stops with one ConfigError naming the file, line and column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retrerank.config import ConfigError, load


def config_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b"seed: 1\ndata:\n  batch_size: [1, 2\n  root: x\n",
            ":4:7: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at line 3, column 15)",
        ),
        (b"seed: 1\ndata: batch_size: 4\n", ":2:17: invalid YAML: mapping values are not allowed"),
        (
            b"seed: 1\nseed: 2\n",
            ":2:1: invalid YAML: found duplicate key seed (while constructing a mapping at line 1, column 1)",
        ),
        (b"data:\n\tbatch_size: 4\n", ":2:1: invalid YAML: found character that cannot start any token"),
    ],
)
def test_yaml_syntax_errors_name_file_line_and_column(tmp_path: Path, text: bytes, message: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}{message}")) as caught:
        load(path)
    assert "\n" not in str(caught.value)


def test_non_utf8_and_non_mapping_files_are_config_errors(tmp_path: Path) -> None:
    path = config_file(tmp_path, b"seed: 1\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:2: not valid UTF-8 (byte offset 17)")):
        load(path)
    path = config_file(tmp_path, b"- seed: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: a config file is a mapping of keys to values")):
        load(path)


def test_a_valid_file_still_loads(tmp_path: Path) -> None:
    path = config_file(tmp_path, "\ufeffseed: 3  # a BOM and a comment\nname: café\n".encode("utf-8"))
    cfg = load(path, ["data.batch_size=4"])
    assert (cfg.seed, cfg.name, cfg.data.batch_size) == (3, "café", 4)
