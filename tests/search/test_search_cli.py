"""`python -m experiments.search`: the ranked lists it prints are the Searcher's, errors are one line."""

import re
import shutil

import pytest
import torch
import yaml

from experiments.search import main
from retrerank.cli import run_main
from retrerank.search import open_run


@pytest.fixture(scope="module")
def data(run):
    """The tiny run's data root: the tool reads the split from the root it is given."""
    return yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]


@pytest.fixture(scope="module")
def expected(run, data):
    searcher, split = open_run(run, data_root=data)
    searcher.index_split(split)
    return searcher, split


def printed(out: str) -> list[list[tuple[str, float, bool]]]:
    """The two printed rankings as (id, score, marked) rows."""
    blocks, rows = [], re.compile(r"^\s+(\d+)  ([* ]) (\S+)\s+(-?\d+\.\d+)")
    for line in out.splitlines():
        if line.startswith(("bi-encoder top", "reranked top")):
            blocks.append([])
        elif (m := rows.match(line)) and blocks:
            blocks[-1].append((m[3], float(m[4]), m[2] == "*"))
    return blocks


def test_a_text_query_prints_the_bi_encoder_and_the_reranked_top_k(run, data, expected, capsys):
    searcher, split = expected
    caption = split.captions[7]
    main([str(run), caption.text, "--k", "4", "--rerank-top", "6", "--data-root", data])
    out = capsys.readouterr().out
    assert out.startswith(f"query: {caption.text!r} (test split, 12 images, 60 captions)")
    assert "bi-encoder top 4 (retrieval " in out and "reranked top 4 (cross-encoder over the top 6, scoring" in out
    bi, reranked = printed(out)
    for rows, hits in (
        (bi, searcher.search_text(caption.text, 4, None)[0]),
        (reranked, searcher.search_text(caption.text, 4, 6)[0]),
    ):
        assert [r[0] for r in rows] == [h.id for h in hits]
        assert [r[1] for r in rows] == pytest.approx([h.score for h in hits], abs=1e-3)
    truth = {split.images[r].image_id for r in split.caption_relevant[7]}
    assert {r[0] for r in bi + reranked if r[2]} == truth & {r[0] for r in bi + reranked}


def test_an_image_query_prints_captions_with_their_text(run, data, expected, capsys):
    searcher, split = expected
    image = split.images[2]
    main([str(run), "--image", image.image_id, "--k", "3", "--scoring", "cross", "--data-root", data])
    out = capsys.readouterr().out
    bi, reranked = printed(out)
    assert [r[0] for r in reranked] == [h.id for h in searcher.search_image([image], 3, 5, "cross")[0]]
    text = {c.caption_id: c.text for c in split.captions}[bi[0][0]]
    assert text in out and "over the top 5, scoring cross," in out  # by default as deep as the run's eval.rerank_ks


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--image", "syn-test-999999"],
            "data error: unknown image id 'syn-test-999999': the test split has 12 images, "
            "syn-test-000000, syn-test-000001, syn-test-000002 ...",
        ),
        ([], "config error: give either a text query or --image ID"),
    ],
)
def test_user_errors_are_one_line(run, data, args, line):
    with pytest.raises(SystemExit) as caught:
        run_main(main, [str(run), *args, "--data-root", data])
    assert caught.value.code == line


def test_a_missing_run_folder_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as caught:
        run_main(main, [str(tmp_path / "nope"), "a red circle"])
    assert caught.value.code == f"config error: no best checkpoint in {tmp_path / 'nope'}: there is no such run folder"


def test_the_data_goes_where_the_user_says_never_where_the_checkpoint_says(run, tmp_path, monkeypatch, capsys):
    """A checkpoint's stored data.root would choose where the tool writes (the synthetic data is generated
    on first use): the tool uses --data-root, else data/ in the current folder, else asks for one."""
    crafted = tmp_path / "crafted"
    shutil.copytree(run, crafted)
    best = crafted / "checkpoints" / "best.ckpt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    elsewhere = tmp_path / "chosen-by-the-checkpoint"
    state["hyper_parameters"]["config"]["data"]["root"] = str(elsewhere)
    torch.save(state, best)
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    with pytest.raises(SystemExit) as caught:
        run_main(main, [str(crafted), "a red circle"])
    assert caught.value.code == (
        f"config error: no data folder {tmp_path / 'data'}: give the folder that holds the run's dataset (or "
        f"where its synthetic data may be generated) with --data-root; the run was trained with data.root={elsewhere}"
    )
    main([str(crafted), "a red circle", "--data-root", str(tmp_path / "mine")])
    assert "reranked top 5" in capsys.readouterr().out and (tmp_path / "mine" / "synthetic").is_dir()
    (tmp_path / "data").mkdir()  # a project's data/ folder: the default
    main([str(crafted), "a red circle"])
    assert (tmp_path / "data" / "synthetic").is_dir()
    assert not elsewhere.exists()
