"""`--help` (every config key: type, default, comment) and `--cfg` (the resolved config as YAML) for
`python -m experiments.run`; `keys_text` lists a subset of the keys for other entry points' help.

The key list is read from the schema itself (dataclasses.fields, nested sections recursed) and the
comments from config.py's source (ast for the fields' lines, tokenize for the comments), so it cannot
go stale. Why not Hydra's `--help`/`--cfg job`: Hydra prints the composed YAML, not the fields' comments,
and adopting it would change the entry point's override grammar and who owns the run folder.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from dataclasses import Field, fields, is_dataclass
from functools import cache
from typing import Any

from retrerank.cli import HELP_FLAGS
from retrerank.cli import HELP_WIDTH as WIDTH
from retrerank.config import Config, ConfigError, load, to_yaml

CFG_FLAG = "--cfg"


def split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """(config file or None, key=value overrides): the first argument is a file unless it has an '='."""
    unknown = [a for a in argv if a.startswith("-") and "=" not in a]
    if unknown:  # otherwise "--foo" would be read as a config file name
        raise ConfigError(f"unknown option {unknown[0]!r}: the options are --help, --cfg and --debug")
    path = argv[0] if argv and "=" not in argv[0] else None
    return path, argv[1:] if path else argv


def answer_flags(argv: list[str], doc: str = "", prog: str = "python -m experiments.run") -> bool:
    """Print the help (usage, then `doc`, the options and every config key) or the resolved config if
    argv asks; True: it did, so the caller returns without running (and without a run folder)."""
    if any(a in HELP_FLAGS for a in argv):
        usage = f"usage: {prog} [config.yaml] [key=value ...] [--cfg] [--debug] [--help]"
        _write("\n\n".join(part for part in (usage, doc.strip(), help_text()) if part) + "\n")
        return True
    if CFG_FLAG in argv:
        _write(to_yaml(load(*split_argv([a for a in argv if a != CFG_FLAG]))))
        return True
    return False


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `--help | head`: the reader has gone; no traceback at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def help_text() -> str:
    lines = [
        "options:",
        "  --help, -h  this help: what the command does, its options and every config key",
        "  --cfg       print the resolved config (defaults <- config.yaml <- key=value) as YAML; runs nothing",
        "  --debug     a config or data error shows its traceback",
        "",
        "config keys, set as key=value or in a YAML file (key: type = default, then what it does):",
        "",
        keys_text(),
    ]
    return "\n".join(lines)


def keys_text(prefixes: tuple[str, ...] = ("",)) -> str:
    """Every config key whose dotted name starts with one of `prefixes` (all by default), by section:
    `key: type = default  # comment` where that fits in WIDTH columns, else the comment wrapped below."""
    lines = []
    for prefix, section, about in sections(Config):
        keys = [f for f in fields(section) if not _section_type(f) and (prefix + f.name).startswith(prefixes)]
        if not keys:
            continue
        title = f"[{prefix.rstrip('.') or 'top level'}]" + (f"  {about}" if about else "")
        lines += [""] + _wrap(title, "", " " * 4)
        comments = field_comments(section)
        for f in keys:
            head, comment = f"  {prefix}{f.name}: {type_text(f)} = {value_text(default(f))}", comments.get(f.name)
            inline = f"{head}  # {comment}"
            lines += [head] if not comment else [inline] if len(inline) <= WIDTH else [head] + _wrap(comment, " " * 6)
    return "\n".join(lines[1:])


def _wrap(text: str, indent: str, subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent if subsequent is None else subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def sections(cls: type, prefix: str = "", about: str = "") -> Iterator[tuple[str, type, str]]:
    """(key prefix, dataclass, description) of every section, each before the sections inside it."""
    doc = _class_node(cls)[1]
    yield prefix, cls, " — ".join(part for part in (about, doc) if part)
    comments = field_comments(cls)
    for f in fields(cls):
        inner = _section_type(f)
        if inner:
            yield from sections(inner, f"{prefix}{f.name}.", comments.get(f.name, ""))


def leaf_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """(dotted key, field) of every setting that is not itself a section."""
    for f in fields(cls):
        inner = _section_type(f)
        if inner:
            yield from leaf_keys(inner, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


def default(f: Field) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


def value_text(value: Any) -> str:
    """As on the command line: JSON, which YAML reads the same (null, true, "", [1, 5])."""
    return json.dumps(value)


def type_text(f: Field) -> str:
    if "choices" in f.metadata:
        return " | ".join(choice if choice else json.dumps(choice) for choice in f.metadata["choices"])  # "", null
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return text + (" > 0" if f.metadata.get("positive") else "")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment: the comment lines just above it, then the one on its line(s)."""
    node, _ = _class_node(cls)
    comments = _comments(inspect.getsourcefile(cls))
    out = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        above, line = [], item.lineno - 1
        while line in comments and comments[line][1]:  # whole-line comments directly above
            above.insert(0, comments[line][0])
            line -= 1
        inline = [
            comments[n][0] for n in range(item.lineno, item.end_lineno + 1) if n in comments and not comments[n][1]
        ]
        out[item.target.id] = "; ".join(part for part in (" ".join(above), " ".join(inline)) if part)
    return out


def _section_type(f: Field) -> type | None:
    """The dataclass a section field builds (as config.choices finds it), else None."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and is_dataclass(factory) else None


@cache
def _class_node(cls: type) -> tuple[ast.ClassDef, str]:
    """cls's node in its module's source (line numbers as in the file) and its docstring ("" if none)."""
    tree = _tree(inspect.getsourcefile(cls))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    return node, " ".join((ast.get_docstring(node) or "").split())


@cache
def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as file:
        return ast.parse(file.read())


@cache
def _comments(path: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether the comment is the whole line)."""
    out = {}
    with open(path, encoding="utf-8") as file:
        for tok in tokenize.generate_tokens(file.readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = (tok.string.lstrip("#").strip(), not tok.line[: tok.start[1]].strip())
    return out
