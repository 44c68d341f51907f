"""Render the results tables of the README and the handbook from the evidence files under docs/results.

    python -m experiments.report            fill every render block of README.md and docs/**/*.md
    python -m experiments.report --check    change nothing; exit 1 naming the page, line and number
                                            wherever a page differs from what it would render
    python -m experiments.report --collect RUN_DIR OUT.json
                                            a finished run folder as an evidence file (its command, commit,
                                            date, machine, metrics and wall time)

A render block is an HTML comment holding a YAML mapping, the generated text, and `<!-- /render -->`:

    <!-- render {kind: seeds, files: docs/results/default_run/100steps_cpu_seed*.json} -->
    ...generated...
    <!-- /render -->

A block whose opening comment ends its line is rendered on lines of its own; otherwise it is inline
(one number inside a sentence). Kinds: run, seeds, table, value, source, config_reference (see
KINDS below and the handbook's results page). `--check` also refuses a decimal number typed into
a Markdown table outside a block: a measured number is never typed by hand.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from experiments.aggregate import aggregate
from retrerank.cli import argument_parser, run_main
from retrerank.errors import UserInputError
from retrerank.evidence import EvidenceError, expand, load_records, lookup, metrics_of, run_evidence
from retrerank.io import write_json_atomic, write_text_atomic
from retrerank.report import format_markdown, format_table, methods_in, titles

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- render(?P<spec>.*?)-->(?P<body>.*?)<!-- /render -->", re.S)
TYPED_NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
TOKEN = re.compile(r"[^\s|`]+")
SEED_COLUMNS = ["i2t_r1", "t2i_r1", "rsum", "i2t_map_at_r", "t2i_map_at_r"]


def pages(root: Path) -> list[Path]:
    """README.md and every Markdown page of the handbook."""
    return [p for p in [root / "README.md"] if p.is_file()] + sorted((root / "docs").rglob("*.md"))


def _one(spec: dict, root: Path) -> dict[str, Any]:
    paths = expand(spec.get("file") or spec.get("files") or [], root)
    if len(paths) != 1:
        raise EvidenceError(f"kind {spec['kind']} reads one file, got {len(paths)}")
    records = load_records(paths[0])
    if len(records) != 1:
        raise EvidenceError(f"{paths[0]}: kind {spec['kind']} reads a one-record .json file")
    return records[0]


def _only(metrics: dict[str, float], methods: list[str] | None) -> dict[str, float]:
    if not methods:
        return metrics
    return {k: v for k, v in metrics.items() if k.count("/") < 2 or k.split("/")[1] in methods}


def _fmt(value: Any, spec: str | None) -> str:
    if value is None:
        return "—"
    if spec and isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def render_run(spec: dict, root: Path) -> str:
    metrics = _only(metrics_of(_one(spec, root)), spec.get("methods"))
    stage = spec.get("stage", "test")
    if spec.get("style") == "text":
        return "```text\n" + format_table(metrics, stage) + "\n```"
    return format_markdown(metrics, stage).rstrip("\n")


def render_seeds(spec: dict, root: Path) -> str:
    runs = [
        _only(metrics_of(_one({"kind": "seeds", "file": str(p)}, root)), spec.get("methods"))
        for p in expand(spec["files"], root)
    ]
    stage = spec.get("stage", "test")
    summary = aggregate(runs, stage)
    columns = spec.get("columns", SEED_COLUMNS)
    header = titles(columns)
    lines = [f"| method | {' | '.join(header)} |", "|---" * (len(columns) + 1) + "|"]
    for method in methods_in({k: v["mean"] for k, v in summary.items()}, stage):
        cells = []
        for column in columns:
            entry = summary.get(f"{stage}/{method}/{column}")
            cells.append("—" if entry is None else f"{entry['mean']:.1f} ± {entry['std']:.1f}")
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def render_table(spec: dict, root: Path) -> str:
    columns = [next(iter(c.items())) if isinstance(c, dict) else (c, c) for c in spec["columns"]]
    formats, where = spec.get("format", {}), spec.get("where", {})
    lines = ["| " + " | ".join(str(title) for _, title in columns) + " |", "|---" * len(columns) + "|"]
    for path in expand(spec["files"], root):
        for number, record in enumerate(load_records(path), 1):
            record = {**record, "file": path.name}
            if any(record.get(k, (record.get("metrics") or {}).get(k)) != v for k, v in where.items()):
                continue
            cells = []
            for key, _ in columns:
                try:
                    cells.append(_fmt(lookup(record, key), formats.get(key)))
                except EvidenceError as err:
                    if "missing" not in spec:  # opt-in, so that a misspelt column is not rendered as blanks
                        raise EvidenceError(f"{path.relative_to(root)} record {number}: {err}") from None
                    cells.append(str(spec["missing"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(spec: dict, root: Path) -> float:
    if spec.get("mean"):
        values = [
            lookup(_one({"kind": "value", "file": str(p)}, root), spec["key"]) for p in expand(spec["files"], root)
        ]
        return sum(values) / len(values)
    return lookup(_one(spec, root), spec["key"])


def render_value(spec: dict, root: Path) -> str:
    value = _number(spec, root)
    if spec.get("minus"):
        value -= _number({"kind": "value", **spec["minus"]}, root)
    return _fmt(value, spec.get("format", ".1f"))


def render_source(spec: dict, root: Path) -> str:
    lines = []
    for path in expand(spec.get("file") or spec["files"], root):
        record = load_records(path)[0]
        command = f"`{record['command']}`" if record.get("command") else "command not recorded"
        lines.append(
            f"`{path.relative_to(root)}`: {command}; commit {record.get('commit') or 'not recorded'}, "
            f"{lookup(record, 'date') if record.get('date') else 'date not recorded'}, "
            f"{lookup(record, 'machine')}"
        )
    return "\n".join(f"- {line}" for line in lines) if len(lines) > 1 else lines[0]


def render_config_reference(spec: dict, root: Path) -> str:
    from dataclasses import fields

    from retrerank.config import Config
    from retrerank.config_help import _section_type, default, field_comments, sections, type_text, value_text

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = []
    for prefix, section, about in sections(Config):
        rows = [f for f in fields(section) if not _section_type(f)]
        if not rows:
            continue
        comments = field_comments(section)
        out += [f"### `{prefix.rstrip('.') or 'top level'}`", ""] + ([cell(about), ""] if about else [])
        out += ["| key | type | default | what it does |", "|---|---|---|---|"]
        out += [
            f"| `{prefix}{f.name}` | {cell(type_text(f))} | `{cell(value_text(default(f)))}` | "
            f"{cell(comments.get(f.name, ''))} |"
            for f in rows
        ]
        out.append("")
    return "\n".join(out).rstrip("\n")


KINDS: dict[str, Callable[[dict, Path], str]] = {
    "run": render_run,
    "seeds": render_seeds,
    "table": render_table,
    "value": render_value,
    "source": render_source,
    "config_reference": render_config_reference,
}


def render_block(spec_text: str, root: Path) -> str:
    try:
        spec = yaml.safe_load(spec_text)
    except yaml.YAMLError as err:
        raise EvidenceError(f"the block's spec is not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise EvidenceError(f"the block's spec needs a kind, one of {', '.join(KINDS)}")
    try:
        return KINDS[spec["kind"]](spec, root)
    except UserInputError:
        raise
    except KeyError as err:
        raise EvidenceError(f"kind {spec['kind']} needs the key {err}") from None
    except (TypeError, ValueError, AttributeError, ZeroDivisionError) as err:  # a spec value of the wrong kind
        raise EvidenceError(f"kind {spec['kind']}: a value of the block's spec does not fit ({err})") from None


def _rendered(match: re.Match, text: str, root: Path, where: str) -> str:
    """The block of `match` with its body replaced by what it renders."""
    line = text.count("\n", 0, match.start()) + 1
    try:
        body = render_block(match.group("spec"), root)
    except EvidenceError as err:
        raise EvidenceError(f"{where}:{line}: {err}") from None
    opening = match.group(0)[: match.start("body") - match.start()]
    on_own_lines = match.group("body").startswith("\n")  # the opening comment ends its line
    return opening + (f"\n{body}\n" if on_own_lines else body) + "<!-- /render -->"


def _closed(text: str, where: str) -> None:
    if text.count("<!-- render") != text.count("<!-- /render -->"):
        raise EvidenceError(f"{where}: a render block is not closed with <!-- /render -->")


def render_page(text: str, root: Path, where: str) -> str:
    """The page with every block's body replaced by what it renders."""
    _closed(text, where)
    return BLOCK.sub(lambda match: _rendered(match, text, root, where), text)


def first_difference(old: str, new: str) -> tuple[int, str, str]:
    """(line, old token, new token) of the first token that differs."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for number, (a, b) in enumerate(zip(old_lines + [""] * len(new_lines), new_lines + [""] * len(old_lines)), 1):
        if a != b:
            ta, tb = (TOKEN.findall(re.sub(r"<!--|-->", " ", x)) for x in (a, b))
            for x, y in zip(ta + [""] * len(tb), tb + [""] * len(ta)):
                if x != y:
                    return number, x or "(nothing)", y or "(nothing)"
            return number, a.strip() or "(blank)", b.strip() or "(blank)"
    return 0, "", ""


def typed_numbers(text: str) -> list[tuple[int, str]]:
    """(line, number) of every decimal number typed into a Markdown table outside a render block."""
    masked = BLOCK.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    masked = re.sub(r"```.*?```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), masked, flags=re.S)
    found = []
    for number, line in enumerate(masked.splitlines(), 1):
        if line.lstrip().startswith("|"):
            line = re.sub(r"`[^`]*`", "", line)
            found += [(number, m.group(0)) for m in TYPED_NUMBER.finditer(line)]
    return found


def check(root: Path) -> list[str]:
    """One line per block that differs from its rendering, and per number typed into a table."""
    problems = []
    for page in pages(root):
        where = str(page.relative_to(root))
        text = page.read_text()
        _closed(text, where)
        for match in BLOCK.finditer(text):
            rendered = _rendered(match, text, root, where)
            if rendered != match.group(0):
                offset, old, new = first_difference(match.group(0), rendered)
                line = text.count("\n", 0, match.start()) + offset
                source = yaml.safe_load(match.group("spec")) or {}
                files = source.get("file") or source.get("files") or source.get("kind")
                problems.append(
                    f"{where}:{line}: the page says {old} where {files} renders {new}; run python -m experiments.report"
                )
        problems += [
            f"{where}:{line}: {value} is typed into a table; render it from its evidence file"
            for line, value in typed_numbers(text)
        ]
    return problems


def main(argv: list[str]) -> int:
    parser = argument_parser(
        "experiments.report", __doc__, "Render blocks and evidence files: see the handbook's results page."
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 naming each page, line and number that differs"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to read and render (default: this one)")
    parser.add_argument(
        "--collect",
        nargs=2,
        action="append",
        metavar=("RUN_DIR", "OUT"),
        default=[],
        help="write a finished run folder as the evidence file OUT (repeatable); renders nothing",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    records = [(Path(out), run_evidence(Path(run_dir))) for run_dir, out in args.collect]  # all read, then written
    for out, _ in records:
        if out.is_dir():
            raise EvidenceError(f"--collect {out}: a folder; give the path of the evidence file to write")
    for out, record in records:
        write_json_atomic(out, record)
        print(f"wrote {out}")
    if args.collect:
        return 0
    if args.check:
        problems = check(root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            sys.exit(1)
        print(f"{len(pages(root))} pages match their evidence")
        return 0
    # every page is rendered before the first is written: a block that fails leaves every page as it was
    rendered = {page: render_page(page.read_text(), root, str(page.relative_to(root))) for page in pages(root)}
    changed = [page for page, text in rendered.items() if text != page.read_text()]
    for page in changed:
        write_text_atomic(page, rendered[page])
        print(f"rendered {page.relative_to(root)}")
    print(f"{len(changed)} of {len(rendered)} pages changed")
    return 0


if __name__ == "__main__":
    run_main(main)
