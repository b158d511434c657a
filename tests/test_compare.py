"""glm_eval.analysis.compare: the statistics on constructed runs with known answers, then a real comparison of the embedded
model against itself with another prompt setting (conftest's `prompt_settings`: 0-shot vs 3-shot GSM8K, C-Eval with
and without the chat template)."""
import csv
import json
import math

import numpy as np
import pytest

from conftest import run_command

from glm_eval.analysis.compare import main as compare_main
from glm_eval.analysis.compare import compare, find_runs, mcnemar_exact, permutation_p, strata
from glm_eval.core.averaging import Averaging


def write_run(folder, task, records, model="m", average="micro"):
    """A run folder as the runner writes it: metrics.json (the fields compare reads) and samples.jsonl."""
    folder.mkdir(parents=True)
    values = [r.get("score", r.get("correct")) for r in records]
    (folder / "metrics.json").write_text(json.dumps({"model": model, "task": task, "metric": "accuracy",
                                                     "average": average, "score": float(np.mean(values)),
                                                     "stderr": 0.0, "n": len(records)}))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def binary_records(verdicts, subjects=None):
    return [{"doc_id": i, "gold": f"g{i}", "correct": bool(v), **({"subject": subjects[i]} if subjects else {})}
            for i, v in enumerate(verdicts)]


def compare_cli(*args):
    return run_command(compare_main, *args)


def test_identical_runs_give_zero_delta_and_p_one(tmp_path):
    verdicts = np.random.default_rng(0).integers(0, 2, 200)
    subjects = [f"s{i % 7}" for i in range(200)]
    for average in ("micro", "macro"):
        write_run(tmp_path / average / "a" / "t", "t", binary_records(verdicts, subjects), average=average)
        write_run(tmp_path / average / "b" / "t", "t", binary_records(verdicts, subjects), average=average)
        rows = compare(find_runs([tmp_path / average]), resamples=2000).rows
        assert len(rows) == 1 + 7  # overall and seven subjects
        assert (rows.delta == 0).all() and (rows.ci_low == 0).all() and (rows.ci_high == 0).all()
        assert (rows.p == 1).all() and (rows.worse == 0).all() and (rows.better == 0).all()
        assert set(rows.test) == {"McNemar exact"}
    graded = [{"doc_id": i, "answers": [str(i)], "score": s, "subject": "d"}
              for i, s in enumerate(np.random.default_rng(1).random(50))]
    write_run(tmp_path / "graded" / "a" / "t", "t", graded)
    write_run(tmp_path / "graded" / "b" / "t", "t", graded)
    overall = compare(find_runs([tmp_path / "graded"])).rows.iloc[0]
    assert (overall.delta, overall.p, overall.test) == (0, 1, "paired permutation")


def test_known_flips_give_the_exact_mcnemar_p(tmp_path):
    reference = [1] * 30 + [0] * 30
    other = [0] * 10 + [1] * 20 + [1] * 2 + [0] * 28  # 10 right→wrong (ids 0-9), 2 wrong→right (ids 30, 31)
    write_run(tmp_path / "base" / "t", "t", binary_records(reference))
    write_run(tmp_path / "new" / "t", "t", binary_records(other))
    result = compare_cli(tmp_path, "reference=base", "resamples=2000")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "comparison" / "comparison.csv")))
    assert len(rows) == 1 and rows[0]["model"] == "new" and rows[0]["reference"] == "base"
    exact = 2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12  # two-sided binomial tail, 12 discordant
    assert float(rows[0]["p"]) == pytest.approx(exact, rel=1e-9) and exact == pytest.approx(0.03857, abs=1e-5)
    assert float(rows[0]["delta"]) == pytest.approx(100 * (22 - 30) / 60)
    assert float(rows[0]["ci_low"]) < float(rows[0]["delta"]) < float(rows[0]["ci_high"]) < 0
    flips = list(csv.DictReader(open(tmp_path / "comparison" / "flips.csv")))
    assert sorted(int(f["doc_id"]) for f in flips if f["direction"] == "right→wrong") == list(range(10))
    assert sorted(int(f["doc_id"]) for f in flips if f["direction"] == "wrong→right") == [30, 31]
    assert "right→wrong (10): 0, 1, 2" in result.stdout and "| new | 60 |" in result.stdout
    assert mcnemar_exact(0, 0) == 1 and mcnemar_exact(4, 4) == 1


def test_permutation_p_is_exact_for_few_differing_documents():
    a, b = np.array([0.0, 0.5, 1.0, 0.2]), np.array([0.0, 1.0, 0.8, 0.9])
    terms = (b - a) / 4  # 0, .125, -.05, .175: of the 8 sign patterns of the three nonzero terms, 4 reach |sum| ≥ .25
    assert permutation_p(a, b, strata([None] * 4, Averaging(), []), 100, 0) == pytest.approx(4 / 8)
    assert abs(terms.sum()) == pytest.approx(0.25)


def test_longbench_average_weights_categories_then_datasets(tmp_path):
    """LongBench's headline is the mean of its categories, each the mean of its datasets: with datasets a1, a2 in
    one category and b1 in another, a b1 document weighs as much as all of a1 and a2 together."""
    layout = [("a1", "A")] * 4 + [("a2", "A")] * 2 + [("b1", "B")] * 5
    before = [{"doc_id": i, "subject": d, "category": c, "answers": [str(i)], "score": 0.0}
              for i, (d, c) in enumerate(layout)]
    after = [{**r, "score": 1.0 if r["subject"] == "b1" else 0.0} for r in before]
    write_run(tmp_path / "x" / "longbench", "longbench", before, average="categories")
    write_run(tmp_path / "y" / "longbench", "longbench", after, average="categories")
    rows = compare(find_runs([tmp_path]), reference="x", resamples=500).rows.set_index(["scope", "group"])
    assert rows.loc[("overall", ""), "delta"] == pytest.approx(50.0)  # (A: 0 + B: 100) / 2
    assert rows.loc[("category", "B"), "delta"] == pytest.approx(100.0)
    assert rows.loc[("overall", ""), "test"] == "paired permutation" and rows.loc[("overall", ""), "better"] == 5
    assert rows.loc[("overall", ""), "p"] == pytest.approx(2 / 2 ** 5)  # exact: only all-same signs reach |Δ|


def test_different_document_sets_are_compared_on_their_intersection(tmp_path):
    write_run(tmp_path / "a" / "t", "t", binary_records([1, 0, 1, 0, 1, 1]))
    shifted = binary_records([1, 1, 0, 0, 1, 0, 1, 1])[2:]  # ids 2-7
    shifted[0]["gold"] = "another answer"  # id 2: same id, another document → left out, not paired
    write_run(tmp_path / "b" / "t", "t", shifted)
    c = compare(find_runs([tmp_path]), reference="a", resamples=500)
    assert c.rows.iloc[0].n == 3  # ids 3, 4, 5
    notes = " ".join(c.notes["t"])
    assert "intersection only" in notes and "1 documents share an id" in notes


def test_bad_arguments_cost_one_line(tmp_path):
    for args, expected in (([tmp_path, "refrence=x"], "unknown option 'refrence'"),
                           ([tmp_path / "missing"], "no such folder"),
                           ([tmp_path], "no runs"), ([], "usage:"), ([tmp_path, "resamples=many"], "whole number")):
        result = compare_cli(*args)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1


def read_samples(path):
    return {r["doc_id"]: r for r in map(json.loads, open(path, encoding="utf-8"))}


def test_real_comparison_of_two_prompt_settings(prompt_settings):
    result = compare_cli(prompt_settings, "reference=zero-shot")
    assert result.returncode == 0, result.stderr
    out = prompt_settings / "comparison"
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    for task, n, reference, other in (("gsm8k", 6, "zero-shot", "few-shot"), ("ceval", 52, "chat", "plain")):
        overall = [r for r in rows if r["task"] == task and r["scope"] == "overall"]
        assert len(overall) == 1 and (overall[0]["reference"], overall[0]["model"]) == (reference, other)
        row = overall[0]
        before = read_samples(prompt_settings / reference / task / "samples.jsonl")
        after = read_samples(prompt_settings / other / task / "samples.jsonl")
        assert int(row["n"]) == n == len(before) == len(after)
        # the scores are the runs' own headline scores, the flips and p those of their records
        for column, setting in (("reference_score", reference), ("score", other)):
            metrics = json.loads((prompt_settings / setting / task / "metrics.json").read_text())
            assert float(row[column]) == pytest.approx(100 * metrics["score"], abs=1e-6)
        worse = sorted(i for i in before if before[i]["correct"] and not after[i]["correct"])
        better = sorted(i for i in before if not before[i]["correct"] and after[i]["correct"])
        assert (int(row["worse_or_right_to_wrong"]), int(row["better_or_wrong_to_right"])) == (len(worse), len(better))
        assert float(row["p"]) == pytest.approx(mcnemar_exact(len(worse), len(better)))
        flips = [f for f in csv.DictReader(open(out / "flips.csv")) if f["task"] == task]
        assert sorted(int(f["doc_id"]) for f in flips if f["direction"] == "right→wrong") == worse
        assert sorted(int(f["doc_id"]) for f in flips if f["direction"] == "wrong→right") == better
    ceval = [r for r in rows if r["task"] == "ceval"]
    subjects = {r["group"] for r in ceval if r["scope"] == "subject"}
    assert subjects == {"accountant", "advanced_mathematics"}
    assert [int(r["n"]) for r in ceval if r["scope"] == "subject"] == [49, 3]
    assert {r["group"] for r in ceval if r["scope"] == "category"} == {"Other", "STEM"}
    markdown = (out / "comparison.md").read_text()
    assert "## gsm8k" in markdown and "## ceval" in markdown and "### Per subject" in markdown
    assert "reference zero-shot has no ceval run; compared against chat" in markdown
    print(markdown)  # the closing note's table comes from this run (pytest -s)
