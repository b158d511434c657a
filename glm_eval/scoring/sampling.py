"""Several samples per document (gen.samples=N): how a task turns N verdicts into one.

- mean (MATH, MATH-500, and the reasoning benchmarks published as Avg@n): the document's value is the share of its
  samples that are right, so the headline is avg@N; the majority answer is kept too (maj@k beside it).
- majority (GSM8K): the most frequent extracted answer is the document's answer (maj@N, Wang et al. 2022,
  self-consistency); answers vote as extracted strings, ties go to the answer seen first, an output with no
  answer does not vote.
- pass_at_k (MBPP, HumanEval): the document's value is the share of samples that pass (the unbiased pass@1).
All also report pass@k, Chen et al. (2021)'s unbiased estimator 1 − C(n−c, k) / C(n, k) for n samples of which
c are correct, averaged over documents, for k in 1, 2, 5, 10, 20, 50, 100 up to n (glm_eval/core/sampled.py adds
avg@n's spread across seeds and maj@k).
"""
from __future__ import annotations

from enum import StrEnum

from glm_eval.core.sampled import majority, majority_verdict  # noqa: F401  (majority: its home before core)

K_VALUES = (1, 2, 5, 10, 20, 50, 100)


class SamplesScoring(StrEnum):
    mean = "mean"
    majority = "majority"
    pass_at_k = "pass_at_k"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct,
    computed as a product (the binomials overflow for n in the hundreds)."""
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def k_values(n: int) -> list[int]:
    return [k for k in K_VALUES if k <= n]


def combine(scoring: SamplesScoring, verdicts: list[dict]) -> dict:
    """One document's record fields from its samples' verdicts (each with `extracted` and `correct`, or a
    `scoring_error`). A sample whose check could not run makes the document unscored, never a failure."""
    errors = [v["scoring_error"] for v in verdicts if "scoring_error" in v]
    # a sample's own gold and vote where its prompt differs from its siblings' (GPQA's shuffled options)
    samples = [{k: v[k] for k in ("extracted", "gold", "vote", "correct", "execution", "rule", "judge", "audit")
                if k in v} for v in verdicts]
    if errors:
        return {"samples": samples, "scoring_error": errors[0]}
    passed = sum(bool(v["correct"]) for v in verdicts)
    fields = {"samples": samples, "passed": passed}
    if scoring in (SamplesScoring.majority, SamplesScoring.mean):
        voted, right = majority_verdict(verdicts)
        fields.update(extracted=voted, correct=right)
    if scoring != SamplesScoring.majority:  # the document's value: the share of right samples
        fields["score"] = passed / len(verdicts)
    return fields
