"""Dual-encoder backbones (CLIP, SigLIP): a text tower over tokens, a vision tower over pixels.

The towers are the Hugging Face model's own (`CLIPModel` / `SiglipModel`), run as the model
runs them; this class adds what the framework asks of every backbone: tokenisation and image
processing (the model's own tokenizer and image processor), the towers' final token states,
the model's own pooling + projection of those states into the joint embedding space, the
blocks where adapters attach (both towers, pre-LayerNorm sites; AdapterDrop's n counts from
the bottom of each tower), and the shared input of several adapter sets run in parallel.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, PreTrainedModel

from retrerank.adapters.sites import PRE_LN, Block
from retrerank.adapters.switch import AdapterSwitch

Encoded = tuple[torch.Tensor, torch.Tensor]  # hidden [B, T, H], mask [B, T] (True = token)
DUAL_TYPES = ("clip", "siglip")


class DualEncoderBackbone(nn.Module):
    input_kind = "pixels"

    def __init__(self, model: PreTrainedModel, tokenizer, image_processor, *, max_text_len: int = 40,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.kind = model.config.model_type
        if self.kind not in DUAL_TYPES:
            raise ValueError(f"{type(model).__name__} ({self.kind!r}) is not a dual encoder; supported: {DUAL_TYPES}")
        self.encoder = model  # the name marks pretrained weights (adapters.train part "backbone")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        text_positions = model.config.text_config.max_position_embeddings
        # SigLIP was trained on texts padded to its full length, without an attention mask, and
        # pools the last position: feed it exactly that
        self.max_text_len = text_positions if self.kind == "siglip" else min(max_text_len, text_positions)
        if self.kind == "clip" and tokenizer.padding_side != "right":
            raise ValueError("CLIP pools the end-of-text token, the last real one: the tokenizer must pad on the right")
        self.adapter_switch = AdapterSwitch()
        if gradient_checkpointing:  # the model's own, per encoder layer
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "DualEncoderBackbone":
        model = AutoModel.from_pretrained(path, attn_implementation="sdpa")
        return cls(model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path), **kwargs)

    # ---- towers -------------------------------------------------------------------------
    @property
    def text_layers(self) -> nn.ModuleList:
        return self.encoder.text_model.encoder.layers

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.encoder.vision_model.encoder.layers

    @property
    def hidden_size(self) -> int:
        """The text tower's width (the fusion cross-encoder works at it)."""
        return self.encoder.config.text_config.hidden_size

    @property
    def image_hidden_size(self) -> int:
        return self.encoder.config.vision_config.hidden_size

    @property
    def num_layers(self) -> int:
        return max(len(self.text_layers), len(self.vision_layers))

    # ---- inputs -------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        padding = "max_length" if self.kind == "siglip" else True
        enc = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.max_text_len,
                             return_tensors="pt")
        mask = enc["attention_mask"].bool() if self.kind == "clip" else torch.ones_like(enc["input_ids"], dtype=torch.bool)
        return {"input_ids": enc["input_ids"], "attention_mask": mask}

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        """The model's own image processor (resize, crop, normalise) over the images' RGB pixels."""
        pixels = []
        for image in images:
            value = getattr(image, "pixels", None)
            if value is None:
                raise ValueError(f"image {image.image_id!r} has no pixels, but a {self.kind} backbone reads images "
                                 "as pixels: use a dataset with raw images (data/README.md) or the synthetic one")
            pixels.append(value)
        return {"pixel_values": self.image_processor(images=pixels, return_tensors="pt")["pixel_values"]}

    # ---- states and embeddings ----------------------------------------------------------------
    def text_states(self, text: dict[str, torch.Tensor]) -> Encoded:
        """The text tower's final token states (after its final LayerNorm) and mask."""
        mask = text["attention_mask"].bool()
        given = mask.long() if self.kind == "clip" else None
        hidden = self.encoder.text_model(input_ids=text["input_ids"], attention_mask=given).last_hidden_state
        return hidden, mask

    def image_states(self, image: dict[str, torch.Tensor]) -> Encoded:
        """The vision tower's final patch states ([CLS] first for CLIP) and an all-true mask."""
        pixels = image["pixel_values"].to(self.encoder.vision_model.embeddings.patch_embedding.weight.dtype)
        hidden = self.encoder.vision_model(pixel_values=pixels).last_hidden_state
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)

    def text_embedding(self, states: Encoded) -> torch.Tensor:
        """The model's own pooling and projection of the text states (not normalised)."""
        hidden, mask = states
        if self.kind == "clip":  # the end-of-text token: the last real one
            last = mask.long().sum(1) - 1
            return self.encoder.text_projection(hidden[torch.arange(len(hidden), device=hidden.device), last])
        return self.encoder.text_model.head(hidden[:, -1])

    def image_embedding(self, states: Encoded) -> torch.Tensor:
        hidden, _ = states
        vision = self.encoder.vision_model
        if self.kind == "clip":
            return self.encoder.visual_projection(vision.post_layernorm(hidden[:, 0]))
        return vision.head(hidden) if getattr(vision, "use_head", False) else hidden.mean(1)

    # ---- adapters, AdapterDrop, parallel sets ---------------------------------------------------
    def adapter_blocks(self) -> list[Block]:
        text, vision = self.encoder.config.text_config.hidden_size, self.image_hidden_size
        return ([Block(i, layer, text, PRE_LN, pre_ln=True) for i, layer in enumerate(self.text_layers)]
                + [Block(i, layer, vision, PRE_LN, pre_ln=True) for i, layer in enumerate(self.vision_layers)])

    def parallel_inputs(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> Encoded:
        """Several tasks over one image: the vision tower's input embeddings are the shared input."""
        vision = self.encoder.vision_model
        hidden = vision.embeddings(image["pixel_values"].to(vision.embeddings.patch_embedding.weight.dtype))
        if hasattr(vision, "pre_layrnorm"):  # CLIP normalises before its first block
            hidden = vision.pre_layrnorm(hidden)
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)

    def run_vision_layers(self, hidden: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        for layer in self.vision_layers[start:end]:
            hidden = layer(hidden, None)
        return hidden

    def encode_parallel(self, hidden: torch.Tensor, mask: torch.Tensor, sets: list[str], shared: int) -> list[torch.Tensor]:
        """Vision blocks [0, shared) once without adapters, then one copy of the batch per set."""
        with self.adapter_switch.use(None):
            hidden = self.run_vision_layers(hidden, 0, shared)
        with self.adapter_switch.use(tuple(sets), drop=shared):
            hidden = self.run_vision_layers(hidden.repeat(len(sets), 1, 1), shared)
        return list(hidden.chunk(len(sets)))

    def new_parameters(self) -> list[nn.Parameter]:
        """Parts that start from scratch: adapters and adapter-fusion layers."""
        return [p for name, p in self.encoder.named_parameters() if ".adapters." in name or ".fusions." in name]
