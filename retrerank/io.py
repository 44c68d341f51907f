"""Atomic file writes: a reader never sees a half-written file, an old one survives a crash."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | Path, text: bool = False) -> Iterator[IO]:
    """A file object open for writing (binary, or UTF-8 text if `text`) that replaces `path`
    only when the block exits normally; on an error the old file, if any, stays as it was.

    Writes go to a temporary file next to `path`, which os.replace moves into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb", encoding="utf-8" if text else None) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with atomic_file(path) as f:
        f.write(data)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_file(path, text=True) as f:
        f.write(text)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
