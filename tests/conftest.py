"""Shared fixtures: small real corpora prepared once per test session."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tinyminds.console import set_quiet
from tinyminds.data.demo_corpus import write_demo_corpus
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.training.objectives import Batch, CausalLMObjective, ObjectiveOutput
from tinyminds.training.objectives.base import SetupContext

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TINYMINDS_QUIET", "1")
set_quiet(True)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread inside the block, the former count restored after it: tiny models gain
    nothing from threads, and one thread keeps a test's timing-free behaviour the same on a
    loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """`one_thread` for a whole test module: ``pytestmark = pytest.mark.usefixtures(...)``."""
    with one_thread():
        yield


def torchrun_launcher(processes: int = 2) -> list[str]:
    """The command prefix that starts ``processes`` local processes under torch.distributed.run
    (gloo on a CPU), on a free port; append ``-m tinyminds ...`` or a script."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
    ]


# A few subtask files of each zero-shot task (the first of each archive, by name): enough for the
# demo's and reproduce's evaluation stages to run quickly.
EVAL_SUBTASKS = {"blimp": 2, "supplement": 2, "ewok": 2}


def small_evaluation_data(target: Path) -> Path | None:
    """A few subtasks of BLiMP, the supplement and EWoK in ``target``; None without the archives."""
    archives = [SHARED_DATA / f"{task}_filtered.tar.gz" for task in EVAL_SUBTASKS]
    if not all(archive.is_file() for archive in archives):
        return None
    for archive, count in zip(archives, EVAL_SUBTASKS.values(), strict=True):
        with tarfile.open(archive) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jsonl")),
                key=lambda m: m.name,
            )
            tar.extractall(target, members=members[:count], filter="data")
    return target


def shared_archive(name: str) -> Path:
    """``../shared/data/NAME``, or skip the test with the reason when this clone has no such file."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not found: real-data tests need the project's ../shared/data folder")
    return path


@pytest.fixture(scope="session")
def shakespeare_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real corpus: two genres of the embedded Shakespeare plays (~110k train words)."""
    full = write_demo_corpus(tmp_path_factory.mktemp("demo-corpus"))
    small = tmp_path_factory.mktemp("small-corpus")
    (small / "train").mkdir()
    (small / "dev").mkdir()
    shutil.copy(full / "train" / "roman.train", small / "train" / "roman.train")
    shutil.copy(full / "dev" / "tragedies.dev", small / "dev" / "tragedies.dev")
    return small


@pytest.fixture(scope="session")
def prepared_data(shakespeare_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shakespeare_corpus`` prepared with a 1,000-token BPE (fast tiny models)."""
    out = tmp_path_factory.mktemp("prepared")
    prepare(shakespeare_corpus, out, PrepareOptions(vocab_size=1000))
    return out


@pytest.fixture(scope="session")
def babylm_mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """babylm-mini extracted into a temporary folder (skipped where ../shared/data is absent)."""
    archive = shared_archive("babylm-mini.tar.gz")
    target = tmp_path_factory.mktemp("babylm-mini")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target / "babylm-mini"


def one_process_context(
    data: Any = None, run_dir: Path = Path("."), train_rows: Any = None
) -> SetupContext:
    """What the engine hands an objective's ``setup`` in one CPU process (without data unless
    given: a `PreparedData` and the training chunks a teacher cache must hold)."""
    return SetupContext(
        device=torch.device("cpu"),
        amp_dtype=None,
        rank=0,
        world_size=1,
        barrier=lambda: None,
        data=data,
        run_dir=run_dir,
        train_rows=train_rows,
    )


class InterruptAfter:
    """Cross-entropy that stops the process (Ctrl-C) at a given training call."""

    def __init__(self, calls: int) -> None:
        self.calls, self.inner = calls, CausalLMObjective()

    def __call__(self, model: torch.nn.Module, batch: Batch) -> ObjectiveOutput:
        if batch.split == "train":
            self.calls -= 1
            if self.calls < 0:
                raise KeyboardInterrupt
        return self.inner(model, batch)
