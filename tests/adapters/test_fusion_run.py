"""AdapterFusion from the config: earlier runs' adapter sets loaded frozen, a fusion trained on top,
activations recorded and the fusion pruned, all through `experiments.run`."""

import csv
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from experiments.run import main
from retrerank.adapters.switch import Fuse
from retrerank.build import build_system, load_system
from retrerank.config import ConfigError, load
from tests.adapters.test_adapter_system import SMALL


@pytest.fixture(scope="module")
def adapter_runs(tiny_bert_dir, tmp_path_factory):
    """Two adapter runs on different languages: the sets a fusion combines."""
    root = tmp_path_factory.mktemp("fusion")
    common = [f"output_dir={root}", f"data.root={root / 'data'}", f"model.backbone={tiny_bert_dir}"] + SMALL
    en = main(common + ["name=en"])
    de = main(common + ["name=de", "data.train_langs=[de]", "data.test_langs=[de]", "seed=1"])
    return root, common, en, de


def fusion_args(adapter_runs, *extra):
    root, common, en, de = adapter_runs
    return common + [
        f"adapters.fusion.sets={{en: {en}, de: {de / 'adapters.safetensors'}}}",
        "adapters.train=[fusion,heads,visual]",
        *extra,
    ]


def test_fusion_loads_the_sets_frozen_and_trains_only_the_fusion(adapter_runs):
    root, _, en, de = adapter_runs
    system = build_system(load(None, fusion_args(adapter_runs)))
    assert system.bi_encoder.adapter_set == Fuse("fusion", ("en", "de"))
    params = dict(system.backbone.named_parameters())
    for name, run in (("en", en), ("de", de)):
        with safe_open(str(run / "adapters.safetensors"), framework="pt") as f:
            for key in [k for k in f.keys() if ".adapters.shared." in k]:
                ours = key.split("backbone.", 1)[1].replace(".adapters.shared.", f".adapters.{name}.")
                assert torch.equal(params[ours], f.get_tensor(key)) and not params[ours].requires_grad
        # visual embedding and heads start from the first set's run
    with safe_open(str(en / "adapters.safetensors"), framework="pt") as f:
        visual = [k for k in f.keys() if ".visual." in k][0]
        assert torch.equal(dict(system.named_parameters())[visual], f.get_tensor(visual))
    trainable = [n for n, p in system.named_parameters() if p.requires_grad]
    assert any(".fusions.fusion." in n for n in trainable)
    assert not any(".adapters." in n for n in trainable)


def test_fusion_run_records_activations_prunes_and_reloads(adapter_runs):
    run = main(fusion_args(adapter_runs, "name=fused", "adapters.fusion.keep=1"))
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "fusion_activations.csv").open()))
    assert [int(r["layer"]) for r in rows] == [0, 1]  # one fused site per block (Pfeiffer)
    for r in rows:
        assert float(r["en"]) + float(r["de"]) == pytest.approx(1.0, abs=1e-4)
    summary = json.loads((run / "fusion.json").read_text())
    mean = summary["mean_activation"]
    assert mean == pytest.approx({s: sum(float(r[s]) for r in rows) / len(rows) for s in ("en", "de")}, abs=1e-5)
    assert summary["kept"] == [max(mean, key=mean.get)]  # the most-activated set survives
    assert {"test/pruned1:bi/rsum", "test/pruned1:rerank@5/rsum", "test/bi/rsum"} <= set(metrics)
    # the fusion run's own checkpoint holds fusion, heads and visual embedding, not the frozen sets
    with safe_open(str(run / "adapters.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any(".fusions." in k for k in keys) and not any(".adapters." in k for k in keys)
    system, _ = load_system(run / "checkpoints" / "best.ckpt")
    assert system.bi_encoder.adapter_set == Fuse("fusion", ("en", "de"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["adapters.train=[heads]"], "must train the fusion"),
        (["adapters.fusion.keep=3"], "adapters.fusion.keep"),
    ],
)
def test_bad_fusion_configs_name_the_key(adapter_runs, extra, message):
    with pytest.raises(ConfigError, match=message):
        load(None, fusion_args(adapter_runs, *extra))


def test_a_missing_or_foreign_set_file_is_named(adapter_runs, tiny_bert_dir, tmp_path):
    root, common, en, _ = adapter_runs
    args = common + [
        f"adapters.fusion.sets={{en: {en}, de: {tmp_path / 'nope.safetensors'}}}",
        "adapters.train=[fusion,heads]",
    ]
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        build_system(load(None, args))
    copy = shutil.copytree(tiny_bert_dir, tmp_path / "same-weights-other-name")
    other = load(None, fusion_args(adapter_runs) + [f"model.backbone={copy}"])
    with pytest.raises(ValueError, match="was trained on backbone"):
        build_system(other)
