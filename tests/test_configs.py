"""Every shipped config loads and validates; bad keys and types are stopped with the key named."""

import re
from pathlib import Path

import pytest

from retrerank.build import evaluation_methods
from retrerank.config import Config, ConfigError, choices, from_dict, load, to_yaml
from retrerank.retrieval.methods import Method

CONFIGS = sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads_and_its_monitor_is_validated(path):
    cfg = load(path)
    assert isinstance(cfg, Config)
    val_methods, test_methods = evaluation_methods(cfg)
    assert cfg.eval.monitor.split("/")[1] in val_methods
    assert all(str(Method.parse(m)) == m for m in val_methods + test_methods + cfg.sweep.methods)
    assert "bi" in test_methods


def test_overrides_win_over_the_file_and_are_typed(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  batch_size: 8\n")
    cfg = load(path, ["data.batch_size=16", "eval.rerank_ks=[5,50]", "name=abc"])
    assert cfg.data.batch_size == 16 and cfg.eval.rerank_ks == [5, 50] and cfg.name == "abc"


@pytest.mark.parametrize(
    "override, key",
    [
        (["data.bogus=1"], "data.bogus"),
        (["data.batch_size=abc"], "data.batch_size"),
        (["objective.mode=foo"], "objective.mode"),
        (["eval.ks=[0,5]"], "eval.ks"),
        (["eval.val_methods=[nope]"], "eval.val_methods"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(None, override)


@pytest.mark.parametrize("key", ["data.setup", "data.transfer.dataset", "objective.mining.matching", "logger"])
def test_a_value_outside_the_fields_choices_names_them(key):
    allowed = choices(key)
    assert len(allowed) >= 2 and load(None, [f"{key}={allowed[-1]}"])
    with pytest.raises(
        ConfigError,
        match=f"^invalid config key '{re.escape(key)}': 'bogus' is not one of {re.escape(str(list(allowed)))}$",
    ):
        load(None, [f"{key}=bogus"])


# accepted at load before, and failing only after training (or never): now stopped by `load`
LOAD_ERRORS = [
    (
        ["eval.val_methods=[bi,rerank@2O]"],
        r"'eval\.val_methods': unknown retrieval method 'rerank@2O'; expected 'bi', "
        r"'rerank@<k>' with k >= 1, or 'cross_all'",
    ),
    (["sweep.methods=[bi,rerank@0]"], r"'sweep\.methods': unknown retrieval method 'rerank@0'"),
    (["eval.monitor=val/rerank@2O/rsum"], r"'eval\.monitor': unknown retrieval method 'rerank@2O'"),
    (
        ["eval.monitor=val/cross_all/rsum"],
        r"'eval\.monitor': method 'cross_all' .* not validated.*\['bi', 'rerank@20'\]",
    ),
    (["objective.mode=bi"], r"'eval\.monitor': method 'rerank@20' .* not validated.*\['bi'\].*objective\.mode=bi"),
    (
        ["eval.monitor=test/rerank@20/rsum"],
        r"'eval\.monitor': 'test/rerank@20/rsum' is not of the form val/<method>/<metric>",
    ),
    (["eval.monitor=rsum"], r"'eval\.monitor': 'rsum' is not of the form"),
    (["eval.monitor=val/bi/r_sum"], r"'eval\.monitor': no metric 'r_sum'"),
    (["eval.monitor=val/bi/t2i_r20"], r"'eval\.monitor': no metric 't2i_r20'.*eval\.ks=\[1, 5, 10\]"),
    (["sweep.join=true", "sweep.methods=[bi]"], r"'sweep\.methods': the join-layer sweep .* put a rerank@k"),
    (["eval.batch_size=0"], r"'eval\.batch_size': must be > 0, got 0"),
    (["eval.rerank_batch_size=-1"], r"'eval\.rerank_batch_size': must be > 0, got -1"),
    (["eval.chunk_size=0"], r"'eval\.chunk_size': must be > 0"),
    (["data.batch_size=0"], r"'data\.batch_size': must be > 0, got 0"),
    (["data.batch_size=-8"], r"'data\.batch_size': must be > 0, got -8"),
    (["trainer.val_check_interval=0"], r"'trainer\.val_check_interval': must be >= 1 .*got 0"),
    (["trainer.val_check_interval=-5"], r"'trainer\.val_check_interval': must be >= 1"),
    (["trainer.max_steps=0"], r"'trainer\.max_steps': must be >= 1 \(or -1: no limit\), got 0"),
    (["trainer.max_steps=-2"], r"'trainer\.max_steps': must be >= 1"),
    (["trainer.max_epochs=0"], r"'trainer\.max_epochs': must be >= 1"),
    (["optim.lr=0"], r"'optim\.lr': must be > 0, got 0"),
    (["optim.lr=-1e-5"], r"'optim\.lr': must be > 0"),
    (["optim.new_lr=0"], r"'optim\.new_lr': must be > 0"),
    (["optim.weight_decay=-0.1"], r"'optim\.weight_decay': must be >= 0"),
    (["optim.warmup_ratio=1.5"], r"'optim\.warmup_ratio': must be between 0 and 1"),
    (["model.max_text_len=0"], r"'model\.max_text_len': must be > 0, got 0"),
    (["model.max_regions=-1"], r"'model\.max_regions': must be > 0"),
    (["data.num_workers=-1"], r"'data\.num_workers': must be >= 0"),
]


@pytest.mark.parametrize("override, message", LOAD_ERRORS, ids=[" ".join(o) for o, _ in LOAD_ERRORS])
def test_values_that_would_fail_after_training_stop_at_load(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load(None, override)
    assert "\n" not in str(err.value)  # one line, as experiments.run prints it


@pytest.mark.parametrize(
    "override",
    [
        ["trainer.max_steps=-1"],
        ["trainer.max_epochs=-1"],
        ["trainer.val_check_interval=null"],
        ["eval.monitor=val/bi/t2i_map_at_r"],
        ["eval.ks=[1,3]", "eval.monitor=val/rerank@20/i2t_r3"],
        ["objective.mode=bi", "eval.monitor=val/bi/rsum"],
        ["eval.val_methods=[cross_all]", "eval.monitor=val/cross_all/rsum"],
    ],
)
def test_what_the_schema_allows_still_loads(override):
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
