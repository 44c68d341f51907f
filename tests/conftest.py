"""Shared fixtures: tiny local models built from configs and saved with save_pretrained.

Nothing here touches the network; loading goes through the real from_pretrained code.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

WORDS = (
    "a an the and of to is there left right above below small large big red blue green yellow purple "
    "orange circle square triangle star diamond ein eine einer einem einen der die das und links rechts "
    "von un une le la et de gauche droite je a vlevo vpravo od"
).split()


def save_tiny_bert(folder, hidden: int = 32, layers: int = 2) -> str:
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(dict.fromkeys(vocab))})
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def widen_adapters(module, std: float = 0.2) -> None:
    """Adapters start near the identity: widen their weights so that running them shows."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".adapters." in name and p.dim() > 1:
                torch.nn.init.normal_(p, std=std)


def _tiny_tokenizer(folder):
    """The tiny BERT WordPiece tokenizer (pads on the right, as CLIP needs), saved into `folder`."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(dict.fromkeys(vocab))})
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_tiny_dual(folder, kind: str = "clip", text_hidden: int = 32, vision_hidden: int = 48, layers: int = 2) -> str:
    """A tiny CLIPModel / SiglipModel (32 x 32 pixel input, 8 x 8 patches) with its tokenizer and
    image processor, saved with save_pretrained. Text and vision widths differ on purpose."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(folder)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=48,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )  # CLIP pools the end token: [SEP] here
    vision = dict(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    if kind == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

        text["projection_size"] = vision_hidden  # SigLIP compares the text head with the vision width
        SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    return save_tiny_dual(tmp_path_factory.mktemp("tiny-clip"), "clip")


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> str:
    return save_tiny_dual(tmp_path_factory.mktemp("tiny-siglip"), "siglip")


def save_tiny_visualbert(folder, hidden: int = 32, layers: int = 2, visual_dim: int = 128) -> str:
    """A tiny VisualBertModel whose visual_embedding_dim is the synthetic dataset's feature width
    (SyntheticConfig.feature_dim), with the tiny BERT tokenizer, saved with save_pretrained."""
    from transformers import VisualBertConfig, VisualBertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(folder)
    config = VisualBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        visual_embedding_dim=visual_dim,
        pad_token_id=tokenizer.pad_token_id,
    )
    VisualBertModel(config).save_pretrained(folder)
    return str(folder)


def save_tiny_blip(folder, text_hidden: int = 32, vision_hidden: int = 48, layers: int = 2) -> str:
    """A tiny BlipForImageTextRetrieval (32 x 32 pixel input, 8 x 8 patches; its text layers
    cross-attend to the 48-wide vision states) with the tiny BERT tokenizer and a BLIP image
    processor, saved with save_pretrained."""
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer(folder)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=48,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        initializer_range=0.02,
    )
    config = BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=24)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_visualbert_dir(tmp_path_factory) -> str:
    return save_tiny_visualbert(tmp_path_factory.mktemp("tiny-visualbert"))


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> str:
    return save_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


# late interaction (join at block 1 of 2): reranking reads cached layer-1 states
TINY_RUN = [
    "model.join_layer=1",
    "data.synthetic.n_train=32",
    "data.synthetic.n_val=10",
    "data.synthetic.n_test=12",
    "data.batch_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "eval.rerank_ks=[5]",
    "eval.val_methods=[rerank@5]",
    "eval.monitor=val/rerank@5/rsum",
    "eval.cross_all=false",
]


@pytest.fixture(scope="session")
def tiny_run(tiny_bert_dir, tmp_path_factory):
    """A tiny trained run folder (tiny local BERT, synthetic data, 4 steps), shared by the tests that
    read a finished run (search API, playground, analysis)."""
    from experiments.run import main

    torch.set_num_threads(1)  # tiny models: one thread is as fast, and leaves the CPU to others
    root = tmp_path_factory.mktemp("runs")
    return main(
        [f"output_dir={root}", "name=tiny", f"data.root={root / 'data'}", f"model.backbone={tiny_bert_dir}"] + TINY_RUN
    )
