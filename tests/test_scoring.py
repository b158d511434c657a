"""Metrics: failed requests are not wrong answers; stderr is the standard error of the mean."""
import math
from types import SimpleNamespace

from glm_eval.runner import mean_and_stderr, summarize


def task(headline="micro"):
    return SimpleNamespace(cfg=SimpleNamespace(name="t"), metric="accuracy", headline=headline,
                           aggregate=lambda records: {})


def test_failed_requests_are_excluded_from_the_score():
    records = [{"correct": True}, {"correct": False}, {"correct": True}, {"gold": "3", "error": "timeout"}]
    summary = summarize(records, task())
    assert summary["n"] == 3 and summary["failed"] == 1 and summary["correct"] == 2
    assert math.isclose(summary["score"], 2 / 3)


def test_stderr_is_sample_std_over_sqrt_n():
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and math.isclose(stderr, math.sqrt(0.25 / 4))


def test_subjects_give_micro_macro_and_categories():
    records = ([{"subject": "a", "category": "X", "correct": c} for c in (True, True, True, False)]
               + [{"subject": "b", "category": "X", "correct": False}, {"subject": "c", "category": "Y", "correct": True}]
               + [{"subject": "c", "category": "Y", "error": "timeout"}])
    micro = summarize(records, task("micro"))
    assert micro["n"] == 6 and micro["failed"] == 1
    assert math.isclose(micro["score"], 4 / 6) and micro["average"] == "micro"
    assert math.isclose(micro["macro"], (0.75 + 0 + 1) / 3)
    assert micro["subjects"]["a"] == {"score": 0.75, "n": 4}
    assert math.isclose(micro["categories"]["X"]["score"], 3 / 5)  # micro within the category
    macro = summarize(records, task("macro"))
    assert math.isclose(macro["score"], (0.75 + 0 + 1) / 3) and macro["average"] == "macro"
    assert math.isclose(macro["categories"]["X"]["score"], (0.75 + 0) / 2)  # mean of its subjects


def test_a_check_that_could_not_run_is_not_a_wrong_answer():
    records = [{"correct": True}, {"correct": False}, {"extracted": "def f(): pass", "scoring_error": "sandbox: x"}]
    summary = summarize(records, task())
    assert summary["n"] == 2 and summary["failed"] == 1 and summary["score"] == 0.5


def test_graded_scores_average_like_verdicts():
    records = [{"score": 0.5}, {"score": 0.25}, {"score": 1.0, "error": "timeout"}]
    summary = summarize(records, task())
    assert math.isclose(summary["score"], 0.375) and summary["n"] == 2 and "correct" not in summary
