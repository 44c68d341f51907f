"""Adapter placement against AdapterHub's published configurations, written out by hand.

In a post-LayerNorm block's output sub-block (x: its input, f = dropout(dense(.)), LN: the block's
own LayerNorm, A = up(act(down(.)))):
- seq_bn (pfeiffer): h = LN(f + x), y = LN(f + x + A(h)), feed-forward sub-block only, relu;
- double_seq_bn (houlsby): y = LN(x + f + A(f)) after attention and feed-forward, swish.
The tests compare each adapted block's output with these formulas on a tiny BERT whose adapters
carry fixed, far-from-identity weights, and the parameter counts with the library's on BERT-base.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from retrerank.adapters.inject import add_adapter_set
from retrerank.adapters.switch import Fuse
from retrerank.backbones.single_stream import SingleStreamBackbone
from retrerank.config import AdapterConfig, ConfigError, load

ACT = {"relu": F.relu, "swish": F.silu, "gelu": F.gelu}


@pytest.fixture
def backbone(tiny_bert_dir):
    torch.manual_seed(0)
    return SingleStreamBackbone.from_pretrained(tiny_bert_dir, feature_dim=8).eval()


def fixed(adapters, seed=1):
    """Deterministic weights, far from the identity, so that the placement shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in adapters:
            for p in adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def A(adapter, h, act):
    return F.linear(act(F.linear(h, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)


def run(layer, x):
    out = layer(x)
    return out[0] if isinstance(out, tuple) else out


def published_block(layer, x, adapters, kind, act):
    """One BertLayer (eval mode, no mask) with the published placement, from its own weights."""
    attention = layer.attention
    self_attn = attention.self
    b, t, h = x.shape
    heads = self_attn.num_attention_heads
    q, k, v = (
        lin(x).view(b, t, heads, h // heads).transpose(1, 2)
        for lin in (self_attn.query, self_attn.key, self_attn.value)
    )
    ctx = torch.softmax(q @ k.transpose(-1, -2) / (h // heads) ** 0.5, -1) @ v
    ctx = ctx.transpose(1, 2).reshape(b, t, h)
    out = attention.output
    f = out.dense(ctx)
    if kind == "houlsby":
        att = out.LayerNorm(x + f + A(adapters["attention"], f, act))
    else:
        att = out.LayerNorm(f + x)
    ffn = layer.output
    f = ffn.dense(layer.intermediate(att))
    if kind == "houlsby":
        return ffn.LayerNorm(att + f + A(adapters["ffn"], f, act))
    h_ = ffn.LayerNorm(f + att)
    return ffn.LayerNorm(f + att + A(adapters["ffn"], h_, act))


@pytest.mark.parametrize("kind,act", [("pfeiffer", "relu"), ("houlsby", "swish")])
def test_each_kind_computes_the_published_formula_with_its_default_non_linearity(backbone, kind, act):
    added = add_adapter_set(backbone, "a", AdapterConfig(kind=kind, reduction_factor=4))
    fixed(added)
    layer = backbone.layers[1]
    sites = {"attention": layer.attention.output, "ffn": layer.output}
    adapters = {name: site.adapters["a"] for name, site in sites.items() if hasattr(site, "adapters")}
    assert sorted(adapters) == (["attention", "ffn"] if kind == "houlsby" else ["ffn"])
    assert all(type(a.act).__name__ == {"relu": "ReLU", "swish": "SiLU"}[act] for a in adapters.values())
    x = torch.randn(2, 5, backbone.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with backbone.adapter_switch.use("a"):
            ours = run(layer, x)
        expected = published_block(layer, x, adapters, kind, ACT[act])
        plain = run(layer, x)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()
    assert (ours - plain).abs().max() > 0.1  # the adapters matter at these weights


def test_the_two_placements_differ_and_an_explicit_non_linearity_overrides_the_default(backbone):
    pfeiffer = add_adapter_set(backbone, "p", AdapterConfig(kind="pfeiffer", reduction_factor=4))
    gelu = add_adapter_set(backbone, "g", AdapterConfig(kind="houlsby", reduction_factor=4, non_linearity="gelu"))
    assert {type(a.act).__name__ for a in pfeiffer} == {"ReLU"} and {type(a.act).__name__ for a in gelu} == {"GELU"}
    assert all(a.ln_before for a in pfeiffer) and not any(a.ln_before for a in gelu)
    fixed(pfeiffer)
    layer = backbone.layers[0]
    adapter = layer.output.adapters["p"]
    x = torch.randn(2, 4, backbone.hidden_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        inner = layer.intermediate(layer.attention(x)[0])
        f = layer.output.dense(inner)
        LN = layer.output.LayerNorm
        houlsby_place = LN(x + f + A(adapter, f, F.relu))
        with backbone.adapter_switch.use("p"):
            ours = layer.output(inner, x)
    assert torch.allclose(ours, LN(f + x + A(adapter, LN(f + x), F.relu)), atol=1e-5)
    assert (ours - houlsby_place).abs().max() > 0.1


def test_dropped_or_left_out_blocks_run_the_plain_block(backbone):
    fixed(add_adapter_set(backbone, "p", AdapterConfig(kind="pfeiffer", reduction_factor=4, leave_out=[1])))
    text = backbone.tokenize(["a red circle"])
    with torch.no_grad():
        plain, _ = backbone.encode_text(text)
        with backbone.adapter_switch.use("p", drop=1):  # block 0 dropped, block 1 left out
            dropped, _ = backbone.encode_text(text)
        with backbone.adapter_switch.use("p"):
            adapted, _ = backbone.encode_text(text)
    assert torch.equal(dropped, plain) and (adapted - plain).abs().max() > 0.1


def test_a_fusion_over_sets_of_both_placements_is_refused_with_a_clear_message(backbone):
    add_adapter_set(backbone, "p", AdapterConfig(kind="pfeiffer", reduction_factor=4))
    add_adapter_set(backbone, "h", AdapterConfig(kind="houlsby", reduction_factor=4))
    from retrerank.adapters.fusion import add_fusion

    fuse = add_fusion(backbone, "f", ["p", "h"])
    assert fuse == Fuse("f", ("p", "h"))
    with pytest.raises(ValueError, match="mix the pfeiffer and houlsby placements"):
        with torch.no_grad(), backbone.adapter_switch.use(fuse):
            backbone.encode_text(backbone.tokenize(["a red circle"]))


def test_parameter_counts_equal_the_reference_library_on_bert_base():
    def added(cfg):
        backbone = SingleStreamBackbone(BertModel(BertConfig()), None, feature_dim=2048)
        return sum(p.numel() for a in add_adapter_set(backbone, "t", cfg) for p in a.parameters())

    assert added(AdapterConfig(kind="pfeiffer", reduction_factor=16)) == 894_528
    assert added(AdapterConfig(kind="houlsby", reduction_factor=16)) == 1_789_056
    assert added(AdapterConfig(kind="pfeiffer", reduction_factor=16, leave_out=[0, 1, 2, 3, 4])) == 521_808


def test_an_unknown_non_linearity_stops_at_load_naming_the_key():
    with pytest.raises(ConfigError, match="adapters.non_linearity"):
        load(None, ["adapters.non_linearity=sigmoid"])
    assert load(None, []).adapters.non_linearity is None
