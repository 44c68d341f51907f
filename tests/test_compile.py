"""eval.compile (retrerank.compile): compiled inference gives eager's embeddings, logits and rankings,
on inputs padded to a few length buckets, and compiles a bounded number of graphs however many
batches of new lengths it sees.

The agreement test uses the default backend (inductor: generated C++ kernels, compiled by gcc);
the others use cheaper ones ("eager": dynamo's tracing and guards only; "aot_eager": also the
traced graphs), which is where the bucketing, the guards and the recompilations happen.
"""

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from retrerank.build import build_encoders
from retrerank.compile import CompiledInference, bucket
from retrerank.config import AdapterConfig, ModelConfig, load
from retrerank.data.collate import collate_images
from retrerank.data.records import CaptionRecord, ImageRecord, RetrievalSplit
from retrerank.retrieval.pipeline import RetrieveRerank

FEATURES = 8
WORDS = "a red blue green circle square star left of above the small big two yellow purple".split()
ATOL = 1e-4  # float32 kernels fused differently: last-bit differences, far below this


def encoders(tiny_bert_dir, join_layer=0, adapters=None):
    torch.manual_seed(0)
    bi, cross = build_encoders(ModelConfig(backbone=tiny_bert_dir, join_layer=join_layer), FEATURES, adapters)
    if adapters is not None:  # adapters start near the identity: make them matter
        for name, p in cross.named_parameters():
            if ".adapters." in name and p.dim() > 1:
                torch.nn.init.normal_(p, std=0.2)
    return bi.eval(), cross.eval()


def make_split(n_images: int, seed: int, max_regions: int = 40, max_words: int = 30) -> RetrievalSplit:
    """Images of 1..max_regions regions, two captions each of 2..max_words words: many lengths."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        r = int(rng.integers(1, max_regions + 1))
        xy = rng.random((r, 2), dtype=np.float32) * 0.5
        images.append(
            ImageRecord(
                f"img{i}", rng.standard_normal((r, FEATURES)).astype(np.float32), np.concatenate([xy, xy + 0.3], 1)
            )
        )
    captions = [
        CaptionRecord(
            f"c{j}", images[j % n_images].image_id, " ".join(rng.choice(WORDS, int(rng.integers(2, max_words + 1))))
        )
        for j in range(2 * n_images)
    ]
    return RetrievalSplit("test", images, captions)


def test_buckets_are_few_and_capped_at_the_model_length():
    assert [bucket(n) for n in (1, 16, 17, 40, 64, 65, 200)] == [16, 16, 32, 48, 64, 128, 256]
    assert [bucket(n, cap=40) for n in (3, 20, 33, 40)] == [16, 32, 40, 40]
    assert bucket(45, cap=40) == 45  # longer than the model takes: left as it is
    assert len({bucket(n, cap=40) for n in range(1, 41)}) == 3


@torch.inference_mode()
def test_padded_inputs_are_masked_and_outputs_cut_back_to_the_real_rows(tiny_bert_dir):
    bi, cross = encoders(tiny_bert_dir, join_layer=1)
    split = make_split(3, seed=1, max_regions=5, max_words=6)
    compiled = CompiledInference(backend="eager")
    shapes = []
    compiled._pad = (lambda pad: lambda model, value, rows: shapes.append(pad(model, value, rows)) or shapes[-1])(
        compiled._pad
    )
    one = bi.tokenize(split.texts[:1])  # one row, run as two
    assert torch.allclose(compiled(bi, "embed_texts", one), bi.embed_texts(one), atol=ATOL)
    text, image = bi.tokenize(split.texts[:3]), collate_images(split.images)
    assert torch.allclose(compiled(bi, "embed_images", image), bi.embed_images(image), atol=ATOL)
    states, mask = compiled(cross, "lower_text", text)
    eager_states, eager_mask = cross.lower_text(text)
    n, length = eager_mask.shape
    assert mask.shape == (n, 16) and not mask[:, length:].any()  # the bucket's padding, masked
    assert torch.allclose(states[:, :length][eager_mask], eager_states[eager_mask], atol=ATOL)
    logits = compiled(cross, "score_lower", (states, mask), cross.lower_image(image))
    assert torch.allclose(logits, cross.score_lower((eager_states, eager_mask), cross.lower_image(image)), atol=ATOL)
    seen = {(key, tuple(v.shape)) for value in shapes if isinstance(value, dict) for key, v in value.items()}
    assert ("input_ids", (2, 16)) in seen and ("features", (3, 16, FEATURES)) in seen
    assert ("attention_mask", (1, 16)) not in seen


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compiled_inference_agrees_with_eager_on_the_default_backend(tiny_bert_dir):
    """inductor: embeddings and cross-encoder logits within ATOL, the same rankings."""
    bi, cross = encoders(tiny_bert_dir)
    split = make_split(5, seed=0, max_regions=12, max_words=12)  # every batch in one length bucket
    eager = RetrieveRerank(bi, cross, scoring="cross", progress=False)
    compiled = RetrieveRerank(bi, cross, scoring="cross", progress=False, compile=True)
    assert compiled.compiled.backend == "inductor" and eager.compiled is None
    embeddings, logits = compiled.embed_texts(split.texts), compiled.score_all(split.texts, split.images)
    assert torch.allclose(embeddings, eager.embed_texts(split.texts), atol=ATOL)
    expected = eager.score_all(split.texts, split.images)
    assert torch.allclose(logits, expected, atol=ATOL)
    assert torch.equal(logits.argsort(1, descending=True), expected.argsort(1, descending=True))
    assert torch.equal(logits.argsort(0, descending=True), expected.argsort(0, descending=True))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compilations_stay_bounded_over_batches_of_new_lengths(tiny_bert_dir):
    """A late-interaction model with adapters (the default pipeline's path: lower states shared and
    cached, reranking from cached states; the adapter switch read inside the compiled methods): once two
    splits have run, two more with other caption lengths, region counts and batch sizes compile
    nothing new, and the metrics are eager's. backend="eager": dynamo traces, guards and recompiles
    as with inductor, but runs its graphs as they are (code generation would cost minutes here)."""
    bi, cross = encoders(
        tiny_bert_dir, join_layer=1, adapters=AdapterConfig(enabled=True, shared=True, reduction_factor=4)
    )
    settings = dict(batch_size=6, rerank_batch_size=16, progress=False)
    compiled = RetrieveRerank(bi, cross, **settings)
    compiled.compiled = Counting(backend="eager")
    eager = RetrieveRerank(bi, cross, **settings)
    torch._dynamo.reset()
    counters.clear()
    # two splits to warm up: the second's captions, region counts and batches are all shorter, so that
    # every length a compiled function reads has changed once (dynamo makes it dynamic then)
    splits = [make_split(6, 0), make_split(5, 1, max_regions=10, max_words=5), make_split(8, 2), make_split(12, 3)]
    graphs = []
    for split in splits:
        got = compiled.evaluate(split, ["bi", "rerank@5"], [1, 5])
        graphs.append(counters["stats"]["unique_graphs"])
    want = eager.evaluate(split, ["bi", "rerank@5"], [1, 5])
    assert {k: v for k, v in got.items() if "_ms" not in k} == {k: v for k, v in want.items() if "_ms" not in k}
    assert graphs[1] == graphs[2] == graphs[3], graphs
    calls = compiled.compiled.calls  # encoder calls, each a batch
    assert graphs[-1] < calls / 3, (graphs, calls)  # a few graphs per compiled method, not one per batch


class Counting(CompiledInference):
    calls = 0

    def __call__(self, *args):
        self.calls += 1
        return super().__call__(*args)


def test_eval_compile_reaches_the_pipeline():
    cfg = load(None, ["eval.compile=true"])
    system = torch.nn.Module()
    system.bi_encoder, system.cross_encoder = torch.nn.Linear(1, 1), None
    assert isinstance(RetrieveRerank.from_config(system, cfg.eval).compiled, CompiledInference)
    assert RetrieveRerank.from_config(system, load().eval).compiled is None


def test_rerank_bench_compiles_with_eval_compile(tiny_bert_dir, tmp_path, monkeypatch):
    """`python -m experiments.bench rerank eval.compile=true`: every encoder call goes through
    CompiledInference (here without compiling, to stay fast)."""
    from experiments.bench import rerank

    calls = []

    def spy(self, model, method, *inputs):
        calls.append(method)
        return getattr(model, method)(*inputs)

    monkeypatch.setattr(CompiledInference, "__call__", spy)
    rerank.main(
        [
            "--images",
            "6",
            "--captions-per-image",
            "2",
            "--k",
            "3",
            "--regions",
            "3",
            "--dim",
            "8",
            "--dir",
            str(tmp_path),
            "--device",
            "cpu",
            f"model.backbone={tiny_bert_dir}",
            "model.join_layer=1",
            "eval.compile=true",
        ]
    )
    assert {"texts_lower", "images_lower", "embed_lower", "score_lower"} <= set(calls)
