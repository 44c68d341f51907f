"""Retrieval methods as a type: "bi", "rerank@<k>" and "cross_all".

Configs and metric names keep the text form (`str(method)`, e.g. `test/rerank@20/rsum`); code
that needs a method's kind or rerank depth gets them from `Method.parse`, the one parser.
Only the canonical text parses ("rerank@020" does not), so a metric is named as the config spells it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

KINDS = ("bi", "rerank", "cross_all")  # also the order in which tables list them
FORMS = "'bi', 'rerank@<k>' with k >= 1, or 'cross_all'"
_RERANK = re.compile(r"rerank@([1-9][0-9]*)")


@dataclass(frozen=True)
class Method:
    """bi: bi-encoder search alone; rerank: its top `depth` rescored by the cross-encoder;
    cross_all: the cross-encoder scores every pair."""

    kind: Literal["bi", "rerank", "cross_all"]
    depth: int | None = None  # rerank only: how many bi-encoder candidates are rescored

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown retrieval method kind {self.kind!r}; expected one of {list(KINDS)}")
        if self.kind == "rerank":
            if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
                raise ValueError(f"a rerank method needs a depth k >= 1, got {self.depth!r}")
        elif self.depth is not None:
            raise ValueError(f"method {self.kind!r} has no depth, got {self.depth!r}")

    @classmethod
    def parse(cls, text: str) -> Method:
        """The method `text` names; ValueError naming the text and the allowed forms otherwise."""
        if text in ("bi", "cross_all"):
            return cls(text)
        match = _RERANK.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"unknown retrieval method {text!r}; expected {FORMS}")
        return cls("rerank", int(match.group(1)))

    @classmethod
    def rerank(cls, depth: int) -> Method:
        return cls("rerank", depth)

    def __str__(self) -> str:
        return f"rerank@{self.depth}" if self.kind == "rerank" else self.kind

    def sort_key(self) -> tuple[int, int]:
        """bi, then rerank by depth, then cross_all."""
        return KINDS.index(self.kind), self.depth or 0


def first_rerank_depth(methods: Iterable[str | Method]) -> int | None:
    """The depth of the first rerank method (the one the sweeps time), None without one."""
    return next((m.depth for m in map(Method.parse, map(str, methods)) if m.kind == "rerank"), None)
