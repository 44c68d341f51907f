"""A cross-encoder for dual encoders: fusion layers over the towers' final token states.

Each fusion layer lets the text tokens attend to themselves, then to the image patch tokens
(cross-attention), then runs a feed-forward block (pre-LayerNorm, as ALBEF/BLIP's multimodal
encoder). `init="text_tower"` copies self-attention, feed-forward and LayerNorms from the text
tower's top layers, and starts the cross-attention at zero output, so that training starts
from the pretrained text layers; `init="scratch"` initialises everything anew. A head scores
the pooled text tokens.

It is a late-interaction cross-encoder by construction (its join layer is the towers' top):
retrieval caches each item's tower states once and reranking runs only the fusion layers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from retrerank.encoders.heads import score_head
from retrerank.encoders.pooling import pool
from retrerank.encoders.towers import TowerCrossEncoder
from retrerank.types import Encoded

FUSION_INITS = ("text_tower", "scratch")


class FusionBlock(nn.Module):
    def __init__(self, width: int, image_width: int, heads: int, ffn: int, act: str, eps: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(width, eps=eps)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(width, eps=eps)
        self.cross_attn = nn.MultiheadAttention(width, heads, kdim=image_width, vdim=image_width, batch_first=True)
        self.norm_ffn = nn.LayerNorm(width, eps=eps)
        self.fc1, self.act, self.fc2 = nn.Linear(width, ffn), ACT2FN[act], nn.Linear(ffn, width)

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        x = self.norm_self(text)
        text = text + self.self_attn(x, x, x, key_padding_mask=~text_mask, need_weights=False)[0]
        x = self.norm_cross(text)
        text = text + self.cross_attn(x, image, image, key_padding_mask=~image_mask, need_weights=False)[0]
        return text + self.fc2(self.act(self.fc1(self.norm_ffn(text))))

    @torch.no_grad()
    def copy_text_layer(self, layer: nn.Module) -> None:
        """Self-attention, feed-forward and LayerNorms from a CLIP/SigLIP encoder layer."""
        attn, mlp = (getattr(m, "inner", m) for m in (layer.self_attn, layer.mlp))  # under adapters: the wrapped one
        self.self_attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        self.self_attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        self.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        self.norm_self.load_state_dict(layer.layer_norm1.state_dict())
        self.norm_ffn.load_state_dict(layer.layer_norm2.state_dict())
        self.fc1.load_state_dict(mlp.fc1.state_dict())
        self.fc2.load_state_dict(mlp.fc2.state_dict())
        # the new cross-attention adds nothing at first: the block starts as the text layer
        nn.init.zeros_(self.cross_attn.out_proj.weight)
        nn.init.zeros_(self.cross_attn.out_proj.bias)

    def copied_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(("cross_attn.", "norm_cross."))]


class FusionCrossEncoder(TowerCrossEncoder):
    def __init__(
        self,
        backbone: nn.Module,
        depth: int = 2,
        init: str = "text_tower",
        hidden: int = 0,
        dropout: float = 0.1,
        pooling: str = "mean",
        adapter_set: str | None = None,
    ):
        super().__init__(backbone, adapter_set)
        if depth < 1:
            raise ValueError(f"model.fusion_layers={depth}: a fusion cross-encoder needs at least one layer")
        if init not in FUSION_INITS:
            raise ValueError(f"model.fusion_init={init!r}; choose from {list(FUSION_INITS)}")
        text_layers = backbone.text_layers
        if init == "text_tower" and depth > len(text_layers):
            raise ValueError(
                f"model.fusion_layers={depth} with fusion_init=text_tower: the text tower has only "
                f"{len(text_layers)} layers to copy"
            )
        self.pooling = pooling
        self.init = init
        cfg = backbone.encoder.config.text_config
        self.fusion = nn.ModuleList(
            FusionBlock(
                cfg.hidden_size,
                backbone.image_hidden_size,
                cfg.num_attention_heads,
                cfg.intermediate_size,
                cfg.hidden_act,
                cfg.layer_norm_eps,
            )
            for _ in range(depth)
        )
        if init == "text_tower":
            for block, layer in zip(self.fusion, text_layers[len(text_layers) - depth :]):
                block.copy_text_layer(layer)
        self.head = score_head(cfg.hidden_size, hidden, dropout)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parts trained from scratch (at optim.new_lr): the head, and the fusion layers except
        what was copied from the text tower."""
        copied = (
            {id(p) for block in self.fusion for p in block.copied_parameters()} if self.init == "text_tower" else set()
        )
        return list(self.head.parameters()) + [p for p in self.fusion.parameters() if id(p) not in copied]

    def score_lower(self, text: Encoded, image: Encoded) -> torch.Tensor:
        """Logits for aligned pairs (text i, image i) from their tower states."""
        hidden, mask = text
        image_hidden = image[0].to(hidden.dtype)
        for block in self.fusion:
            hidden = block(hidden, mask, image_hidden, image[1])
        return self.head(pool(hidden, mask, self.pooling)).squeeze(-1)
