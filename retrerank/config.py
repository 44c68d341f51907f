"""Config schemas (the documentation of every hyperparameter) and `load`.

A run's config is the defaults below, merged with an optional YAML diff and then
`key=value` overrides. An unknown key or a value of the wrong type stops at once
with a `ConfigError` that names the key. So does a value the schema does not allow: the
allowed values sit on the fields (`one_of`, `positive`), each section's other rules in its
`check` method, and `check` runs them all.

Over 300 lines on purpose: the schema is one tree of dataclasses that documents every key in one
place, and `load`/`check` walk that tree; split over files, one config would be read across several.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retrerank.errors import UserInputError
from retrerank.retrieval.methods import Method
from retrerank.retrieval.metrics import metric_names

EMBEDDED_BACKBONE = "embedded:all-minilm-l6-v2"
# what `adapters.train` can name (retrerank.adapters.training maps parameters to them)
TRAINABLE_PARTS = ("adapters", "fusion", "heads", "visual", "layer_norms", "backbone")


class ConfigError(UserInputError):
    """A config file or override is invalid; the message names the key."""


def one_of(choices: tuple[str, ...], default: str) -> Any:
    """A field that takes only `choices` (checked at load; the message lists them in this order)."""
    return field(default=default, metadata={"choices": choices})


def positive(default: float) -> Any:
    """A count or rate that must be > 0: zero or less would fail (or do nothing) only once training
    or evaluation has started."""
    return field(default=default, metadata={"positive": True})


@dataclass
class SyntheticConfig:
    """The embedded synthetic scenes (generated once into data/, then cached)."""

    seed: int = 0  # seed of the generator: the same seed, the same scenes and captions
    n_train: int = 1500  # training images (scenes)
    n_val: int = 50  # validation images
    n_test: int = 50  # test images
    feature_dim: int = 128  # width of a region feature vector
    min_objects: int = 1  # objects per scene, at least
    max_objects: int = 4  # objects per scene, at most
    max_distractors: int = 3  # extra background regions, 0..max per image
    # chance that a multi-object scene gets a near-duplicate "twin" in its split (two objects'
    # colours, positions or sizes swapped; its captions are chosen to tell the two apart)
    twin_fraction: float = 0.5
    # scenes with more objects than this get no caption listing them all (captions about a part of the scene)
    list_max_objects: int = 4
    feature_noise: float = 0.3  # std of Gaussian noise on region features
    image_size: int = 64  # side of the RGB picture of each scene (pixels, >= 16), for pixel-input backbones
    captions_per_image: int = 5  # captions generated per image and language
    # near misses stored with each caption, false of its image (swapped colours or sizes, inverted
    # relation, another attribute; captions.foil_items): hard negative captions for training
    foils_per_caption: int = 1
    # the languages captions are written in (data.train_langs and test_langs pick from them)
    languages: list[str] = field(default_factory=lambda: ["en", "de", "fr", "cs"])
    # (colour, shape) pairs never seen in train images; they make the "novel" test split
    held_out_combos: list[str] = field(default_factory=lambda: ["red circle", "blue square", "green triangle"])


@dataclass
class SourceConfig:
    """Another dataset used beside the main one (zero-shot transfer, distractors)."""

    dataset: str = one_of(("", "coco", "flickr30k", "multi30k", "xtd10", "xm3600"), default="")  # "": none
    captions: str = ""  # "": the dataset's default path below data.root (data/README.md)
    regions: str = ""  # "": the dataset's default region store below data.root
    image_folder: str = ""  # "": the dataset's default raw image folder (pixel backbones)
    test_set: str = ""  # "": the dataset's default test set (see DataConfig.test_set)
    images: int = 0  # distractors only: how many of its test images to add (0: all)


@dataclass
class DataConfig:
    # synthetic: embedded; the others: data/README.md says where the files go
    dataset: str = one_of(("synthetic", "coco", "flickr30k", "multi30k"), default="synthetic")
    root: str = "data"  # datasets and caches live below this folder
    captions: str = ""  # "": the dataset's default caption file / folder below root
    regions: str = ""  # "": <root>/<images' dataset>/regions.h5 (built by experiments.prepare)
    # raw images, for pixel backbones (CLIP, SigLIP, BLIP); "": <root>/<images' dataset>/images/
    image_folder: str = ""
    # coco: 5k | 1k (five folds of 1000 images, metrics averaged); multi30k: test_2016_flickr |
    # test_2017_flickr | test_2018_flickr | test_2017_mscoco; "": the dataset's standard one
    test_set: str = ""
    multi30k_task: int = 1  # 1: one caption per image and language | 2: five per image (en, de)
    strict: bool = True  # False: skip broken records, count them and report (lenient mode)
    balanced_langs: bool = False  # multilingual training: every language drawn equally often
    # batch a caption of each near-duplicate image (ImageRecord.near, e.g. the synthetic twins) with one
    # of its twin, so that each is the other's hard negative; false: random batches
    near_duplicate_batches: bool = False
    # with near_duplicate_batches: the first epoch that pairs them (a curriculum; plain random batches before)
    near_duplicate_from_epoch: int = 0
    transfer: SourceConfig = field(default_factory=SourceConfig)  # zero-shot: test on this dataset
    distractors: SourceConfig = field(default_factory=SourceConfig)  # enlarge the test set with these
    # zeroshot: train_langs -> test_langs; novel: tested on the held-out combos
    setup: str = one_of(("monolingual", "multilingual", "zeroshot", "novel"), default="monolingual")
    train_langs: list[str] = field(default_factory=lambda: ["en"])  # caption languages trained (and validated) on
    test_langs: list[str] = field(default_factory=lambda: ["en"])  # caption languages tested on
    batch_size: int = positive(32)  # training batch: captions, each with its image
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    # experiments.evaluate only: score the run on this compositional benchmark instead of its test split
    compositional: str = one_of(("", "winoground", "sugarcrepe", "aro_relation", "aro_attribution"), default="")
    # the benchmark's folder (docs/evaluation.md: which files go where); "": <root>/winoground, sugarcrepe or aro
    compositional_root: str = ""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def check(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"invalid config key 'data.num_workers': must be >= 0, got {self.num_workers}")
        if self.balanced_langs and self.near_duplicate_batches:
            raise ConfigError(
                "invalid config keys 'data.balanced_langs' and 'data.near_duplicate_batches': both "
                "true, but language-balanced draws cannot keep near-duplicates together; set "
                "data.near_duplicate_batches=false"
            )
        if self.near_duplicate_from_epoch < 0:
            raise ConfigError(
                "invalid config key 'data.near_duplicate_from_epoch': must be >= 0, got "
                f"{self.near_duplicate_from_epoch}"
            )
        if self.near_duplicate_from_epoch and not self.near_duplicate_batches:
            raise ConfigError(
                "invalid config key 'data.near_duplicate_from_epoch': it delays "
                "data.near_duplicate_batches, which is false; set data.near_duplicate_batches=true"
            )
        if self.compositional_root and not self.compositional:
            raise ConfigError(
                "invalid config key 'data.compositional_root': it says where the benchmark of "
                "data.compositional is, which is not set"
            )


@dataclass
class ModelConfig:
    # a local folder, a hub id (needs network once), or the embedded MiniLM-L6
    backbone: str = EMBEDDED_BACKBONE
    pooling: str = one_of(("mean", "cls"), default="mean")  # bi-encoder pooling
    cross_pooling: str = one_of(("mean", "cls"), default="mean")  # pair states -> cross-encoder head
    max_text_len: int = positive(40)  # captions are truncated to this many tokens
    max_regions: int = positive(50)  # region tokens per image the model reads, at most
    # region boxes -> visual embedding: linear (the 6 geometry values) | fourier (also their sines and
    # cosines, which make positions such as "left of" easier to read; backbones/visual.py)
    box_encoding: str = one_of(("linear", "fourier"), default="linear")
    # how the cross-encoder scores the joint output (encoders/heads.py): halves, attend, mixed or pair pool
    # it; align also matches each word to its best region
    cross_head: str = one_of(("halves", "attend", "mixed", "pair", "align"), default="align")
    cross_head_hidden: int = 0  # 0: the backbone's hidden size
    dropout: float = 0.1  # dropout of the visual embedding and the cross head
    # late interaction: text and image run alone below this block, together from it on, so reranking
    # runs only the upper blocks on cached states (0: together in every block)
    join_layer: int = 3
    # late interaction: score pairs in up to this many groups of similar caption length, each padded
    # to its own longest (the same logits, less padding; 1: one batch)
    length_buckets: int = 4
    robust_join: bool = False  # train with a random m in 0..join_layer per batch (one model, any m)
    # shared: the cross-encoder runs the backbone's blocks | own: it runs its own copies of the blocks
    # from join_layer on (full fine-tuning)
    cross_blocks: str = one_of(("shared", "own"), default="shared")
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory, more time
    # dual encoders (CLIP, SigLIP): fusion layers of the cross-encoder over the towers' final states
    # (text self-attention, cross-attention to image patches, feed-forward)
    fusion_layers: int = 2
    # text_tower: copy the text tower's top layers | scratch
    fusion_init: str = one_of(("text_tower", "scratch"), default="text_tower")

    def check(self) -> None:
        if self.fusion_layers < 1:
            raise ConfigError("invalid config key 'model.fusion_layers': must be >= 1")
        if self.join_layer < 0:
            raise ConfigError("invalid config key 'model.join_layer': must be >= 0")
        if self.length_buckets < 1:
            raise ConfigError("invalid config key 'model.length_buckets': must be >= 1 (1: one padded batch)")
        if self.robust_join and self.join_layer == 0:
            raise ConfigError(
                "invalid config key 'model.robust_join': needs model.join_layer > 0 (the largest m drawn)"
            )
        if self.robust_join and self.cross_blocks == "own":
            raise ConfigError(
                "invalid config key 'model.robust_join': model.cross_blocks=own copies the blocks "
                "from model.join_layer on, so the join cannot move below it"
            )


@dataclass
class FusionConfig:
    """AdapterFusion (Pfeiffer et al., 2021) over adapter sets trained in earlier runs."""

    # set name -> an earlier run's adapters.safetensors (or run folder), whose "shared" set loads frozen;
    # the visual embedding and heads start from the first file's
    sets: dict[str, str] = field(default_factory=dict)
    temperature: float = 1.0  # softmax temperature of the fusion attention
    keep: int = 0  # > 0: after testing, prune to the `keep` most-activated sets (on val) and test again


@dataclass
class AdapterConfig:
    """Bottleneck adapters on a frozen backbone, with AdapterDrop (Rücklé et al., 2021)."""

    enabled: bool = False  # train adapters on a frozen backbone instead of fine-tuning it
    # pfeiffer: after the feed-forward block | houlsby: after attention and feed-forward
    kind: str = one_of(("pfeiffer", "houlsby"), default="pfeiffer")
    reduction_factor: int = 16  # bottleneck = hidden_size // reduction_factor
    # None: the kind's published default (pfeiffer: relu, houlsby: swish)
    non_linearity: Optional[str] = one_of((None, "relu", "gelu", "swish", "tanh"), default=None)
    residual: bool = True  # the adapter's output is added to its input (the usual bottleneck adapter)
    init_std: float = 0.01  # small weights, zero biases: close to the identity at the start
    leave_out: list[int] = field(default_factory=list)  # blocks that get no adapters
    shared: bool = True  # one set for both objectives | False: separate "bi" and "cross" sets
    drop: int = 0  # static AdapterDrop: no adapters in the first n blocks
    robust: bool = False  # robust AdapterDrop: a random n in 0..L-1 for every training batch
    eval_drop: Optional[int] = None  # n at validation/test time; None: `drop` (0 for robust training)
    # the parts that train, the rest frozen: adapters | fusion | heads (cross head or fusion layers,
    # temperature) | visual | layer_norms | backbone
    train: list[str] = field(default_factory=lambda: ["adapters", "heads", "visual"])
    fusion: FusionConfig = field(default_factory=FusionConfig)  # no sets: no fusion

    def check(self) -> None:
        unknown = set(self.train) - set(TRAINABLE_PARTS)
        if unknown:
            raise ConfigError(
                f"invalid config key 'adapters.train': unknown parts {sorted(unknown)}; "
                f"choose from {list(TRAINABLE_PARTS)}"
            )
        fusion = self.fusion
        if not fusion.sets:
            if fusion.keep:
                raise ConfigError(
                    "invalid config key 'adapters.fusion.keep': there is no fusion (adapters.fusion.sets)"
                )
            return
        if not self.enabled:
            raise ConfigError("invalid config key 'adapters.fusion.sets': a fusion needs adapters.enabled=true")
        if len(fusion.sets) < 2:
            raise ConfigError("invalid config key 'adapters.fusion.sets': a fusion needs at least 2 adapter sets")
        if "fusion" not in self.train:
            raise ConfigError(
                "invalid config key 'adapters.train': a fusion run must train the fusion "
                "(add 'fusion'; the loaded adapter sets stay frozen unless 'adapters' is listed)"
            )
        if not 0 <= fusion.keep <= len(fusion.sets):
            raise ConfigError(
                f"invalid config key 'adapters.fusion.keep': must be between 0 (no pruning) and "
                f"the {len(fusion.sets)} sets"
            )


@dataclass
class MiningConfig:
    """ANCE-style hard negatives (Xiong et al., 2021, as in Geigle et al., 2022): every few epochs the
    training corpus is re-encoded with the current bi-encoder, and each caption (image) then draws its
    negatives from its top_k nearest images (captions) other than its own."""

    enabled: bool = False  # train with mined hard negatives (the section's keys say how)
    start_epoch: int = 0  # first epoch trained with mined negatives, mined just before it (0: before any step)
    every_epochs: int = 1  # mine again every n epochs from start_epoch on
    top_k: int = 20  # each item's negatives are drawn from its top_k nearest non-matching items
    negatives: int = 1  # drawn per training item and direction (mined images per caption, captions per image)
    contrastive: bool = True  # the contrastive loss gets them as extra columns (t2i) and rows (i2t)
    # matching loss: add (beside the in-batch sampled negatives) | replace (instead of them) | none
    matching: str = one_of(("add", "replace", "none"), default="add")

    def check(self) -> None:
        for key, low in (("start_epoch", 0), ("every_epochs", 1), ("top_k", 1), ("negatives", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"invalid config key 'objective.mining.{key}': must be >= {low}")
        if self.negatives > self.top_k:
            raise ConfigError(
                f"invalid config key 'objective.mining.negatives': {self.negatives} drawn without "
                f"replacement from a top_k of {self.top_k}; must be <= objective.mining.top_k"
            )
        if self.enabled and not self.contrastive and self.matching == "none":
            raise ConfigError(
                "invalid config key 'objective.mining.enabled': no loss uses the mined negatives "
                "(objective.mining.contrastive=false and objective.mining.matching=none)"
            )


@dataclass
class ObjectiveConfig:
    mode: str = one_of(("bi", "cross", "joint"), default="joint")  # joint: one backbone, shared weights
    # sum: weighted sum per step | alternate: one objective per step
    schedule: str = one_of(("sum", "alternate"), default="sum")
    bi_weight: float = 1.0  # weight of the bi-encoder (contrastive) loss in the sum
    cross_weight: float = 1.0  # weight of the cross-encoder (matching) loss in the sum
    # bi-encoder loss: infonce (symmetric softmax over the batch) | sigmoid (SigLIP's loss on every
    # pair on its own; objectives/sigmoid.py)
    contrastive: str = one_of(("infonce", "sigmoid"), default="infonce")
    temperature: float = 0.07  # initial temperature: the logit scale starts at 1 / temperature
    learn_temperature: bool = True  # (and, for sigmoid, the bias)
    sigmoid_bias: float = -10.0  # initial bias of the sigmoid loss (SigLIP's: most cells are negatives)
    # where the loss's scale (and sigmoid bias) start: config (the two keys above) | model (the
    # checkpoint's trained logit_scale and logit_bias: CLIP, SigLIP)
    loss_init: str = one_of(("config", "model"), default="config")
    # negatives per positive and direction for the matching loss: sampled from the in-batch
    # bi-encoder similarities (hard) and uniformly from the rest of the batch (random)
    hard_negatives: int = 2
    # negatives per positive and direction drawn uniformly from the batch (see hard_negatives)
    random_negatives: int = 0
    # matching loss: bce (each pair on its own) | listwise (softmax over each query's positive and its
    # negatives; objectives/listwise.py)
    cross_loss: str = one_of(("bce", "listwise"), default="listwise")
    # foil captions per image (near misses false of it, CaptionRecord.foils, where the dataset has
    # them) added to the matching loss as i2t negatives; 0: none
    foil_negatives: int = 0
    # true: the contrastive loss also gets the foils, as extra i2t columns of their own image's row
    # (NegCLIP); needs objective.contrastive=infonce
    foil_contrastive: bool = False
    # true: train the cross logit as a correction added to the detached bi-encoder logit (the score that
    # eval.scoring=cross+bi reranks by), so that it learns what the bi-encoder gets wrong
    cross_residual: bool = False
    # > 0: add this times a loss (KL) that pulls the bi-encoder's softmax over each query's candidates
    # toward the detached cross-encoder's (objectives/distill.py); 0: off
    distill_weight: float = 0.0
    distill_temperature: float = positive(1.0)  # both softmaxes over logits / this
    # never use a true match as a negative where the dataset knows every image a caption is true of
    # (CaptionRecord.also); false: only the caption's own image counts as a match
    exact_relevance: bool = True
    # under data parallelism: draw the matching loss's negatives from every rank's items (the global
    # batch), not only this rank's
    global_negatives: bool = False
    mining: MiningConfig = field(default_factory=MiningConfig)
    # GradCache: > 0 encodes a training batch this many rows (or pairs) at a time, the loss still over
    # the whole batch: the activation memory of one chunk for one extra forward pass; 0: off
    grad_cache_chunk: int = 0

    def check(self) -> None:
        if self.hard_negatives < 0 or self.random_negatives < 0 or self.hard_negatives + self.random_negatives < 1:
            raise ConfigError(
                "invalid config key 'objective.hard_negatives': hard_negatives + random_negatives "
                "must be >= 1 (and neither negative)"
            )
        if self.foil_negatives < 0:
            raise ConfigError("invalid config key 'objective.foil_negatives': must be >= 0 (0: none)")
        if self.foil_contrastive and (self.contrastive != "infonce" or not self.foil_negatives):
            raise ConfigError(
                "invalid config key 'objective.foil_contrastive': needs objective.contrastive=infonce "
                "and objective.foil_negatives >= 1 (how many foils per image)"
            )
        if self.grad_cache_chunk < 0:
            raise ConfigError("invalid config key 'objective.grad_cache_chunk': must be >= 0 (0: off)")


@dataclass
class OptimConfig:
    lr: float = positive(1e-4)  # learning rate of the pretrained weights (the backbone)
    new_lr: float = positive(1e-3)  # learning rate of the new parts: adapters, visual embedding, heads, temperature
    weight_decay: float = 0.01  # AdamW's weight decay
    # share of the training steps with a linear learning-rate warm-up; then a linear decay to 0
    warmup_ratio: float = 0.1

    def check(self) -> None:
        if self.weight_decay < 0:
            raise ConfigError(f"invalid config key 'optim.weight_decay': must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(
                f"invalid config key 'optim.warmup_ratio': must be between 0 and 1 (a share of the "
                f"training steps), got {self.warmup_ratio}"
            )


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # the k of recall@k (R@k) reported
    # the depths tested as rerank@k: the cross-encoder reranks the bi-encoder's top k
    rerank_ks: list[int] = field(default_factory=lambda: [10, 20])
    cross_all: bool = True  # also score every test pair with the cross-encoder
    # the methods evaluated at each validation (bi, rerank@k, cross_all)
    val_methods: list[str] = field(default_factory=lambda: ["bi", "rerank@20"])
    # cross: rank by the cross logit alone (adding the cosine lowered rsum and twin scores on validation);
    # cross+bi: cross logit + bi_weight x bi cosine
    scoring: str = one_of(("cross", "cross+bi"), default="cross")
    # with scoring=cross+bi: the weight of the bi-encoder cosine; None: its trained logit scale
    # (1 / temperature), so that the two logits are added as their losses trained them
    bi_weight: Optional[float] = None
    batch_size: int = positive(128)  # encoding batch
    rerank_batch_size: int = positive(128)  # pairs per cross-encoder batch
    chunk_size: int = positive(4096)  # corpus rows per exact top-k chunk
    # exact: chunked torch top-k; faiss_*: pip install faiss-cpu
    index: str = one_of(("exact", "faiss_flat", "faiss_ivf"), default="exact")
    ivf_nlist: int = positive(1024)  # faiss_ivf: clusters (needs at least as many corpus items)
    ivf_nprobe: int = positive(16)  # faiss_ivf: clusters searched per query
    compile: bool = False  # run the encoders through torch.compile, inputs padded to a few length buckets
    monitor: str = "val/rerank@20/rsum"  # val/<one of val_methods>/<metric>: the best checkpoint maximises it

    def check(self) -> None:
        for key in ("ks", "rerank_ks"):
            if any(k < 1 for k in getattr(self, key)):
                raise ConfigError(f"invalid config key 'eval.{key}': every k must be >= 1")
        _check_methods("eval.val_methods", self.val_methods)


@dataclass
class TrainerConfig:
    max_epochs: int = 10  # -1: no epoch limit (max_steps)
    max_steps: int = 100  # optimizer steps; -1: no step limit (max_epochs)
    # Lightning's: training batches per epoch (a fraction, or a count); None: all
    limit_train_batches: Optional[float] = None
    # validate every N training steps; None: at each epoch's end
    val_check_interval: Optional[int] = 100
    accelerator: str = "auto"  # Lightning's: auto | cpu | gpu | ...
    devices: int = 1  # per node
    num_nodes: int = 1  # machines (data parallel training)
    strategy: str = "auto"  # Lightning's: auto | ddp | ddp_spawn | fsdp ...
    precision: str = "32-true"  # Lightning's: 32-true | bf16-mixed | 16-mixed | ...
    log_every_n_steps: int = 10  # training losses are logged every n steps
    gradient_clip_val: float = 1.0  # gradients are clipped to this total norm (0: no clipping)
    # write checkpoints/last.ckpt (the resume point) every N training steps; 0: at every validation
    checkpoint_every_n_steps: int = 0
    # "": start afresh | last: the run folder's newest last.ckpt or SLURM checkpoint, if any | a
    # checkpoint path; a resumed run goes on mid-epoch with the same batches and random state
    resume: str = ""

    def check(self) -> None:
        if self.checkpoint_every_n_steps < 0:
            raise ConfigError("invalid config key 'trainer.checkpoint_every_n_steps': must be >= 0 (0: off)")
        for key in ("max_steps", "max_epochs"):  # Lightning's -1: no limit
            value = getattr(self, key)
            if value < 1 and value != -1:
                raise ConfigError(f"invalid config key 'trainer.{key}': must be >= 1 (or -1: no limit), got {value}")
        interval = self.val_check_interval
        if interval is not None and interval < 1:
            raise ConfigError(
                f"invalid config key 'trainer.val_check_interval': must be >= 1 training steps "
                f"(or null: at each epoch's end), got {interval}"
            )


@dataclass
class WandbConfig:
    project: str = "retrerank"  # W&B project
    entity: Optional[str] = None  # W&B team or user; None: your default entity
    mode: str = one_of(("auto", "online", "offline"), default="auto")  # auto: offline unless an API key is set
    group: Optional[str] = None  # W&B run group; None: $WANDB_RUN_GROUP (the SLURM recipe sets the job id)


@dataclass
class SweepConfig:
    """AdapterDrop latency sweep after testing (needs adapters.enabled): for each number n of
    adapter-free lower blocks, training-step time, encoding throughput, rerank latency,
    parallel multi-set inference time and recall; sweep.csv + sweep.png in the run folder."""

    enabled: bool = False  # run the sweep after testing
    layers: list[int] = field(default_factory=list)  # the n to measure; empty: every n in 0..L (0 is always added)
    methods: list[str] = field(default_factory=lambda: ["bi", "rerank@20"])  # recall at each n
    parallel_sets: list[int] = field(default_factory=lambda: [2, 4, 8])  # K adapter sets run in parallel
    warmup: int = 1  # untimed runs before each timing
    repeats: int = 3  # timed runs; the median is reported
    batch_size: int = 32  # test items per encoding / parallel-inference timing
    rerank_queries: int = 8  # captions per rerank-latency timing
    # late interaction (model.join_layer > 0): also rerank latency and recall for every join layer
    # m in 0..L -> join_sweep.csv, join_sweep.png (no adapters needed)
    join: bool = False

    def check(self) -> None:
        _check_methods("sweep.methods", self.methods)
        if self.join and not any(Method.parse(m).kind == "rerank" for m in self.methods):
            raise ConfigError(
                "invalid config key 'sweep.methods': the join-layer sweep (sweep.join) times "
                "reranking: put a rerank@k in sweep.methods"
            )
        for key in ("repeats", "batch_size", "rerank_queries"):
            if getattr(self, key) < 1:
                raise ConfigError(f"invalid config key 'sweep.{key}': must be >= 1")
        if self.warmup < 0:
            raise ConfigError("invalid config key 'sweep.warmup': must be >= 0")
        if any(k < 1 for k in self.parallel_sets):
            raise ConfigError("invalid config key 'sweep.parallel_sets': every number of sets must be >= 1")
        if any(n < 0 for n in self.layers):
            raise ConfigError("invalid config key 'sweep.layers': every n must be >= 0")


@dataclass
class Config:
    seed: int = 0  # seed of the model's initialisation and the training order (data.synthetic.seed: the data)
    output_dir: str = "runs"  # run folders are created below this folder
    name: Optional[str] = None  # run folder name; default: a timestamp
    # csv: <run>/logs/metrics.csv (and curves.png) | wandb: see wandb.* | tensorboard: <run>/tensorboard/
    logger: str = one_of(("csv", "wandb", "tensorboard"), default="csv")
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def check(self) -> None:
        """What one section cannot check alone (every section's own check has run)."""
        objective = self.objective
        if objective.cross_residual and (self.eval.scoring != "cross+bi" or self.eval.bi_weight is not None):
            raise ConfigError(
                "invalid config key 'objective.cross_residual': the cross-encoder is trained to add to "
                "the bi-encoder's logit, so it must be evaluated so (eval.scoring=cross+bi, "
                "eval.bi_weight=null)"
            )
        if objective.cross_residual and objective.global_negatives:
            raise ConfigError(
                "invalid config key 'objective.cross_residual': not supported with "
                "objective.global_negatives (the other ranks' embeddings are not gathered)"
            )
        _check_monitor(self)
        # checked at load time: a bad sweep setting would otherwise surface only after training
        if self.sweep.join and self.model.join_layer == 0:
            raise ConfigError(
                "invalid config key 'sweep.join': the join-layer sweep needs a late-interaction model "
                "(model.join_layer > 0)"
            )
        if self.sweep.join and self.model.cross_blocks == "own":
            raise ConfigError("invalid config key 'sweep.join': model.cross_blocks=own joins at model.join_layer only")
        if self.model.cross_blocks == "own" and self.adapters.enabled:
            raise ConfigError(
                "invalid config key 'model.cross_blocks': own blocks are fully fine-tuned copies; "
                "with adapters.enabled=true use adapters.shared=false (separate adapter sets) instead"
            )
        if self.sweep.enabled and not self.adapters.enabled:
            raise ConfigError("invalid config key 'sweep.enabled': the AdapterDrop sweep needs adapters.enabled=true")


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, validated; returns a typed Config. A config to
    train or benchmark with: the test-side data.compositional is refused here (experiments.evaluate sets
    it on a run's stored config, which goes through `from_dict`)."""
    cfg = OmegaConf.structured(Config)
    try:
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            data = path.read_bytes()
            try:
                diff = OmegaConf.load(io.StringIO(data.decode("utf-8-sig")))
            except UnicodeDecodeError as err:
                line = data.count(b"\n", 0, err.start) + 1
                raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte offset {err.start})") from None
            except yaml.YAMLError as err:  # syntax: yaml's marks give where (0-based line and column)
                mark = getattr(err, "problem_mark", None)
                where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
                if context and start:
                    problem += f" ({context} at line {start.line + 1}, column {start.column + 1})"
                raise ConfigError(f"{where}: invalid YAML: {problem}") from None
            if not isinstance(diff, DictConfig):
                raise ConfigError(f"{path}: a config file is a mapping of keys to values, not a list")
            cfg = OmegaConf.merge(cfg, diff)
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        where = f" in {path}" if path is not None else ""
        message = str(err.msg).splitlines()[0]
        raise ConfigError(f"invalid config key {err.full_key!r}{where}: {message}") from None
    cfg = check(OmegaConf.to_object(cfg))
    if cfg.data.compositional:  # a trained run is scored on a benchmark afterwards; training reads no benchmark
        raise ConfigError(
            "invalid config key 'data.compositional': a test-side key, read by experiments.evaluate only: "
            f"python -m experiments.evaluate RUN_DIR data.compositional={cfg.data.compositional}"
        )
    return cfg


def check(cfg: Config) -> Config:
    """Every field's allowed values (`one_of`, `positive`) section by section, then each section's
    own `check`, inner sections first, the whole config's (across sections) last. Returns cfg."""
    sections = list(_sections(cfg))
    for section, prefix in sections:
        for f in fields(section):
            key, value = prefix + f.name, getattr(section, f.name)
            if "choices" in f.metadata:
                check_choice(key, value)
            if f.metadata.get("positive") and value <= 0:
                raise ConfigError(f"invalid config key {key!r}: must be > 0, got {value}")
    for section, _ in sections:
        if hasattr(section, "check"):
            section.check()
    return cfg


def choices(key: str) -> tuple[str, ...]:
    """The values the schema allows for a dotted key such as "data.setup" (its field's `one_of`)."""
    *path, name = key.split(".")
    section = Config
    for part in path:  # a section's field makes its dataclass by default_factory
        section = {f.name: f for f in fields(section)}[part].default_factory
    return {f.name: f for f in fields(section)}[name].metadata["choices"]


def check_choice(key: str, value: Any) -> None:
    """Stop, naming the key, unless `value` is one of `choices(key)`: also for code that gets a
    section built without `load`."""
    allowed = choices(key)
    if value not in allowed:
        raise ConfigError(f"invalid config key {key!r}: {value!r} is not one of {list(allowed)}")


def _sections(section: Any, prefix: str = "") -> Iterator[tuple[Any, str]]:
    """(section, its key prefix) of every dataclass in the tree, inner ones before their parent."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_dataclass(value):
            yield from _sections(value, f"{prefix}{f.name}.")
    yield section, prefix


def _check_methods(key: str, methods: list[str]) -> None:
    """Retrieval method names are parsed here, once (retrerank.retrieval.methods): a typo stops the
    run at load, not after training."""
    for text in methods:
        try:
            Method.parse(text)
        except ValueError as err:
            raise ConfigError(f"invalid config key {key!r}: {err}") from None


def _check_monitor(cfg: Config) -> None:
    monitor, form = cfg.eval.monitor, "val/<method>/<metric>, e.g. val/rerank@20/rsum"
    parts = monitor.split("/")
    if len(parts) != 3 or parts[0] != "val":
        raise ConfigError(f"invalid config key 'eval.monitor': {monitor!r} is not of the form {form}")
    _, method, metric = parts
    try:
        Method.parse(method)
    except ValueError as err:
        raise ConfigError(f"invalid config key 'eval.monitor': {err}") from None
    # as retrerank.build.evaluation_methods: a bi-only run validates "bi" alone (it has no cross-encoder)
    validated = [m for m in cfg.eval.val_methods if cfg.objective.mode != "bi" or m == "bi"]
    if method not in validated:
        raise ConfigError(
            f"invalid config key 'eval.monitor': method {method!r} of {monitor!r} is not validated; "
            f"the validation methods are {validated} (eval.val_methods, objective.mode={cfg.objective.mode})"
        )
    names = metric_names(cfg.eval.ks)
    if metric not in names:
        raise ConfigError(
            f"invalid config key 'eval.monitor': no metric {metric!r} in {monitor!r}; with "
            f"eval.ks={list(cfg.eval.ks)} a method has {names}"
        )


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(data: dict) -> Config:
    """A Config from a plain dict (e.g. the one stored in a checkpoint), validated like `load`."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), data)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid config key {err.full_key!r}: {str(err.msg).splitlines()[0]}") from None
    return check(OmegaConf.to_object(cfg))
