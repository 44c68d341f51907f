"""Config -> objects. Each builder is small and can be called on its own (tests, notebooks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn

from retrerank.adapters.checkpoint import checkpoint_file, load_adapter_set, load_adapters, read_adapters
from retrerank.adapters.fusion import add_fusion
from retrerank.adapters.inject import add_adapter_set
from retrerank.adapters.training import select_trainable
from retrerank.backbones.blip import BlipBackbone
from retrerank.backbones.dual import DualEncoderBackbone
from retrerank.backbones.families import family_of
from retrerank.backbones.single_stream import SingleStreamBackbone, resolve_backbone_path
from retrerank.backbones.visual_bert import VisualBertBackbone
from retrerank.callbacks.adapter_sweep import AdapterDropSweep
from retrerank.callbacks.evaluation import RetrievalEvaluation
from retrerank.callbacks.fusion_pruning import FusionPruning
from retrerank.callbacks.join_sweep import JoinLayerSweep
from retrerank.callbacks.mining import HardNegativeMining
from retrerank.callbacks.rng_state import RngState
from retrerank.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    ResumePoint,
    load_checkpoint,
    named_resume_point,
    newest_loadable,
)
from retrerank.config import AdapterConfig, Config, ConfigError, ModelConfig
from retrerank.data.datamodule import RetrievalDataModule
from retrerank.encoders.bi import BiEncoder
from retrerank.encoders.blip import BlipBiEncoder, BlipCrossEncoder
from retrerank.encoders.cross import CrossEncoder
from retrerank.encoders.dual import DualBiEncoder
from retrerank.encoders.fusion_cross import FusionCrossEncoder
from retrerank.errors import CheckpointError
from retrerank.preflight import check_family, check_model
from retrerank.retrieval.methods import Method
from retrerank.systems.joint import JointRetrievalSystem


def feature_dim(cfg: Config) -> int:
    """Width of the dataset's region features (the visual embedding's input)."""
    if cfg.data.dataset == "synthetic":
        return cfg.data.synthetic.feature_dim
    from retrerank.data.datasets import regions_path
    from retrerank.data.stores.region_store import RegionStore

    return RegionStore(regions_path(cfg.data.root, cfg.data.dataset, cfg.data.regions)).feature_dim


def build_backbone(model: ModelConfig, feature_width: Callable[[], int]) -> nn.Module:
    """The backbone of the family that `model.backbone` belongs to (retrerank.backbones.families);
    `feature_width()` is asked only by families that read region features."""
    family = family_of(model.backbone)
    check_family(model, family)  # keys that apply to single-stream backbones only (ConfigError)
    if family == "dual":
        return DualEncoderBackbone.from_pretrained(
            resolve_backbone_path(model.backbone),
            max_text_len=model.max_text_len,
            gradient_checkpointing=model.gradient_checkpointing,
        )
    if family == "blip":
        return BlipBackbone.from_pretrained(
            resolve_backbone_path(model.backbone),
            max_text_len=model.max_text_len,
            gradient_checkpointing=model.gradient_checkpointing,
        )
    single_stream = VisualBertBackbone if family == "visual_bert" else SingleStreamBackbone
    return single_stream.from_pretrained(
        model.backbone,
        feature_width(),
        max_text_len=model.max_text_len,
        max_regions=model.max_regions,
        dropout=model.dropout,
        gradient_checkpointing=model.gradient_checkpointing,
        box_encoding=model.box_encoding,
    )


def build_encoders(
    model: ModelConfig, feature_width: int | Callable[[], int], adapters: AdapterConfig | None = None
) -> tuple[nn.Module, nn.Module]:
    backbone = build_backbone(model, feature_width if callable(feature_width) else lambda: feature_width)
    bi_set = cross_set = None
    if adapters is not None and adapters.enabled and adapters.fusion.sets:
        # AdapterFusion: earlier runs' sets, frozen (see adapters.train), under one fusion for both roles
        for name, path in adapters.fusion.sets.items():
            load_adapter_set(backbone, name, path, model.backbone)
        bi_set = cross_set = add_fusion(backbone, "fusion", list(adapters.fusion.sets), adapters.fusion.temperature)
    elif adapters is not None and adapters.enabled:
        bi_set, cross_set = ("shared", "shared") if adapters.shared else ("bi", "cross")
        for name in dict.fromkeys((bi_set, cross_set)):
            add_adapter_set(backbone, name, adapters)
    if isinstance(backbone, BlipBackbone):  # ITC and ITM: the model's own heads, nothing new
        return BlipBiEncoder(backbone, bi_set), BlipCrossEncoder(backbone, adapter_set=cross_set)
    if isinstance(backbone, DualEncoderBackbone):
        return DualBiEncoder(backbone, bi_set), FusionCrossEncoder(
            backbone,
            model.fusion_layers,
            model.fusion_init,
            model.cross_head_hidden,
            model.dropout,
            model.cross_pooling,
            adapter_set=cross_set,
        )
    bi = BiEncoder(backbone, model.pooling, adapter_set=bi_set)
    cross = CrossEncoder(
        backbone,
        model.cross_head_hidden,
        model.dropout,
        model.cross_pooling,
        adapter_set=cross_set,
        join_layer=model.join_layer,
        robust_join=model.robust_join,
        head_kind=model.cross_head,
        length_buckets=model.length_buckets,
        own_blocks=model.cross_blocks == "own",
    )
    return bi, cross


def build_system(cfg: Config) -> JointRetrievalSystem:
    bi, cross = build_encoders(cfg.model, lambda: feature_dim(cfg), cfg.adapters)
    hparams = OmegaConf.to_container(OmegaConf.structured(cfg))
    system = JointRetrievalSystem(bi, cross, cfg.objective, cfg.optim, hparams, cfg.adapters)
    if cfg.adapters.enabled and cfg.adapters.fusion.sets:
        _start_from_first_set(system, next(iter(cfg.adapters.fusion.sets.values())))
    if cfg.adapters.enabled:
        select_trainable(system, cfg.adapters.train)
    return system


def _start_from_first_set(system: JointRetrievalSystem, path: str) -> None:
    """A fusion run's visual embedding and heads start from those trained with its first set:
    the frozen adapters were trained on that kind of input, not on a fresh embedding."""
    state, _ = read_adapters(checkpoint_file(path))
    rest = {k: v for k, v in state.items() if ".adapters." not in k}
    unexpected = system.load_state_dict(rest, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{checkpoint_file(path)} has weights this model does not have: {unexpected[:5]}")


def build_datamodule(cfg: Config, system: JointRetrievalSystem) -> RetrievalDataModule:
    bi = system.bi_encoder
    return RetrievalDataModule(
        cfg.data,
        bi.tokenize,
        bi.collate_images,
        bi.backbone.input_kind,
        seed=cfg.seed,
        foils=cfg.objective.foil_negatives,
    )


def evaluation_methods(cfg: Config) -> tuple[list[str], list[str]]:
    """(validation methods, test methods) that make sense for the training mode."""
    test = ["bi"] + [str(Method.rerank(k)) for k in cfg.eval.rerank_ks] + (["cross_all"] if cfg.eval.cross_all else [])
    if cfg.objective.mode == "bi":
        test = ["bi"]
    val = [m for m in cfg.eval.val_methods if cfg.objective.mode != "bi" or m == "bi"]
    return val, test


def build_logger(cfg: Config, run_dir: Path):
    if cfg.logger == "wandb":
        from retrerank.loggers import make_wandb_logger

        return make_wandb_logger(cfg, run_dir)
    if cfg.logger == "tensorboard":  # Lightning's own; a resumed run adds event files beside the first ones
        from lightning.pytorch.loggers import TensorBoardLogger

        try:
            return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        except ModuleNotFoundError:  # Lightning's message is several lines about requirement caches
            raise ConfigError(
                "invalid config key 'logger': logger=tensorboard needs tensorboard: "
                "pip install 'retrerank[tensorboard]'"
            ) from None
    from retrerank.loggers import ContinuedCSVLogger

    # a resumed run's curves go on in the same metrics.csv (the rows before its checkpoint's step kept)
    return ContinuedCSVLogger(
        save_dir=str(run_dir),
        name="logs",
        version="",
        keep_before=resume_point(cfg, run_dir).step if cfg.trainer.resume else None,
    )


def build_trainer(cfg: Config, run_dir: Path) -> tuple[pl.Trainer, RetrievalEvaluation, ModelCheckpoint]:
    val_methods, test_methods = evaluation_methods(cfg)  # eval.monitor names one of val_methods (config.load)
    evaluation = RetrievalEvaluation(cfg.eval, val_methods, test_methods)
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="best",
        monitor=cfg.eval.monitor,
        mode="max",
        save_top_k=1,
        save_last=False,
    )
    # the resume point (trainer.resume): weights, optimiser, loop progress, loader position, RNG states
    # at a validating step written after the validation (retrerank/checkpointing.py)
    last = LastCheckpoint(
        str(run_dir / "checkpoints"), cfg.trainer.checkpoint_every_n_steps or None, cfg.trainer.val_check_interval
    )
    callbacks = [evaluation, RngState(), checkpoint, last]
    if cfg.objective.mining.enabled:  # ANCE: re-mines the training split's hard negatives every few epochs
        callbacks.append(HardNegativeMining(cfg.objective.mining, cfg.eval))
    if cfg.adapters.enabled and cfg.adapters.fusion.sets:  # after the test's evaluation
        callbacks.append(FusionPruning(cfg.adapters.fusion, cfg.eval, val_methods, test_methods, run_dir))
    if cfg.sweep.enabled:  # after the test's evaluation: writes sweep.csv and sweep.png to run_dir
        callbacks.append(AdapterDropSweep(cfg.sweep, cfg.eval, run_dir))
    if cfg.sweep.join:  # late-interaction models: join_sweep.csv and join_sweep.png
        callbacks.append(JoinLayerSweep(cfg.sweep, cfg.eval, run_dir))
    t = cfg.trainer
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=build_logger(cfg, run_dir),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],  # a full disk never leaves a truncated checkpoint in place
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        limit_train_batches=t.limit_train_batches,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
        num_sanity_val_steps=0,
        val_check_interval=t.val_check_interval,
        # with a step interval, count steps across epochs rather than within one
        check_val_every_n_epoch=None if t.val_check_interval else 1,
    )
    return trainer, evaluation, checkpoint


def resume_point(cfg: Config, run_dir: Path) -> ResumePoint:
    """The checkpoint `trainer.resume` names, with its step; path None: start afresh. With "last":
    the newest checkpoint of the run that loads (ours, best, or one Lightning wrote on a SLURM
    signal), so a damaged newest one falls back to the one before it (`skipped` says why)."""
    if not cfg.trainer.resume:
        return ResumePoint(None)
    if cfg.trainer.resume == "last":
        folder = run_dir / "checkpoints"
        return newest_loadable(
            list(folder.glob("last*.ckpt")) + list(folder.glob("best*.ckpt")) + list(run_dir.glob("hpc_ckpt_*.ckpt"))
        )
    return named_resume_point(cfg.trainer.resume)


def resume_path(cfg: Config, run_dir: Path) -> str | None:
    """The checkpoint `trainer.resume` names; None: start afresh."""
    return resume_point(cfg, run_dir).path


def load_system(checkpoint: str | Path, map_location: str = "cpu") -> tuple[JointRetrievalSystem, Config]:
    """Rebuild a trained system from a Lightning checkpoint written by `experiments.run`.

    The architecture comes from the config stored in the checkpoint (the backbone named
    there must still load: the embedded default always does), the weights from its state.
    Whatever about the file stops it (missing, damaged, carrying code, another model's weights) is a
    CheckpointError of one line that names it.
    """

    path = Path(checkpoint)
    state = load_checkpoint(path, map_location)  # weights only: a checkpoint is data, never code
    cfg = checkpoint_config(state, path, check=True)
    system = build_system(cfg)
    try:
        if cfg.adapters.enabled:  # adapter-only: the frozen rest came with build_system
            load_adapters(system, state["state_dict"], str(path))
        else:
            system.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes ({reason})") from None
    return system.eval(), cfg


def checkpoint_config(state: dict, path: str | Path, check: bool = False) -> Config:
    """The config a loaded checkpoint (`state`, read from `path`) carries; with `check`, also that the
    backbone it names is still there and fits the stored keys. A CheckpointError of one line otherwise."""
    from retrerank.config import from_dict

    try:
        cfg = from_dict(state["hyper_parameters"]["config"])
        if check:
            check_model(cfg)
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{path} has no retrerank config in its hyper_parameters; was it written by experiments.run?"
        ) from None
    except ConfigError as err:
        raise CheckpointError(f"{path}: the config stored in it does not load: {err}") from None
    return cfg
