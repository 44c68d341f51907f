"""Retrieval methods as a type: one parser, canonical text back, clear errors."""

import pytest

from retrerank.retrieval.methods import Method, first_rerank_depth


@pytest.mark.parametrize(
    "text, kind, depth",
    [
        ("bi", "bi", None),
        ("rerank@1", "rerank", 1),
        ("rerank@20", "rerank", 20),
        ("cross_all", "cross_all", None),
    ],
)
def test_parse_gives_kind_and_depth_and_str_gives_the_text_back(text, kind, depth):
    method = Method.parse(text)
    assert (method.kind, method.depth) == (kind, depth)
    assert str(method) == text and Method.parse(str(method)) == method


@pytest.mark.parametrize(
    "text",
    [
        "rerank@2O",
        "rerank@0",
        "rerank@",
        "rerank",
        "rerank@-1",
        "rerank@020",
        "rerank@\u0665",
        "Rerank@5",
        " bi",
        "bi ",
        "cross",
        "cross_all@5",
        "rerank@5/rsum",
        "",
    ],
)
def test_anything_else_is_refused_naming_the_text_and_the_forms(text):
    with pytest.raises(
        ValueError,
        match=r"unknown retrieval method .*expected 'bi', 'rerank@<k>' with k >= 1, "
        r"or 'cross_all'",
    ) as err:
        Method.parse(text)
    assert repr(text) in str(err.value)


def test_a_method_is_consistent_however_it_is_built():
    assert Method.rerank(5) == Method.parse("rerank@5") and str(Method.rerank(5)) == "rerank@5"
    for kind, depth in (("rerank", None), ("rerank", 0), ("bi", 3), ("cross_all", 1), ("fancy", None)):
        with pytest.raises(ValueError):
            Method(kind, depth)


def test_order_and_first_rerank_depth():
    methods = ["cross_all", "rerank@20", "bi", "rerank@3"]
    assert sorted(methods, key=lambda m: Method.parse(m).sort_key()) == ["bi", "rerank@3", "rerank@20", "cross_all"]
    assert first_rerank_depth(methods) == 20 and first_rerank_depth(["bi", "cross_all"]) is None
