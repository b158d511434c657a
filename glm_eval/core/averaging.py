"""How a task's headline averages its documents, declared once per task (`Task.averaging`) and stored in
metrics.json, and the statistics every consumer (summary, LongBench, compare, report) computes from it.

A document has a value (1/0 for a verdict, or a graded score) and may belong to a subject (a subtask or dataset)
and a category (a group of subjects; CMMLU's subjects may be in several). The headline is Σ weight · mean of a
subject's values, with the weights the declaration gives:
  micro       each document weighs the same (Hendrycks' MMLU, GSM8K);
  macro       each subject weighs the same (BBH, AGIEval);
  categories  each category weighs the same, and inside it each subject (LongBench's overall).
A category's own score averages its documents the way the headline does: micro over its documents, else the mean
of its subjects' scores.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum


class Average(StrEnum):
    micro = "micro"
    macro = "macro"
    categories = "categories"


@dataclass(frozen=True)
class Averaging:
    over: Average = Average.micro
    # LongBench (THUDM's eval.py): a subject's score is round(100 · mean, 2) before anything averages it
    subject_decimals: int | None = None

    def to_metrics(self) -> dict:
        return {"average": str(self.over), **({"subject_decimals": self.subject_decimals}
                                             if self.subject_decimals is not None else {})}

    @classmethod
    def from_metrics(cls, metrics: dict) -> Averaging:
        """The declaration a run's metrics.json carries (`average`, `subject_decimals`); micro when absent."""
        try:
            over = Average(metrics.get("average", "micro"))
        except ValueError:
            over = Average.micro
        decimals = metrics.get("subject_decimals")
        return cls(over, decimals if isinstance(decimals, int) else None)

    @property
    def within_category(self) -> Averaging:
        return Averaging(Average.micro if self.over == Average.micro else Average.macro, self.subject_decimals)

    def subject_score(self, values: list[float]) -> float:
        mean = sum(values) / len(values)
        return mean if self.subject_decimals is None else round(100 * mean, self.subject_decimals) / 100

    def weights(self, subjects: list[str | None], categories: list) -> dict[str, float]:
        """Weight of each subject ("" for documents without one) in the headline; they sum to 1. `categories[i]`
        is document i's category (a name, a list of names whose first counts, or None)."""
        counts = Counter("" if s is None else s for s in subjects)
        if self.over == Average.macro:
            return {s: 1 / len(counts) for s in counts}
        if self.over == Average.categories:
            category_of = {("" if s is None else s): first_category(c) for s, c in zip(subjects, categories)}
            per_category = Counter(category_of.values())
            return {s: 1 / (len(per_category) * per_category[category_of[s]]) for s in counts}
        total = sum(counts.values())
        return {s: n / total for s, n in counts.items()}


def first_category(category) -> str:
    if isinstance(category, list):
        return str(category[0]) if category else ""
    return "" if category is None else str(category)


def category_names(category) -> list[str]:
    """A document's categories: `category` may be a name or a list of names."""
    return [category] if isinstance(category, str) else [str(c) for c in category or []]


def record_value(record: dict) -> float:
    """A document's value: its graded `score` (LongBench's F1, ROUGE, pass@1 over samples, …) or 1/0 for `correct`."""
    return float(record["score"] if "score" in record else record["correct"])


def is_scored(record: dict) -> bool:
    """A record with a verdict: its requests did not fail and scoring gave it a `score` or `correct`."""
    return "error" not in record and "scoring_error" not in record and ("score" in record or "correct" in record)


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and the standard error of the mean (sample standard deviation / sqrt(n)), as lm-eval reports."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def stderr_of_weighted_means(parts: list[tuple[float, list[float]]]) -> float:
    """Standard error of Σ weight · mean(values) over independent groups: sqrt(Σ weight² · stderr²); a group of
    one value has no stderr and adds nothing."""
    errors = [(weight, mean_and_stderr(values)[1]) for weight, values in parts]
    return math.sqrt(sum(weight * weight * e * e for weight, e in errors if e == e))


def summarize(values: list[float], subjects: list[str | None], categories: list, averaging: Averaging) -> dict:
    """Headline `score` and `stderr` of documents' values as `averaging` declares, and, where documents have
    subjects, the micro and macro averages and a table per subject and per category (scores in 0-1)."""
    micro, stderr = mean_and_stderr(values)
    out = {"score": micro, "stderr": stderr, **averaging.to_metrics()}
    if not any(s is not None for s in subjects):
        return out
    by_subject: dict[str, list[float]] = {}
    category_of: dict[str, set[str]] = {}
    for value, subject, category in zip(values, subjects, categories):
        key = "" if subject is None else subject
        by_subject.setdefault(key, []).append(value)
        category_of[key] = set(category_names(category))
    table = {s: {"score": averaging.subject_score(v), "n": len(v)} for s, v in sorted(by_subject.items())}
    macro = sum(x["score"] for x in table.values()) / len(table)
    out.update(micro=micro, macro=macro, subjects=table, categories={})
    if averaging.over == Average.macro:
        out["score"] = macro
    if averaging.over != Average.micro:
        weights = averaging.weights(subjects, categories)
        if averaging.over == Average.categories:
            out["score"] = sum(weights[s] * table[s]["score"] for s in table)
        out["stderr"] = stderr_of_weighted_means([(weights[s], by_subject[s]) for s in table])
    within = averaging.within_category.over
    for category in sorted(set().union(*category_of.values())):
        members = [s for s in table if category in category_of[s]]
        docs = [v for s in members for v in by_subject[s]]
        score = (sum(docs) / len(docs) if within == Average.micro
                 else sum(table[s]["score"] for s in members) / len(members))
        out["categories"][category] = {"score": score, "n": len(docs), "subjects": len(members)}
    return out
