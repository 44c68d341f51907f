"""What every two-tower pixel backbone (CLIP, SigLIP, BLIP) shares: the model's own tokenizer
and image processor, its vision tower's final states, AdapterDrop counted from the bottom of
each tower, and several adapter sets run in parallel over the vision tower.

Subclasses say where their text tower is and how their heads pool (retrerank.backbones.dual,
retrerank.backbones.blip).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from retrerank.adapters.switch import AdapterSwitch
from retrerank.types import Encoded


class TwoTowerBackbone(nn.Module):
    input_kind = "pixels"
    vision_layer_takes_mask = True  # CLIP / SigLIP encoder layers take an attention mask, BLIP's none

    def __init__(self, model: PreTrainedModel, tokenizer, image_processor, *, gradient_checkpointing: bool = False):
        super().__init__()
        self.kind = model.config.model_type
        self.encoder = model  # the name marks pretrained weights (adapters.train part "backbone")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.adapter_switch = AdapterSwitch()
        # the contrastive temperature is the framework's (objective.temperature); the model's own
        # logit scale / bias would be trainable parameters without a gradient, which DDP refuses
        for name in ("logit_scale", "logit_bias"):
            if isinstance(getattr(model, name, None), nn.Parameter):
                getattr(model, name).requires_grad_(False)
        if gradient_checkpointing:  # the model's own, per encoder layer
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    # ---- towers -------------------------------------------------------------------------
    @property
    def text_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.encoder.vision_model.encoder.layers

    @property
    def hidden_size(self) -> int:
        """The text tower's width (the cross-encoder works at it)."""
        return self.encoder.config.text_config.hidden_size

    @property
    def image_hidden_size(self) -> int:
        return self.encoder.config.vision_config.hidden_size

    @property
    def num_layers(self) -> int:
        return max(len(self.text_layers), len(self.vision_layers))

    # ---- images ---------------------------------------------------------------------------
    def collate_images(self, images) -> dict[str, torch.Tensor]:
        """The model's own image processor (resize, crop, normalise) over the images' RGB pixels."""
        pixels = []
        for image in images:
            value = getattr(image, "pixels", None)
            if value is None:
                raise ValueError(
                    f"image {image.image_id!r} has no pixels, but a {self.kind} backbone reads images "
                    "as pixels: use a dataset with raw images (data/README.md) or the synthetic one"
                )
            pixels.append(value)
        return {"pixel_values": self.image_processor(images=pixels, return_tensors="pt")["pixel_values"]}

    def _pixels(self, image: dict[str, torch.Tensor]) -> torch.Tensor:
        return image["pixel_values"].to(self.encoder.vision_model.embeddings.patch_embedding.weight.dtype)

    def image_states(self, image: dict[str, torch.Tensor]) -> Encoded:
        """The vision tower's final patch states and an all-true mask."""
        hidden = self.encoder.vision_model(pixel_values=self._pixels(image)).last_hidden_state
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)

    # ---- parallel adapter sets over the vision tower ------------------------------------------
    def parallel_inputs(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> Encoded:
        """Several tasks over one image: the vision tower's input embeddings are the shared input."""
        vision = self.encoder.vision_model
        hidden = vision.embeddings(self._pixels(image))
        if hasattr(vision, "pre_layrnorm"):  # CLIP normalises before its first block
            hidden = vision.pre_layrnorm(hidden)
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)

    def run_vision_layers(self, hidden: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        for layer in self.vision_layers[start:end]:
            hidden = layer(hidden, None) if self.vision_layer_takes_mask else layer(hidden)
        return hidden

    def encode_parallel(
        self, hidden: torch.Tensor, mask: torch.Tensor, sets: list[str], shared: int
    ) -> list[torch.Tensor]:
        """Vision blocks [0, shared) once without adapters, then one copy of the batch per set."""
        with self.adapter_switch.use(None):
            hidden = self.run_vision_layers(hidden, 0, shared)
        with self.adapter_switch.use(tuple(sets), drop=shared):
            hidden = self.run_vision_layers(hidden.repeat(len(sets), 1, 1), shared)
        return list(hidden.chunk(len(sets)))

    def new_parameters(self) -> list[nn.Parameter]:
        """Parts that start from scratch: adapters and adapter-fusion layers (everything else,
        heads and projections included, is pretrained)."""
        return [p for name, p in self.encoder.named_parameters() if ".adapters." in name or ".fusions." in name]
