"""Dual-encoder backbones (CLIP, SigLIP): a text tower over tokens, a vision tower over pixels.

The towers are the Hugging Face model's own (`CLIPModel` / `SiglipModel`), run as the model
runs them; this class adds what the framework asks of every backbone: tokenisation and image
processing (the model's own tokenizer and image processor), the towers' final token states,
the model's own pooling + projection of those states into the joint embedding space, and the
blocks where adapters attach (both towers, pre-LayerNorm sites); the rest is shared with BLIP
(retrerank.backbones.towers).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, PreTrainedModel

from retrerank.adapters.sites import PRE_LN, Block
from retrerank.backbones.towers import TwoTowerBackbone
from retrerank.types import Encoded

DUAL_TYPES = ("clip", "siglip")


class DualEncoderBackbone(TwoTowerBackbone):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        image_processor,
        *,
        max_text_len: int = 40,
        gradient_checkpointing: bool = False,
    ):
        if model.config.model_type not in DUAL_TYPES:
            raise ValueError(
                f"{type(model).__name__} ({model.config.model_type!r}) is not a dual encoder; supported: {DUAL_TYPES}"
            )
        super().__init__(model, tokenizer, image_processor, gradient_checkpointing=gradient_checkpointing)
        text_positions = model.config.text_config.max_position_embeddings
        # SigLIP was trained on texts padded to its full length, without an attention mask, and
        # pools the last position: feed it exactly that
        self.max_text_len = text_positions if self.kind == "siglip" else min(max_text_len, text_positions)
        if self.kind == "clip" and tokenizer.padding_side != "right":
            raise ValueError("CLIP pools the end-of-text token, the last real one: the tokenizer must pad on the right")

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> DualEncoderBackbone:
        model = AutoModel.from_pretrained(path, attn_implementation="sdpa")
        return cls(model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path), **kwargs)

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.encoder.text_model.encoder.layers

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        padding = "max_length" if self.kind == "siglip" else True
        enc = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        mask = (
            enc["attention_mask"].bool() if self.kind == "clip" else torch.ones_like(enc["input_ids"], dtype=torch.bool)
        )
        return {"input_ids": enc["input_ids"], "attention_mask": mask}

    # ---- states and embeddings ----------------------------------------------------------------
    def text_lower(self, text: dict[str, torch.Tensor]) -> Encoded:
        """Text states at the fixed join: the text tower's final token states (after its final
        LayerNorm) and mask."""
        mask = text["attention_mask"].bool()
        given = mask.long() if self.kind == "clip" else None
        hidden = self.encoder.text_model(input_ids=text["input_ids"], attention_mask=given).last_hidden_state
        return hidden, mask

    def text_embedding(self, states: Encoded) -> torch.Tensor:
        """The model's own pooling and projection of the text states (not normalised)."""
        hidden, mask = states
        if self.kind == "clip":  # the end-of-text token: the last real one
            last = mask.long().sum(1) - 1
            return self.encoder.text_projection(hidden[torch.arange(len(hidden), device=hidden.device), last])
        return self.encoder.text_model.head(hidden[:, -1])

    def image_embedding(self, states: Encoded) -> torch.Tensor:
        """The vision tower's pooling ([CLS] for CLIP, attention pooling for SigLIP) and projection."""
        hidden, _ = states
        vision = self.encoder.vision_model
        if self.kind == "clip":
            return self.encoder.visual_projection(vision.post_layernorm(hidden[:, 0]))
        return vision.head(hidden) if getattr(vision, "use_head", False) else hidden.mean(1)

    def adapter_blocks(self) -> list[Block]:
        """Both towers: after attention and after the MLP, before the residual sum."""
        text, vision = self.hidden_size, self.image_hidden_size
        return [Block(i, layer, text, PRE_LN, pre_ln=True) for i, layer in enumerate(self.text_layers)] + [
            Block(i, layer, vision, PRE_LN, pre_ln=True) for i, layer in enumerate(self.vision_layers)
        ]
