"""A task's judged step, declared as data, and the judge's bookkeeping read back from records.

A task that lets a judge model weigh in declares one `JudgedStep`: which verdicts the judge sees (`when`), what it is
asked (`ask`: the judge's chat turns, built from the sample's record, its answer and the rule verdict), how its reply
is read (`read`: verdict fields, or None when the reply says nothing usable) and the prompt's `version` (part of every
judge cache key: a changed prompt never reuses stale verdicts). The engine (glm_eval/engine/judge.py) asks after the
main answers are cached and writes, on each judged sample:
  rule:  the rule's verdict fields before the judge ({"extracted", "correct"})
  judge: {"reply": the judge's raw reply (bounded), "verdict": what `read` made of it, or "error" / "unreadable"}
  audit: the same for a verdict the rule was sure of (judging.audit=N), with "agrees"
and the metrics below are computed from those fields alone, so a rescore recomputes them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable

from glm_eval.core.averaging import is_scored, record_value

Messages = list[tuple[str, str]]  # (role, content)


class JudgeWhen(StrEnum):
    always = "always"  # every answer: the judge is the metric (AlignBench)
    rule_wrong = "rule_wrong"  # an answer the rules call wrong or cannot parse: equivalence they missed (MATH, AIME)
    no_answer = "no_answer"  # the rule found no answer: the judge reads one out of the reply (GPQA, MMLU-Pro)


@dataclass(frozen=True)
class JudgedStep:
    name: str  # what the judge decides: "equivalence", "letter", "rating"
    version: str  # of the prompt and its reading; bump it when either changes
    when: JudgeWhen
    ask: Callable[[dict, str, dict], Messages]  # (sample record, its answer text, rule verdict) → the judge's turns
    read: Callable[[str, dict, dict], dict | None]  # (judge's answer, sample record, rule verdict) → verdict fields
    max_new_tokens: int = 64
    temperature: float = 0.0

    def wants(self, verdict: dict) -> bool:
        if "scoring_error" in verdict:
            return False
        if self.when == JudgeWhen.always:
            return True
        if self.when == JudgeWhen.rule_wrong:  # an answer to compare, that the rules did not accept
            return not verdict.get("correct") and verdict.get("extracted") is not None
        return verdict.get("extracted") is None

    def sure(self, verdict: dict) -> bool:
        """A rule verdict the judge could be audited on: one it does not see otherwise."""
        if "scoring_error" in verdict or self.when == JudgeWhen.always:
            return False
        if self.when == JudgeWhen.rule_wrong:
            return bool(verdict.get("correct"))
        return verdict.get("extracted") is not None


def audit_order(record: dict) -> str:
    """Which sure verdicts judging.audit=N takes: a fixed pseudo-random order (not the first N, which cluster)."""
    return hashlib.sha256(f"{record.get('doc_id')}:{record.get('sample_index', 0)}".encode()).hexdigest()


def units(record: dict) -> list[dict]:
    """The verdicts of one record: each sample's, or the record's own."""
    return record["samples"] if "samples" in record else [record]


def rule_value(record: dict) -> float:
    """The document's value as the rules alone scored it (the share of right samples where it has several)."""
    values = [float((u.get("rule") or u).get("correct", False)) for u in units(record)]
    return sum(values) / len(values)


def summary(records: list[dict], step: JudgedStep, averaged: Callable[[list[float], list[dict]], float]) -> dict:
    """metrics.json's `judge` block: what the judge was asked and what it changed. `averaged(values, records)` is the
    task's declared average of per-document values."""
    judged = [u for r in records for u in units(r) if "judge" in u]
    out = {"step": step.name, "prompt_version": step.version, "asked": len(judged),
           "failed": sum("error" in u["judge"] for u in judged),
           "unreadable": sum(bool(u["judge"].get("unreadable")) for u in judged)}
    # glm-simple-evals' random letter (its preset only), as the judge entry keeps it (a sample's too)
    if guessed := sum(bool((u["judge"].get("verdict") or {}).get("guessed")) for u in judged):
        out["guessed"] = guessed
    if step.when != JudgeWhen.always:
        changed = [u for u in judged if "verdict" in u["judge"] and "rule" in u]
        out["changed"] = {"wrong_to_right": sum(not u["rule"].get("correct") and bool(u.get("correct"))
                                                for u in changed),
                          "right_to_wrong": sum(bool(u["rule"].get("correct")) and not u.get("correct")
                                                for u in changed)}
        scored = [r for r in records if is_scored(r)]
        if scored:
            out["rule_score"] = averaged([rule_value(r) for r in scored], scored)
            out["cascade_score"] = averaged([record_value(r) for r in scored], scored)
    audited = [u["audit"] for r in records for u in units(r) if "audit" in u]
    if audited:
        answered = [a for a in audited if "agrees" in a]
        agreed = sum(bool(a["agrees"]) for a in answered)
        out["audit"] = {"asked": len(audited), "answered": len(answered), "agreed": agreed,
                        "agreement": agreed / len(answered) if answered else None}
    return out
