"""A saved search index that was tampered with, cut or damaged is refused with one line naming the file:
its tensor file must match the SHA-256 and the shapes that index.json records, the ids must match the rows,
and every embedding must be finite and non-zero."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from retrerank.build import build_system
from retrerank.search import Searcher, open_run
from retrerank.search_index import META, TENSORS, IndexIntegrityError, SearchIndexError, write_index

REBUILD = "index the corpus again with this model"


@pytest.fixture(scope="module")
def opened(run):
    searcher, split = open_run(run, data_root=run.parent / "data")
    searcher.index_split(split)
    return searcher, split


@pytest.fixture
def folder(opened, tmp_path) -> Path:
    return opened[0].save_index(tmp_path / "index")


def load(opened, folder: Path) -> Searcher:
    searcher = opened[0]
    fresh = Searcher(searcher.system, searcher.config.eval)
    fresh.load_index(folder)
    return fresh


def refused(opened, folder: Path, line: str, error: type = IndexIntegrityError) -> str:
    """Loading `folder` fails with one line that starts with `line` (after the label)."""
    with pytest.raises(error) as err:
        load(opened, folder)
    message = str(err.value)
    assert "\n" not in message and message.startswith(line), message
    return f"{err.value.label}: {message}"


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / META).read_text())
    change(meta)
    (folder / META).write_text(json.dumps(meta))


def rewrite_tensors(folder: Path, change, rehash: bool) -> None:
    """Change the tensors; with `rehash`, index.json's checksum is brought up to date, so that only
    the checks after the checksum can see the change."""
    tensors = load_file(str(folder / TENSORS))
    change(tensors)
    save_file(tensors, str(folder / TENSORS))
    if rehash:
        digest = hashlib.sha256((folder / TENSORS).read_bytes()).hexdigest()
        edit_meta(folder, lambda meta: meta["tensors"].update(sha256=digest))


def test_the_index_records_the_checksum_and_shapes_of_its_tensors(opened, folder):
    meta = json.loads((folder / META).read_text())
    assert meta["version"] == 2
    assert meta["tensors"]["sha256"] == hashlib.sha256((folder / TENSORS).read_bytes()).hexdigest()
    tensors = load_file(str(folder / TENSORS))
    assert meta["tensors"]["shapes"] == {key: list(t.shape) for key, t in tensors.items()}
    assert load(opened, folder).image_ids == opened[0].image_ids  # an intact index loads


def test_another_models_tensors_copied_into_the_folder_are_refused(opened, folder, tmp_path):
    searcher, split = opened
    torch.manual_seed(1)
    other = Searcher(build_system(searcher.config).eval(), searcher.config.eval)  # same shapes, other weights
    other.index_split(split)
    shutil.copy(other.save_index(tmp_path / "other") / TENSORS, folder / TENSORS)
    refused(
        opened,
        folder,
        f"{folder / TENSORS} does not match the SHA-256 that {folder / META} records "
        f"(file {hashlib.sha256((folder / TENSORS).read_bytes()).hexdigest()[:12]}, recorded ",
    )


def test_dropped_embedding_rows_are_refused(opened, folder):
    rewrite_tensors(folder, lambda t: t.update(image_embeddings=t["image_embeddings"][:6].clone()), rehash=False)
    width = opened[0]._embeddings["image"].shape[1]
    refused(
        opened,
        folder,
        f"{folder / TENSORS} holds image_embeddings of shape [6, {width}], but {folder / META} records "
        f"[12, {width}]: the file was cut or replaced; {REBUILD}",
    )


@pytest.mark.parametrize("ids", ["dropped", "extra"])
def test_ids_that_do_not_match_the_rows_are_refused(opened, folder, ids):
    edit_meta(
        folder, lambda meta: meta["images"]["ids"].pop() if ids == "dropped" else meta["images"]["ids"].append("x")
    )
    width = opened[0]._embeddings["image"].shape[1]
    refused(
        opened,
        folder,
        f"{folder / META} lists {11 if ids == 'dropped' else 13} image ids but records image_embeddings of "
        f"shape [12, {width}] (one row per id); {REBUILD}",
    )


@pytest.mark.parametrize("value", ["nan", "inf", "zero"])
def test_non_finite_and_all_zero_embeddings_are_refused(opened, folder, value):
    fill = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0}[value]
    rewrite_tensors(folder, lambda t: t["caption_embeddings"][4].fill_(fill), rehash=True)
    what = "is all zeros" if value == "zero" else "holds NaN or inf"
    caption = opened[0].caption_ids[4]
    refused(opened, folder, f"{folder / TENSORS}: caption_embeddings row 4 (caption id {caption!r}) {what}; {REBUILD}")


def test_a_cut_or_garbled_tensor_file_is_one_line(opened, folder):
    data = (folder / TENSORS).read_bytes()
    (folder / TENSORS).write_bytes(data[: len(data) // 2])
    refused(opened, folder, f"{folder / TENSORS} is not a readable safetensors file (cut or damaged?): ")
    (folder / TENSORS).write_bytes(b"\xff" * 16 + data[16:])
    refused(opened, folder, f"{folder / TENSORS} is not a readable safetensors file (cut or damaged?): ")
    (folder / TENSORS).write_bytes(data[:-100] + b"\0" * 100)  # the header intact, data bytes damaged
    refused(opened, folder, f"{folder / TENSORS} does not match the SHA-256 that {folder / META} records")


@pytest.mark.parametrize(
    "key, change",
    [
        ("images.ids", lambda meta: meta["images"].pop("ids")),
        ("captions.texts", lambda meta: meta["captions"].pop("texts")),
        ("tensors", lambda meta: meta.pop("tensors")),
        ("images", lambda meta: meta.pop("images")),
    ],
)
def test_an_index_json_without_a_key_is_one_line(opened, folder, key, change):
    edit_meta(folder, change)
    refused(opened, folder, f"{folder / META} has no key {key!r}: it is damaged; {REBUILD}")


def test_an_index_json_with_a_wrongly_typed_value_is_one_line(opened, folder):
    edit_meta(folder, lambda meta: meta["images"].update(ids="im0"))
    refused(opened, folder, f"{folder / META}: 'images.ids' must be a list of strings, not str; {REBUILD}")
    (folder / META).write_text("[1, 2]")
    refused(opened, folder, f"{folder / META} is not a {'retrerank.SearchIndex'} file", SearchIndexError)


def test_caption_texts_that_do_not_match_the_ids_are_refused(opened, folder):
    edit_meta(folder, lambda meta: meta["captions"]["texts"].pop())
    n = len(opened[0].caption_ids)
    refused(opened, folder, f"{folder / META} lists {n} caption ids but {n - 1} caption texts; {REBUILD}")


def test_an_index_saved_without_a_checksum_is_refused_with_a_line_to_rebuild_it(opened, folder):
    def old(meta):
        meta.pop("tensors")
        meta["version"] = 1

    edit_meta(folder, old)
    line = refused(
        opened,
        folder,
        f"{folder} is a search index of format version 1, which records no checksum of its tensors, so they "
        f"cannot be verified; {REBUILD} and save it",
        SearchIndexError,
    )
    assert line.startswith("search index error: ")


def test_late_interaction_states_that_do_not_match_their_offsets_are_refused(opened, folder):
    def cut(tensors):
        tensors["image_state_offsets"][-1] += 1

    rewrite_tensors(folder, cut, rehash=True)
    refused(opened, folder, f"{folder / TENSORS}: image_state_offsets do not split the ")


def test_non_finite_embeddings_are_refused_at_save(tmp_path):
    embeddings = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    embeddings[1] = float("nan")
    meta = {
        "images": {"ids": ["a", "b", "c"], "records": False, "join_layer": None},
        "captions": {"ids": [], "texts": [], "join_layer": None},
    }
    with pytest.raises(IndexIntegrityError) as err:
        write_index(tmp_path / "index", meta, {"image_embeddings": embeddings})
    assert str(err.value) == (
        f"refusing to save the index {tmp_path / 'index'}: image_embeddings row 1 (image id 'b') holds NaN or inf"
    )
    assert not (tmp_path / "index").exists() and not list(tmp_path.iterdir())
    assert err.value.label == "index integrity error"
