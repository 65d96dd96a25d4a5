"""Distillation end to end: teacher checks, cached vs online KD, data parallelism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import torchrun_launcher

from tinyminds.data.chunks import load_prepared
from tinyminds.data.prepare import PrepareOptions, prepare
from tinyminds.errors import UserError
from tinyminds.models.zoo import build_model, get_spec
from tinyminds.training.config import DistillConfig, TrainConfig
from tinyminds.training.engine import train
from tinyminds.training.metrics import read_metrics
from tinyminds.training.objectives.distillation import distill

pytestmark = pytest.mark.slow

TEACHER_SETTINGS = {
    "batch_size": 32,
    "epochs": 1,
    "max_steps": 30,
    "lr": 3e-3,
    "warmup_steps": 5,
    "eval_chunks": 64,
    "checkpoint_every": 0,
    "log_every": 5,
}
STUDENT_SETTINGS = {
    "model": "gpt2-tiny",
    "batch_size": 16,
    "epochs": 1,
    "max_steps": 25,
    "lr": 3e-3,
    "warmup_steps": 5,
    "eval_chunks": 128,
    "checkpoint_every": 0,
    "log_every": 1,
    "seed": 11,
}


@pytest.fixture(scope="module")
def teachers(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A tiny GPT-2 and a tiny Llama trained briefly on the Shakespeare fixture."""
    root = tmp_path_factory.mktemp("teachers")
    folders = []
    for name in ("gpt2-tiny", "llama-tiny"):
        config = TrainConfig(
            model=name, data=str(prepared_data), out=str(root / name), **TEACHER_SETTINGS
        )
        folders.append(str(train(config).model_dir))
    return folders


def student(data: Path, out: Path, teachers: list[str], **changes: object) -> DistillConfig:
    values = {
        **STUDENT_SETTINGS,
        "data": str(data),
        "out": str(out),
        "teachers": teachers,
        **changes,
    }
    return DistillConfig(**values)  # type: ignore[arg-type]


def test_cached_kd_ends_within_one_percent_of_online_kd(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    steps = {"max_steps": 80, "log_every": 5}
    online = distill(
        student(prepared_data, tmp_path / "online", teachers, teacher_cache=False, **steps)
    )
    cached = distill(student(prepared_data, tmp_path / "cached", teachers, **steps))  # defaults
    assert abs(cached.best_val_ce - online.best_val_ce) / online.best_val_ce < 0.01
    for run in (tmp_path / "online", tmp_path / "cached"):
        records = read_metrics(run)
        train_records = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"][-1]
        assert {"ce", "kl", "loss"} <= set(train_records[0]) and {"ce", "kl"} <= set(val)
        first, last = train_records[0], train_records[-1]
        assert last["kl"] < first["kl"]  # the student moves toward the teachers
    # The cache lives with the data, keyed by content, and is reused by the next run.
    caches = list((prepared_data / "teacher-cache").iterdir())
    assert len(caches) == 1 and (caches[0] / "meta.json").is_file()
    meta = json.loads((caches[0] / "meta.json").read_text())
    assert (meta["selection"], meta["k"]) == ("sample", 128)
    mtime = (caches[0] / "meta.json").stat().st_mtime_ns
    distill(student(prepared_data, tmp_path / "again", teachers, max_steps=2))
    assert (caches[0] / "meta.json").stat().st_mtime_ns == mtime


def test_the_summary_records_the_exposure_of_the_student_and_its_teachers(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    result = distill(student(prepared_data, tmp_path / "run", teachers, max_steps=3))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    data = load_prepared(prepared_data)
    words_per_token = (
        data.manifest["splits"]["train"]["words"] / data.manifest["splits"]["train"]["tokens"]
    )
    tokens = 3 * STUDENT_SETTINGS["batch_size"] * 128
    assert summary["words_seen"] == result.words_seen == round(tokens * words_per_token)
    exposure = summary["exposure"]
    teacher_words = {}
    for folder in teachers:  # each teacher's exported model says what it was trained on
        info = json.loads((Path(folder) / "tinyminds.json").read_text(encoding="utf-8"))
        teacher_words[folder] = info["words_seen"]
        assert info["words_seen"] > 0
    assert exposure["teachers"] == teacher_words
    assert exposure["total_words"] == result.words_seen + sum(teacher_words.values())
    assert exposure["student_within_limit"] and exposure["total_within_limit"]
    assert exposure["limit_words"] == 100_000_000


def test_sampled_and_hybrid_caches_train_toward_the_teachers(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    config = student(
        prepared_data,
        tmp_path / "run",
        teachers,
        cache_selection="sample",
        cache_k=16,
        cache_dir=str(cache),
    )
    result = distill(config)
    assert json.loads((cache / "meta.json").read_text())["selection"] == "sample"
    kls = [r["kl"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert kls[-1] < kls[0]
    assert result.best_val_ce < 6.5
    hybrid = student(
        prepared_data, tmp_path / "hybrid", teachers, cache_selection="hybrid", cache_k=16,
        cache_dir=str(tmp_path / "hybrid-cache"),
    )  # fmt: skip
    distill(hybrid)
    assert (
        json.loads((tmp_path / "hybrid-cache" / "meta.json").read_text())["selection"] == "hybrid"
    )
    kls = [r["kl"] for r in read_metrics(tmp_path / "hybrid") if r["kind"] == "train"]
    assert kls[-1] < kls[0]
    with pytest.raises(UserError, match="kl_direction=reverse cannot be estimated from sampled"):
        distill(
            student(
                prepared_data,
                tmp_path / "rev",
                teachers,
                cache_selection="sample",
                kl_direction="reverse",
            )
        )


def test_uniform_tail_reads_the_same_cache_and_is_forward_only(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    common = {"cache_k": 16, "cache_selection": "topk", "cache_dir": str(cache), "max_steps": 4}
    distill(student(prepared_data, tmp_path / "bucket", teachers, **common))
    mtime = (cache / "meta.json").stat().st_mtime_ns
    distill(student(prepared_data, tmp_path / "uniform", teachers, cache_tail="uniform", **common))
    assert (cache / "meta.json").stat().st_mtime_ns == mtime  # a loss option: the cache is reused
    bucket = [r["kl"] for r in read_metrics(tmp_path / "bucket") if r["kind"] == "train"]
    uniform = [r["kl"] for r in read_metrics(tmp_path / "uniform") if r["kind"] == "train"]
    # Same student, same first batch: the uniform tail adds the tail's shape to the bucket's KL.
    assert uniform[0] > bucket[0]
    with pytest.raises(UserError, match="cache_tail=uniform is defined for the forward KL only"):
        distill(
            student(
                prepared_data, tmp_path / "rev", teachers, cache_tail="uniform",
                cache_selection="topk", kl_direction="reverse",
            )
        )  # fmt: skip
    with pytest.raises(UserError, match="cache_tail=uniform applies to cache_selection=topk"):
        distill(student(prepared_data, tmp_path / "s", teachers, cache_tail="uniform"))


def test_kd_loss_is_alpha_ce_plus_t2_kl(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    config = student(
        prepared_data, tmp_path / "run", teachers, teacher_cache=False, max_steps=3, alpha=0.3
    )
    distill(config)
    for record in (r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"):
        expected = 0.3 * record["ce"] + 0.7 * 4.0 * record["kl"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)


def test_teacher_with_another_tokenizer_is_refused(
    teachers: list[str], shakespeare_corpus: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-data"
    prepare(shakespeare_corpus, other, PrepareOptions(vocab_size=600))
    with pytest.raises(
        UserError, match=r"teacher .*gpt2-tiny.* and student gpt2-tiny use different tokenizers"
    ):
        distill(student(other, tmp_path / "run", teachers))


def test_bad_teachers_are_refused_before_training(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match=r"teacher folder .*nowhere does not exist"):
        distill(student(prepared_data, tmp_path / "a", [str(tmp_path / "nowhere")]))
    # A masked LM with the right tokenizer is still not a causal LM.
    mlm = tmp_path / "electra"
    build_model(get_spec("electra-tiny"), 1000).save_pretrained(mlm)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (mlm / name).write_bytes((Path(teachers[0]) / name).read_bytes())
    with pytest.raises(UserError, match="is not a causal language model"):
        distill(student(prepared_data, tmp_path / "b", [str(mlm)]))
    # Same tokenizer file, but a model whose vocabulary differs from the student's.
    wide = tmp_path / "wide"
    build_model(get_spec("gpt2-tiny"), 1200).save_pretrained(wide)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (wide / name).write_bytes((Path(teachers[0]) / name).read_bytes())
    with pytest.raises(UserError, match="vocabulary of 1200 tokens but student gpt2-tiny has 1000"):
        distill(student(prepared_data, tmp_path / "c", [teachers[0], str(wide)]))
    with pytest.raises(UserError, match="teacher_weights has 1 values for 2 teachers"):
        distill(student(prepared_data, tmp_path / "d", teachers, teacher_weights=[1.0]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_stale_or_truncated_cache_is_rebuilt(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    config = student(
        prepared_data,
        tmp_path / "one",
        teachers,
        cache_k=8,
        max_steps=2,
        cache_dir=str(tmp_path / "cache"),
    )
    distill(config)
    # Two steps of 16 chunks: the cache computed those 32 chunks and no others.
    filled = np.load(tmp_path / "cache" / "filled.npy")
    assert int(filled.sum()) == 2 * STUDENT_SETTINGS["batch_size"] < len(filled)
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    values = next((tmp_path / "cache").glob("*log_prob*.npy"))
    full_size = values.stat().st_size
    values.write_bytes(values.read_bytes()[:-100])  # truncated
    distill(
        student(
            prepared_data,
            tmp_path / "two",
            teachers,
            cache_k=8,
            max_steps=2,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert values.stat().st_size == full_size  # rebuilt, never read half
    assert json.loads((tmp_path / "cache" / "meta.json").read_text())["key"] == meta["key"]
    # A longer run adds the chunks its extra steps read to the same cache.
    distill(
        student(
            prepared_data,
            tmp_path / "longer",
            teachers,
            cache_k=8,
            max_steps=3,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert (
        int(np.load(tmp_path / "cache" / "filled.npy").sum()) == 3 * STUDENT_SETTINGS["batch_size"]
    )
    assert json.loads((tmp_path / "cache" / "meta.json").read_text())["key"] == meta["key"]
    # Other teacher weights make another key: the old cache is not read.
    distill(
        student(
            prepared_data,
            tmp_path / "three",
            list(reversed(teachers)),
            cache_k=8,
            max_steps=2,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert json.loads((tmp_path / "cache" / "meta.json").read_text())["key"] != meta["key"]


def test_distillation_under_two_gloo_processes_matches_one(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    overrides = [
        f"data={prepared_data}",
        f"teachers={','.join(teachers)}",
        "max_steps=6",
        "batch_size=16",
        "eval_chunks=64",
        "log_every=1",
        "checkpoint_every=0",
        f"cache_dir={tmp_path / 'cache'}",
        "cache_k=16",
    ]
    runs = {}
    launchers = {
        "two": torchrun_launcher(),
        "one": [sys.executable],
    }
    for name, launcher in launchers.items():  # two first: the cache is built by both processes
        out = tmp_path / name
        result = subprocess.run(
            [
                *launcher,
                "-m",
                "tinyminds",
                "distill",
                "distill-tiny",
                *overrides,
                f"out={out}",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = read_metrics(out)
    for a, b in zip(runs["one"], runs["two"], strict=True):
        assert b["ce"] == pytest.approx(a["ce"], rel=1e-4) and b["kl"] == pytest.approx(
            a["kl"], rel=1e-3
        )
    assert len(runs["one"]) == 7  # 6 train records and 1 validation


def test_quiet_distill_prints_nothing_on_stderr(
    teachers: list[str], prepared_data: Path, tmp_path: Path
) -> None:
    # Hugging Face's weight-loading progress bars included: -q means a clean CI log.
    command = [
        sys.executable,
        "-m",
        "tinyminds",
        "distill",
        "distill-tiny",
        f"data={prepared_data}",
        f"out={tmp_path / 'run'}",
        f"teachers=[{','.join(teachers)}]",
        "max_steps=2",
        "eval_chunks=16",
        "batch_size=8",
        "-q",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("TINYMINDS_QUIET",)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
