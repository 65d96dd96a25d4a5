"""One sweep worker process (``tinyminds sweep --workers N`` starts N of them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from tinyminds.errors import UserError
from tinyminds.sweep.runner import run_worker
from tinyminds.sweep.space import load_space


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("space", type=Path)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--storage", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        run_worker(load_space(args.space), args.sweep_dir, args.storage)
    except UserError as error:
        print(f"tinyminds sweep worker: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
