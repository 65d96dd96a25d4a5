"""What tinyminds prints: short status lines and progress bars, both silenced by quiet mode.

One process-wide switch (set by ``--quiet`` or ``TINYMINDS_QUIET=1``) keeps CI logs short; under
torch.distributed only rank 0 prints.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

_quiet = os.environ.get("TINYMINDS_QUIET", "") not in ("", "0")


def _silence_hugging_face() -> None:
    """No Hugging Face progress bars either (weights loading, downloads): the environment switch
    covers a transformers not imported yet, `disable_progress_bar` one already imported."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet
    if quiet:
        _silence_hugging_face()


if _quiet:
    _silence_hugging_face()


def is_quiet() -> bool:
    return _quiet or int(os.environ.get("RANK", "0")) != 0


def info(message: str) -> None:
    """Print a status line to stderr (stdout stays for results a script may parse)."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print a warning line to stderr, quiet or not (only rank 0 under torch.distributed)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def progress(total: int | None, description: str, unit: str = "it") -> tqdm:
    """A progress bar with rate and ETA; a no-op bar in quiet mode.

    On a terminal it redraws ten times a second; into a log file (a batch job) it writes one line
    every 30 seconds instead of flooding the log.
    """
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        disable=is_quiet(),
        file=sys.stderr,
        leave=False,
        mininterval=0.1 if interactive else 30.0,
    )
