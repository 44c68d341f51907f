"""Every shipped config loads and validates; bad keys and types are stopped with the key named."""
from pathlib import Path

import pytest

from retrerank.build import evaluation_methods
from retrerank.config import Config, ConfigError, from_dict, load, to_yaml

CONFIGS = sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_its_monitor_is_validated(path):
    cfg = load(path)
    assert isinstance(cfg, Config)
    val_methods, test_methods = evaluation_methods(cfg)
    assert cfg.eval.monitor.split("/")[1] in val_methods
    assert set(val_methods) <= {"bi", "cross_all"} | {m for m in val_methods if m.startswith("rerank@")}
    assert "bi" in test_methods


def test_overrides_win_over_the_file_and_are_typed(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  batch_size: 8\n")
    cfg = load(path, ["data.batch_size=16", "eval.rerank_ks=[5,50]", "name=abc"])
    assert cfg.data.batch_size == 16 and cfg.eval.rerank_ks == [5, 50] and cfg.name == "abc"


@pytest.mark.parametrize("override, key", [
    (["data.bogus=1"], "data.bogus"),
    (["data.batch_size=abc"], "data.batch_size"),
    (["objective.mode=foo"], "objective.mode"),
    (["eval.ks=[0,5]"], "eval.ks"),
    (["eval.val_methods=[nope]"], "eval.val_methods"),
])
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(None, override)


def test_unknown_key_in_a_file_names_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch.*bad\.yaml"):
        load(path)


def test_missing_file_and_malformed_override_are_clear():
    with pytest.raises(ConfigError, match="not found"):
        load("nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load(None, ["data.batch_size"])


def test_resolved_yaml_round_trips():
    from omegaconf import OmegaConf

    cfg = load(None, ["objective.bi_weight=0.5"])
    again = from_dict(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))))
    assert again == cfg
