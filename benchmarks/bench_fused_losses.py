"""The student loss's passes over the logits, term by term against fused (issue 16 part 3).

Times forward + backward of the loss alone (no model) on random logits of a training step's
shape, the way the objectives computed it before and the way they compute it now, and prints
them side by side with the ratio:

- ``CE + cached KL``: `base.causal_lm_cross_entropy` plus the forward KL read from a sampled
  teacher cache (`kd_losses.chunked_hybrid_kl`, no head), summed by autograd; against
  `kd_losses.cached_kd_loss`, both terms from one exponential pass per chunk (the KD, contrastive
  and MATE-KD objectives' cached step);
- ``ensemble + dense KL``: the teachers' ensemble (`kd_losses.ensemble_log_probs`) then
  `kd_losses.chunked_dense_kl`; against `kd_losses.chunked_ensemble_kl`, which mixes the teachers'
  logits inside the KL (the online step, MATE-KD's perturbed half).

Each timing is the best of ``--repeat`` after one warm-up, on the threads torch uses (``--threads``
to set them). Run it alone: a second job on the same cores changes the figures.

Run:  python benchmarks/bench_fused_losses.py [--rows 4096] [--vocab 8000] [--k 128]
      [--chunk-rows 256] [--repeat 5] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from tinyminds.training.objectives.base import causal_lm_cross_entropy, next_token_labels
from tinyminds.training.objectives.kd_losses import (
    cached_kd_loss,
    chunked_dense_kl,
    chunked_ensemble_kl,
    chunked_hybrid_kl,
    ensemble_log_probs,
    kd_loss,
    reduce_kl,
)

TEMPERATURE = 2.0
CHUNK_LEN = 128


def best_ms(step: Callable[[], None], repeat: int) -> float:
    """Best wall time of ``step`` in ms over ``repeat`` runs, after one warm-up run."""
    step()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4096, help="positions (batch x 128)")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--k", type=int, default=128, help="cached draws per position")
    parser.add_argument("--chunk-rows", type=int, default=256, help="the CPU's chunk size")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    batch = args.rows // CHUNK_LEN
    shape = (batch, CHUNK_LEN, args.vocab)
    student = (torch.randn(shape, generator=gen) * 3).requires_grad_(True)
    teachers = [torch.randn(shape, generator=gen) * 3 for _ in range(2)]
    input_ids = torch.randint(0, args.vocab, (batch, CHUNK_LEN), generator=gen)
    labels = next_token_labels(input_ids)
    teacher_lp = ensemble_log_probs(teachers, TEMPERATURE)
    ids = torch.multinomial(teacher_lp.reshape(-1, args.vocab).exp(), args.k, True, generator=gen)
    ids = ids.reshape(batch, CHUNK_LEN, args.k)
    log_p = teacher_lp.gather(-1, ids).half()
    rest = torch.zeros(batch, CHUNK_LEN)
    rows = args.chunk_rows

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        student.grad = None

    def apart() -> None:
        ce = causal_lm_cross_entropy(student, input_ids)
        per = chunked_hybrid_kl(ids, log_p, rest, student, TEMPERATURE, args.k, chunk_rows=rows)
        backward(kd_loss(ce, reduce_kl(per, "token"), 0.5, TEMPERATURE))

    def fused() -> None:
        loss, _, _ = cached_kd_loss(
            ids, log_p, rest, student, labels, TEMPERATURE, ce_weight=0.5,
            kl_weight=0.5 * TEMPERATURE**2, reduction="token", n_tail=args.k, chunk_rows=rows,
        )  # fmt: skip
        backward(loss)

    def ensemble_then_kl() -> None:
        log_probs = ensemble_log_probs(teachers, TEMPERATURE)
        backward(chunked_dense_kl(log_probs, student, TEMPERATURE, "forward", rows).mean())

    def ensemble_in_kl() -> None:
        backward(chunked_ensemble_kl(teachers, student, TEMPERATURE, chunk_rows=rows).mean())

    pairs = [
        ("CE + cached KL (sampled cache)", apart, fused),
        ("ensemble + dense KL (online)", ensemble_then_kl, ensemble_in_kl),
    ]
    results = []
    for name, before, after in pairs:
        old, new = best_ms(before, args.repeat), best_ms(after, args.repeat)
        results.append({"loss": name, "apart_ms": old, "fused_ms": new, "speedup": old / new})
    machine = (
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"{args.rows} positions x {args.vocab} tokens, k = {args.k}, chunks of {rows} rows, "
        f"forward + backward, best of {args.repeat}; {machine}\n"
    )
    print("| loss | terms apart (ms) | fused (ms) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for row in results:
        print(
            f"| {row['loss']} | {row['apart_ms']:.0f} | {row['fused_ms']:.0f} "
            f"| {row['speedup']:.2f}x |"
        )
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine}
        args.json.write_text(json.dumps({**payload, "rows": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
