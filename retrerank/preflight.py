"""What a run's config points to, checked before anything is written or loaded: `preflight(cfg)`.

`config.load` checks each key, and the keys against each other. Some bounds depend on files the keys
name, and would otherwise stop a run only once its folder exists and its model has loaded:

- `model.backbone`: a model folder with a config.json (or a hub id in the local cache), of a
  supported family; only that config.json is read, never the weights;
- the backbone's depth (its config.json's num_hidden_layers; a two-tower model's deeper tower)
  bounds `model.join_layer`, `adapters.drop`, `adapters.eval_drop`, `adapters.leave_out` and
  `sweep.layers`; a family's own rules bound `model.join_layer`, `model.cross_blocks` and
  `model.box_encoding`;
- the adapter sets a fusion names (`adapters.fusion.sets`) exist, and so does the checkpoint
  `trainer.resume` names by its path (and it loads);
- `output_dir` is a folder (or can become one) that can be written to.

experiments.run calls it before it claims a run folder, so a refused start leaves nothing behind;
`check_model` is also what a checkpoint's stored config goes through before its model is built.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrerank.config import Config, ConfigError, ModelConfig

SINGLE_STREAM = ("single_stream", "visual_bert")  # the families whose cross-encoder runs the backbone's own blocks


def preflight(cfg: Config, main_rank: bool = True) -> None:
    """Every bound of `cfg` that the files it names can tell (see the module doc); ConfigError naming the
    key. Under data parallelism only the main rank, which writes the run folder, checks output_dir."""
    if main_rank:
        check_output_dir(cfg.output_dir)
    check_model(cfg)
    check_fusion_sets(cfg)
    if cfg.trainer.resume and cfg.trainer.resume != "last":  # a checkpoint path: it is there and loads
        from retrerank.checkpointing import named_resume_point

        named_resume_point(cfg.trainer.resume)


def check_output_dir(output_dir: str) -> None:
    """`output_dir` is a folder that can be written to, or the nearest part of it that exists is."""
    root = existing = Path(output_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        below = f" (run folders go below {root})" if existing != root else ""
        raise ConfigError(f"invalid config key 'output_dir': {existing} is a file, not a folder{below}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"invalid config key 'output_dir': cannot create run folders in {root}: {existing} is not "
            "writable (a read-only file system, or no permission)"
        )


def check_model(cfg: Config) -> None:
    """The backbone's family and depth against the model, adapter and sweep keys."""
    config = backbone_config(cfg.model.backbone)
    check_family(cfg.model, family_of_config(cfg.model.backbone, config.model_type))
    layers = depth(config)
    where = f"model.backbone={cfg.model.backbone} has {layers} blocks (num_hidden_layers in its config.json)"
    bounds = [("model.join_layer", cfg.model.join_layer, layers)]
    if cfg.adapters.enabled:
        adapters = cfg.adapters
        bounds += [
            ("adapters.drop", adapters.drop, layers),
            ("adapters.eval_drop", adapters.eval_drop, layers),
            ("adapters.leave_out", adapters.leave_out, layers - 1),
        ]
    if cfg.sweep.enabled:
        bounds.append(("sweep.layers", cfg.sweep.layers, layers))
    for key, value, top in bounds:
        values = value if isinstance(value, list) else [] if value is None else [value]
        bad = [v for v in values if not 0 <= v <= top]
        if bad:
            shown = bad if isinstance(value, list) else value
            raise ConfigError(f"invalid config key {key!r}: {shown} is outside 0..{top}; {where}")


def backbone_config(name: str):
    """The transformers config of `model.backbone`, read from its config.json (no weights); ConfigError
    when it is no model folder, has no config.json, or (a hub id) is not in the local cache."""
    from transformers import AutoConfig

    from retrerank.backbones.single_stream import resolve_backbone_path

    key = "invalid config key 'model.backbone'"
    try:
        path = resolve_backbone_path(name)
    except ValueError as err:  # the embedded default without its package
        raise ConfigError(f"{key}: {err}") from None
    folder = Path(path).expanduser()
    local = folder.exists() or _looks_local(path)
    if local and not folder.exists():
        raise ConfigError(f"{key}: no model folder at {path}")
    folder_kind = "a backbone is a model folder (what save_pretrained writes)"
    if local and not folder.is_dir():
        raise ConfigError(f"{key}: {path} is a file; {folder_kind}")
    if local and not (folder / "config.json").is_file():
        raise ConfigError(f"{key}: {path} has no config.json; {folder_kind}")
    try:
        return AutoConfig.from_pretrained(str(folder) if local else path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = (
            f"cannot read {folder / 'config.json'}"
            if local
            else f"{name!r} is not a local model folder, and not in the hub cache (no network at run time?)"
        )
        raise ConfigError(f"{key}: {where}: {reason}") from None


def _looks_local(path: str) -> bool:
    """A path rather than a hub id ("org/name" has one slash and starts with neither / . nor ~)."""
    return path.startswith(("/", ".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path


def family_of_config(name: str, model_type: str) -> str:
    """The backbone family (retrerank.backbones.families) of a model type; ConfigError for another kind."""
    from retrerank.backbones.families import FAMILIES

    for family, types in FAMILIES.items():
        if model_type in types:
            return family
    supported = sorted(t for types in FAMILIES.values() for t in types)
    raise ConfigError(
        f"invalid config key 'model.backbone': {name!r} is a {model_type!r} model; supported model types: {supported}"
    )


def depth(config) -> int:
    """Blocks that adapters attach to and a join can sit at: num_hidden_layers, or a two-tower model's
    deeper tower (the backbone's `num_layers`)."""
    towers = [getattr(config, key, None) for key in ("text_config", "vision_config")]
    towers = [tower for tower in towers if tower is not None]
    if towers:
        return max(tower.num_hidden_layers for tower in towers)
    return config.num_hidden_layers


def check_family(model: ModelConfig, family: str) -> None:
    """The model keys that apply to single-stream backbones only, against the backbone's family."""
    if family not in SINGLE_STREAM and model.join_layer:
        raise ConfigError(
            f"model.join_layer={model.join_layer}: the {family} family's "
            "cross-encoder has a fixed join (after the towers); join_layer applies to single-stream backbones: "
            "set model.join_layer=0 (as experiments/configs/clip.yaml, siglip.yaml and blip.yaml do)"
        )
    if family not in SINGLE_STREAM and model.cross_blocks != "shared":
        raise ConfigError(
            f"model.cross_blocks={model.cross_blocks}: the {family} family's "
            "cross-encoder has its own fusion layers already; cross_blocks applies to single-stream backbones: "
            "leave it at shared"
        )
    if family != "single_stream" and model.box_encoding != "linear":
        raise ConfigError(
            f"model.box_encoding={model.box_encoding}: the {family} family "
            "does not embed region boxes itself; box_encoding applies to single-stream backbones: leave it at linear"
        )


def check_fusion_sets(cfg: Config) -> None:
    """Each adapter set a fusion names is a file (or a run folder holding adapters.safetensors)."""
    from retrerank.adapters.checkpoint import checkpoint_file

    if not cfg.adapters.enabled:
        return
    for name, path in cfg.adapters.fusion.sets.items():
        if not checkpoint_file(path).is_file():
            raise ConfigError(
                f"invalid config key 'adapters.fusion.sets': set {name!r}: no adapter checkpoint at "
                f"{checkpoint_file(path)} (an earlier run's adapters.safetensors, or its run folder)"
            )
