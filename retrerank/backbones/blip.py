"""BLIP (`BlipForImageTextRetrieval`): a ViT over pixels and a BERT-style text encoder whose
layers also carry cross-attention to the image, with the model's two retrieval heads.

- ITC (image-text contrastive): the text encoder runs *without* cross-attention; the [CLS]
  states of both towers go through `text_proj` / `vision_proj` into the joint space.
- ITM (image-text matching): the same text encoder runs *with* cross-attention to the vision
  tower's final states; `itm_head` scores its [CLS] state (2 classes: no match, match).

Everything is the Hugging Face model's own, run as the model runs it; this class adds what the
framework asks of every backbone: tokenisation and image processing (the model's own), the
states the two heads read, the blocks where adapters attach (vision tower: pre-LayerNorm sites;
text encoder: post-LayerNorm sites, BERT style; AdapterDrop's n counts from the bottom of each
tower) and the shared input of several adapter sets run in parallel.

The text encoder is split after its embedding layer (word + position embeddings, LayerNorm):
both heads read those states, so retrieval computes a text's once for both (see
retrerank.encoders.blip).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoTokenizer, BlipForImageTextRetrieval

from retrerank.adapters.sites import POST_LN, PRE_LN, Block
from retrerank.backbones.towers import TwoTowerBackbone
from retrerank.types import Encoded

BLIP_TYPES = ("blip",)
# what a retrieval checkpoint has besides the towers (captioning / VQA checkpoints lack them)
RETRIEVAL_HEADS = ("itm_head.", "text_proj.", "vision_proj.", "text_encoder.")


class BlipBackbone(TwoTowerBackbone):
    vision_layer_takes_mask = False

    def __init__(
        self,
        model: BlipForImageTextRetrieval,
        tokenizer,
        image_processor,
        *,
        max_text_len: int = 40,
        gradient_checkpointing: bool = False,
    ):
        if not isinstance(model, BlipForImageTextRetrieval):
            raise ValueError(
                f"{type(model).__name__} is not a BlipForImageTextRetrieval: the BLIP family needs "
                "its ITM head and ITC projections"
            )
        super().__init__(model, tokenizer, image_processor, gradient_checkpointing=gradient_checkpointing)
        self.max_text_len = min(max_text_len, model.config.text_config.max_position_embeddings)
        if tokenizer.padding_side != "right":
            raise ValueError("BLIP pools the [CLS] token at position 0: the tokenizer must pad on the right")

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> BlipBackbone:
        # explicitly the retrieval class: AutoModel gives BlipModel, which has no ITM head
        model, info = BlipForImageTextRetrieval.from_pretrained(path, output_loading_info=True)
        missing = [key for key in info["missing_keys"] if key.startswith(RETRIEVAL_HEADS)]
        if missing:
            raise ValueError(
                f"{path} is not a BLIP image-text retrieval checkpoint (such as "
                f"Salesforce/blip-itm-base-coco): it lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}"
            )
        return cls(model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path), **kwargs)

    # ---- towers -------------------------------------------------------------------------
    @property
    def text_layers(self) -> nn.ModuleList:
        return self.encoder.text_encoder.encoder.layer

    # ---- inputs -------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].bool()}

    def text_lower(self, text: dict[str, torch.Tensor]) -> Encoded:
        """Text states at the fixed join: the text encoder's embedding-layer output (word +
        position, LayerNorm; no adapters there) and mask."""
        return self.encoder.text_encoder.embeddings(input_ids=text["input_ids"]), text["attention_mask"].bool()

    def text_states(self, embedded: Encoded, image: Encoded | None = None) -> torch.Tensor:
        """The text encoder's final states from its embedding output: alone (ITC, no
        cross-attention) or cross-attending to the vision tower's final states `image` (ITM)."""
        hidden, mask = embedded
        cross = {}
        if image is not None:
            cross = {"encoder_hidden_states": image[0].to(hidden.dtype), "encoder_attention_mask": image[1].long()}
        return self.encoder.text_encoder(encoder_embeds=hidden, attention_mask=mask.long(), **cross).last_hidden_state

    # ---- heads ---------------------------------------------------------------------------
    def text_embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """ITC: the projected [CLS] state of the text encoder run alone (not normalised)."""
        return self.encoder.text_proj(hidden[:, 0])

    def image_embedding(self, states: Encoded) -> torch.Tensor:
        return self.encoder.vision_proj(states[0][:, 0])

    def match_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """ITM: the two-class logits (no match, match) of the cross-attending [CLS] state."""
        return self.encoder.itm_head(hidden[:, 0])

    # ---- adapters -------------------------------------------------------------------------------
    def adapter_blocks(self) -> list[Block]:
        """Text encoder layers: after the self-attention output and the feed-forward output (the
        cross-attention, used by ITM only, takes none); vision layers: attention and MLP."""
        text, vision = self.hidden_size, self.image_hidden_size
        return [Block(i, layer, text, POST_LN, pre_ln=False) for i, layer in enumerate(self.text_layers)] + [
            Block(i, layer, vision, PRE_LN, pre_ln=True) for i, layer in enumerate(self.vision_layers)
        ]
