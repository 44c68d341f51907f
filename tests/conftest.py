"""Shared fixtures: tiny local models built from configs and saved with save_pretrained.

Nothing here touches the network; loading goes through the real from_pretrained code.
"""
from __future__ import annotations

import os

import pytest

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
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
