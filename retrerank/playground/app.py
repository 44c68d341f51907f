"""The search playground: one static page (page.html, vanilla JS) over a few JSON endpoints.

Why FastAPI + uvicorn and one HTML file, not a frontend framework (Gradio, Streamlit, React):
nothing to build and one small optional dependency pair (`pip install -e ".[demo]"`); each JSON
endpoint is one call of the Searcher API (retrerank.search), the same call a script makes, so the
page can show nothing the library would not return; and FastAPI's TestClient tests the endpoints
without a server or a browser.

    GET /                       the page
    GET /api/info               run, split, image ids, example captions, defaults
    GET /api/image/{id}.png     an image of the split as a PNG (its rendered picture)
    GET /api/search/text?q=...  bi-encoder top k and reranked top k of the split's images
    GET /api/search/image?id=.. the same for the split's captions, the query being one of its images

Search parameters: k (results per ranking), rerank_top (candidates the cross-encoder rescores),
scoring ("cross" or "cross+bi": a per-call switch of the Searcher, nothing is rebuilt).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from PIL import Image

from retrerank.data.errors import DataError
from retrerank.data.records import RetrievalSplit
from retrerank.retrieval.pipeline import SCORINGS
from retrerank.search import Ranking, Searcher, image_row, relevant_captions, relevant_images

PAGE = Path(__file__).with_name("page.html")
EXAMPLES = 40  # captions offered in the query box's list


def create_app(searcher: Searcher, split: RetrievalSplit, title: str = "", rerank_top: int = 20) -> FastAPI:
    """The playground over `searcher`, which must have `split` indexed (searcher.index_split)."""
    app = FastAPI(title="retrerank playground", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one search at a time: the model is shared by the server's threads
    texts = {c.caption_id: c.text for c in split.captions}
    step = max(1, len(split.captions) // EXAMPLES)

    def both(search, k: int, top: int, scoring: str | None, relevant: set[str], n_corpus: int) -> dict:
        k, top = min(k, n_corpus), min(top, n_corpus)
        with lock:
            bi, reranked = search(k, None, scoring), search(k, top, scoring)

        def hits(ranking: Ranking) -> list[dict]:
            return [
                {"rank": r, "id": h.id, "score": h.score, "relevant": h.id in relevant, "text": texts.get(h.id)}
                for r, h in enumerate(ranking.hits[0], 1)
            ]

        return {
            "k": k,
            "rerank_top": top,
            "scoring": scoring or searcher.pipeline.scoring,
            "relevant": sorted(relevant),
            "bi": {"hits": hits(bi), "ms": bi.retrieve_ms},
            "reranked": {"hits": hits(reranked), "retrieve_ms": reranked.retrieve_ms, "rerank_ms": reranked.rerank_ms},
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/api/info")
    def info() -> dict:
        return {
            "title": title,
            "split": split.name,
            "images": [im.image_id for im in split.images],
            "captions": len(split.captions),
            "examples": [c.text for c in split.captions[::step][:EXAMPLES]],
            "k": 5,
            "rerank_top": rerank_top,
            "scoring": searcher.pipeline.scoring,
            "scorings": list(SCORINGS),
        }

    @app.get("/api/image/{image_id}.png", response_class=Response)
    def image(image_id: str) -> Response:
        record = split.images[_row(split, image_id)]
        pixels = record.pixels if record.pixels is not None else np.full((32, 32, 3), 200, np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/api/search/text")
    def search_text(
        q: str = Query(min_length=1),
        k: int = Query(5, ge=1),
        rerank_top: int = Query(20, ge=1),
        scoring: str | None = Query(None, pattern="^(cross|cross\\+bi)$"),
    ) -> dict:
        if not q.strip():
            raise HTTPException(422, "the query is empty")
        out = both(
            lambda k_, top, s: searcher.rank_text(q, k_, top, s),
            k,
            rerank_top,
            scoring,
            relevant_images(split, q),
            len(split.images),
        )
        return {"query": q, **out}

    @app.get("/api/search/image")
    def search_image(
        id: str,
        k: int = Query(5, ge=1),
        rerank_top: int = Query(20, ge=1),  # noqa: A002
        scoring: str | None = Query(None, pattern="^(cross|cross\\+bi)$"),
    ) -> dict:
        record = split.images[_row(split, id)]
        out = both(
            lambda k_, top, s: searcher.rank_image([record], k_, top, s),
            k,
            rerank_top,
            scoring,
            relevant_captions(split, id),
            len(split.captions),
        )
        return {"query": id, **out}

    return app


def _row(split: RetrievalSplit, image_id: str) -> int:
    try:
        return image_row(split, image_id)
    except DataError as err:
        raise HTTPException(404, str(err)) from None
