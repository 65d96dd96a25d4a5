"""`tinyminds compare`: the tests against scipy and by hand, pairing, paper matching, the files.

Results files are written with the evaluation's own `ResultsWriter`, so that a change of the
results format shows up here.
"""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from scipy import stats

from tinyminds.cli import main
from tinyminds.errors import UserError
from tinyminds.evaluation.compare import compare, load_results, paired_tests
from tinyminds.evaluation.published import PUBLISHED, match_published
from tinyminds.evaluation.results import ResultsWriter, SubtaskResult, TaskResult

SPEC = REPO_ROOT.parent / "shared" / "SPEC.md"


def write_results(
    out: Path,
    name: str,
    tasks: dict[str, dict[str, tuple[int, int]]],
    recipe: str | None = None,
    max_items: int | None = None,
) -> Path:
    """A results file as `tinyminds evaluate` writes it; tasks: task -> subtask -> (correct, n)."""
    model = {"name": name, "path": f"/models/{name}", "architecture": "GPT2LMHeadModel"}
    model["parameters"] = 1_234_567
    if recipe:
        model["recipe"] = recipe
    header = {"model": model, "tinyminds_version": "0", "device": "cpu", "max_items": max_items}
    writer = ResultsWriter(out, name, header, list(tasks))
    for task, subtasks in tasks.items():
        results = [
            SubtaskResult(sub, n, correct, 0, f"/data/{sub}.jsonl", f"hash-{sub}-{n}")
            for sub, (correct, n) in subtasks.items()
        ]
        writer.add(TaskResult(task, results, None, 1.0))
    return writer.json_path


# --- the tests ------------------------------------------------------------------------------------


def test_paired_tests_equal_scipy_on_the_paired_scores() -> None:
    rng = random.Random(0)
    a = {f"paradigm_{i:02}": rng.uniform(40, 90) for i in range(30)}
    b = {name: score + rng.gauss(1.0, 5.0) for name, score in a.items()}
    a["only_a"], b["only_b_1"], b["only_b_2"] = 70.0, 60.0, 65.0
    shuffled = dict(rng.sample(sorted(b.items()), len(b)))  # pairing is by name, not by order
    tests = paired_tests(a, shuffled)
    names = sorted(set(a) & set(b))
    x, y = [a[n] for n in names], [b[n] for n in names]
    assert tests.n == tests.nonzero == 30
    assert tests.only_in_a == ["only_a"] and tests.only_in_b == ["only_b_1", "only_b_2"]
    expected = stats.wilcoxon(x, y)
    assert tests.wilcoxon_statistic == pytest.approx(expected.statistic, abs=0)
    assert tests.wilcoxon_p == pytest.approx(expected.pvalue, rel=1e-12)
    expected = stats.ranksums(x, y)
    assert tests.ranksum_statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert tests.ranksum_p == pytest.approx(expected.pvalue, rel=1e-12)
    assert tests.mean_difference == pytest.approx(
        sum(u - v for u, v in zip(x, y, strict=True)) / 30
    )


def test_paired_tests_by_hand() -> None:
    # Differences +1, +2, +3, -4: signed ranks 1, 2, 3 and -4, so W+ = 6, W- = 4 and W = 4. Of
    # the 16 equally likely sign patterns, 7 give a rank sum <= 4 ({}, 1, 2, 3, 4, 1+2, 1+3):
    # two-sided exact p = 2 * 7/16.
    a = {"s1": 51.0, "s2": 52.0, "s3": 53.0, "s4": 46.0}
    b = dict.fromkeys(a, 50.0)
    tests = paired_tests(a, b)
    assert (tests.n, tests.wilcoxon_statistic, tests.wilcoxon_p) == (4, 4.0, 0.875)
    # Rank sums: a's ranks among the 8 scores are 1, 6, 7, 8 (the four 50s share 3.5), so R = 22
    # against 4 * 9 / 2 = 18 expected, variance 4 * 4 * 9 / 12 = 12: z = 4 / sqrt(12).
    assert tests.ranksum_statistic == pytest.approx(4 / 12**0.5)
    assert tests.ranksum_p == pytest.approx(0.248213078989, rel=1e-9)
    assert tests.mean_difference == 0.5


def test_no_test_where_it_cannot_run() -> None:
    same = paired_tests({"a": 60.0, "b": 70.0}, {"a": 60.0, "b": 70.0})
    assert same.nonzero == 0 and same.wilcoxon_p is None and same.wilcoxon_statistic is None
    assert same.ranksum_p == 1.0 and "every paired score is equal" in same.notes[0]
    one = paired_tests({"a": 60.0, "b": 70.0}, {"a": 61.0, "c": 70.0})
    assert one.n == 1 and one.wilcoxon_p is None and one.ranksum_p is None
    assert "too few" in one.notes[0]
    none = paired_tests({"a": 60.0}, {"b": 60.0})
    assert none.n == 0 and none.mean_difference is None


def test_differing_pair_counts_and_data_are_noted() -> None:
    tests = paired_tests(
        {"x": 50.0, "y": 60.0, "z": 70.0},
        {"x": 55.0, "y": 60.0, "z": 75.0},
        sizes=({"x": 20, "y": 20, "z": 20}, {"x": 1000, "y": 20, "z": 20}),
        hashes=({"x": "h1", "y": "h2"}, {"x": "h1", "y": "other"}),
    )
    assert tests.nonzero == 2
    assert "1 paired subtasks have different pair counts" in tests.notes[0]
    assert "1 paired subtasks have different data files" in tests.notes[1]


@pytest.mark.parametrize(
    ("name", "recipe", "expected"),
    [
        ("distilledgpt-44m", None, ["DistilledGPT-44M (paper)", "DistilledGPT-44M (re-run)"]),
        ("DistilledGPT_44M", None, ["DistilledGPT-44M (paper)", "DistilledGPT-44M (re-run)"]),
        ("my-run", "babyllama-58m", ["BabyLlama-58M (paper)"]),
        (
            "babyllama-58m",
            "distilledgpt-44m",
            ["DistilledGPT-44M (paper)", "DistilledGPT-44M (re-run)"],
        ),
        ("gpt2-44m-seed42", None, ["GPT2-44M (paper)"]),
        ("llama-60m", "llama-60m", ["Llama-60M (paper)"]),
        ("MaskedAdverserialLlama-58M", None, ["MaskedAdversarialLlama-58M (paper)"]),
        ("ltg-bert", None, ["LTG-BERT (paper)"]),
        ("llama-58m", "llama-58m", []),  # BabyLlama's student architecture, but no teachers
        ("distill-tiny", "distill-tiny", []),
        ("gpt2-tiny", None, []),
        ("gpt2", None, []),
        ("", None, []),
    ],
)
def test_name_matching(name: str, recipe: str | None, expected: list[str]) -> None:
    assert [entry.column for entry in match_published(name, recipe)] == expected


def test_published_numbers_are_the_specs() -> None:
    """Every number SPEC §4 publishes is in `PUBLISHED`, and the same."""
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not found")
    section = SPEC.read_text(encoding="utf-8").split("Published numbers to compare with", 1)[1]
    section = " ".join(section.split("## 5.", 1)[0].split())
    zero_shot = re.findall(
        r"([A-Za-z0-9-]+) (\d+\.\d) / (?:supplement )?(\d+\.\d) / (?:EWoK )?(\d+\.\d)", section
    )
    assert len(zero_shot) == 7
    paper = {entry.model: entry for entry in PUBLISHED if entry.label == "paper"}
    for model, blimp, supplement, ewok in zero_shot:
        assert paper[model].scores == {
            **paper[model].scores,
            "blimp": float(blimp),
            "supplement": float(supplement),
            "ewok": float(ewok),
        }, model
    rerun = re.search(
        r"re-run of DistilledGPT-44M got BLiMP (\d+\.\d), supplement (\d+\.\d), EWoK (\d+\.\d)",
        section,
    )
    (entry,) = [e for e in PUBLISHED if e.label == "re-run"]
    assert rerun and [entry.scores[t] for t in ("blimp", "supplement", "ewok")] == [
        float(v) for v in rerun.groups()
    ]
    glue = dict(
        re.findall(
            r"(MRPC|RTE|MultiRC|QQP|QNLI|WSC|MNLI|SST-2|BoolQ|CoLA MCC|macro) (-?\d+(?:\.\d+)?/-?\d+(?:\.\d+)?)",
            section,
        )
    )
    assert len(glue) == 11
    for task, values in glue.items():
        ours, babyllama = (float(v) for v in values.split("/"))
        key = "glue" if task == "macro" else task.split()[0].lower().replace("-", "")
        if key == "glue":
            assert paper["DistilledGPT-44M"].scores["glue"] == ours
            assert paper["BabyLlama-58M"].scores["glue"] == babyllama
        else:
            assert (paper["DistilledGPT-44M"].glue[key], paper["BabyLlama-58M"].glue[key]) == (
                ours,
                babyllama,
            )


@pytest.fixture
def three_results(tmp_path: Path) -> list[Path]:
    results = tmp_path / "results"
    blimp = {f"p{i}": (10 + i, 20) for i in range(6)}
    student = write_results(
        results,
        "distilledgpt-44m",
        {
            "blimp": {**blimp, "p0": (15, 20), "p1": (17, 20)},
            "supplement": {"hypernym": (11, 20), "turn_taking": (12, 20)},
            "ewok": {"agent": (9, 20), "social": (10, 20), "spatial": (13, 20)},
        },
        recipe="distilledgpt-44m",
        max_items=20,
    )
    teacher = write_results(
        results,
        "gpt2-44m",
        {
            "blimp": {**blimp, "p6": (20, 20)},  # p6 only here: dropped from the tests
            "supplement": {"hypernym": (10, 20), "turn_taking": (12, 20)},
        },
        recipe="gpt2-44m",
        max_items=20,
    )
    other = write_results(results, "mine", {"blimp": blimp}, max_items=20)
    return [student, teacher, other]


def test_table_json_and_chart(three_results: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "comparison"
    files = compare(three_results, out)
    text = (out / "comparison.md").read_text(encoding="utf-8")
    assert text == files.markdown
    header = "| task | distilledgpt-44m | gpt2-44m | mine | DistilledGPT-44M (paper) | DistilledGPT-44M (re-run) | GPT2-44M (paper) |"
    assert header in text
    blimp_student = 100 * (15 + 17 + 12 + 13 + 14 + 15) / 120
    blimp_teacher = 100 * (10 + 11 + 12 + 13 + 14 + 15 + 20) / 140
    assert (
        f"| BLiMP | {blimp_student:.1f} | {blimp_teacher:.1f} | 62.5 | 66.8 | 65.8 | 65.6 |" in text
    )
    assert "| EWoK | 53.3 | – | – | 50.0 | 50.0 | 50.4 |" in text
    assert (
        "| BLiMP | 6 subtasks, 120 items | 7 subtasks, 140 items | 6 subtasks, 120 items |" in text
    )
    assert "at most 20 (quick look)" in text and "Tables 2-4" in text
    # Three pairs for BLiMP, one for the supplement, none for EWoK (one model has it).
    rows = [line for line in text.splitlines() if " vs " in line and line.startswith("| ")]
    assert len(rows) == 4
    row = next(r for r in rows if r.startswith("| BLiMP | distilledgpt-44m vs gpt2-44m |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    paired = paired_tests(
        {f"p{i}": v for i, v in enumerate([75, 85, 60, 65, 70, 75])},
        {f"p{i}": v for i, v in enumerate([50, 55, 60, 65, 70, 75])},
    )
    assert cells[2:5] == ["6", "2", f"{paired.mean_difference:+.2f}"]
    assert float(cells[5]) == paired.wilcoxon_statistic and float(cells[6]) == pytest.approx(
        paired.wilcoxon_p, abs=1e-3
    )
    assert (
        "- BLiMP, distilledgpt-44m vs gpt2-44m: subtasks dropped: 1 only in gpt2-44m (p6)" in text
    )
    assert "- EWoK: no test with gpt2-44m, mine (not scored)" in text

    document = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert document == files.json_document
    assert [m["label"] for m in document["models"]] == ["distilledgpt-44m", "gpt2-44m", "mine"]
    first = document["comparisons"][0]
    assert (first["task"], first["a"], first["b"], first["n"]) == (
        "blimp",
        "distilledgpt-44m",
        "gpt2-44m",
        6,
    )
    assert first["wilcoxon_p"] == pytest.approx(paired.wilcoxon_p)
    assert first["only_in_b"] == ["p6"]
    assert document["models"][0]["published"][0]["source"].endswith("Tables 2-4")

    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 600 and height >= 400 and len(png) > 10_000


def test_against_first_and_a_glue_entry(three_results: list[Path], tmp_path: Path) -> None:
    for path, cola in ((three_results[0], 0.1), (three_results[2], 0.3)):
        document = json.loads(path.read_text())
        document["tasks"]["glue"] = {  # another engineer's GLUE entry, read generically
            "score": 0.7,
            "subtasks": {
                "cola": {"score": cola, "n": 100},
                "rte": {"accuracy": 0.6, "n": 50},
                "boolq": {"status": "missing"},
                "mrpc": 0.8,
            },
        }
        path.write_text(json.dumps(document))
    files = compare(three_results, tmp_path / "out", against_first=True)
    pairs = {(c["task"], c["a"], c["b"]) for c in files.json_document["comparisons"]}
    assert ("blimp", "gpt2-44m", "mine") not in pairs and len(pairs) == 4
    glue = next(c for c in files.json_document["comparisons"] if c["task"] == "glue")
    assert (glue["n"], glue["nonzero"], glue["mean_difference"]) == (3, 1, pytest.approx(-20 / 3))
    assert "| GLUE | 70.0 | – | 70.0 | 68.8 | – | – |" in files.markdown
    assert "3 subtasks, 150 items, 1 unscored (boolq)" in files.markdown
    assert load_results(three_results[0]).tasks["glue"].subtasks["cola"] == pytest.approx(10.0)


def test_models_with_the_same_name_get_distinct_labels(tmp_path: Path) -> None:
    tasks = {"blimp": {"p0": (10, 20), "p1": (12, 20)}}
    first = write_results(tmp_path / "seed42", "gpt2-44m", tasks)
    second = write_results(
        tmp_path / "seed7", "gpt2-44m", {"blimp": {"p0": (11, 20), "p1": (15, 20)}}
    )
    files = compare([first, second], tmp_path / "out")
    assert "| BLiMP | gpt2-44m (seed42) vs gpt2-44m (seed7) |" in files.markdown


def test_command(
    three_results: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, three_results[:2]), "--out", str(out), "-q"]) == 0
    stdout = capsys.readouterr().out
    assert "| task | distilledgpt-44m | gpt2-44m |" in stdout
    assert f"chart:  {out / 'comparison.png'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.json",
        "comparison.md",
        "comparison.png",
    ]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_naming_the_file(
    three_results: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = str(three_results[0])
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": {"name": "x"},\n "tasks": ', encoding="utf-8")
    err = one_line_error(capsys, ["compare", good, str(broken)])
    assert err == f"tinyminds compare: error: {broken}: not a JSON document (line 2)\n"

    pairs = three_results[0].with_name("distilledgpt-44m.pairs.jsonl")
    err = one_line_error(capsys, ["compare", good, str(pairs)])
    assert f"{pairs}: not a JSON document" in err and "not NAME.pairs.jsonl" in err

    for document in ({"hello": 1}, [1, 2], {"tasks": {"blimp": {}}}):
        other = tmp_path / "other.json"
        other.write_text(json.dumps(document), encoding="utf-8")
        err = one_line_error(capsys, ["compare", good, str(other)])
        assert f"error: {other} is not a tinyminds results file" in err

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"model": {"name": "x"}, "tasks": {}}), encoding="utf-8")
    assert f"{empty} holds no finished task" in one_line_error(
        capsys, ["compare", good, str(empty)]
    )

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert f"{binary}: cannot read the results file (not UTF-8)" in one_line_error(
        capsys, ["compare", good, str(binary)]
    )
    missing = tmp_path / "absent.json"
    assert f"{missing}: no such results file" in one_line_error(
        capsys, ["compare", good, str(missing)]
    )
    assert "needs at least 2 results files, got 1" in one_line_error(capsys, ["compare", good])
    with pytest.raises(UserError, match="got 0"):
        compare([], tmp_path)
    assert not (tmp_path / "comparison").exists()
