"""VisualBERT (Li et al., 2019) as a single-stream backbone over region features.

The same layout as `SingleStreamBackbone` ([CLS] words [SEP] regions through BERT blocks run
one by one), but regions are embedded by VisualBERT's own, pretrained visual embeddings instead
of a new `VisualEmbedding`: `visual_projection(features)` + visual position embedding 0 + visual
token type 1, then the embeddings' LayerNorm and dropout, as `VisualBertEmbeddings.forward`
computes them. VisualBERT has no geometry input: region boxes are not used. The region features
must have the checkpoint's `visual_embedding_dim` (2048 for the uclanlp checkpoints: bottom-up
Faster R-CNN features). The embeddings' own dropout (`hidden_dropout_prob`) applies to regions;
`model.dropout` only to the cross-encoder head.
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, PreTrainedModel

from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.types import Encoded

VISUAL_BERT_TYPES = ("visual_bert",)
# the uclanlp checkpoints ship no tokenizer: they were trained from bert-base-uncased, whose vocabulary they use
BERT_UNCASED = "google-bert/bert-base-uncased"


class VisualBertBackbone(SingleStreamBackbone):
    attn_implementation = "eager"  # VisualBERT has no SDPA attention in transformers

    def __init__(self, encoder: PreTrainedModel, tokenizer, feature_dim: int, **kwargs):
        config = encoder.config
        if config.visual_embedding_dim != feature_dim:
            raise ValueError(
                f"model.backbone={config.name_or_path!r} is a VisualBERT that embeds {config.visual_embedding_dim}-d "
                f"region features (its visual_embedding_dim), but the dataset's region features are {feature_dim}-d: "
                f"use {config.visual_embedding_dim}-d features (data.regions) or a checkpoint made for "
                f"{feature_dim}-d ones"
            )
        if config.bypass_transformer:
            raise ValueError(
                f"model.backbone={config.name_or_path!r}: VisualBERT with bypass_transformer=true "
                "(text-only blocks, then one joint layer) is not supported"
            )
        super().__init__(encoder, tokenizer, feature_dim, **kwargs)

    def make_visual(self, feature_dim: int, dropout: float, box_encoding: str = "linear") -> None:
        return None  # regions go through the encoder's own embeddings (`embed_regions`)

    @classmethod
    def load_tokenizer(cls, path: str):
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.vocab_size > len(tokenizer.all_special_tokens):
            return tokenizer
        try:  # no vocabulary in the checkpoint (AutoTokenizer gives one of special tokens only)
            return AutoTokenizer.from_pretrained(BERT_UNCASED)
        except OSError as err:
            raise ValueError(
                f"backbone {path!r} ships no tokenizer, and {BERT_UNCASED!r} (VisualBERT's vocabulary) "
                f"is not in the hub cache (no network at run time?): {err}"
            ) from None

    def embed_regions(self, image: dict[str, torch.Tensor], dtype: torch.dtype) -> Encoded:
        """VisualBERT's visual embedding of at most `max_regions` regions (boxes unused), and their mask."""
        n, emb = self.max_regions, self.embeddings
        features, mask = image["features"][:, :n], image["region_mask"][:, :n]
        expected = emb.visual_projection.in_features
        if features.shape[-1] != expected:
            raise ValueError(
                f"region features have width {features.shape[-1]}, the model expects {expected} "
                "(VisualBERT's visual_embedding_dim)"
            )
        visual = emb.visual_projection(features.to(dtype))
        ids = torch.zeros(visual.shape[:-1], dtype=torch.long, device=visual.device)
        visual = visual + emb.visual_position_embeddings(ids) + emb.visual_token_type_embeddings(ids + 1)
        return emb.dropout(emb.LayerNorm(visual)), mask.bool()
