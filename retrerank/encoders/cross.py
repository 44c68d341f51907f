"""The cross-encoder view of a backbone: text and image read together, a head scores the pair.

With `join_layer` m > 0 (late interaction) the pair is [CLS] words [SEP] + [CLS] regions and
text and image attend only to themselves in blocks [0, m) (a block-diagonal attention mask,
computed as two separate runs, which is the same thing) and to each other from block m on.
Their layer-m states then do not depend on the partner: `lower_text` / `lower_image` compute
them once per item and `score_lower` finishes any pairing of them (retrieval caches them).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from retrerank.encoders.heads import TokenAlignment, head_input_size, pair_features, score_head
from retrerank.types import Encoded


class CrossEncoder(nn.Module):
    """Matching logit from the joint pair states (higher = better match); `head_kind` says what the
    head reads (retrerank.encoders.heads.pair_features: the text and image halves, or the pair).

    Mean pooling is the default: sentence-embedding checkpoints such as all-MiniLM-L6-v2
    were trained with mean pooling, and their [CLS] state carries little.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden: int = 0,
        dropout: float = 0.1,
        pooling: str = "mean",
        adapter_set: str | None = None,
        join_layer: int = 0,
        robust_join: bool = False,
        head_kind: str = "align",
        length_buckets: int = 1,
        own_blocks: bool = False,
    ):
        super().__init__()
        if not 0 <= join_layer <= backbone.num_layers:
            raise ValueError(f"model.join_layer={join_layer} is outside 0..{backbone.num_layers}")
        if own_blocks and robust_join:
            raise ValueError(
                "model.cross_blocks=own copies the blocks from model.join_layer on; "
                "model.robust_join would join below them"
            )
        self.backbone = backbone
        self.pooling = pooling
        self.adapter_set = adapter_set  # the adapter set active while this view runs (None: none)
        self.late = join_layer > 0  # the late-interaction layout, for every m (robust training draws m)
        self.join_layer = join_layer  # m: runtime state, like the adapter switch (see `joining_at`)
        self.eval_join = join_layer  # m outside training
        self.robust_join = robust_join  # training draws m in 0..eval_join per batch (draw_join_layer)
        self.head_kind = head_kind
        self.length_buckets = length_buckets  # score_lower: groups of pairs of similar text length
        self.head = score_head(head_input_size(head_kind, backbone.hidden_size), hidden, dropout)
        # align: the attend head plus each word's match to its best region (heads.TokenAlignment)
        self.align = TokenAlignment(backbone.hidden_size) if head_kind == "align" else None
        # own_blocks (model.cross_blocks=own): the pair runs copies of the blocks from the join on,
        # starting from the pretrained ones, so the two objectives share only the lower blocks and
        # the embeddings; the bi-encoder's upper blocks get no gradient from the matching loss
        self.blocks = nn.ModuleList(copy.deepcopy(backbone.layers[join_layer:])) if own_blocks else None

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.backbone.tokenize(texts)

    def collate_images(self, images) -> dict[str, torch.Tensor]:
        return self.backbone.collate_images(images)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parts of its own trained from scratch (at optim.new_lr): the head."""
        return list(self.head.parameters()) + (list(self.align.parameters()) if self.align is not None else [])

    @contextmanager
    def joining_at(self, m: int) -> Iterator[CrossEncoder]:
        """Run with join layer m (0..L) inside the block; a late model only."""
        if not self.late:
            raise ValueError("this cross-encoder was built with join_layer=0 (full attention): no m to change")
        if not 0 <= m <= self.backbone.num_layers:
            raise ValueError(f"join layer {m} is outside 0..{self.backbone.num_layers}")
        if self.blocks is not None and m != self.eval_join:
            raise ValueError(
                f"join layer {m}: this cross-encoder has its own blocks from layer {self.eval_join} on "
                "(model.cross_blocks=own), so it joins there only"
            )
        previous, self.join_layer = self.join_layer, m
        try:
            yield self
        finally:
            self.join_layer = previous

    def draw_join_layer(self, training: bool) -> int:
        """Set and return the join layer m for what runs next: with robust_join, a training batch draws
        m uniformly in 0..eval_join (one model for any m); otherwise m = eval_join. A full-attention
        model (built with join_layer=0) keeps 0. The system calls it before each batch."""
        if self.late:
            draw = training and self.robust_join
            self.join_layer = int(torch.randint(0, self.eval_join + 1, ()).item()) if draw else self.eval_join
        return self.join_layer

    def score(self, text: dict[str, torch.Tensor], image: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.late:
            return self.score_lower(self.lower_text(text), self.lower_image(image))
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.embed_pair(text, image)
            hidden = self.run_upper(hidden, mask)
        return self.read(hidden, mask, text["attention_mask"].shape[1])

    def run_upper(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The blocks from the join on over joint pair states: the backbone's, or the own copies."""
        blocks = self.backbone.layers[self.join_layer :] if self.blocks is None else self.blocks
        return self.backbone.run_blocks(blocks, hidden, mask)

    def read(self, hidden: torch.Tensor, mask: torch.Tensor, text_len: int) -> torch.Tensor:
        """The head's logits from joint pair states whose first `text_len` positions are the text."""
        logits = self.head(pair_features(self.head_kind, hidden, mask, text_len, self.pooling)).squeeze(-1)
        return logits if self.align is None else logits + self.align(hidden, mask, text_len)

    # ---- late interaction -----------------------------------------------------------------
    def lower_text(self, text: dict[str, torch.Tensor]) -> Encoded:
        """Layer-m states of texts read alone."""
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.embed_text(text)
            return self.backbone.run_layers(hidden, mask, 0, self.join_layer), mask

    def lower_image(self, image: dict[str, torch.Tensor]) -> Encoded:
        """Layer-m states of images ([CLS] + regions) read alone."""
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden, mask = self.backbone.embed_image(image)
            return self.backbone.run_layers(hidden, mask, 0, self.join_layer), mask

    def score_lower(self, text: Encoded, image: Encoded) -> torch.Tensor:
        """Logits for aligned pairs (text i, image i) from their layer-m states.

        The pairs run in up to `length_buckets` groups of similar text length, each cut to its own
        longest text and image: the upper blocks' cost follows the padded positions, and a batch of
        pairs is padded to its longest caption (twice the mean on the synthetic data). Masked
        positions change nothing, so the logits are those of one padded batch."""
        return in_length_buckets(
            lambda rows: self._score_trimmed(_trim(text, rows), _trim(image, rows)), text[1].sum(1), self.length_buckets
        )

    def _score_trimmed(self, text: Encoded, image: Encoded) -> torch.Tensor:
        hidden = torch.cat([text[0], image[0].to(text[0].dtype)], dim=1)
        mask = torch.cat([text[1], image[1]], dim=1)
        with self.backbone.adapter_switch.use(self.adapter_set):
            hidden = self.run_upper(hidden, mask)
        return self.read(hidden, mask, text[0].shape[1])


MIN_BUCKET = 16  # rows: smaller groups cost more in per-call overhead than their padding saves


def in_length_buckets(score, lengths: torch.Tensor, buckets: int) -> torch.Tensor:
    """score(rows) over groups of rows sorted by `lengths` (up to `buckets` groups of at least
    MIN_BUCKET rows; score(None): all rows at once), the results put back in the rows' order."""
    groups = min(buckets, len(lengths) // MIN_BUCKET)
    if groups <= 1:
        return score(None)
    order = torch.argsort(lengths, stable=True)
    out = torch.cat([score(rows) for rows in order.tensor_split(groups)])
    return out.new_empty(out.shape).index_copy(0, order, out)


def _trim(states: Encoded, rows: torch.Tensor | None) -> Encoded:
    """The rows' states without the positions that none of them uses."""
    hidden, mask = states if rows is None else (states[0][rows], states[1][rows])
    used = mask.any(0).nonzero()
    end = int(used.max()) + 1 if len(used) else 1
    return hidden[:, :end], mask[:, :end]
