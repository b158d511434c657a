"""LongBench-E (THUDM/LongBench `--e`): 13 English and code datasets of LongBench v1, resampled to spread evenly over
input lengths (3,668 examples), HF configs / files `<dataset>_e`. Prompting and per-example scores as in
tasks/longbench.py; eval.py's scorer_e also scores each dataset per bucket of the record's `length` field (words or
characters, not tokens): 0-4k, 4-8k, 8k+, each round(100 · mean, 2). eval.py does not average across datasets;
`bucket_means` (the mean of the datasets' bucket scores, as plotted in the LongBench README) is ours.
"""
from __future__ import annotations

from glm_eval.scoring.longbench import dataset_score, length_bucket
from glm_eval.tasks.longbench import LongBench

E_DATASETS = ["qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec", "triviaqa",
              "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p"]
BUCKETS = ["0-4k", "4-8k", "8k+"]


class LongBenchE(LongBench):
    title = "LongBench-E"
    variant = "_e"
    all_datasets = E_DATASETS

    def aggregate(self, records: list[dict]) -> dict:
        out = super().aggregate(records)
        per_bucket = {}
        for d in E_DATASETS:
            scores = {b: [r["score"] for r in records if r["subject"] == d and length_bucket(r["length"]) == b]
                      for b in BUCKETS}
            if any(scores.values()):  # null for an empty bucket (eval.py's numpy mean of nothing is nan)
                per_bucket[d] = {b: dataset_score(v) if v else None for b, v in scores.items()}
        block = out["longbench"]
        block["buckets"] = per_bucket
        block["bucket_means"] = {}
        for b in BUCKETS:
            scores = [s[b] for s in per_bucket.values() if s[b] is not None]
            if scores:
                block["bucket_means"][b] = sum(scores) / len(scores)
        return out


TASK = LongBenchE
