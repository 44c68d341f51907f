"""The playground's JSON endpoints (FastAPI TestClient, no server or browser): each is the Searcher's answer."""

import io

import pytest

pytest.importorskip("fastapi", reason="the playground needs the demo extra: pip install -e '.[demo]'")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from retrerank.playground.app import create_app  # noqa: E402
from retrerank.search import open_run  # noqa: E402


@pytest.fixture(scope="module")
def served(run):
    searcher, split = open_run(run, data_root=run.parent / "data")
    searcher.index_split(split)
    return TestClient(create_app(searcher, split, "tiny", rerank_top=6)), searcher, split


def ids(ranking: dict) -> list[str]:
    return [h["id"] for h in ranking["hits"]]


def test_the_page_and_info(served):
    client, searcher, split = served
    page = client.get("/")
    assert page.status_code == 200 and "retrerank playground" in page.text
    info = client.get("/api/info").json()
    assert info["images"] == [im.image_id for im in split.images] and info["rerank_top"] == 6
    assert info["scoring"] == searcher.pipeline.scoring and info["scorings"] == ["cross", "cross+bi"]
    assert set(info["examples"]) <= set(split.texts) and info["examples"]


def test_text_search_gives_the_searchers_rankings_scores_timings_and_truth(served):
    client, searcher, split = served
    caption = split.captions[3]
    for scoring in ("cross", "cross+bi"):
        data = client.get(
            "/api/search/text", params={"q": caption.text, "k": 4, "rerank_top": 6, "scoring": scoring}
        ).json()
        bi, reranked = (searcher.search_text(caption.text, 4, top, scoring)[0] for top in (None, 6))
        assert ids(data["bi"]) == [h.id for h in bi] and ids(data["reranked"]) == [h.id for h in reranked]
        assert [h["score"] for h in data["reranked"]["hits"]] == pytest.approx([h.score for h in reranked], abs=1e-5)
        assert data["scoring"] == scoring and data["bi"]["ms"] > 0 and data["reranked"]["rerank_ms"] > 0
    truth = {split.images[r].image_id for r in split.caption_relevant[3]}
    assert set(data["relevant"]) == truth
    assert all(h["relevant"] == (h["id"] in truth) for h in data["bi"]["hits"] + data["reranked"]["hits"])
    free = client.get("/api/search/text", params={"q": "a purple star", "k": 50}).json()
    assert free["relevant"] == [] and free["k"] == 12 and len(free["bi"]["hits"]) == 12  # k capped at the split


def test_image_search_and_the_pictures(served):
    client, searcher, split = served
    image = split.images[5]
    data = client.get("/api/search/image", params={"id": image.image_id, "k": 3, "rerank_top": 5}).json()
    assert ids(data["reranked"]) == [h.id for h in searcher.search_image([image], 3, 5)[0]]
    texts = {c.caption_id: c.text for c in split.captions}
    assert all(h["text"] == texts[h["id"]] for h in data["bi"]["hits"])
    picture = client.get(f"/api/image/{image.image_id}.png")
    assert picture.headers["content-type"] == "image/png"
    assert (Image.open(io.BytesIO(picture.content)).size) == image.pixels.shape[:2][::-1]


@pytest.mark.parametrize(
    "url, params, status, message",
    [
        ("/api/search/image", {"id": "nope"}, 404, "unknown image id 'nope'"),
        ("/api/image/nope.png", {}, 404, "unknown image id 'nope'"),
        ("/api/search/text", {"q": "  "}, 422, "the query is empty"),
        ("/api/search/text", {"q": "x", "scoring": "bi"}, 422, "pattern"),
        ("/api/search/text", {"q": "x", "k": 0}, 422, "greater than or equal to 1"),
    ],
)
def test_bad_requests_are_answered_with_a_reason(served, url, params, status, message):
    answer = served[0].get(url, params=params)
    assert answer.status_code == status and message in str(answer.json()["detail"])


def test_the_serve_command_serves_the_runs_split_with_its_rerank_depth(run, monkeypatch, capsys):
    import uvicorn

    from experiments.serve import main
    from retrerank.cli import run_main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: seen.update(app=app, host=host, port=port))
    main([str(run), "--port", "8123", "--data-root", str(run.parent / "data")])
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert "(test split): http://127.0.0.1:8123" in capsys.readouterr().out
    info = TestClient(seen["app"]).get("/api/info").json()
    assert info["title"] == "tiny" and info["rerank_top"] == 5 and len(info["images"]) == 12  # eval.rerank_ks=[5]
    with pytest.raises(SystemExit) as caught:
        run_main(main, [str(run / "nowhere")])
    assert caught.value.code.startswith("config error: no best checkpoint in ")
