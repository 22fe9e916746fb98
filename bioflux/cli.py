"""The ``bioflux`` command line: parses arguments and calls the library. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_render(args: argparse.Namespace) -> int:
    from bioflux.envs.episode import run_random_episode

    summary = run_random_episode(args.out, steps=args.steps, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioflux", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser(
        "render", help="simulate one episode with random policies and write a GIF and a PNG strip"
    )
    render.add_argument("--out", type=Path, default=Path("outputs/render"))
    render.add_argument("--steps", type=int, default=100)
    render.add_argument("--seed", type=int, default=0)
    render.set_defaults(func=_cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: a clear message, no traceback
        print(f"bioflux: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
