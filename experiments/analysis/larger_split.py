"""A larger synthetic test split for a finished run (the analysis tools' --test-size)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from retrerank.errors import UserInputError


def larger_test_split(run: Path, cfg, size: int):
    """The run's test split drawn again with data.synthetic.n_test=size: its own random stream, so
    train and val are unchanged, and R@1 moves in steps of 100/(5 size) (t2i) and 100/size (i2t)."""
    from retrerank.data.synthetic import load_synthetic

    if cfg.data.dataset != "synthetic":
        raise UserInputError(f"{run}: --test-size needs the synthetic data (data.dataset={cfg.data.dataset})")
    if size < 1:
        raise UserInputError(f"--test-size {size}: give at least 1 image")
    syn = dataclasses.replace(cfg.data.synthetic, n_test=size)
    return load_synthetic(syn, cfg.data.root)["test"].filter_languages(cfg.data.test_langs)
