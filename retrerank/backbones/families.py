"""Which backbone family a pretrained model belongs to, read from its config's `model_type`.

- single_stream: a text encoder (BERT, RoBERTa, XLM-R, MiniLM, ...) made single-stream over
  region features by a new visual embedding (retrerank.backbones.single_stream);
- visual_bert: VisualBERT, single-stream over region features with its own pretrained visual
  embeddings (retrerank.backbones.visual_bert);
- dual: CLIP / SigLIP towers over pixels, with a fusion cross-encoder on top
  (retrerank.backbones.dual, retrerank.encoders.fusion_cross);
- blip: BlipForImageTextRetrieval, its ITC embeddings as bi-encoder and its ITM head as
  cross-encoder (retrerank.backbones.blip, retrerank.encoders.blip).
"""

from __future__ import annotations

from transformers import AutoConfig

from retrerank.backbones.architectures import ARCHITECTURES
from retrerank.backbones.blip import BLIP_TYPES
from retrerank.backbones.dual import DUAL_TYPES
from retrerank.backbones.single_stream import resolve_backbone_path
from retrerank.backbones.visual_bert import VISUAL_BERT_TYPES

FAMILIES = {
    "single_stream": tuple(t for t in ARCHITECTURES if t not in VISUAL_BERT_TYPES),
    "dual": DUAL_TYPES,
    "visual_bert": VISUAL_BERT_TYPES,
    "blip": BLIP_TYPES,
}


def model_type(name: str) -> str:
    """The `model_type` in the config of a local model folder (or a cached hub id)."""
    path = resolve_backbone_path(name)
    try:
        return AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot load backbone {name!r}: not a local model folder, and not in the hub cache "
            f"(no network at run time?): {err}"
        ) from None


def family_of(name: str) -> str:
    kind = model_type(name)
    for family, types in FAMILIES.items():
        if kind in types:
            return family
    supported = sorted(t for types in FAMILIES.values() for t in types)
    raise ValueError(f"model.backbone={name!r} is a {kind!r} model; supported model types: {supported}")
