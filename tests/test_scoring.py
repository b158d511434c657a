"""Metrics: failed requests are not wrong answers; stderr is the standard error of the mean; the headline averages
as the task declares; several samples give majority vote and unbiased pass@k."""
import math
from itertools import combinations
from types import SimpleNamespace

import pytest

from glm_eval.core.averaging import Average, Averaging, mean_and_stderr
from glm_eval.engine.records import summarize
from glm_eval.scoring.sampling import SamplesScoring, combine, majority, pass_at_k


def task(over="micro", samples_scoring=None):
    return SimpleNamespace(cfg=SimpleNamespace(name="t"), metric="accuracy", averaging=Averaging(Average(over)),
                           samples_scoring=samples_scoring, aggregate=lambda records: {}, scale=100, judged=None)


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
    categories = summarize(records, task("categories"))  # X = mean(a, b) = 0.375, Y = c = 1
    assert math.isclose(categories["score"], (0.375 + 1) / 2) and categories["average"] == "categories"


def test_declared_subject_rounding_applies_before_averaging():
    records = [{"subject": "a", "category": "X", "score": s} for s in (1.0, 0.0, 0.0)] + \
              [{"subject": "b", "category": "Y", "score": 0.5}]
    summary = summarize(records, SimpleNamespace(**{**vars(task()), "averaging": Averaging(Average.categories, 2)}))
    assert summary["subjects"]["a"]["score"] == 0.3333  # round(100 · 1/3, 2) / 100, as THUDM's eval.py
    assert math.isclose(summary["score"], (0.3333 + 0.5) / 2) and summary["subject_decimals"] == 2


def test_a_check_that_could_not_run_is_not_a_wrong_answer():
    records = [{"correct": True}, {"correct": False}, {"extracted": "def f(): pass", "scoring_error": "sandbox: x"}]
    summary = summarize(records, task())
    assert summary["n"] == 2 and summary["failed"] == 1 and summary["score"] == 0.5


def test_graded_scores_average_like_verdicts():
    records = [{"score": 0.5}, {"score": 0.25}, {"score": 1.0, "error": "timeout"}]
    summary = summarize(records, task())
    assert math.isclose(summary["score"], 0.375) and summary["n"] == 2 and "correct" not in summary


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 2, 1), (5, 2, 2), (5, 2, 5), (10, 3, 5), (4, 4, 2), (6, 1, 3)])
def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample(n, c, k):
    subsets = list(combinations([True] * c + [False] * (n - c), k))
    assert math.isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets), abs_tol=1e-12)


def test_pass_at_k_stays_finite_for_hundreds_of_samples():
    assert math.isclose(pass_at_k(200, 1, 1), 1 / 200) and 0.99 < pass_at_k(200, 50, 100) <= 1.0


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority([None, "3", "4", "4", None, "3"]) == "3"
    assert majority([None, "5", "7", "7"]) == "7" and majority([None, None]) is None


def test_combined_samples():
    verdicts = [{"extracted": "4", "correct": False}, {"extracted": "5", "correct": True},
                {"extracted": "4", "correct": False}, {"extracted": None, "correct": False}]
    voted = combine(SamplesScoring.majority, verdicts)
    assert (voted["extracted"], voted["correct"], voted["passed"]) == ("4", False, 1)
    assert [s["extracted"] for s in voted["samples"]] == ["4", "5", "4", None]
    code = combine(SamplesScoring.pass_at_k, [{"extracted": "x", "correct": c, "execution": e}
                                              for c, e in ((True, "passed"), (False, "failed"))])
    assert code["score"] == 0.5 and "correct" not in code
    unrun = combine(SamplesScoring.pass_at_k, [{"extracted": "x", "correct": True},
                                               {"extracted": "y", "scoring_error": "sandbox: no uid"}])
    assert unrun["scoring_error"] == "sandbox: no uid" and "score" not in unrun  # never a pass, never a fail


def test_summary_reports_majority_and_pass_at_k():
    records = [{"samples": [{}] * 4, "passed": p, "correct": c} for p, c in ((0, False), (1, False), (3, True), (4, True))]
    summary = summarize(records, task(samples_scoring=SamplesScoring.majority))
    assert summary["metric"] == "maj@4 accuracy" and summary["score"] == 0.5 and summary["samples"] == 4
    assert set(summary["pass@k"]) == {"pass@1", "pass@2"}
    assert math.isclose(summary["pass@k"]["pass@1"], (0 + 1 + 3 + 4) / 16)
    assert math.isclose(summary["pass@k"]["pass@2"], (0 + pass_at_k(4, 1, 2) + pass_at_k(4, 3, 2) + 1) / 4)
