"""A local web page to search a run's split: `python -m experiments.serve RUN_DIR [--port 8000] [--host 127.0.0.1]`.

Loads the run's best checkpoint and split (`--split`, default test; the data from `--data-root`, default
data/ in the current folder, never a path stored in the checkpoint), indexes its images and captions
once, and serves the playground (retrerank/playground: why FastAPI + one static page is said there)
until Ctrl-C. Needs the demo extra: pip install -e ".[demo]".
"""

from __future__ import annotations

import sys
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.search import SPLITS, open_run


def main(argv: list[str]) -> None:
    parser = argument_parser("experiments.serve", __doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (with checkpoints/best.ckpt)")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on (default: 8000)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1; 0.0.0.0: reachable from other machines)",
    )
    parser.add_argument("--split", choices=SPLITS, default="test", help="the split searched (default: test)")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="the folder that holds the run's dataset (the synthetic data is generated there on first use); "
        "default: data/ here",
    )
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from retrerank.playground.app import create_app
    except ImportError as err:
        sys.exit(f'the playground needs the demo extra ({err.name} is missing): pip install -e ".[demo]"')
    from retrerank.playground.port import claim_port

    port = claim_port(args.host, args.port)  # a taken or invalid port is one line before the model loads
    searcher, split = open_run(args.run_dir, args.split, data_root=args.data_root)
    searcher.index_split(split)
    app = create_app(searcher, split, Path(args.run_dir).resolve().name, searcher.rerank_depth)
    print(f"playground of {args.run_dir} ({args.split} split): http://{args.host}:{args.port}", flush=True)
    port.close()  # the server binds it again at once
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_main(main)
