"""Prepare dataset files for training: `python -m experiments.prepare regions --format tsv --input a.tsv
b.tsv --output data/coco_regions.h5`.

regions: detector region features (bottom-up-attention TSV, folders of per-image .npz or .pt) into
one HDF5 region store. Resumable: rerunning after an interruption continues from `<output>.partial`.
Prints a JSON summary; bad records stop the run with a message naming the file and line, or with
--lenient are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from retrerank.cli import HelpFormatter, argument_parser, run_main
from retrerank.data.errors import BadRecords, DataError
from retrerank.data.stores.converters import READERS, convert_regions
from retrerank.data.stores.region_store import partial_path


def check_output(output: Path) -> None:
    """A place where the store can be written, checked before anything is read or written."""
    if output.is_dir() or partial_path(output).is_dir():
        folder = output if output.is_dir() else partial_path(output)
        raise DataError(
            f"--output {output}: {folder} is a folder; give the path of the store file, e.g. {output}/regions.h5"
        )
    blocked = next((parent for parent in output.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise DataError(f"--output {output}: {blocked} is a file, not a folder")


def regions(args: argparse.Namespace) -> dict:
    output = Path(args.output)
    check_output(output)
    if output.exists() and not args.overwrite:
        raise DataError(f"{output} already exists; pass --overwrite to rebuild it")
    bad = BadRecords(strict=not args.lenient)
    partial = partial_path(output)
    try:
        summary = convert_regions(args.format, args.input, output, args.dtype, bad, progress=not args.quiet)
    except DataError as err:
        if not partial.exists():
            raise
        # what was written before the bad record is kept, so that a rerun after fixing it goes on from there
        raise DataError(
            f"{err}; the images before it are kept in {partial}: fix the input and rerun to go on from there, "
            "or delete that file to start again"
        ) from None
    if args.lenient:
        print(bad.summary(), file=sys.stderr)
        summary["skipped_examples"] = bad.examples
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(
        "experiments.prepare", __doc__, "`python -m experiments.prepare regions --help`: its options."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{regions}")
    p = commands.add_parser(
        "regions",
        help="region features into an HDF5 region store",
        formatter_class=HelpFormatter,
        description="Detector region features (bottom-up-attention TSV, folders of per-image "
        ".npz or .pt)\ninto one HDF5 region store, resumable from <output>.partial.",
    )
    p.add_argument("--format", choices=sorted(READERS), required=True, help="how the input stores the features")
    p.add_argument("--input", nargs="+", required=True, help="TSV files, or folders / files of .npz or .pt")
    p.add_argument("--output", required=True, help="the store, e.g. data/coco_regions.h5")
    p.add_argument(
        "--dtype", choices=("float16", "float32"), default="float16", help="the store's feature type (default: float16)"
    )
    p.add_argument("--lenient", action="store_true", help="skip and count bad records instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing complete store")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    summary = regions(args)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    run_main(main)
