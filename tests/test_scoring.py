"""Metrics: failed requests are not wrong answers; stderr is the standard error of the mean."""
import math

from glm_eval.runner import mean_and_stderr, summarize


def test_failed_requests_are_excluded_from_the_score():
    records = [{"correct": True}, {"correct": False}, {"correct": True}, {"gold": "3", "error": "timeout"}]
    summary = summarize(records, "gsm8k")
    assert summary["n"] == 3 and summary["failed"] == 1 and summary["correct"] == 2
    assert math.isclose(summary["score"], 2 / 3)


def test_stderr_is_sample_std_over_sqrt_n():
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and math.isclose(stderr, math.sqrt(0.25 / 4))
