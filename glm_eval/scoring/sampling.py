"""Several samples per document (gen.samples=N): how a task turns N verdicts into one.

- majority (GSM8K, MATH): the most frequent extracted answer is the document's answer (maj@N, Wang et al. 2022,
  self-consistency); answers vote as extracted strings, ties go to the answer seen first, an output with no
  answer does not vote.
- pass_at_k (MBPP, HumanEval): the document's value is the share of samples that pass (the unbiased pass@1).
Both also report pass@k, Chen et al. (2021)'s unbiased estimator 1 − C(n−c, k) / C(n, k) for n samples of which
c are correct, averaged over documents, for k in 1, 2, 5, 10, 20, 50, 100 up to n.
"""
from __future__ import annotations

from collections import Counter
from enum import StrEnum

K_VALUES = (1, 2, 5, 10, 20, 50, 100)


class SamplesScoring(StrEnum):
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


def majority(answers: list[str | None]) -> str | None:
    """The most frequent answer (None does not vote); among equally frequent ones, the first seen."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def combine(scoring: SamplesScoring, verdicts: list[dict]) -> dict:
    """One document's record fields from its samples' verdicts (each with `extracted` and `correct`, or a
    `scoring_error`). A sample whose check could not run makes the document unscored, never a failure."""
    errors = [v["scoring_error"] for v in verdicts if "scoring_error" in v]
    samples = [{k: v[k] for k in ("extracted", "correct", "execution") if k in v} for v in verdicts]
    if errors:
        return {"samples": samples, "scoring_error": errors[0]}
    passed = sum(bool(v["correct"]) for v in verdicts)
    fields = {"samples": samples, "passed": passed}
    if scoring == SamplesScoring.majority:
        voted = majority([v["extracted"] for v in verdicts])
        fields.update(extracted=voted, correct=any(v["correct"] for v in verdicts if v["extracted"] == voted)
                      if voted is not None else False)
    else:
        fields["score"] = passed / len(verdicts)
    return fields
