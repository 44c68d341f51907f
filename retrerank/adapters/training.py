"""What trains when adapters are used: every parameter frozen, then the chosen parts thawed."""

from __future__ import annotations

from torch import nn

from retrerank.config import TRAINABLE_PARTS as PARTS


def _part(name: str) -> str | None:
    if name.endswith((".logit_scale", ".logit_bias")):  # CLIP / SigLIP's own: the framework has its temperature
        return None
    if ".adapters." in name:
        return "adapters"
    if ".fusions." in name:
        return "fusion"
    if name.startswith(("cross_encoder.head.", "cross_encoder.align.", "cross_encoder.fusion.", "contrastive.")):
        # the cross head (and its word-region term), a dual encoder's fusion cross-encoder, the
        # temperature: parts the backbone does not have
        return "heads"
    if ".visual." in name or ".embeddings.visual_" in name:  # a new VisualEmbedding, or VisualBERT's own
        return "visual"
    if "LayerNorm" in name:
        return "layer_norms"
    if ".encoder." in name:
        return "backbone"
    return None


def select_trainable(system: nn.Module, parts: list[str]) -> int:
    """Freeze all parameters but those of `parts`; returns the number of trainable parameters."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"adapters.train has unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    for name, param in system.named_parameters():
        part = _part(name)
        param.requires_grad = part in parts or (part == "layer_norms" and "backbone" in parts)
    return count_trainable(system)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
