"""Fault injection: kill -9 at random moments, a full disk, a corrupt checkpoint, two writers.

What it does
------------
On the embedded Shakespeare corpus (prepared once, a 1,000-token BPE) with tiny models, it first
runs every command once without interruption (the references), then injects faults:

* **kill -9 at random moments** (the whole process group, as a crash or an OOM killer would), each
  followed by the same command with ``--resume`` (``reproduce`` resumes by itself), again and again
  until the run finishes; the finished run must equal its reference bit for bit (final weights of
  every model, and every logged loss):
  - ``train``: a GPT-2 trained for a few epochs;
  - ``distill``: the student distilled from the teacher cache, killed at any moment: while the cache
    is built, while it trains, while it checkpoints or validates;
  - ``cache``: killed early, while the cache is being built (each try forces a new cache);
  - ``reproduce``: the tiny DistilledGPT-44M chain (prepare, two teachers, the student).
* **a full disk** (a real tmpfs of a few MB; skipped where it cannot be mounted): the run must stop
  with one line naming the disk, keep its last checkpoint and leave no partial one; after the disk
  is enlarged, ``--resume`` must finish bit-identical to the reference;
* **a corrupt checkpoint** (bytes overwritten in the latest ``state.pt``, same size): ``--resume``
  must refuse it naming the previous intact checkpoint; once the corrupt one is deleted, the run
  must finish bit-identical;
* **two writers**: a second ``train --resume`` into a running run's folder must be refused.

It prints one table: faults injected, runs finished, runs bit-identical to their reference, and
each run that was not. Every process runs with one thread (bit-identical float sums).

Run it:  python benchmarks/fault_injection.py [--kills 24] [--seed 0] [--work DIR] [--json PATH]
(about 15 minutes on 2 CPU cores with the defaults.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TINYMINDS_QUIET": "1",
}
TRAIN = [
    "model=gpt2-tiny",
    "batch_size=16",
    "epochs=2",
    "lr=3e-3",
    "warmup_steps=5",
    "eval_chunks=64",
    "checkpoint_every=7",
    "log_every=3",
    "eval_every=11",
    "seed=3",
]
TEACHER = [
    "batch_size=16",
    "max_steps=30",
    "lr=3e-3",
    "warmup_steps=5",
    "eval_chunks=64",
    "checkpoint_every=10",
    "log_every=5",
    "seed=1",
]
STUDENT = [
    "batch_size=16",
    "epochs=2",
    "max_steps=60",
    "lr=3e-3",
    "warmup_steps=5",
    "eval_chunks=64",
    "checkpoint_every=9",
    "log_every=4",
    "eval_every=13",
    "cache_batch_size=8",
    "seed=2",
]


MAX_TRIALS = 8
"""Trials per kill scenario at most (each trial is one run killed and resumed until it ends)."""


def tinyminds(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinyminds", *args]


@dataclass
class Outcome:
    scenario: str
    faults: int = 0
    finished: bool = False
    identical: bool = False
    note: str = ""
    details: list[str] = field(default_factory=list)


def run(command: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def run_with_kills(
    command: list[str],
    resume: list[str],
    rng: random.Random,
    kills: int,
    window: tuple[float, float],
    armed: Callable[[], bool] | None = None,
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Start ``command``, kill -9 its process group after a random delay, restart it with
    ``resume``; ``kills`` times; then let it finish. With ``armed``, the delay counts from the
    moment ``armed()`` first holds (e.g. the cache build has started). Returns (kills done, the
    final run)."""
    done = 0
    current = command
    while done < kills:
        process = subprocess.Popen(
            current,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=ENV,
            start_new_session=True,
        )
        # A resumed try has less left to do than the first, and the machine's speed varies: the
        # window shrinks with each kill so that a kill lands before the run ends.
        low, high = window
        delay = rng.uniform(low, max(low + 0.5, high * 0.6 ** (done + 1)))
        while armed is not None and not armed() and process.poll() is None:
            time.sleep(0.02)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            done += 1
        else:  # it finished before the kill: the run is complete
            break
        current = resume
    return done, run(resume)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def logged(run_dir: Path) -> list[dict[str, Any]]:
    """Every metrics record without its timing."""
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            record.pop("tokens_per_s", None)
            records.append(record)
    return records


def compare_runs(run_dir: Path, reference: Path) -> list[str]:
    """What differs between a run folder and its reference (empty: bit-identical)."""
    problems = []
    if not same_weights(run_dir / "model", reference / "model"):
        problems.append("final weights differ")
    if logged(run_dir) != logged(reference):
        problems.append("logged losses differ")
    return problems


def prepare_data(work: Path) -> tuple[Path, Path]:
    """Two files of the embedded plays (~110k training words), prepared with a 1,000-token BPE."""
    plays, corpus, data = work / "plays", work / "corpus", work / "data"
    result = run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from tinyminds.data.demo_corpus import write_demo_corpus; "
            f"write_demo_corpus(Path({str(plays)!r}))",
        ]
    )
    assert result.returncode == 0, result.stderr
    for split, name in (("train", "roman.train"), ("dev", "tragedies.dev")):
        (corpus / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(plays / split / name, corpus / split / name)
    result = run(
        tinyminds("prepare", str(corpus), "--out", str(data), "--vocab-size", "1000", "-q")
    )
    assert result.returncode == 0, result.stderr
    return corpus, data


def train_command(data: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return tinyminds("train", "gpt2-tiny", f"data={data}", f"out={out}", *TRAIN, *extra, "-q")


def distill_command(data: Path, out: Path, teachers: list[Path], cache: Path) -> list[str]:
    return tinyminds(
        "distill",
        "distill-tiny",
        f"data={data}",
        f"out={out}",
        f"teachers=[{','.join(map(str, teachers))}]",
        f"cache_dir={cache}",
        *STUDENT,
        "-q",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24, help="kill -9s in all (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="tinyminds-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus, data = prepare_data(work)
    print(f"fault injection in {work}", flush=True)

    # --- references -----------------------------------------------------------------------------
    ref = work / "reference"
    teachers = []
    for name in ("gpt2-tiny", "llama-tiny"):
        out = ref / name
        result = run(tinyminds("train", name, f"data={data}", f"out={out}", *TEACHER, "-q"))
        assert result.returncode == 0, result.stderr
        teachers.append(out / "model")
    t0 = time.perf_counter()
    assert run(train_command(data, ref / "train")).returncode == 0
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run(distill_command(data, ref / "distill", teachers, ref / "cache"))
    assert result.returncode == 0, result.stderr
    distill_seconds = time.perf_counter() - t0
    reproduce = tinyminds(
        "reproduce",
        "--scale",
        "tiny",
        "--corpus",
        str(corpus),
        "--skip-evaluation",
        "--max-steps",
        "12",
        "--only",
        "distilledgpt-44m",
        "-q",
    )
    t0 = time.perf_counter()
    result = run([*reproduce, "--out", str(ref / "reproduce")])
    assert result.returncode == 0, result.stderr
    reproduce_seconds = time.perf_counter() - t0

    outcomes: list[Outcome] = []
    share = {"train": 0.3, "distill": 0.3, "cache": 0.2, "reproduce": 0.2}
    targets = {k: max(1, round(v * args.kills)) for k, v in share.items()}

    # --- kill -9 ----------------------------------------------------------------------------------
    # Each scenario runs trials until its share of the kills is reached: a trial is killed at a
    # random moment, resumed, killed again..., and ends when a try finishes before its kill (so a
    # trial may take fewer kills than it drew; the next trial makes up for them).
    def reproduce_details(out: Path) -> list[str]:
        found = []
        for stage in ("gpt2-44m", "llama-60m", "distilledgpt-44m"):
            (mine,) = out.glob(f"stages/{stage}-*/run")
            (theirs,) = (ref / "reproduce").glob(f"stages/{stage}-*/run")
            found += [f"{stage}: {p}" for p in compare_runs(mine, theirs)]
        return found

    Trial = tuple[list[str], list[str], Callable[[], list[str]], Callable[[], bool] | None]

    def train_trial(out: Path) -> Trial:
        command = train_command(data, out)
        return command, [*command, "--resume"], lambda: compare_runs(out, ref / "train"), None

    def distill_trial(out: Path) -> Trial:
        # each trial builds its own cache, so a kill can land in the cache build
        cache = out.with_name(out.name + "-cache")
        command = distill_command(data, out, teachers, cache)
        return command, [*command, "--resume"], lambda: compare_runs(out, ref / "distill"), None

    def cache_trial(out: Path) -> Trial:
        # killed while the cache is built: the delay counts from the build's first file
        command, resume, differences, _ = distill_trial(out)
        cache = out.with_name(out.name + "-cache")
        return command, resume, differences, lambda: cache.is_dir() and any(cache.iterdir())

    def reproduce_trial(out: Path) -> Trial:
        command = [*reproduce, "--out", str(out)]
        return command, command, lambda: reproduce_details(out), None

    scenarios = (
        ("train", train_trial, (1.0, train_seconds)),
        ("distill", distill_trial, (1.0, distill_seconds)),
        ("cache", cache_trial, (0.0, 1.0)),
        ("reproduce", reproduce_trial, (2.0, reproduce_seconds)),
    )
    for scenario, make_trial, window in scenarios:
        done = 0
        for trial in range(MAX_TRIALS):
            if done >= targets[scenario]:
                break
            command, resume, differences, armed = make_trial(work / f"{scenario}-{trial}")
            # one kill per cache trial: a resumed try finds the killed build's files at once
            wanted = 1 if armed is not None else targets[scenario] - done
            kills, final = run_with_kills(command, resume, rng, wanted, window, armed)
            done += kills
            outcome = Outcome(f"{scenario} #{trial + 1}", kills, final.returncode == 0)
            if outcome.finished:
                outcome.details = differences()
                outcome.identical = not outcome.details
            else:
                outcome.details = [final.stderr.strip().splitlines()[-1] if final.stderr else "?"]
            outcomes.append(outcome)
            print(outcome, flush=True)

    # --- a corrupt checkpoint -------------------------------------------------------------------------
    out = work / "corrupt"
    command = train_command(data, out)
    process = subprocess.Popen(command, env=ENV, start_new_session=True)
    while len(list((out / "checkpoints").glob("step-*"))) < 2 and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    latest = sorted((out / "checkpoints").glob("step-*"))[-1]
    state = latest / "state.pt"
    with state.open("r+b") as handle:
        handle.seek(state.stat().st_size // 2)
        handle.write(b"\xff" * 64)
    refused = run([*command, "--resume"])
    outcome = Outcome("corrupt checkpoint", 1)
    offered = "is corrupt (state.pt does not match its checksum)" in refused.stderr
    shutil.rmtree(latest)
    final = run([*command, "--resume"])
    outcome.finished = final.returncode == 0 and refused.returncode == 2 and offered
    if outcome.finished:
        outcome.details = compare_runs(out, ref / "train")
        outcome.identical = not outcome.details
    else:
        outcome.details = [f"refusal: {refused.stderr.strip()[-200:]}"]
    outcomes.append(outcome)
    print(outcome, flush=True)

    # --- two writers --------------------------------------------------------------------------------
    out = work / "two-writers"
    command = train_command(data, out)
    process = subprocess.Popen(command, env=ENV, start_new_session=True)
    while not (out / "metrics.jsonl").exists() and process.poll() is None:
        time.sleep(0.05)
    second = run([*command, "--resume"])
    process.wait()
    outcome = Outcome("two writers", 1, process.returncode == 0)
    outcome.note = "second refused" if "is in use by another" in second.stderr else "NOT refused"
    if outcome.finished and second.returncode == 2:
        outcome.details = compare_runs(out, ref / "train")
        outcome.identical = not outcome.details
    else:
        outcome.details = [f"second writer: exit {second.returncode}"]
    outcomes.append(outcome)
    print(outcome, flush=True)

    # --- a full disk --------------------------------------------------------------------------------
    disk = work / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            out = disk / "run"
            command = train_command(data, out)
            full = run(command)
            outcome = Outcome("full disk", 1)
            one_line = (
                full.returncode == 2 and "is full" in full.stderr and full.stderr.count("\n") == 1
            )
            partial = list((out / "checkpoints").glob(".step-*"))
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            final = run([*command, "--resume"])
            outcome.finished = final.returncode == 0 and one_line and not partial
            outcome.note = full.stderr.strip()[:160]
            if outcome.finished:
                outcome.details = compare_runs(out, ref / "train")
                outcome.identical = not outcome.details
            else:
                outcome.details = [f"one line: {one_line}, partial left: {bool(partial)}"]
            outcomes.append(outcome)
            print(outcome, flush=True)
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    else:
        print("full disk: skipped (a tmpfs cannot be mounted here; it needs root)", flush=True)

    # --- the table ------------------------------------------------------------------------------------
    kills = sum(o.faults for o in outcomes if o.scenario.split(" #")[0] in share)
    faults = sum(o.faults for o in outcomes)
    print(f"\nfault injection, {time.perf_counter() - started:,.0f} s, seed {args.seed}, {work}")
    print("| scenario | faults | finished | bit-identical to its reference | notes |")
    print("| --- | ---: | --- | --- | --- |")
    for o in outcomes:
        notes = "; ".join([*([o.note] if o.note else []), *o.details])
        print(
            f"| {o.scenario} | {o.faults} | {'yes' if o.finished else 'no'} | "
            f"{'yes' if o.identical else 'no'} | {notes} |"
        )
    identical = sum(o.identical for o in outcomes)
    print(
        f"\n{faults} faults injected ({kills} kill -9), {len(outcomes)} runs, "
        f"{identical} bit-identical to their reference, "
        f"{len(outcomes) - identical} not"
        + (
            ": " + ", ".join(o.scenario for o in outcomes if not o.identical)
            if identical < len(outcomes)
            else ""
        )
    )
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=2) + "\n")
    if identical < len(outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
