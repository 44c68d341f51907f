"""Where adapters attach in each encoder family, and the wrappers that run them.

A *site* is a sub-module of a transformer block whose output an adapter transforms:

- post-LayerNorm blocks (BERT family, BLIP's text encoder): the block's output sub-modules
  (dense -> dropout -> LayerNorm(x + residual)) of attention and feed-forward. `AdaptedSite`
  places each adapter as AdapterHub's `adapters` library does: Houlsby's after the dropout and
  before the residual LayerNorm, Pfeiffer's (feed-forward site only) on the LayerNorm of the
  sum, adding to the sum before the LayerNorm runs again; it reuses the site's own layers.
- pre-LayerNorm blocks (CLIP, SigLIP and BLIP vision towers): the attention and MLP modules,
  whose output is added to the residual stream by the block. `AdaptedOutput` runs the adapter
  on that output, before the residual sum, for either kind (these blocks have no LayerNorm
  after the sum for Pfeiffer's placement to reuse).

Each backbone says which of its blocks take adapters, where and at which width
(`backbone.adapter_blocks()`, a list of `Block`); no model code is copied.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from retrerank.adapters.switch import Active, AdapterSwitch, Fuse

PLACEMENTS = {"pfeiffer": ("ffn",), "houlsby": ("attention", "ffn")}
# attribute paths of the sites inside one block, by block layout
POST_LN = {"attention": "attention.output", "ffn": "output"}
PRE_LN = {"attention": "self_attn", "ffn": "mlp"}


class Block(NamedTuple):
    """A block that takes adapters: its AdapterDrop index, the module, its width, its sites and layout."""

    index: int  # AdapterDrop removes adapters from blocks with index < n (each tower counts from 0)
    module: nn.Module
    hidden_size: int
    sites: dict[str, str]  # POST_LN or PRE_LN
    pre_ln: bool


def site_paths(sites: dict[str, str], kind: str) -> dict[str, str]:
    if kind not in PLACEMENTS:
        raise ValueError(f"adapters.kind={kind!r}; choose from {sorted(PLACEMENTS)}")
    return {site: sites[site] for site in PLACEMENTS[kind]}


class _Adapted(nn.Module):
    """The adapters and fusions of one site; which one runs is the switch's runtime state.

    `adapt` runs at every site of every forward, so its common cases come first and cost no more
    than they must: no adapters (None) returns at once; one active set is one look-up in the plain
    dicts behind `self.adapters` (read through `_modules` each time, never cached, so always the
    current ones, but without nn.Module.__getattr__ and ModuleDict's methods), then the adapter's
    own arithmetic (BottleneckAdapter.forward). A fusion or parallel sets take the general path.
    """

    def __init__(self, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__()
        self.layer = layer
        self.hidden_size = hidden_size
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self._switch = [switch]  # a list: not a submodule, shared by every site

    def adapt(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The active adapters (or fusion) applied to hidden_states, each adding to `residual`
        (hidden_states when None); without one at this site: `residual`."""
        active = self._switch[0].active_at(self.layer)
        unchanged = hidden_states if residual is None else residual
        if active is None:
            return unchanged
        if isinstance(active, str):
            adapter = self._modules["adapters"]._modules.get(active)  # None: the set leaves this layer out
            return unchanged if adapter is None else _run(adapter, hidden_states, residual)
        if isinstance(active, Fuse):
            fusion = self._modules["fusions"]._modules.get(active.name)  # None: not all its sets are here
            if fusion is None:
                return unchanged
            return fusion(hidden_states, [_run(self.adapters[name], hidden_states, residual) for name in active.sets])
        # parallel sets: the batch holds one copy of the input per set, in order
        chunks = hidden_states.chunk(len(active))
        residuals = chunks if residual is None else residual.chunk(len(active))
        return torch.cat(
            [
                _run(self.adapters[name], chunk, res) if name in self.adapters else res
                for name, chunk, res in zip(active, chunks, residuals)
            ]
        )

    def ln_before(self, active: Active) -> bool:
        """Whether the active sets here take Pfeiffer's placement (their `ln_before`; a module put
        here by hand takes Houlsby's); one site runs sets of one placement at a time."""
        adapters = self._modules["adapters"]._modules
        if isinstance(active, str):  # the common case: one look-up
            return getattr(adapters.get(active), "ln_before", False)
        names = active.sets if isinstance(active, Fuse) else active or ()
        kinds = {getattr(adapters[name], "ln_before", False) for name in names if name in adapters}
        if len(kinds) > 1:
            raise ValueError(
                f"adapter sets {list(names)} mix the pfeiffer and houlsby placements at block "
                f"{self.layer}: fuse or run in parallel sets of one adapters.kind"
            )
        return kinds == {True}


def _run(adapter: nn.Module, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """adapter(x), or adapter(x, residual) for Pfeiffer's placement (a module put at a site by hand
    may take x alone)."""
    return adapter(x) if residual is None else adapter(x, residual)


class AdaptedSite(_Adapted):
    """A post-LayerNorm block output (x: the sub-block input, f = dropout(dense(.)), LN: the
    block's own LayerNorm, A = up(act(down(.)))), as AdapterHub's configurations place adapters:

    - houlsby (`double_seq_bn`), ln_before False: LN(x + f + A(f));
    - pfeiffer (`seq_bn`), ln_before True: h = LN(f + x), then LN(f + x + A(h)): the block's
      LayerNorm runs twice, the adapter reads the normalised sum and adds to the raw one.

    Without an active adapter here (none, dropped, or left out) it is the plain LN(f + x).
    """

    def __init__(self, site: nn.Module, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__(layer, switch, hidden_size)
        for part in ("dense", "dropout", "LayerNorm"):
            if not hasattr(site, part):
                raise ValueError(f"cannot attach adapters to {type(site).__name__}: it has no {part!r}")
        self.dense, self.dropout, self.LayerNorm = site.dense, site.dropout, site.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        f = self.dropout(self.dense(hidden_states))
        if self.ln_before(self._switch[0].active_at(self.layer)):
            summed = f + input_tensor
            return self.LayerNorm(self.adapt(self.LayerNorm(summed), summed))
        return self.LayerNorm(self.adapt(f) + input_tensor)  # no adapter here: the plain LN(f + x)


class AdaptedOutput(_Adapted):
    """A pre-LayerNorm sub-module (attention or MLP) whose output, or the first element of its
    output tuple, goes through the adapter before the block adds it to the residual stream."""

    def __init__(self, site: nn.Module, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__(layer, switch, hidden_size)
        self.inner = site

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.adapt(out[0]), *out[1:])
        return self.adapt(out)


def wrap_site(site: nn.Module, block: Block, switch: AdapterSwitch) -> _Adapted:
    kind = AdaptedOutput if block.pre_ln else AdaptedSite
    return kind(site, block.index, switch, block.hidden_size)


def is_adapted(module: nn.Module) -> bool:
    return isinstance(module, _Adapted)
