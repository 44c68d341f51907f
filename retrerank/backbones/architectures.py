"""Where each Hugging Face encoder family keeps its embeddings and transformer blocks.

A small table instead of per-architecture model code: the backbone runs the
model's own embedding module and its own blocks, in order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    embeddings: str  # attribute path of the token embedding module
    layers: str  # attribute path of the nn.ModuleList of transformer blocks


ARCHITECTURES = {
    "bert": ArchSpec("embeddings", "encoder.layer"),
    "roberta": ArchSpec("embeddings", "encoder.layer"),
    "xlm-roberta": ArchSpec("embeddings", "encoder.layer"),
    "camembert": ArchSpec("embeddings", "encoder.layer"),
    "electra": ArchSpec("embeddings", "encoder.layer"),
    "visual_bert": ArchSpec("embeddings", "encoder.layer"),  # its own family: retrerank.backbones.visual_bert
}


def arch_spec(model_type: str) -> ArchSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"unsupported encoder architecture {model_type!r}; supported: {sorted(ARCHITECTURES)}"
        ) from None
