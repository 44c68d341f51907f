"""ANCE-style hard-negative mining (Xiong et al., 2021), as Geigle et al. (2022) train retrieve-and-rerank.

Every `every_epochs` epochs from `start_epoch` on, the training split is re-encoded with the
current bi-encoder through the one retrieval pipeline (`RetrieveRerank.search_each_other`): each
caption keeps its top_k images other than those it is true of (its own; with exact relevance,
`CaptionRecord.also`, every one), each image its top_k captions not true of it. The lists go to the
datamodule's `mined` table, from which every training item then draws
its negatives (retrerank.data.mining); the system's losses use them. Under DDP every rank
runs this together: the pipeline shards encoding and search over the ranks and gathers the
results, so every rank ends with the same lists and none encodes the whole split.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from retrerank.config import ConfigError, EvalConfig, MiningConfig
from retrerank.data.mining import MinedNegatives
from retrerank.data.records import RetrievalSplit
from retrerank.retrieval.metrics import relevant_hits
from retrerank.retrieval.pipeline import RetrieveRerank


def first_k(indices: torch.Tensor, positive: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the first k entries of `indices` whose `positive` is False, in order; -1 where
    a row has fewer."""
    order = positive.to(torch.int8).argsort(dim=1, stable=True)  # negatives first, rank order kept
    kept = indices.gather(1, order)[:, :k].clone()
    kept[positive.gather(1, order)[:, :k]] = -1
    if kept.shape[1] < k:
        kept = torch.cat([kept, kept.new_full((len(kept), k - kept.shape[1]), -1)], 1)
    return kept


def most_relevant(split: RetrievalSplit) -> tuple[int, int]:
    """(most images a caption is true of, most captions true of an image)."""
    return max(map(len, split.caption_relevant)), max(map(len, split.image_captions()))


class HardNegativeMining(pl.Callback):
    def __init__(self, cfg: MiningConfig, eval_cfg: EvalConfig) -> None:
        self.cfg, self.eval_cfg = cfg, eval_cfg
        self.table: MinedNegatives | None = None
        self.epochs: list[int] = []  # the epochs mined for (for tests and logs)
        self.seconds: list[float] = []
        self._restored: dict | None = None  # a checkpoint's state, until a resumed fit starts

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule  # set up before the callbacks, so the split is loaded
        if datamodule is None or getattr(datamodule, "train_split", None) is None or not hasattr(datamodule, "mined"):
            raise ValueError("hard-negative mining needs a RetrievalDataModule: trainer.fit(system, datamodule=...)")
        split, k = datamodule.train_split, self.cfg.top_k
        most_images, most_captions = most_relevant(split)
        if len(split.images) - most_images < k or len(split.captions) - most_captions < k:
            raise ConfigError(
                f"invalid config key 'objective.mining.top_k': {k} is more negatives than the training "
                f"split has for some item ({len(split.images)} images, {len(split.captions)} captions)"
            )
        if datamodule.mined is None:  # before the loaders are built: their datasets (and workers) share it
            datamodule.mined = MinedNegatives(
                len(split.captions), len(split.images), k, self.cfg.negatives, seed=datamodule.seed
            )
        self.table = datamodule.mined

    @property
    def test_metrics(self) -> dict[str, float]:
        """Extra rows for the run's results table (a resumed run's earlier minings included)."""
        if not self.seconds:
            return {}
        return {"train/mining_seconds": sum(self.seconds), "train/mining_rounds": float(len(self.seconds))}

    def state_dict(self) -> dict:
        """The lists in force and the mining history travel in checkpoints: a resumed run trains on
        the lists the interrupted one had, instead of mining new ones with later weights."""
        state = {"epochs": list(self.epochs), "seconds": list(self.seconds)}
        if self.table is not None and self.table.rounds > 0:
            state.update(
                images=self.table.images.clone(), captions=self.table.captions.clone(), rounds=self.table.rounds
            )
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores callbacks for testing from a checkpoint too; only a resumed fit
        # takes the lists (on_fit_start), so testing the best checkpoint leaves this run's alone
        self._restored = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored is not None:
            state, self._restored = self._restored, None
            self.epochs, self.seconds = list(state["epochs"]), list(state["seconds"])
            if "images" in state:
                self.table.restore(state["images"], state["captions"], state["rounds"])
        # epoch 0 mines here: Lightning fetches the first batch before on_train_epoch_start of epoch 0
        if self.cfg.start_epoch == 0 and self.table.rounds == 0:
            self.mine(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run resumed past start_epoch from a checkpoint without lists (written before any
        # mining, or by an older version) mines at once, even mid-epoch where no epoch-start hook runs
        if trainer.current_epoch >= self.cfg.start_epoch and self.table.rounds == 0:
            self.mine(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch, start = trainer.current_epoch, self.cfg.start_epoch
        if epoch < start or (self.epochs and self.epochs[-1] == epoch):
            return
        if (epoch - start) % self.cfg.every_epochs == 0:
            self.mine(trainer, pl_module)

    def mine(self, trainer: pl.Trainer, system: pl.LightningModule) -> None:
        begin = time.perf_counter()
        split, k = trainer.datamodule.train_split, self.cfg.top_k
        system.set_adapter_drop(training=False)  # encode as evaluation does; the next batch draws its own
        pipeline = RetrieveRerank.from_config(
            system, self.eval_cfg, progress=trainer.progress_bar_callback is not None, rerank=False
        )
        most_images, most_captions = most_relevant(split)
        # deep enough that k remain after dropping the item's true matches
        by_text, by_image = pipeline.search_each_other(
            split.images,
            split.texts,
            min(k + most_images, len(split.images)),
            min(k + most_captions, len(split.captions)),
        )
        # a true match is never a negative: the split's ground truth, as evaluation uses it
        true_images = torch.from_numpy(relevant_hits(by_text.indices.numpy(), split.caption_relevant))
        true_captions = torch.from_numpy(relevant_hits(by_image.indices.numpy(), split.image_captions()))
        self.table.fill(first_k(by_text.indices, true_images, k), first_k(by_image.indices, true_captions, k))
        seconds = time.perf_counter() - begin
        self.epochs.append(trainer.current_epoch)
        self.seconds.append(seconds)
        for logger in trainer.loggers:
            logger.log_metrics({"train/mining_seconds": seconds}, step=trainer.global_step)
