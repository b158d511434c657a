"""Scores of sampled and reasoning runs, from per-document records, averaged as the task declares (core/averaging):

- avg@n: each document's mean over its n samples, then the task's average over documents (what the GLM-4.5 report's
  "AIME Avg@32" and "GPQA Avg@8" are), with its spread: the standard deviation (n − 1 in the denominator) of the n
  per-seed scores, seed j scoring every document's j-th sample;
- maj@k: the majority answer of each document's first k samples (answers vote as extracted; none do not vote);
- the score against the thinking budget: what the run would have scored at max_new_tokens = B, for B = 1K, 2K, 4K, …
  up to its own budget (a budget of 8K or less starts at an eighth of it: 64, 128, 256, 512 for GSM8K's 512). A
  sample counts at B only if it finished (EOS or a stop, not the token limit) within B tokens
  and was correct. This is exact, not an estimate, wherever a smaller budget generates a prefix of the same tokens:
  greedy decoding, and seeded sampling (each sample draws from its own seeded generator, one draw per token, so the
  first B tokens do not depend on the budget) — glm-eval's generator and vLLM both sample that way;
- token counts of the reasoning and of the answer (mean, p50, p90, max) and the share of replies cut off in their
  reasoning.
A sample here is one reply: `samples[j]` / `replies[j]` of a record with several, the record itself with one.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter

from glm_eval.core.averaging import Averaging, is_scored
from glm_eval.core.averaging import summarize as average

BUDGET_START = 1024


def replies(record: dict) -> list[dict]:
    """Each reply's facts: num_tokens, finish_reason, and (reasoning runs) reasoning_state, reasoning_tokens,
    answer_tokens."""
    if "replies" in record:
        return record["replies"]
    return [{k: record[k] for k in ("num_tokens", "finish_reason") if k in record}]


def verdicts(record: dict) -> list[bool] | None:
    """Each sample's verdict, or None where the task grades documents without one (a graded score)."""
    if "samples" in record:
        found = [s.get("correct") for s in record["samples"]]
    else:
        found = [record.get("correct")]
    return None if any(v is None for v in found) else [bool(v) for v in found]


def _headline(values: list[float], records: list[dict], averaging: Averaging) -> float:
    return average(values, [r.get("subject") for r in records], [r.get("category") for r in records],
                   averaging)["score"]


def seed_scores(records: list[dict], n: int, averaging: Averaging) -> list[float]:
    """The score of each seed j < n: every document's j-th sample."""
    scored = [r for r in records if is_scored(r) and verdicts(r) is not None]
    if not scored:
        return []
    return [_headline([float(verdicts(r)[j]) for r in scored], scored, averaging) for j in range(n)]


def spread(scores: list[float]) -> float | None:
    return statistics.stdev(scores) if len(scores) > 1 else None


def majority(answers: list[str | None]) -> str | None:
    """The most frequent answer (None does not vote); among equally frequent ones, the first seen."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a is not None and votes[a] == best)


def vote(sample: dict) -> str | None:
    """How a sample votes: its `vote` where the task gives one (GPQA: the option's column, as letters differ between
    samples), else its extracted answer."""
    return sample.get("vote", sample.get("extracted"))


def majority_verdict(samples: list[dict]) -> tuple[str | None, bool]:
    """The samples' majority answer (by `vote`) and whether it is right: one of the samples giving it was."""
    voted = majority([vote(s) for s in samples])
    return voted, voted is not None and any(s["correct"] for s in samples if vote(s) == voted)


def maj_at_k(records: list[dict], ks: list[int], averaging: Averaging) -> dict[str, float]:
    """maj@k for each k: a document is right when its first k samples' majority answer is one a correct sample gave."""
    scored = [r for r in records if is_scored(r) and "samples" in r and verdicts(r) is not None]
    if not scored or not all("extracted" in s for r in scored for s in r["samples"]):
        return {}
    out = {}
    for k in ks:
        values = []
        for r in scored:
            values.append(float(majority_verdict(r["samples"][:k])[1]))
        out[f"maj@{k}"] = _headline(values, scored, averaging)
    return out


def budgets(own: int) -> list[int]:
    """1K, 2K, 4K, … below the run's own budget (from a power of two near an eighth of a budget of 8K or less), then
    the budget itself."""
    points, b = [], BUDGET_START
    while b > 1 and b * 8 > own:
        b //= 2
    while b < own:
        points.append(b)
        b *= 2
    return points + [own]


def finished_within(reply: dict, budget: int) -> bool:
    return reply.get("finish_reason") not in ("length", "error", "cancelled", None) and \
        reply.get("num_tokens", budget + 1) <= budget


def budget_curve(records: list[dict], own_budget: int, averaging: Averaging) -> dict | None:
    """{"max_new_tokens": [B…], "score": [score at B…]} for a task whose samples have verdicts; None otherwise."""
    scored = [r for r in records if is_scored(r) and verdicts(r) is not None]
    if not scored or not own_budget:
        return None
    points = budgets(own_budget)
    scores = []
    for b in points:
        values = []
        for r in scored:
            pairs = list(zip(replies(r), verdicts(r)))
            values.append(sum(ok and finished_within(reply, b) for reply, ok in pairs) / len(pairs))
        scores.append(_headline(values, scored, averaging))
    return {"max_new_tokens": points, "score": scores}


def token_stats(counts: list[int]) -> dict | None:
    if not counts:
        return None
    ordered = sorted(counts)

    def quantile(q: float) -> int:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
    return {"mean": round(sum(ordered) / len(ordered), 1), "p50": quantile(0.5), "p90": quantile(0.9),
            "max": ordered[-1]}


def reasoning_summary(records: list[dict], averaging: Averaging) -> dict | None:
    """How the replies reasoned: cut off in their reasoning (no answer), ended inside it, the score over replies
    that finished, token counts. None for a run in which no reply reasoned and none was expected to."""
    answered = [r for r in records if "error" not in r]
    facts = [(r, j, reply) for r in answered for j, reply in enumerate(replies(r))]
    if not any(reply.get("reasoning_state") not in (None, "none") for _, _, reply in facts) and \
            not any(r.get("thinking") for r in answered):
        return None
    total = len(facts)
    cut = sum(reply.get("reasoning_state") == "cut_off" for _, _, reply in facts)
    out = {"replies": total, "cut_off": cut, "cut_off_share": cut / total if total else 0.0,
           "unclosed": sum(reply.get("reasoning_state") == "unclosed" for _, _, reply in facts),
           "reasoning_tokens": token_stats([reply["reasoning_tokens"] for _, _, reply in facts
                                            if reply.get("reasoning_tokens") is not None]),
           "answer_tokens": token_stats([reply["answer_tokens"] for _, _, reply in facts
                                         if reply.get("answer_tokens") is not None])}
    # the score over the replies that finished (not cut off by the token limit, in reasoning or answer)
    values, kept = [], []
    for r in answered:
        judged = verdicts(r) if is_scored(r) else None
        if judged is None:
            continue
        done = [ok for reply, ok in zip(replies(r), judged) if reply.get("finish_reason") != "length"]
        if done:
            values.append(sum(done) / len(done))
            kept.append(r)
    out["finished"] = sum(reply.get("finish_reason") != "length" for _, _, reply in facts)
    out["score_finished"] = _headline(values, kept, averaging) if kept else None
    return out
