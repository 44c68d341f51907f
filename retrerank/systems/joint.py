"""The joint bi/cross LightningModule: one backbone, shared weights, two objectives.

It receives the networks (bi- and cross-encoder over one backbone) and only
orchestrates: which objective runs on which step, optimisation and logging.
Retrieval evaluation lives in retrerank.callbacks / retrerank.retrieval.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from retrerank.adapters.checkpoint import check_complete, trainable_state
from retrerank.adapters.drop import AdapterDropPolicy
from retrerank.config import AdapterConfig, ConfigError, ObjectiveConfig, OptimConfig
from retrerank.data.collate import pad_cat
from retrerank.distributed import world
from retrerank.encoders.bi import BiEncoder
from retrerank.encoders.cross import CrossEncoder
from retrerank.objectives.contrastive import InfoNCE
from retrerank.objectives.cross_objective import CrossObjective, take
from retrerank.objectives.sigmoid import SigmoidPairs
from retrerank.systems.grad_cache import chunked
from retrerank.types import PairBlock

Batch = dict[str, dict[str, torch.Tensor] | torch.Tensor]


class JointRetrievalSystem(pl.LightningModule):
    def __init__(
        self,
        bi_encoder: BiEncoder,
        cross_encoder: CrossEncoder,
        objective: ObjectiveConfig,
        optim: OptimConfig,
        hparams: dict | None = None,
        adapters: AdapterConfig | None = None,
    ):
        super().__init__()
        if bi_encoder.backbone is not cross_encoder.backbone:
            raise ValueError("the joint system needs one backbone shared by the bi- and the cross-encoder")
        self.bi_encoder = bi_encoder
        self.cross_encoder = cross_encoder
        self.objective = objective
        self.optim = optim
        if objective.contrastive == "sigmoid":
            self.contrastive = SigmoidPairs(objective.temperature, objective.sigmoid_bias, objective.learn_temperature)
        else:
            self.contrastive = InfoNCE(objective.temperature, objective.learn_temperature)
        if objective.loss_init == "model":
            _start_from_model(self.contrastive, bi_encoder.backbone)
        self.cross_objective = CrossObjective(objective)  # the matching loss's pairs, the loss and distillation
        # The full resolved config travels in the checkpoint so that it can be rebuilt.
        self.save_hyperparameters({"config": hparams or {}})
        self.train()  # from_pretrained hands over HF models in eval mode (dropout off)
        self.adapters = adapters if adapters is not None and adapters.enabled else None
        self.drop_policy = AdapterDropPolicy(self.adapters, self.backbone.num_layers) if self.adapters else None
        # adapter-only checkpoints hold just the trained weights; the frozen rest comes from the backbone
        self.strict_loading = self.adapters is None
        self.set_adapter_drop(training=False)

    @property
    def backbone(self) -> nn.Module:
        return self.bi_encoder.backbone

    def all_objectives(self) -> list[str]:
        """Every objective of the mode, whatever the training schedule."""
        return ["bi", "cross"] if self.objective.mode == "joint" else [self.objective.mode]

    def objectives_for_step(self, step: int) -> list[str]:
        mode = self.objective.mode
        if mode != "joint":
            return [mode]
        if self.objective.schedule == "alternate":
            return ["bi" if step % 2 == 0 else "cross"]
        return ["bi", "cross"]

    # ---- losses -----------------------------------------------------------------------
    def losses(self, batch: Batch, objectives: list[str]) -> dict[str, torch.Tensor]:
        text, image, image_index = batch["text"], batch["image"], batch["image_index"]
        losses: dict[str, torch.Tensor] = {}
        need_bi_grad = "bi" in objectives
        lower = {}  # id(inputs) -> layer-m states that the late cross-encoder can take from the bi-encoder
        with torch.set_grad_enabled(need_bi_grad and torch.is_grad_enabled()):
            chunk = self.objective.grad_cache_chunk  # > 0: GradCache, activations of one chunk at a time
            if self.shares_lower_states(need_bi_grad, objectives):
                bi, m = self.bi_encoder, self.cross_encoder.join_layer
                lower = {id(text): bi.texts_lower(text, m), id(image): bi.images_lower(image, m)}
                text_emb = bi.embed_lower(lower[id(text)], m, "texts")
                image_emb = bi.embed_lower(lower[id(image)], m, "images")
            else:
                text_emb = chunked(self.bi_encoder.embed_texts, (text,), chunk)
                image_emb = chunked(self.bi_encoder.embed_images, (image,), chunk)
            mined = self.mined_embeddings(batch) if need_bi_grad or self.objective.cross_residual else {}
            foils = self.cross_objective.foils(batch)
            distill = self.objective.distill_weight and need_bi_grad
            foil_emb = None  # the foils' bi-encoder embeddings, where a loss reads them
            if foils is not None and (
                self.objective.cross_residual or distill or (self.objective.foil_contrastive and need_bi_grad)
            ):
                foil_emb = chunked(self.bi_encoder.embed_texts, (foils[0],), chunk)
        # torch.distributed's ranks, not the trainer's: inside distributed.local() (the rank-0
        # sweep times training steps alone) the losses must not wait on other ranks
        rank, world_size = world()
        if need_bi_grad:
            if foil_emb is not None and self.objective.foil_contrastive:
                mined = {**mined, "own_text": foil_emb.view(len(image_index), foils[1], -1)}
            losses["loss_bi"] = self.contrastive(
                text_emb,
                image_emb,
                image_index,
                relevant=self.relevant(batch),
                rank=rank,
                world_size=world_size,
                **mined,
            )
        if "cross" in objectives:
            live = {id(batch["text"]): text_emb, id(batch["image"]): image_emb}
            live.update({id(batch[key]): mined[key] for key in ("neg_image", "neg_text") if key in mined})
            if foil_emb is not None:  # the residual score and distillation read their bi-encoder logits too
                live[id(foils[0])] = foil_emb
            embeddings = {key: value.detach() for key, value in live.items()}
            cross = self.cross_objective
            pairs = cross.pairs(
                batch,
                embeddings,
                lambda blocks: self.score_blocks(blocks, lower),
                self.contrastive.scale,
                self.relevant(batch),
                foils,
                rank=rank,
                world_size=world_size,
            )
            losses["loss_cross"] = cross.loss(pairs)
            if distill:
                losses["loss_distill"] = cross.distill(pairs, live, self.contrastive.scale)
        weights = {
            "loss_bi": self.objective.bi_weight,
            "loss_cross": self.objective.cross_weight,
            "loss_distill": self.objective.distill_weight,
        }
        losses["loss"] = sum(weights[name] * value for name, value in losses.items())
        return losses

    def shares_lower_states(self, need_bi_grad: bool, objectives: list[str]) -> bool:
        """Whether this step's late cross-encoder reads the bi-encoder's own layer-m states of the
        batch (the same blocks and adapters, with gradients), as reranking reads the cached ones:
        one run of the lower blocks per item serves both objectives."""
        cross = self.cross_encoder
        return (
            "cross" in objectives
            and need_bi_grad
            and torch.is_grad_enabled()
            and getattr(cross, "late", False)
            and not self.objective.grad_cache_chunk
            and self.bi_encoder.shares_lower_layers(cross)
        )

    def mined_embeddings(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The contrastive loss's extra negatives: the batch's mined ones, embedded (none before mining)."""
        if "neg_image" not in batch or not self.objective.mining.contrastive:
            return {}
        chunk = self.objective.grad_cache_chunk  # chunked like the batch's own embeddings
        return {
            "neg_image": chunked(self.bi_encoder.embed_images, (batch["neg_image"],), chunk),
            "neg_image_index": batch["neg_image_index"].reshape(-1),
            "neg_text": chunked(self.bi_encoder.embed_texts, (batch["neg_text"],), chunk),
            "neg_text_index": batch["neg_text_index"].reshape(-1),
        }

    def relevant(self, batch: Batch) -> torch.Tensor | None:
        """The batch's exact relevance (image rows each caption is true of), unless the objective
        ignores it (objective.exact_relevance=false: only a caption's own image is a match)."""
        return batch.get("relevant") if self.objective.exact_relevance else None

    def score_blocks(self, blocks: list[PairBlock], lower: dict | None = None) -> torch.Tensor:
        """Cross-encoder logits of every pair of the blocks, in order.

        A late-interaction cross-encoder (model.join_layer > 0) computes each text's and image's
        lower blocks once, however many pairs it is in, and runs only the upper blocks per pair, as
        reranking does (`lower`: id(inputs) -> states already computed, the bi-encoder's). Otherwise
        (or with GradCache) every pair is materialised and scored whole.
        """
        cross = self.cross_encoder
        if getattr(cross, "late", False) and not self.objective.grad_cache_chunk:
            states = dict(lower or {})  # id(inputs) -> their lower states, once per source batch
            parts = {"text": [], "image": []}
            for texts, text_rows, images, image_rows in blocks:
                for kind, inputs, rows, run_lower in (
                    ("text", texts, text_rows, cross.lower_text),
                    ("image", images, image_rows, cross.lower_image),
                ):
                    if id(inputs) not in states:
                        states[id(inputs)] = run_lower(inputs)
                    hidden, mask = states[id(inputs)]
                    parts[kind].append({"hidden": hidden[rows], "mask": mask[rows]})
            text_states, image_states = (pad_cat(parts[kind]) for kind in ("text", "image"))
            return cross.score_lower(
                (text_states["hidden"], text_states["mask"]), (image_states["hidden"], image_states["mask"])
            )
        texts = pad_cat([take(t, rows) for t, rows, _, _ in blocks])
        images = pad_cat([take(i, rows) for _, _, i, rows in blocks])
        # GradCache (grad_cache_chunk > 0): the pairs are scored a chunk at a time
        return chunked(cross.score, (texts, images), self.objective.grad_cache_chunk)

    # ---- AdapterDrop and adapter-only checkpoints --------------------------------------------
    def set_adapter_drop(self, training: bool) -> None:
        if self.drop_policy is not None:
            policy = self.drop_policy
            self.backbone.adapter_switch.drop = policy.train_drop() if training else policy.eval_drop()

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self.set_adapter_drop(training=True)  # robust AdapterDrop draws a new n per batch
        self.cross_encoder.draw_join_layer(training=True)  # robust late interaction: a new m per batch

    def on_validation_start(self) -> None:
        self.set_adapter_drop(training=False)
        self.cross_encoder.draw_join_layer(training=False)

    def on_test_start(self) -> None:
        self.set_adapter_drop(training=False)
        self.cross_encoder.draw_join_layer(training=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.adapters is not None:
            checkpoint["state_dict"] = {k: v.cpu() for k, v in trainable_state(self).items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.adapters is not None:
            check_complete(self, checkpoint["state_dict"], "checkpoint")

    # ---- Lightning hooks ------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch, self.objectives_for_step(self.global_step))
        size = len(batch["image_index"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=size)
        self.log("train/temperature", self.contrastive.temperature, batch_size=size)
        if isinstance(self.contrastive, SigmoidPairs):
            self.log("train/sigmoid_bias", self.contrastive.bias.detach(), batch_size=size)
        return losses["loss"]

    def _eval_step(self, batch: Batch, stage: str) -> None:
        losses = self.losses(batch, self.all_objectives())
        # sync_dist: under DDP the logged mean is over every rank's batches, not rank 0's alone
        self.log_dict(
            {f"{stage}/{k}": v for k, v in losses.items()}, batch_size=len(batch["image_index"]), sync_dist=True
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        new = self.backbone.new_parameters() + self.cross_encoder.new_parameters() + list(self.contrastive.parameters())
        new_ids = {id(p) for p in new}
        pretrained = [p for p in self.parameters() if id(p) not in new_ids]
        groups = [
            {"params": [p for p in pretrained if p.requires_grad], "lr": self.optim.lr},
            {"params": [p for p in new if p.requires_grad], "lr": self.optim.new_lr},
        ]
        optimizer = torch.optim.AdamW(groups, weight_decay=self.optim.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * self.optim.warmup_ratio)

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _start_from_model(loss: nn.Module, backbone: nn.Module) -> None:
    """The loss's scale (and a sigmoid loss's bias) from the pretrained model's own, so fine-tuning
    starts from the calibration the towers were trained with (objective.loss_init=model)."""
    model = getattr(backbone, "encoder", None)
    scale, bias = getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)
    if not isinstance(scale, torch.Tensor) or (isinstance(loss, SigmoidPairs) and not isinstance(bias, torch.Tensor)):
        wanted = (
            "logit_scale and logit_bias (SigLIP)" if isinstance(loss, SigmoidPairs) else "a logit_scale (CLIP, SigLIP)"
        )
        raise ConfigError(
            f"invalid config key 'objective.loss_init': model needs a backbone with {wanted}; "
            f"{type(model or backbone).__name__} has none"
        )
    with torch.no_grad():
        loss.log_scale.copy_(scale.reshape(()))
        if isinstance(loss, SigmoidPairs):
            loss.bias.copy_(bias.reshape(()))
